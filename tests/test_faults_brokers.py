"""Faults of the http and vault backends at request, renew and revoke, through the Controller.

Real servers throughout: the http broker is ``http.server`` minting real roles on
the session cluster, told to answer wrongly on purpose (500, HTML, a huge body,
missing fields, wrong types, an expired or negative TTL); a listener that never
answers and a port nobody listens on are real sockets.  Vault is a real OpenBao
dev server of this module's own, sealed, killed, its token and lease revoked.
Only the clock that places the lease in its renewal windows is fake.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from pgcli_jit.core.errors import JitError
from pgcli_jit.core.policy import Phase, windows
from pgcli_jit.devtools.cluster import Cluster, free_port
from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config, parse_profile
from pgcli_jit.session.controller import Controller
from pgcli_jit.session.manager import LeaseManager
from tests.brokers import http_broker
from tests.conftest import can_login
from tests.test_controller import PsycopgConnector

pytestmark = pytest.mark.faults

TOKEN = "tok-faults-bearer-0123456789abcdef"
TOKEN_ENV = "PGCLI_JIT_FAULTS_TOKEN"


class World:
    """A Controller over one profile, a plain psycopg connector, a fake clock."""

    def __init__(self, cluster: Cluster, tmp_path: Path, name: str, keys: dict[str, Any]) -> None:
        body = {"host": cluster.host, "port": cluster.port, "dbname": "app", "ttl": "10m",
                "timeout": "2s", **keys}
        self.profile = parse_profile(name, body, tmp_path / "config.toml")
        self.audit_path = tmp_path / "audit.jsonl"
        config = Config(tmp_path / "config.toml", MappingProxyType({name: self.profile}), None,
                        self.audit_path)
        self.clock = FakeClock(time.time())
        self.manager = LeaseManager(config, AuditLog(self.audit_path, clock=self.clock), "faults",
                                    clock=self.clock)
        self.connector = PsycopgConnector(None, {"host": cluster.host, "port": str(cluster.port),
                                                 "dbname": "app"})
        self.said: list[str] = []
        self.controller = Controller(self.manager, self.connector, self.said.append)

    def close(self) -> None:
        self.controller.jobs.shutdown()
        self.connector.close()


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text and len(text) < 600
    return text


def renew_fails_in_window_then_final(w: World) -> None:
    """Early in the window a failed renewal keeps the lease; in the final part it says access
    ends; at expiry the connection is closed and statements are refused."""
    lease = w.controller.lease
    assert lease is not None
    window, final, end = windows(lease, w.profile.renew_before)
    w.clock.set((window + final) / 2)
    assert w.manager.phase() is Phase.WINDOW
    w.controller.accept_offer()
    w.controller.settle()
    assert w.controller.lease is lease and w.controller.gate() is None
    assert w.connector.query("select current_user") == lease.username
    assert any("Keeping the current lease" in s for s in w.said), w.said
    w.clock.set((final + end) / 2)
    w.controller.accept_offer()
    w.controller.settle()
    assert any("JIT access ends at" in s for s in w.said), w.said
    w.clock.set(lease.expires_at + 1)
    assert (w.controller.gate() or "").startswith("JIT access expired")
    assert w.connector.conn is not None and w.connector.conn.closed


# -- http ----------------------------------------------------------------------------------


@pytest.fixture
def broker(admin_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[http_broker.Broker]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with http_broker.running(admin_dsn, TOKEN) as b:
        yield b


@pytest.fixture
def web(cluster: Cluster, tmp_path: Path, broker: http_broker.Broker) -> Iterator[World]:
    w = World(cluster, tmp_path, "web", {"backend": "http", "url": broker.url, "token_env": TOKEN_ENV,
                                         "allow_http": True})
    yield w
    w.close()


GOOD = {"version": 1, "username": "jit_never_made", "password": "pw-never-used-123"}
ANSWERS: dict[str, tuple[int, Any]] = {
    "500": (500, {"errors": ["internal error"]}),
    "html": (200, b"<html><body>Bad gateway</body></html>"),
    "huge": (200, b"{" + b" " * (5 << 20) + b"}"),
    "missing fields": (200, {"version": 1, "username": "jit_x"}),
    "wrong types": (200, {**GOOD, "username": 5, "ttl": "soon"}),
    "expired ttl": (200, {**GOOD, "ttl": 0}),
    "negative ttl": (200, {**GOOD, "ttl": -30}),
    "expired at": (200, {**GOOD, "expires_at": "2001-01-01T00:00:00Z"}),
}


@pytest.mark.parametrize("kind", sorted(ANSWERS))
def test_http_bad_answer_at_request(web: World, broker: http_broker.Broker, kind: str) -> None:
    broker.force["/credentials"] = ANSWERS[kind]
    with pytest.raises(JitError) as caught:
        web.controller.request(None, None, "INC-1")
    assert one_line(caught.value).startswith("http backend (profile web)")
    assert web.controller.lease is None and web.connector.conn is None
    assert "pw-never-used-123" not in web.audit_path.read_text()


def _listener_that_never_answers() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)  # accepted by the kernel, never read
    return sock


def test_http_broker_down_or_hanging_at_request(cluster: Cluster, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    hang = _listener_that_never_answers()
    try:
        for kind, url in (("down", f"http://127.0.0.1:{free_port()}/v1"),
                          ("hang", f"http://127.0.0.1:{hang.getsockname()[1]}/v1")):
            w = World(cluster, tmp_path / kind, "web", {"backend": "http", "url": url,
                                                        "token_env": TOKEN_ENV, "allow_http": True})
            started = time.monotonic()
            with pytest.raises(JitError) as caught:
                w.controller.request(None, None, "")
            assert time.monotonic() - started < 30  # the 2 s timeout, with room for a busy machine
            text = one_line(caught.value)
            assert ("within 2s" in text) if kind == "hang" else ("127.0.0.1" in text), text
            assert w.controller.lease is None
            w.close()
    finally:
        hang.close()


@pytest.mark.parametrize("kind", ["500", "html", "wrong types", "expired ttl"])
def test_http_bad_answer_at_renew_keeps_the_lease_then_ends_access(web: World, broker: http_broker.Broker,
                                                                    kind: str) -> None:
    web.controller.request(None, None, "")
    broker.force["/renew"] = ANSWERS[kind]
    renew_fails_in_window_then_final(web)
    broker.force.clear()
    assert web.controller.shutdown() is None  # the expiry's revoke ran behind it


def test_http_revoke_failure_is_reported_and_the_role_ends_at_expiry(
        web: World, broker: http_broker.Broker, cluster: Cluster) -> None:
    web.controller.request(None, None, "")
    lease = web.controller.lease
    assert lease is not None
    broker.force["/revoke"] = (503, {"errors": ["maintenance"]})
    with pytest.raises(JitError) as caught:
        web.controller.revoke()
    assert one_line(caught.value).startswith("revoke failed: http backend (profile web)")
    assert "end at their expiry" in str(caught.value)
    assert web.controller.lease is None and web.connector.conn is not None and web.connector.conn.closed
    assert '"revoked": false' in web.audit_path.read_text()
    broker.force.clear()
    with cluster.connect() as conn:  # only the broker can end it; the test's cleanup does
        conn.execute(f'DROP ROLE IF EXISTS "{lease.username}"'.encode())


# -- vault ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bao(cluster: Cluster) -> Iterator[Any]:
    """An OpenBao server only this module seals and kills."""
    from tests import openbao

    with openbao.running_vault(cluster) as vault:
        yield vault


def vault_world(bao: Any, cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                token: str | None = None) -> World:
    monkeypatch.setenv("VAULT_TOKEN", token or bao.user_token)
    monkeypatch.delenv("BAO_TOKEN", raising=False)
    return World(cluster, tmp_path, "v", {"backend": "vault", "role": "ro", "addr": bao.server.addr,
                                          "ttl": "2m", "allow_http": True})


def test_vault_sealed_at_renew_and_request(bao: Any, cluster: Cluster, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import openbao

    own = openbao.Vault(openbao.start_bao(openbao.bao_binary() or "bao"), cluster)  # sealed for good
    try:
        w = vault_world(own, cluster, tmp_path, monkeypatch)
        w.controller.request(None, None, "")
        lease = w.controller.lease
        assert lease is not None
        own.server.ok("PUT", "sys/seal")
        renew_fails_in_window_then_final(w)
        assert any("sealed" in s.lower() or "503" in s for s in w.said), w.said
        with pytest.raises(JitError) as caught:
            w.controller.request(None, None, "")
        assert "vault backend" in one_line(caught.value)
        w.close()
    finally:
        own.server.stop()
        with cluster.connect() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{lease.username}"'.encode())


def test_vault_token_revoked_is_denied_and_the_lease_kept(bao: Any, cluster: Cluster, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.openbao import USER_POLICY, create_token

    token = create_token(bao.server, "jit-user-revoked", USER_POLICY)
    w = vault_world(bao, cluster, tmp_path, monkeypatch, token)
    w.controller.request(None, None, "")
    lease = w.controller.lease
    assert lease is not None
    bao.server.ok("PUT", "auth/token/revoke", json={"token": token})
    w.clock.set(lease.expires_at - 50)
    w.controller.accept_offer()
    w.controller.settle()
    assert w.controller.lease is lease and any("Keeping the current lease" in s for s in w.said), w.said
    assert any("denied" in s.lower() or "403" in s for s in w.said), w.said
    deadline = time.monotonic() + 30  # OpenBao revokes the token's leases with it, in the background
    while can_login(cluster, lease) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not can_login(cluster, lease)
    w.close()


def test_vault_lease_not_found_at_renew_gets_fresh_credentials(bao: Any, cluster: Cluster, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    w = vault_world(bao, cluster, tmp_path, monkeypatch)
    w.controller.request(None, None, "")
    lease = w.controller.lease
    assert lease is not None
    bao.server.ok("PUT", "sys/leases/revoke", json={"lease_id": lease.lease_id})  # gone behind our back
    w.clock.set(lease.expires_at - 50)
    message = w.controller.renew(None)
    new = w.controller.lease
    assert new is not None and new.username != lease.username, message
    assert message.startswith(f"Rotated to {new.username}")
    assert w.connector.query("select current_user") == new.username
    w.controller.revoke()
    w.close()


def test_vault_killed_at_renew_and_revoke(bao: Any, cluster: Cluster, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Last in this module: the server is killed for good."""
    w = vault_world(bao, cluster, tmp_path, monkeypatch)
    w.controller.request(None, None, "")
    lease = w.controller.lease
    assert lease is not None
    bao.server.proc.kill()
    bao.server.proc.wait(10)
    w.clock.set(lease.expires_at - 50)
    w.controller.accept_offer()
    w.controller.settle()
    assert w.controller.lease is lease and any("Keeping the current lease" in s for s in w.said), w.said
    with pytest.raises(JitError) as caught:
        w.controller.revoke()
    assert one_line(caught.value).startswith("revoke failed: vault backend")
    with cluster.connect() as conn:  # with its server gone, nothing else will
        conn.execute(f'DROP ROLE IF EXISTS "{lease.username}"'.encode())
    w.close()
