"""How ``pgcli-jit-admin`` connects, and how it turns server errors into one line.

No password is ever a command-line argument (it would land in shell history and
``ps``): libpq finds it in ``PGPASSWORD``, ``~/.pgpass``, ``PGPASSFILE``, a service
file, or the site uses certificates or GSSAPI.  Errors are the server's own words
(message, detail, hint), never ``repr`` of a psycopg exception, which can hold a password.
A privilege the login lacks is said once, here, for every command: which role to grant (or
that a superuser is needed), not the server's ``permission denied for function ...``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgcli_jit.core.errors import JitError, db_error_line
from pgcli_jit.core.sanitize import printable
from pgcli_jit.server import statements

Conn = psycopg.Connection[tuple[Any, ...]]
LIBPQ_SOURCES = "PGPASSWORD, ~/.pgpass, PGPASSFILE or a service file"
#: what ``pg_stat_activity.application_name`` shows for an admin command's connection
APPLICATION_NAME = "pgcli-jit-admin"
F = TypeVar("F", bound=Callable[..., Any])


def check_dsn(dsn: str) -> None:
    """Refuse a conninfo that cannot parse or that carries a password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise JitError("--dsn is not a libpq conninfo or URI",
                       'e.g. --dsn "host=db dbname=app user=ops"') from None
    if "password" in params:
        raise JitError("--dsn holds a password; passwords never go on the command line",
                       f"use {LIBPQ_SOURCES}")


def open_conn(dsn: str, application_name: str = APPLICATION_NAME) -> Conn:
    """An autocommit connection (every jit.* call its own transaction) whose names resolve
    in pg_catalog only: what the admin CLI, the reaper and the notifier send can never call
    a function or operator another login planted in a schema on this login's path."""
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10, application_name=application_name)
    try:
        conn.execute(statements.PIN_SEARCH_PATH)
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def connect(dsn: str, application_name: str = APPLICATION_NAME) -> Iterator[Conn]:
    """One pinned autocommit connection (:func:`open_conn`), errors said in one line."""
    check_dsn(dsn)
    try:
        conn = open_conn(dsn, application_name)
    except psycopg.Error as exc:
        text = error_text(exc)
        hint = f"passwords come from {LIBPQ_SOURCES}" if "password" in text else ""
        raise JitError(f"cannot connect: {text}", hint) from None
    with conn:
        try:
            yield conn
        except psycopg.errors.InsufficientPrivilege as exc:
            raise missing_privilege(conn, exc) from None


def missing_privilege(conn: Conn, exc: psycopg.Error) -> JitError:
    """What to do about a ``permission denied``: ``setup --apply`` needs a superuser, every
    other command a login in ``jit_admin``.  A login that has what its command needs was
    refused for another reason: the server's own words then."""
    try:
        row = conn.execute(statements.WHO_AM_I).fetchone()
    except psycopg.Error:
        row = None
    if row is None:
        return JitError(error_text(exc))
    login, superuser, operator = str(row[0]), bool(row[1]), bool(row[2])
    command = command_path()
    if command == "setup --apply":
        if superuser:
            return JitError(error_text(exc))
        return JitError(f"permission denied: setup --apply needs a superuser; "
                        f"{printable(login)} is not one",
                        'run pgcli-jit-admin setup --apply --dsn "... user=postgres", or print '
                        "the script with setup --dsn ... and have a superuser run it with psql")
    if superuser or operator:
        return JitError(error_text(exc))
    return JitError(f"permission denied: {command} needs a login in jit_admin; "
                    f"{printable(login)} is not a member",
                    f"as a superuser: GRANT jit_admin TO {printable(login)}")


def command_path() -> str:
    """The running subcommand as typed after ``pgcli-jit-admin`` (``profile add``), with
    ``--apply`` when ``setup`` got it: the one command whose need is a superuser."""
    ctx = click.get_current_context(silent=True)
    names: list[str] = []
    here = ctx
    while here is not None and here.parent is not None:
        names.insert(0, here.info_name or "")
        here = here.parent
    path = " ".join(names) or "this command"
    if ctx is not None and path == "setup" and ctx.params.get("apply"):
        return "setup --apply"
    return path


def error_text(exc: BaseException) -> str:
    """The server's own words: message, then the first line of detail and hint."""
    return db_error_line(exc, detail=True)


def dsn_option(fn: F) -> F:
    return click.option(
        "--dsn", metavar="CONNINFO", default="", show_default=False,
        help=f"libpq conninfo or URI of the database with the jit schema, no password "
             f"({LIBPQ_SOURCES}); empty: libpq's PG* defaults.")(fn)
