"""The postgres backend and its server-side broker, against a real scram-sha-256 cluster.

The requester is ``alice``, a login in ``jit_requester`` whose password libpq finds in
the pgpass file: the client holds no other secret.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import tomllib
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.login import Login
from pgcli_jit.backends.postgres.backend import NeedsPassword, PostgresBackend
from pgcli_jit.core.errors import BackendUnavailable, ConfigError, NotRenewable, PermissionDenied
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.devtools.testing import BackendContract
from pgcli_jit.session.config import parse_profile, server_side_profile
from tests.conftest import can_login, live_jit_roles, postgres_profile_toml


def make_backend(cluster: Cluster, name: str = "pg", **extra: object) -> PostgresBackend:
    body = tomllib.loads(postgres_profile_toml(name, None, cluster, **extra))["profiles"][name]
    return PostgresBackend(parse_profile(name, body, Path("config.toml")))


def login(cluster: Cluster, lease: Lease, dbname: str = "app") -> psycopg.Connection:
    return psycopg.connect(cluster.conninfo(dbname, user=lease.username,
                                            password=lease.credentials.password), autocommit=True)


def request(backend: PostgresBackend, ttl: float = 60, reason: str = "INC-1 check") -> Lease:
    return backend.request(LeaseRequest(ttl=ttl, reason=reason, requester="mallory-says-$USER"))


def lease_row(cluster: Cluster, name: str) -> dict[str, object]:
    with cluster.connect("app") as conn:
        cur = conn.execute("SELECT * FROM jit_data.leases WHERE rolname = %s", (name,))
        row = cur.fetchone()
        assert row is not None
        return dict(zip([c.name for c in cur.description or []], row, strict=True))


class TestContract(BackendContract):
    @pytest.fixture(autouse=True)
    def _setup(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def make_backend(self) -> PostgresBackend:
        return make_backend(self.cluster, "contract", max_ttl="10m")

    def can_login(self, lease: Lease) -> bool:
        return can_login(self.cluster, lease)


def test_server_decides_name_grants_expiry_and_requester(cluster: Cluster) -> None:
    backend = make_backend(cluster, ttl="2m")
    lease = request(backend, ttl=120)
    try:
        assert lease.username.startswith("jit_alice_") and len(lease.username.encode()) <= 63
        with login(cluster, lease) as conn:
            assert conn.execute("select current_user").fetchone() == (lease.username,)
            assert conn.execute("select count(*) from accounts").fetchone() == (2,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("insert into accounts values (3, 'eve', 1)")
        row = lease_row(cluster, lease.username)
        assert row["requester"] == "alice"  # session_user, not what the client said
        assert row["reason"] == "INC-1 check"
        assert abs(row["expires_at"].timestamp() - lease.expires_at) < 2  # type: ignore[union-attr]
    finally:
        backend.revoke(lease)


def test_valid_until_is_enforced_by_the_server(cluster: Cluster) -> None:
    backend = make_backend(cluster)
    lease = request(backend, ttl=2)
    try:
        assert can_login(cluster, lease)
        time.sleep(2.5)
        assert not can_login(cluster, lease)
    finally:
        backend.revoke(lease)


def test_ttl_is_capped_by_the_server_profile_and_said(cluster: Cluster) -> None:
    backend = make_backend(cluster, "capped", ttl="1m", max_ttl="3m")
    capped = request(backend, ttl=300 * 86400)
    backend.revoke(capped)
    assert capped.expires_at - time.time() < 181
    assert any("capped" in w for w in capped.warnings)
    lease = request(backend, ttl=60)
    try:
        assert not lease.warnings
        renewed = backend.renew(lease, 3600)
        assert renewed.expires_at == pytest.approx(lease.max_expires_at, abs=1)
        assert "renewal capped at max_ttl" in renewed.warnings
        with pytest.raises(NotRenewable, match="max TTL"):
            backend.renew(renewed, 3600)
    finally:
        backend.revoke(lease)


def test_renew_that_changes_nothing_says_so_and_records_nothing(cluster: Cluster) -> None:
    backend = make_backend(cluster, ttl="10m")
    lease = request(backend, ttl=600)
    try:
        same = backend.renew(lease, 60)
        assert same.expires_at == lease.expires_at and same.renewals == lease.renewals
        assert lease_row(cluster, lease.username)["renewals"] == 0
    finally:
        backend.revoke(lease)


def test_password_never_reaches_sql_text_or_server_log(cluster: Cluster) -> None:
    backend = make_backend(cluster)
    lease = request(backend)
    backend.renew(lease, 90)
    backend.revoke(lease)
    log = cluster.server_log()
    assert "jit.request" in log  # statements really are logged
    assert lease.credentials.password not in log


def _fake_server_collects(auth_request: bytes, conninfo: dict[str, str]) -> tuple[bytes, str]:
    """A listener that speaks just enough of the protocol to ask for a password the way
    ``auth_request`` says; what the client sent it, and the client's error."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(1)  # the client sends its password (or gives up) at once
            with contextlib.suppress(OSError):
                received.extend(conn.recv(65536))  # the startup packet
                conn.sendall(auth_request)
                while data := conn.recv(65536):
                    received.extend(data)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        psycopg.connect(make_conninfo(host="127.0.0.1", port=listener.getsockname()[1],
                                      sslmode="disable", connect_timeout=5, **conninfo)).close()
        error = ""
    except psycopg.OperationalError as exc:
        error = str(exc)
    server.join(10)
    listener.close()
    return bytes(received), error


