"""``pgcli-jit-admin setup``: the broker role and the roles it may grant.

The statements themselves come from :func:`pg_roles.setup_steps`, the same
ones the test suite's broker is built with.  Printed, they are rendered
without a connection (psycopg quotes identifiers itself) for ``psql -f``;
applied, they run in one transaction, so a failure changes nothing.  The
broker's password reaches the server only as a SCRAM verifier.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Sequence

import psycopg
from psycopg import sql

from pgcli_jit.admin_format import error_text
from pgcli_jit.backends import pg_roles
from pgcli_jit.errors import JitError, UsageError

DEFAULT_BROKER = "jit_broker"
DEFAULT_GRANTS: dict[str, Sequence[str]] = {
    "jit_read": ("pg_read_all_data",),
    "jit_write": ("jit_read", "pg_write_all_data"),
}


def check_role_name(name: str, option: str) -> str:
    """Non-empty, at most 63 bytes, printable: a newline would end a ``--`` comment in the script."""
    if not name or len(name.encode()) > pg_roles.MAX_IDENTIFIER or not name.isprintable():
        raise UsageError(f"{option}: {name!r} is not a usable role name (1 to 63 printable bytes)")
    return name


def parse_grants(specs: Sequence[str]) -> dict[str, Sequence[str]]:
    """``ROLE=MEMBER_OF[,MEMBER_OF...]`` (or just ``ROLE``), in the order given."""
    out: dict[str, Sequence[str]] = {}
    for spec in specs:
        role, _, parents = spec.partition("=")
        members_of = [p.strip() for p in parents.split(",") if p.strip()]
        out[check_role_name(role.strip(), "--grant")] = [
            check_role_name(p, "--grant") for p in members_of]
    return out


def password_hint(broker: str) -> list[str]:
    ident = sql.Identifier(broker).as_string()
    return ["-- Set the broker's password where it never reaches SQL text or the server log:",
            f"--   in psql (computes the SCRAM verifier client-side): \\password {ident}",
            "--   or: pgcli-jit-admin setup --apply --dsn ... --password-env VAR"]


def setup_script(broker: str, grants: dict[str, Sequence[str]]) -> str:
    """The SQL for psql (``psql -v ON_ERROR_STOP=1 -f``), rendered without a connection."""
    body = [stmt.as_string() + ";" for stmt in pg_roles.setup_statements(broker, grants)]
    head = ["-- pgcli-jit: the broker role and the roles it may grant. Run as a superuser:",
            "--   psql -v ON_ERROR_STOP=1 -f this-file.sql"]
    return "\n".join([*head, "BEGIN;", *body, "COMMIT;", *password_hint(broker)])


def new_broker_password(broker: str, env_name: str | None) -> str | None:
    """From ``--password-env``, else a prompt on a TTY (twice), else None: set it later."""
    if env_name:
        value = os.environ.get(env_name)
        if not value:
            raise JitError(f"${env_name} (--password-env) is not set or empty")
        return value
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass(f"New password for {broker} (empty: set it later): ")
    if first and getpass.getpass("Again: ") != first:
        raise JitError("the passwords do not match; nothing was changed")
    return first or None


def apply_setup(conn: pg_roles.Conn, broker: str, grants: dict[str, Sequence[str]],
                password: str | None) -> list[str]:
    """Run the setup in one transaction; roles that exist are kept, their GRANTs re-applied."""
    steps = pg_roles.setup_steps(broker, grants)
    existing = pg_roles.existing_roles(conn, [step.role for step in steps])
    done: list[str] = []
    try:
        with conn.transaction():
            for step in steps:
                done += run_step(conn, step, step.role in existing)
            if password:
                pg_roles.set_password(conn, broker, password)
                done.append(f"-- password of {broker} set from a SCRAM verifier computed here")
    except psycopg.Error as exc:
        hint = "run setup --apply as a superuser" if isinstance(
            exc, psycopg.errors.InsufficientPrivilege) else ""
        raise JitError(f"setup failed, nothing was changed: {error_text(exc)}", hint) from None
    return done


def run_step(conn: pg_roles.Conn, step: pg_roles.SetupStep, exists: bool) -> list[str]:
    statements = list(step.grants) if exists else [step.create, *step.grants]
    for stmt in statements:
        conn.execute(stmt)
    skipped = [f"-- skipped CREATE ROLE: {step.role} already exists (attributes left as they are)"]
    return (skipped if exists else []) + [stmt.as_string(conn) + ";" for stmt in statements]


