"""The http backend against a real local broker (http.server) that mints real roles."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.http import HttpBackend
from pgcli_jit.core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    NotRenewable,
    PermissionDenied,
)
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.cluster import Cluster, free_port
from pgcli_jit.devtools.testing import BackendContract
from pgcli_jit.session.config import parse_profile
from tests.brokers import http_broker
from tests.conftest import can_login

TOKEN = "tok-SUPER-secret-bearer-0123456789"
TOKEN_ENV = "PGCLI_JIT_TEST_HTTP_TOKEN"


@pytest.fixture
def broker(admin_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[http_broker.Broker]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with http_broker.running(admin_dsn, TOKEN) as b:
        yield b


def profile(**options: Any) -> Any:
    return parse_profile("web", {"backend": "http", **options}, Path("config.toml"))


def backend(url: str, **options: Any) -> HttpBackend:
    options.setdefault("token_env", TOKEN_ENV)
    return HttpBackend(profile(url=url, **options))


def ask(b: HttpBackend, ttl: float = 60) -> Lease:
    return b.request(LeaseRequest(ttl=ttl, reason="INC-7 look", requester="alice"))



class TestContract(BackendContract):
    @pytest.fixture(autouse=True)
    def _setup(self, cluster: Cluster, broker: http_broker.Broker) -> None:
        self.cluster, self.broker = cluster, broker

    def make_backend(self) -> HttpBackend:
        return backend(self.broker.url, max_ttl="10m")

    def can_login(self, lease: Lease) -> bool:
        return can_login(self.cluster, lease)


def test_request_sends_the_protocol_and_the_token(cluster: Cluster, broker: http_broker.Broker) -> None:
    b = backend(broker.url + "/")
    lease = ask(b, ttl=90.5)
    try:
        path, headers, body = broker.requests[-1]
        assert path == "/v1/credentials"
        assert body == {"profile": "web", "ttl": 91, "reason": "INC-7 look", "requester": "alice"}
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["Content-Type"] == "application/json"
        assert lease.lease_id == lease.username and lease.renewable
        assert lease.expires_at == pytest.approx(time.time() + 90.5, abs=3)
        assert can_login(cluster, lease)
        assert TOKEN not in repr(b)
    finally:
        b.revoke(lease)
    assert broker.requests[-1][0] == "/v1/revoke"
    assert broker.requests[-1][2] == {"lease_id": lease.lease_id, "username": lease.username}
    assert not can_login(cluster, lease)


def test_renew_then_revoke(cluster: Cluster, broker: http_broker.Broker) -> None:
    b = backend(broker.url)
    lease = ask(b)
    renewed = b.renew(lease, 600)
    assert broker.requests[-1][2] == {"lease_id": lease.lease_id, "username": lease.username, "ttl": 600}
    assert renewed.expires_at == pytest.approx(time.time() + 600, abs=3)
    assert renewed.credentials == lease.credentials and can_login(cluster, renewed)
    b.revoke(renewed)
    b.revoke(renewed)  # the broker says 204 again; 404/410 would be fine too
    with pytest.raises(NotRenewable, match=r"HTTP 410: role .* no longer exists"):
        b.renew(renewed, 60)


def test_token_file_is_read_at_call_time(broker: http_broker.Broker, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("stale-token\n")
    b = HttpBackend(profile(url=broker.url, token_file=str(token_file)))
    with pytest.raises(PermissionDenied, match="HTTP 401") as info:
        ask(b)
    assert "stale-token" not in str(info.value)
    token_file.write_text(TOKEN + "\n")
    b.revoke(ask(b))


def test_missing_token_sources(broker: http_broker.Broker, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(PermissionDenied, match=f"\\${TOKEN_ENV} \\(token_env\\) is not set"):
        ask(backend(broker.url))
    with pytest.raises(PermissionDenied, match="cannot read token_file"):
        ask(HttpBackend(profile(url=broker.url, token_file=str(tmp_path / "nope"))))
    assert not broker.requests


@pytest.mark.parametrize(("status", "body", "cls", "text"), [
    (500, {"error": "database down"}, BackendError, "HTTP 500: database down \\(the server failed"),
    (403, {"errors": ["not on call", "ask #dba"]}, PermissionDenied, "HTTP 403: not on call; ask #dba"),
    (401, {"errors": [f"bad token {TOKEN}"]}, PermissionDenied, "HTTP 401: bad token \\*\\*\\*"),
    (503, b"<html>maintenance</html>", BackendUnavailable, "HTTP 503: Service Unavailable"),
    (302, None, BackendError, "HTTP 302"),
    (200, b"not json", BackendError, "HTTP 200: the answer is not JSON"),
    (200, {"version": 1, "username": "u", "ttl": 5}, BackendError, '"password" is missing'),
])
def test_broker_errors_become_one_line(broker: http_broker.Broker, status: int, body: Any,
                                       cls: type[BackendError], text: str) -> None:
    broker.force["/credentials"] = (status, body)
    with pytest.raises(cls, match=text) as info:
        ask(backend(broker.url))
    assert type(info.value) is cls
    assert TOKEN not in str(info.value) and "\n" not in str(info.value)


def test_renew_409_means_rotate_and_a_new_password_may_come_back(broker: http_broker.Broker) -> None:
    b = backend(broker.url)
    lease = ask(b)
    try:
        broker.force["/renew"] = (409, {"error": "max TTL reached"})
        with pytest.raises(NotRenewable, match="HTTP 409: max TTL reached"):
            b.renew(lease, 60)
        broker.force["/renew"] = (200, {"version": 1, "password": "rotated-pw", "ttl": 120})
        renewed = b.renew(lease, 60)
        assert renewed.username == lease.username and renewed.credentials.password == "rotated-pw"
        broker.force["/renew"] = (200, {"version": 1, "username": "other", "ttl": 120})
        with pytest.raises(BackendError, match="different username"):
            b.renew(lease, 60)
    finally:
        del broker.force["/renew"]
        b.revoke(lease)


def test_revoke_of_an_unknown_lease_is_done_but_a_failure_is_not(broker: http_broker.Broker) -> None:
    b = backend(broker.url)
    lease = ask(b)
    try:
        broker.force["/revoke"] = (404, {"errors": ["no such lease"]})
        b.revoke(lease)
        broker.force["/revoke"] = (500, {"errors": ["boom"]})
        with pytest.raises(BackendError, match="HTTP 500: boom"):
            b.revoke(lease)
    finally:
        del broker.force["/revoke"]
        b.revoke(lease)


def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts the connection; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"no answer from .* within 0.5s") as info:
            ask(backend(url, timeout=0.5))
    assert time.monotonic() - started < 3
    assert TOKEN not in str(info.value)


def test_connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with pytest.raises(BackendUnavailable, match=r"cannot connect to http://127.0.0.1") as info:
        ask(backend(f"http://127.0.0.1:{free_port()}/v1"))
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(("options", "message"), [
    ({}, "url: missing"),
    ({"url": "http://jit.example.com"}, "only allowed to a loopback address"),
    ({"url": "ftp://jit.example.com"}, "must be an http"),
    ({"url": "https://user:pw@jit.example.com"}, "must not hold credentials"),
    ({"url": "https://jit.example.com?token=x"}, "must not hold credentials"),
    ({"url": "https://jit.example.com", "allow_http": "yes"}, "allow_http: must be true or false"),
    ({"url": "https://jit.example.com", "token_env": "A", "token_file": "/t"}, "both set"),
    ({"url": "https://jit.example.com", "timeout": "-1"}, "timeout"),
    ({"url": "https://jit.example.com", "token": "x"}, "unknown key"),
])
def test_bad_profiles_are_refused_at_config_time(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        profile(**options)


def test_good_profiles() -> None:
    assert profile(url="http://jit.internal", allow_http=True).options["allow_http"] is True
    assert profile(url="http://[::1]:8080/v1").options["url"] == "http://[::1]:8080/v1"
    p = profile(url="https://jit.example.com", ca_cert="~/ca.pem", timeout="5s", token_file="~/t")
    assert HttpBackend(p).timeout == 5


def test_a_token_with_a_line_break_is_refused_without_quoting_it(
        broker: http_broker.Broker, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("SECRET-first-line\nSECRET-second-line\n")
    b = HttpBackend(profile(url=broker.url, token_file=str(token_file)))
    with pytest.raises(PermissionDenied, match="spaces or control characters") as info:
        ask(b)
    assert "SECRET" not in str(info.value)
