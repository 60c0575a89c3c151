"""A cluster that writes its log the way session logs need it, and leases to log.

``logging_collector`` on, ``jsonlog`` in ``log/``, connections and disconnections logged, and
``log_statement = 'none'`` cluster-wide: whatever a lease's statements leave in the log is
there because the broker set it on the lease's role.  pgaudit is preloaded where this
PostgreSQL has it (Debian's postgresql-15-pgaudit; not the embedded 18).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from pgcli_jit import server
from pgcli_jit.backends.postgres.scram import scram_verifier
from pgcli_jit.devtools.cluster import Cluster, find_bindir, start_cluster
from tests.conftest import GRANT_ROLES

Conn = psycopg.Connection[tuple[object, ...]]

REQUESTER = "logs_alice"
OPERATOR = "logs_oper"
COLLECTOR = "logs_collector"


def has_pgaudit() -> bool:
    """Whether this PostgreSQL installation ships pgaudit's library."""
    return ((find_bindir() / "initdb").resolve().parent.parent / "lib" / "pgaudit.so").exists()


@dataclass
class LogsCluster:
    cluster: Cluster
    passwords: dict[str, str]
    pgaudit: bool

    def login(self, user: str, dbname: str = "app") -> Conn:
        return psycopg.connect(self.cluster.conninfo(dbname, user=user, password=self.passwords[user]),
                               autocommit=True)

    def superuser(self) -> Conn:
        return self.cluster.connect("app")


@dataclass
class LeaseLogin:
    rolname: str
    lease_id: int
    password: str


def _make_login(conn: Conn, name: str, member_of: str) -> str:
    password = secrets.token_urlsafe(18)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
        sql.Identifier(name), sql.Literal(scram_verifier(conn, password)), sql.Identifier(member_of)))
    return password


@pytest.fixture(scope="module")
def logs_cluster() -> Iterator[LogsCluster]:
    pgaudit = has_pgaudit()
    settings = {"logging_collector": "on", "log_destination": "'jsonlog'", "log_directory": "'log'",
                "log_connections": "on", "log_disconnections": "on", "log_statement": "'none'"}
    if pgaudit:
        settings["shared_preload_libraries"] = "'pgaudit'"
    c = start_cluster(settings=settings)
    try:
        c.execute("CREATE DATABASE app")
        c.execute("CREATE TABLE accounts (id int primary key, owner text, balance numeric);"
                  "INSERT INTO accounts VALUES (1, 'alice', 100), (2, 'bob', 250);", dbname="app")
        with c.connect("app") as conn:
            server.apply(conn)
            conn.execute(GRANT_ROLES.encode())
            passwords = {REQUESTER: _make_login(conn, REQUESTER, "jit_requester"),
                         OPERATOR: _make_login(conn, OPERATOR, "jit_admin"),
                         COLLECTOR: _make_login(conn, COLLECTOR, "jit_collector")}
            conn.execute("SELECT jit.profile_set('logs_read', ARRAY['jit_read'], '15 minutes',"
                         " '1 hour', 'jit_requester', false, '', 'logged reads')")
            conn.execute("GRANT CREATE ON SCHEMA public TO jit_write")
            conn.execute("SELECT jit.profile_set('logs_write', ARRAY['jit_write'], '15 minutes',"
                         " '1 hour', 'jit_requester', false, '', 'logged writes')")
        yield LogsCluster(c, passwords, pgaudit)
    finally:
        c.stop()


def request_lease(lc: LogsCluster, profile: str, reason: str = "session log test") -> LeaseLogin:
    """A lease asked for by the requester, as its client would: a verifier, never a password."""
    password = secrets.token_urlsafe(24)
    with lc.login(REQUESTER) as conn:
        row = conn.execute("SELECT jit.request(%s, NULL, %s, %s)",
                           (profile, reason, scram_verifier(conn, password))).fetchone()
    assert row is not None
    answer = dict(row[0])  # type: ignore[call-overload]
    assert answer["status"] == "granted", answer
    return LeaseLogin(str(answer["rolname"]), int(answer["lease_id"]), password)


def lease_conn(lc: LogsCluster, lease: LeaseLogin) -> Conn:
    return psycopg.connect(lc.cluster.conninfo("app", user=lease.rolname, password=lease.password),
                           autocommit=True)


def end_lease(lc: LogsCluster, lease: LeaseLogin) -> None:
    """Revoke and drop, as the requester's client and the reaper do."""
    with lc.superuser() as conn:
        conn.execute("SELECT jit.revoke(%s)", (lease.rolname,))
        conn.execute("SELECT jit.finish(%s)", (lease.rolname,))
