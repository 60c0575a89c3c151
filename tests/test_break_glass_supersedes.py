"""``\\jit request PROFILE --break-glass`` while this session's request for PROFILE waits: the
break-glass lease takes its place, the waiting request is withdrawn and said so; a fake backend
whose plain requests wait and whose break-glass is granted, no database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.core.errors import JitError
from pgcli_jit.core.lease import Lease
from pgcli_jit.session import commands
from tests.test_approvals_controller import WaitingBackend, World


class GlassWaitingBackend(WaitingBackend):
    """Plain requests wait for approval; break-glass is granted at once."""

    offers_break_glass: ClassVar[bool] = True

    def request(self, req: LeaseRequest) -> Lease:
        if req.break_glass:
            return super(WaitingBackend, self).request(req)
        return super().request(req)


class GlassWorld(World):
    def _backend(self, profile, clock):  # type: ignore[no-untyped-def]
        self.backend = GlassWaitingBackend(profile, clock=clock)
        return self.backend


@pytest.fixture
def world(tmp_path: Path) -> GlassWorld:
    return GlassWorld(tmp_path)


def run(world: World, line: str) -> str:
    return str(commands.run(world.controller, commands.parse(line))[3])


def backend(world: World) -> GlassWaitingBackend:
    """The profile's backend (the session also builds one to ask the server for its profiles)."""
    found = world.manager.backend_for(world.manager.config.profiles["fake"])
    assert isinstance(found, GlassWaitingBackend)
    return found


def events(world: World) -> list[dict[str, Any]]:
    return [json.loads(line) for line in world.audit_path.read_text().splitlines()]


def test_break_glass_takes_the_place_of_the_waiting_request(world: GlassWorld) -> None:
    assert "is waiting for approval" in run(world, '\\jit request fake --reason "INC-7 slow path"')
    world.beat()  # a poll on the worker, as in a live session
    said = run(world, '\\jit request fake --break-glass --reason "INC-7 db down"')
    assert said.startswith("Break-glass: Connected as ")
    assert said.endswith("Request 17 for fake was withdrawn: break-glass took its place.")
    assert world.controller.approvals.waiting is None and world.controller.lease is not None
    assert backend(world).cancelled == ["17"]
    cancel = [e for e in events(world) if e["event"] == "cancel"]
    assert cancel[-1]["request_id"] == "17" and cancel[-1]["why"] == "break-glass"
    # an approval that comes anyway is never switched in
    backend(world).decision = "approve"
    world.beat()
    assert world.controller.handover.approval() is None


def test_a_refused_break_glass_leaves_the_request_waiting(world: GlassWorld,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run(world, "\\jit request fake")

    def refuse(req: LeaseRequest) -> Lease:
        raise JitError("profile fake does not allow break-glass")

    monkeypatch.setattr(backend(world), "request", refuse)
    with pytest.raises(JitError, match="does not allow break-glass"):
        run(world, '\\jit request fake --break-glass --reason "INC-7"')
    assert world.controller.approvals.waiting is not None and backend(world).cancelled == []
