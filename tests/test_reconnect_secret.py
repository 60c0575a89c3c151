"""Backends with per-connection secrets (IAM tokens): pgcli's auto-reconnect gets a fresh one."""

from __future__ import annotations

from types import MappingProxyType
from typing import ClassVar

from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config
from pgcli_jit.session.controller import Controller
from pgcli_jit.session.manager import LeaseManager
from tests.fakes import FaultyBackend, RecordingConnector, faulty_profile


class TokenBackend(FaultyBackend):
    fresh_secret_per_connection: ClassVar[bool] = True


def make(backend_cls: type[FaultyBackend]) -> tuple[Controller, RecordingConnector, FakeClock]:
    clock = FakeClock()
    profile = faulty_profile(ttl=900.0)
    config = Config(profile.source, MappingProxyType({profile.name: profile}), None, profile.source)  # type: ignore[arg-type]
    manager = LeaseManager(config, AuditLog(None), "tester", clock=clock,
                           backend_factory=lambda p, c: _with_new_secrets(backend_cls(p, clock=c)))
    connector = RecordingConnector()
    return Controller(manager, connector, lambda _text: None), connector, clock


def _with_new_secrets(backend: FaultyBackend) -> FaultyBackend:
    backend.new_secret_on_renew = True
    return backend


def test_reconnect_gets_a_fresh_token_for_the_same_user() -> None:
    controller, connector, clock = make(TokenBackend)
    controller.request(None, None, "r")
    first = controller.lease
    clock.advance(600)  # the original token is stale by now
    controller.refresh_for_reconnect()
    assert controller.lease is not None and first is not None
    assert controller.lease.username == first.username
    assert connector.secrets[-1] == controller.lease.credentials.password != first.credentials.password


def test_ordinary_backends_reconnect_with_what_they_have() -> None:
    controller, connector, _clock = make(FaultyBackend)
    controller.request(None, None, "r")
    controller.refresh_for_reconnect()
    assert len(connector.secrets) == 1  # only the switch at request time
