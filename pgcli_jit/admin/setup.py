"""``pgcli-jit-admin setup``: install or upgrade the ``jit`` schema (see pgcli_jit/server)."""

from __future__ import annotations

import click

from pgcli_jit import server
from pgcli_jit.admin.connect import connect

#: printed after the script: grant roles are the site's own, scoped to schemas, never
#: pg_read_all_data (it reads pg_authid, every password verifier)
EXAMPLE_GRANTS = """\
-- Next: grant roles (NOLOGIN groups with the privileges to hand out), scoped to schemas,
-- which jit_owner may grant.  For example, as a superuser in this database:
--   CREATE ROLE app_read NOLOGIN;
--   GRANT USAGE ON SCHEMA public TO app_read;
--   GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_read;
--   ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO app_read;
--   GRANT app_read TO jit_owner WITH ADMIN OPTION;
-- then a profile, and the logins that may ask for it:
--   pgcli-jit-admin profile add read --grant app_read --ttl 15m --max-ttl 2h --dsn ...
--   GRANT jit_requester TO alice;
-- and keep the reaper running: pgcli-jit-admin reap --watch --dsn ...  (docs/operator-guide.md)"""


@click.command()
@click.option("--apply", is_flag=True, help="Run it (needs --dsn) instead of printing the SQL.")
@click.option("--dsn", metavar="CONNINFO", default=None,
              help="A superuser connection to the database to protect, for --apply.")
def setup(apply: bool, dsn: str | None) -> None:
    """Print (or --apply) the SQL of the jit schema: one transaction, idempotent, versioned."""
    if not apply:
        if dsn is not None:
            raise click.UsageError("--dsn takes effect only with --apply")
        click.echo(server.script())
        click.echo(EXAMPLE_GRANTS)
        return
    with connect(dsn or "") as conn:
        before = server.installed_version(conn)
        done = server.apply(conn)
    for line in done:
        click.echo(line)
    after = server.latest_version()
    click.echo(f"schema jit: version {before} -> {after}" if before != after
               else f"schema jit: version {after}, functions refreshed")
    if before == 0:
        click.echo(EXAMPLE_GRANTS)


COMMANDS = [setup]