CLEARTEXT = b"R" + struct.pack("!ii", 8, 3)
MD5 = b"R" + struct.pack("!ii", 12, 5) + b"salt"


@pytest.mark.parametrize("asks", [CLEARTEXT, MD5], ids=["cleartext", "md5"])
def test_a_fake_server_asking_for_cleartext_or_md5_never_gets_the_fresh_password(
        cluster: Cluster, asks: bytes) -> None:
    """JIT connections demand SCRAM (``require_auth``): a server that is not the one that
    issued the role cannot collect its password by asking for it in cleartext or md5.
    Without the setting, the same fake server does get it (the control: the test can fail)."""
    lease = request(backend := make_backend(cluster))
    try:
        who = {"user": lease.username, "password": lease.credentials.password}
        sent, error = _fake_server_collects(asks, {**who, **lease.conninfo})
        assert lease.conninfo["require_auth"] == "scram-sha-256"
        assert lease.credentials.password.encode() not in sent and b"jit_" in sent  # it did connect
        assert "scram-sha-256" in error
        plain, _ = _fake_server_collects(asks, who)
        leaked = lease.credentials.password.encode() if asks is CLEARTEXT else b"md5"
        assert leaked in plain
    finally:
        backend.revoke(lease)


def test_revoke_ends_sessions_even_after_set_role_and_drops_the_role(cluster: Cluster) -> None:
    backend = make_backend(cluster, grant=["jit_write"])
    lease = request(backend)
    session = login(cluster, lease)
    if session.info.server_version < 160000:
        session.execute("set role jit_write")  # on 15 this keeps jit_write's rights after REVOKE
    backend.revoke(lease)
    with pytest.raises(psycopg.OperationalError):
        session.execute("select 1")
    assert not can_login(cluster, lease)
    assert lease.username not in live_jit_roles(cluster)
    with cluster.connect() as conn:
        assert conn.execute("select 1 from pg_roles where rolname = %s", (lease.username,)).fetchone() is None


def test_objects_a_lease_made_go_with_it_when_no_owner_role_keeps_them(cluster: Cluster) -> None:
    """Without an owner role on the profile, what a lease made is dropped with its role: nothing
    it created outlives it, and a SECURITY DEFINER routine is refused when it is made."""
    backend = make_backend(cluster, "owned", grant=["jit_write"])
    with cluster.connect("app") as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO jit_write")
    lease = request(backend)
    try:
        with login(cluster, lease) as session:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only in pg_temp"):
                session.execute("create function leftover() returns text language sql security definer"
                                " as $$ select current_user::text $$")
            session.execute("create table leftover_t (x int)")
        backend.revoke(lease)
        assert not can_login(cluster, lease)
        with cluster.connect("app") as conn:
            assert conn.execute("select to_regclass('public.leftover_t')").fetchone() == (None,)
            assert conn.execute("select count(*) from pg_roles where rolname = %s",
                                (lease.username,)).fetchone() == (0,)
        assert lease.username not in live_jit_roles(cluster)
    finally:
        with cluster.connect("app") as conn:
            conn.execute("REVOKE CREATE ON SCHEMA public FROM jit_write")


