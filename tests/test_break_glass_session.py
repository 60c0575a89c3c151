"""``\\jit request PROFILE --break-glass`` in the session: what the shell checks before asking
(a backend that carries it, a reason, no open transaction) and that the backend is asked with
``break_glass`` set; a fake backend and a connector that records, no database."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import pytest

from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.core.errors import JitError, UsageError
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session import commands
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config
from pgcli_jit.session.controller import Controller
from pgcli_jit.session.manager import LeaseManager
from tests.fakes import FaultyBackend, RecordingConnector, faulty_profile


class GlassBackend(FaultyBackend):
    """Records what it was asked; carries break-glass when ``offers_break_glass``."""

    offers_break_glass: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[LeaseRequest] = []

    def request(self, req: LeaseRequest) -> Lease:
        self.asked.append(req)
        return super().request(req)


class PlainBackend(GlassBackend):
    offers_break_glass: ClassVar[bool] = False


def world(tmp_path: Path, backend: type[GlassBackend]) -> tuple[Controller, list[GlassBackend],
                                                                 RecordingConnector]:
    profile = faulty_profile(ttl=900.0, renew="never")
    config = Config(tmp_path / "c.toml", MappingProxyType({profile.name: profile}), None,
                    tmp_path / "audit.jsonl")
    made: list[GlassBackend] = []

    def factory(p: Any, clock: Any) -> GlassBackend:
        made.append(backend(p, clock=clock))
        return made[-1]

    manager = LeaseManager(config, AuditLog(tmp_path / "audit.jsonl", clock=FakeClock(1.8e9)),
                           "alice", clock=FakeClock(1.8e9), backend_factory=factory)
    connector = RecordingConnector()
    return Controller(manager, connector, lambda _text: None), made, connector


def run(jit: Controller, line: str) -> str:
    return str(commands.run(jit, commands.parse(line))[3])


def test_break_glass_asks_the_backend_with_the_flag_and_switches(tmp_path: Path) -> None:
    jit, made, _ = world(tmp_path, GlassBackend)
    said = run(jit, '\\jit request fake --break-glass --reason "INC-7 down"')
    assert said.startswith("Break-glass: ") and jit.lease is not None
    assert [(r.break_glass, r.reason) for r in made[0].asked] == [(True, "INC-7 down")]
    run(jit, "\\jit request fake --reason plain")
    assert made[0].asked[-1].break_glass is False


def test_break_glass_needs_a_reason_and_asks_nothing_without_one(tmp_path: Path) -> None:
    jit, made, _ = world(tmp_path, GlassBackend)
    with pytest.raises(UsageError, match="break-glass needs a reason"):
        run(jit, "\\jit request fake --break-glass")
    assert not made or made[0].asked == []


def test_a_backend_that_cannot_carry_it_is_never_asked(tmp_path: Path) -> None:
    jit, made, _ = world(tmp_path, PlainBackend)
    with pytest.raises(UsageError, match="--break-glass is for server profiles; fake uses the faulty"):
        run(jit, '\\jit request fake --break-glass --reason "INC-7"')
    assert made[0].asked == []


def test_refused_inside_an_open_transaction(tmp_path: Path) -> None:
    jit, made, connector = world(tmp_path, GlassBackend)
    connector.transaction = True
    with pytest.raises(JitError, match="a transaction is open"):
        run(jit, '\\jit request fake --break-glass --reason "INC-7"')
    assert not made or made[0].asked == []
