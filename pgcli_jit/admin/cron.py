"""``pgcli-jit-admin cron install|remove``: the reaper as a pg_cron job, with no daemon.

pg_cron (1.4 on Debian's PostgreSQL 15) starts a job at most once a minute, so the job does
not reap once and stop: it works through its minute (``statements.CRON_JOB``), passing and
sleeping until the next expiry, at most a second.  Access ends about a second after
``VALID UNTIL`` with nothing running outside the server.

It is its own command, not part of ``setup``: the job lives in another database
(``cron.database_name``), runs as a login the operator chooses and holds one background worker
for good, none of which belongs in the schema script that ``setup`` prints for review and that
``psql`` applies in the jit database.  ``install`` needs a superuser (pg_cron lets only a
superuser schedule a job for another login), who connects to the jit database; the command
finds the cron database itself.  With ``cron.use_background_workers = on`` the job needs no
password: a background worker connects as the login without authenticating, where pg_cron's
default TCP login to localhost needs one under scram-sha-256.
"""

from __future__ import annotations

import click
from psycopg.conninfo import make_conninfo

from pgcli_jit.admin.connect import connect, dsn_option
from pgcli_jit.core.errors import JitError
from pgcli_jit.core.sanitize import printable
from pgcli_jit.server import statements

JOB_PREFIX = "pgcli-jit reaper: "
#: what ``pg_stat_activity.application_name`` (and ``jit_data.reaper_runs``) shows for the
#: job: ``statements.CRON_JOB`` sets it
APPLICATION_NAME = "pgcli-jit reaper (pg_cron)"


def job_name(dbname: str) -> str:
    """One job per jit database, all in the cron database's ``cron.job``."""
    return JOB_PREFIX + dbname


def _where(dsn: str) -> tuple[str, str, bool]:
    """The jit database's name, the cron database's name, whether background workers are on;
    one clear line when pg_cron is not loaded or the schema is not here."""
    with connect(dsn) as conn:
        row = conn.execute(statements.CRON_SETTINGS).fetchone()
    assert row is not None
    dbname, cron_db, workers, has_schema = row
    if not has_schema:
        raise JitError(f"database {printable(dbname)} has no jit schema",
                       "run pgcli-jit-admin setup --apply --dsn ... first, or give the --dsn "
                       "of the database with the schema")
    if cron_db is None:
        raise JitError("pg_cron is not loaded on this server",
                       "add shared_preload_libraries = 'pg_cron' to postgresql.conf and restart "
                       "(docs/operator-guide.md, The reaper without a daemon)")
    return str(dbname), str(cron_db), workers == "on"


@click.group()
def cron() -> None:
    """The reaper as a pg_cron job: access ends about a second after expiry, no daemon."""


@cron.command()
@dsn_option
@click.option("--login", required=True, metavar="ROLE",
              help="The login the job runs as: a member of jit_admin (not a superuser).")
def install(dsn: str, login: str) -> None:
    """Schedule the reaper's job for this database (idempotent).  Needs a superuser."""
    dbname, cron_db, workers = _where(dsn)
    with connect(dsn) as conn:
        row = conn.execute(statements.CRON_LOGIN, (login,)).fetchone()
    if row is None or not row[0]:
        raise JitError(f"{printable(login)} is not a login role",
                       f"as a superuser: CREATE ROLE {printable(login)} LOGIN IN ROLE jit_admin")
    if row[2]:
        raise JitError(f"{printable(login)} is a superuser: the job runs as a jit_admin login",
                       "as a superuser: CREATE ROLE jit_reaper LOGIN IN ROLE jit_admin, then "
                       "--login jit_reaper")
    if not row[1]:
        raise JitError(f"{printable(login)} is not a member of jit_admin",
                       f"as a superuser: GRANT jit_admin TO {printable(login)}")
    name = job_name(dbname)
    wanted = (statements.CRON_JOB, dbname, login, True)
    with connect(make_conninfo(dsn, dbname=cron_db)) as conn:
        if conn.execute(statements.CRON_INSTALLED).fetchone() != (True,):
            raise JitError(f"pg_cron is loaded but not installed in database {printable(cron_db)}",
                           f"as a superuser, in database {printable(cron_db)}: "
                           f"CREATE EXTENSION pg_cron")
        jobs = conn.execute(statements.CRON_JOBS, (name,)).fetchall()
        if len(jobs) == 1 and tuple(jobs[0][1:]) == wanted:
            click.echo(f"pg_cron job {name!r} is already installed (job {jobs[0][0]})")
        else:
            with conn.transaction():
                for job in jobs:
                    conn.execute(statements.CRON_UNSCHEDULE, (job[0],))
                new = conn.execute(statements.CRON_SCHEDULE,
                                   (name, statements.CRON_JOB, dbname, login)).fetchone()
            assert new is not None
            click.echo(f"installed pg_cron job {name!r} (job {new[0]}): every minute in database "
                       f"{printable(dbname)} as {printable(login)}, from cron database "
                       f"{printable(cron_db)}; it starts at the next minute")
    if not workers:
        click.echo("warning: cron.use_background_workers is off: pg_cron logs in over TCP, which "
                   "under scram-sha-256 needs a password for the login; set it on in "
                   "postgresql.conf and restart", err=True)


@cron.command()
@dsn_option
def remove(dsn: str) -> None:
    """Take this database's reaper job away (idempotent).  Needs a superuser."""
    dbname, cron_db, _workers = _where(dsn)
    name = job_name(dbname)
    with connect(make_conninfo(dsn, dbname=cron_db)) as conn:
        if conn.execute(statements.CRON_INSTALLED).fetchone() != (True,):
            click.echo(f"no pg_cron job {name!r}: pg_cron is not installed in {printable(cron_db)}")
            return
        jobs = conn.execute(statements.CRON_JOBS, (name,)).fetchall()
        with conn.transaction():
            for job in jobs:
                conn.execute(statements.CRON_UNSCHEDULE, (job[0],))
    if jobs:
        click.echo(f"removed pg_cron job {name!r}; a run in progress ends with its minute "
                   f"(or SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE "
                   f"application_name = '{APPLICATION_NAME}')")
    else:
        click.echo(f"no pg_cron job {name!r} to remove")


COMMANDS = [cron]
