"""Role SQL for the test suite's own external broker (tests/brokers/pg_broker.py).

It stands for a third-party credential service behind the command and http backends:
a CREATEROLE login that mints roles itself.  pgcli-jit's own postgres backend no longer
works this way (its broker lives in the server: pgcli_jit/server).


Every identifier goes through ``psycopg.sql.Identifier``; the password goes to
the server only as a SCRAM verifier computed here (libpq's
``PQencryptPasswordConn``), so the plaintext is never in SQL text or the log.
A JIT role is recognised by its ``COMMENT ON ROLE``, which starts with
:data:`MARKER` and carries the lease metadata as JSON, so an operator (or
``reap``) can see who holds access, why, and until when.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

MARKER = "pgcli-jit "
MAX_IDENTIFIER = 63
_ALPHABET = string.ascii_lowercase + string.digits

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class JitRole:
    """A live (or expired, not yet reaped) JIT role as the server sees it."""

    name: str
    valid_until: datetime | None
    can_login: bool
    sessions: int
    metadata: dict[str, Any]

    def expired(self, now: datetime) -> bool:
        return self.valid_until is not None and self.valid_until <= now


def role_name(prefix: str, requester: str) -> str:
    """``<prefix><requester>_<random>``, lower-case, at most 63 bytes."""
    who = re.sub(r"[^a-z0-9_]+", "_", requester.lower()).strip("_")[:20] or "user"
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    name = f"{prefix}{who}_{tail}"
    return name.encode()[:MAX_IDENTIFIER].decode(errors="ignore")


def new_password() -> str:
    """192 random bits, URL-safe so no libpq quoting is ever needed."""
    return secrets.token_urlsafe(24)


def scram_verifier(conn: Conn, username: str, password: str) -> str:
    raw = conn.pgconn.encrypt_password(password.encode(), username.encode(), b"scram-sha-256")
    return bytes(raw).decode()


def _ts(value: float) -> str:
    return datetime.fromtimestamp(value, tz=UTC).isoformat()


def comment(metadata: dict[str, Any]) -> str:
    return MARKER + json.dumps(metadata, sort_keys=True)


def create_role(conn: Conn, name: str, password: str, grants: Sequence[str],
                valid_until: float, metadata: dict[str, Any], connection_limit: int = -1) -> None:
    """CREATE ROLE ... LOGIN IN ROLE ... VALID UNTIL, and its metadata comment, atomically."""
    stmt = sql.SQL("CREATE ROLE {} LOGIN INHERIT CONNECTION LIMIT {} PASSWORD {} VALID UNTIL {}").format(
        sql.Identifier(name), sql.Literal(connection_limit),
        sql.Literal(scram_verifier(conn, name, password)), sql.Literal(_ts(valid_until)),
    )
    if grants:
        stmt = stmt + sql.SQL(" IN ROLE ") + sql.SQL(", ").join(map(sql.Identifier, grants))
    with conn.transaction():
        conn.execute(stmt)
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(
            sql.Identifier(name), sql.Literal(comment(metadata))))


def set_valid_until(conn: Conn, name: str, valid_until: float, metadata: dict[str, Any]) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
            sql.Identifier(name), sql.Literal(_ts(valid_until))))
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(
            sql.Identifier(name), sql.Literal(comment(metadata))))


_ROLES_QUERY = """
    SELECT r.rolname, r.rolvaliduntil, r.rolcanlogin,
           (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = r.rolname),
           shobj_description(r.oid, 'pg_authid')
    FROM pg_roles r
    WHERE shobj_description(r.oid, 'pg_authid') LIKE %s
"""


def jit_roles(conn: Conn, name: str | None = None) -> list[JitRole]:
    """Every JIT role (or the one named), with the metadata from its comment."""
    query = _ROLES_QUERY + (" AND r.rolname = %s" if name else "") + " ORDER BY r.rolvaliduntil"
    params: tuple[str, ...] = (MARKER + "%",) + ((name,) if name else ())
    rows = conn.execute(query, params).fetchall()
    return [JitRole(n, v, login, int(s), _metadata(c)) for n, v, login, s, c in rows]


def _metadata(text: str | None) -> dict[str, Any]:
    try:
        data = json.loads((text or "")[len(MARKER):])
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def server_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def drop_role(conn: Conn, name: str, reassign_to: str | None = None) -> int:
    """End a JIT role for good; returns how many of its sessions were terminated.

    Order matters: NOLOGIN first, so pgcli's auto-reconnect cannot log straight
    back in; then terminate its sessions (NOLOGIN and DROP ROLE leave open
    sessions running); then hand what it owns to ``reassign_to`` (never drop
    user data silently) and drop it.  Objects it owns in *other* databases
    make DROP ROLE fail: the role stays NOLOGIN and the error says why.
    """
    ident = sql.Identifier(name)
    target = sql.Identifier(reassign_to) if reassign_to else sql.SQL("CURRENT_USER")
    conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
    terminated = terminate_sessions(conn, name)
    with conn.transaction():
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))
        conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident, target))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident))
    return terminated


def terminate_sessions(conn: Conn, name: str) -> int:
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
        " WHERE usename = %s AND pid <> pg_backend_pid()", (name,),
    ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def setup_statements(broker: str, grants: Mapping[str, Sequence[str]]) -> list[sql.Composed]:
    """The least-privilege broker (CREATEROLE, not superuser) and the grant roles it may hand out.

    ``grants`` maps each grant role to the roles it is a member of (for
    example ``{"jit_read": ["pg_read_all_data"]}``).  The broker gets ADMIN
    OPTION on exactly those grant roles and ``pg_signal_backend`` to end the
    sessions of the roles it drops.  Its password is set separately.
    """
    return [stmt for step in setup_steps(broker, grants) for stmt in (step.create, *step.grants)]


@dataclass(frozen=True)
class SetupStep:
    """One role of the setup: its CREATE ROLE, then the GRANTs that belong to it.

    Kept apart so ``pgcli-jit-admin setup --apply`` can skip the CREATE of a
    role that already exists and still re-apply its (idempotent) GRANTs.
    """

    role: str
    create: sql.Composed
    grants: tuple[sql.Composed, ...]


def setup_steps(broker: str, grants: Mapping[str, Sequence[str]]) -> list[SetupStep]:
    """:func:`setup_statements`, grouped by the role each statement creates or grants to."""
    ident = sql.Identifier(broker)
    steps = [SetupStep(broker, sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(ident),
                       (sql.SQL("GRANT pg_signal_backend TO {}").format(ident),))]
    for role, members_of in grants.items():
        parents = tuple(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(parent), sql.Identifier(role))
            for parent in members_of
        )
        admin = sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(sql.Identifier(role), ident)
        steps.append(SetupStep(role, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)),
                               (*parents, admin)))
    return steps


def existing_roles(conn: Conn, names: Sequence[str]) -> set[str]:
    """Which of ``names`` already exist (roles are cluster-wide, not per database)."""
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(names),))
    return {name for (name,) in rows.fetchall()}


def set_password(conn: Conn, name: str, password: str) -> None:
    """ALTER ROLE ... PASSWORD with a verifier computed here: the plaintext never reaches the server."""
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
        sql.Identifier(name), sql.Literal(scram_verifier(conn, name, password))))