def test_objects_go_to_the_profile_owner_when_it_has_one(cluster: Cluster) -> None:
    with cluster.connect("app") as conn:
        conn.execute("CREATE ROLE app_owner NOLOGIN; GRANT app_owner TO jit_owner;"
                     "GRANT CREATE ON SCHEMA public TO jit_write")
    backend = make_backend(cluster, "owned2", grant=["jit_write"], owner="app_owner")
    lease = request(backend)
    try:
        with login(cluster, lease) as session:
            session.execute("create table made_by_lease (x int)")
        backend.revoke(lease)
        with cluster.connect("app") as conn:
            assert conn.execute("select tableowner from pg_tables where tablename = 'made_by_lease'"
                                ).fetchone() == ("app_owner",)
            conn.execute("drop table made_by_lease")
    finally:
        with cluster.connect("app") as conn:
            conn.execute("REVOKE CREATE ON SCHEMA public FROM jit_write")


def test_revoke_twice_is_harmless(cluster: Cluster) -> None:
    backend = make_backend(cluster)
    lease = request(backend)
    backend.revoke(lease)
    backend.revoke(lease)


def test_a_lease_role_renews_sees_and_revokes_only_its_own_lease(cluster: Cluster) -> None:
    backend = make_backend(cluster)
    lease = request(backend)
    with login(cluster, lease) as own:
        answer = own.execute("select jit.renew(%s, '50 seconds')", (lease.username,)).fetchone()
        assert answer and answer[0]["status"] in ("renewed", "unchanged")
        mine = [row for (row,) in own.execute("select jit.my_leases()")]
        assert [row["rolname"] for row in mine] == [lease.username]  # its own lease, nothing else
        answer = own.execute("select jit.revoke(%s)", (lease.username,)).fetchone()
        assert answer and answer[0]["status"] == "revoked"
        answer = own.execute("select jit.finish(%s)", (lease.username,)).fetchone()
        assert answer and answer[0]["outcome"] == "deferred"  # its own session: the reaper drops it
    assert not can_login(cluster, lease)


def test_unknown_profile_and_denied_requests_are_one_line(cluster: Cluster) -> None:
    backend = PostgresBackend(server_side_profile("no-such-profile"))
    backend.use_session(lambda: Login({"host": cluster.host, "port": str(cluster.port),
                                       "dbname": "app", "user": "alice"}))
    with pytest.raises(PermissionDenied, match="no profile no-such-profile that alice may request"):
        request(backend)


def test_a_login_that_is_no_requester_cannot_even_ask(cluster: Cluster) -> None:
    from tests.conftest import make_login

    make_login(cluster, "not_a_requester")   # a login of its own: other modules make mallory a requester
    backend = make_backend(cluster, "mall", user="not_a_requester")
    with pytest.raises(PermissionDenied, match="not a requester"):
        request(backend)


def test_missing_password_is_one_line_that_says_what_to_do(cluster: Cluster) -> None:
    backend = PostgresBackend(server_side_profile("pg"))
    backend.use_session(lambda: Login({"host": cluster.host, "port": str(cluster.port),
                                       "dbname": "app", "user": "nobody_has_a_pgpass_line",
                                       "passfile": "/nonexistent"}))
    with pytest.raises(NeedsPassword, match="needs a password"):
        request(backend)


def test_the_retired_client_broker_keys_get_one_line(cluster: Cluster) -> None:
    body = {"backend": "postgres", "admin_dsn": "host=db user=jit_broker", "grant": ["x"]}
    with pytest.raises(ConfigError, match="admin_dsn: is no longer used: grants and TTLs are declared"):
        parse_profile("old", body, Path("config.toml"))


def test_a_database_without_the_jit_schema_is_said_so(cluster: Cluster) -> None:
    """-d and the profile's dbname pointing at different databases: the one asked has no
    jit schema.  One line that says so and who installs it (was: schema "jit" does not exist)."""
    backend = make_backend(cluster, dbname="postgres")
    with pytest.raises(BackendUnavailable) as caught:
        request(backend)
    assert "the jit schema is not installed in this database" in str(caught.value)
    assert "pgcli-jit-admin setup" in (caught.value.hint or "")
