"""The postgres backend against a real scram-sha-256 cluster."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import psycopg
import pytest

from pgcli_jit.backends import pg_roles
from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.postgres import PostgresBackend
from pgcli_jit.cluster import Cluster
from pgcli_jit.config import parse_profile
from pgcli_jit.errors import ConfigError, NotRenewable
from pgcli_jit.lease import Lease
from pgcli_jit.testing import BackendContract
from tests.conftest import can_login, postgres_profile_toml


def make_backend(cluster: Cluster, admin_dsn: str, **extra: object) -> PostgresBackend:
    body = tomllib.loads(postgres_profile_toml("pg", admin_dsn, cluster, **extra))["profiles"]["pg"]
    profile = parse_profile("pg", body, Path("config.toml"))
    return PostgresBackend(profile)


def login(cluster: Cluster, lease: Lease, dbname: str = "app") -> psycopg.Connection:
    return psycopg.connect(cluster.conninfo(dbname, user=lease.username,
                                            password=lease.credentials.password))



class TestContract(BackendContract):
    @pytest.fixture(autouse=True)
    def _setup(self, cluster: Cluster, admin_dsn: str) -> None:
        self.cluster, self.admin_dsn = cluster, admin_dsn

    def make_backend(self) -> PostgresBackend:
        return make_backend(self.cluster, self.admin_dsn, max_ttl="10m")

    def can_login(self, lease: Lease) -> bool:
        return can_login(self.cluster, lease)


def request(backend: PostgresBackend, ttl: float = 60, reason: str = "INC-1 check") -> Lease:
    return backend.request(LeaseRequest(ttl=ttl, reason=reason, requester="alice"))


def test_role_gets_grants_expiry_and_metadata(cluster: Cluster, admin_dsn: str) -> None:
    backend = make_backend(cluster, admin_dsn)
    lease = request(backend, ttl=120)
    try:
        assert lease.username.startswith("jit_alice_") and len(lease.username.encode()) <= 63
        with login(cluster, lease) as conn:
            assert conn.execute("select current_user").fetchone() == (lease.username,)
            assert conn.execute("select count(*) from accounts").fetchone() == (2,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("insert into accounts values (3, 'eve', 1)")
        with cluster.connect() as conn:
            [role] = pg_roles.jit_roles(conn, lease.username)
        assert abs(role.valid_until.timestamp() - lease.expires_at) < 1
        assert role.metadata["requester"] == "alice"
        assert role.metadata["reason"] == "INC-1 check"
        assert role.metadata["profile"] == "pg"
    finally:
        backend.revoke(lease)


def test_valid_until_is_enforced_by_the_server(cluster: Cluster, admin_dsn: str) -> None:
    backend = make_backend(cluster, admin_dsn)
    lease = request(backend, ttl=2)
    try:
        assert can_login(cluster, lease)
        time.sleep(2.5)
        assert not can_login(cluster, lease)
    finally:
        backend.revoke(lease)


def test_renew_moves_valid_until_and_caps_at_max_ttl(cluster: Cluster, admin_dsn: str) -> None:
    backend = make_backend(cluster, admin_dsn, max_ttl="3m")
    lease = request(backend, ttl=60)
    try:
        renewed = backend.renew(lease, 120)
        assert renewed.expires_at > lease.expires_at + 50
        with cluster.connect() as conn:
            [role] = pg_roles.jit_roles(conn, lease.username)
        assert abs(role.valid_until.timestamp() - renewed.expires_at) < 1
        capped = backend.renew(renewed, 3600)
        assert capped.expires_at == pytest.approx(lease.max_expires_at)
        assert capped.warnings
        with pytest.raises(NotRenewable, match="max TTL"):
            backend.renew(capped, 3600)
    finally:
        backend.revoke(lease)


def test_password_never_reaches_sql_text_or_server_log(cluster: Cluster, admin_dsn: str) -> None:
    backend = make_backend(cluster, admin_dsn)
    lease = request(backend)
    backend.renew(lease, 90)
    backend.revoke(lease)
    log = cluster.server_log()
    assert lease.username in log  # statements really are logged
    assert lease.credentials.password not in log


def test_revoke_terminates_sessions_and_keeps_owned_objects(cluster: Cluster, admin_dsn: str) -> None:
    backend = make_backend(cluster, admin_dsn, grant=["jit_write"])
    lease = request(backend)
    with cluster.connect("app") as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO jit_write")
    session = login(cluster, lease)
    session.autocommit = True
    session.execute("create table jit_made (x int)")
    backend.revoke(lease)
    with pytest.raises(psycopg.OperationalError):
        session.execute("select 1")
    assert not can_login(cluster, lease)
    with cluster.connect("app") as conn:
        owner = conn.execute("select tableowner from pg_tables where tablename = 'jit_made'").fetchone()
        assert owner == ("jit_broker",)
        assert not pg_roles.jit_roles(conn, lease.username)
        conn.execute("drop table jit_made")


def test_revoke_twice_is_harmless(cluster: Cluster, admin_dsn: str) -> None:
    backend = make_backend(cluster, admin_dsn)
    lease = request(backend)
    backend.revoke(lease)
    backend.revoke(lease)


def test_password_in_admin_dsn_is_refused(cluster: Cluster, admin_dsn: str) -> None:
    with pytest.raises(ConfigError, match="secrets never go in the config"):
        make_backend(cluster, admin_dsn + " password=hunter2")
