"""``pgcli-jit-admin setup``: install or upgrade the ``jit`` schema (see pgcli_jit/server)."""

from __future__ import annotations

import click

from pgcli_jit import server
from pgcli_jit.admin.connect import connect
from pgcli_jit.core.errors import JitError

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
              help="The database to protect: with --apply a superuser's connection; without, "
                   "any operator's, to print only what that database still needs.")
def setup(apply: bool, dsn: str | None) -> None:
    """Print (or --apply) the SQL of the jit schema: one transaction, idempotent, versioned.

    Without --dsn the script installs everything; with it, only what that database needs.
    Either can be run twice: each numbered file is guarded by the version table."""
    if not apply:
        if dsn is None:
            click.echo(server.script())
            click.echo(EXAMPLE_GRANTS)
        else:
            review(dsn)
        return
    with connect(dsn or "") as conn:
        before = server.installed_version(conn)
        refuse_newer(before)
        done = server.apply(conn)
    for line in done:
        click.echo(line)
    after = server.latest_version()
    click.echo(f"schema jit: version {before} -> {after}" if before != after
               else f"schema jit: version {after}, functions refreshed")
    if before == 0:
        click.echo(EXAMPLE_GRANTS)


def review(dsn: str) -> None:
    """Print exactly what setup would run against this database (one comment line if nothing)."""
    with connect(dsn) as conn:
        current = server.installed_version(conn)
        refuse_newer(current)
        if server.up_to_date(conn):
            click.echo(f"-- schema jit: version {current}, functions current: nothing to do")
            return
    click.echo(server.script(current))
    if current == 0:
        click.echo(EXAMPLE_GRANTS)


def refuse_newer(current: int) -> None:
    """A schema newer than this package would get older functions over it: never."""
    latest = server.latest_version()
    if current > latest:
        raise JitError(f"schema jit is at version {current}, newer than this pgcli-jit-admin knows "
                       f"({latest})", "upgrade pgcli-jit, then run setup again")


COMMANDS = [setup]
