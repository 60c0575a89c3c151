"""The requester's side of four eyes in the controller, with a backend whose requests wait
for a decision the test makes, a fake clock and a connector that records: no database."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from pgcli_jit.backends.base import ApprovalPending, LeaseRequest, PendingRequest
from pgcli_jit.core.errors import JitError, RequestClosed
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config
from pgcli_jit.session.controller import Controller
from pgcli_jit.session.manager import LeaseManager
from tests.fakes import FaultyBackend, RecordingConnector, faulty_profile

T0 = 1_800_000_000.0


class WaitingBackend(FaultyBackend):
    """Every request waits; ``decision`` ("approve", "deny", "time out") settles the next poll."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decision: str | None = None
        self.asked: LeaseRequest | None = None
        self.cancelled: list[str] = []
        self.polls = 0

    def request(self, req: LeaseRequest) -> Lease:
        self.asked = req
        raise ApprovalPending(PendingRequest("17", self.profile.name, self.name, self.clock(),
                                             approvers="jit_leads", reason=req.reason))

    def poll(self, pending: PendingRequest) -> Lease | PendingRequest:
        self.polls += 1
        if self.decision == "approve":
            assert self.asked is not None
            return super().request(self.asked)
        if self.decision in ("deny", "time out"):
            state = "denied" if self.decision == "deny" else "timed_out"
            raise RequestClosed("closed", state=state, decided_by="bob", note="not during the freeze")
        return pending

    def cancel(self, pending: PendingRequest) -> None:
        self.cancelled.append(pending.request_id)


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(T0)
        profile = faulty_profile(ttl=900.0, renew="never")
        self.audit_path = tmp_path / "audit.jsonl"
        config = Config(tmp_path / "c.toml", MappingProxyType({profile.name: profile}), None, self.audit_path)
        self.manager = LeaseManager(config, AuditLog(self.audit_path, clock=self.clock), "alice",
                                    clock=self.clock, backend_factory=self._backend)
        self.backend: WaitingBackend | None = None
        self.connector = RecordingConnector()
        self.said: list[str] = []
        self.controller = Controller(self.manager, self.connector, self.said.append)

    def _backend(self, profile, clock):  # type: ignore[no-untyped-def]
        self.backend = WaitingBackend(profile, clock=clock)
        return self.backend

    def beat(self, seconds: float = 1.0) -> None:
        """One idle second: the poll goes to the worker, its answer is applied on the next beat."""
        self.clock.advance(seconds)
        self.controller.step()
        self.controller.submit(lambda: None).result()  # the worker has finished the poll
        self.controller.step()

    def events(self) -> list[str]:
        return [json.loads(line)["event"] for line in self.audit_path.read_text().splitlines()]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_request_answers_at_once_and_switches_when_approved(world: World) -> None:
    line = world.controller.request(None, None, "INC-42")
    assert line.startswith("Request 17 for fake is waiting for approval by jit_leads; keep working")
    assert world.connector.users == [] and world.controller.lease is None
    world.beat()
    assert world.controller.approvals.waiting is not None
    assert world.backend is not None
    world.backend.decision = "approve"
    world.beat()
    assert world.controller.lease is not None and world.connector.users == [world.controller.lease.username]
    assert world.said[-1].startswith("Approved by an approver: connected as jit_fake_")
    assert world.controller.approvals.waiting is None
    assert world.events() == ["pending", "request"]


def test_approval_inside_a_transaction_waits_and_says_so_once(world: World) -> None:
    world.controller.request(None, None, "")
    assert world.backend is not None
    world.backend.decision = "approve"
    world.connector.transaction = True
    for _ in range(3):
        world.beat()
    assert world.connector.users == []
    assert sum("switches when the open transaction ends" in s for s in world.said) == 1
    world.connector.transaction = False
    world.beat()
    assert len(world.connector.users) == 1


@pytest.mark.parametrize(("decision", "says"), [
    ("deny", "Request 17 denied by bob: not during the freeze"),
    ("time out", "Request 17 for fake timed out: nobody approved it in time.")])
def test_denial_and_timeout_are_said_once(world: World, decision: str, says: str) -> None:
    world.controller.request(None, None, "")
    assert world.backend is not None
    world.backend.decision = decision
    for _ in range(3):
        world.beat()
    assert world.said.count(says) == 1 and world.controller.approvals.waiting is None
    assert world.connector.users == []


def test_one_request_at_a_time_cancel_and_shutdown(world: World) -> None:
    world.controller.request(None, None, "")
    with pytest.raises(JitError, match="still waiting for approval"):
        world.controller.request(None, None, "")
    assert world.controller.cancel() == "Request 17 for fake withdrawn."
    assert world.controller.cancel() == "No request is waiting for approval."
    world.controller.request(None, None, "")
    world.controller.shutdown()
    assert world.backend is not None and world.backend.cancelled == ["17", "17"]


def test_granted_while_waiting_for_a_transaction_then_cancelled_is_revoked(world: World) -> None:
    world.controller.request(None, None, "")
    assert world.backend is not None
    world.backend.decision = "approve"
    world.connector.transaction = True
    world.beat()
    granted = world.backend.requests[-1]
    assert "revoked unused" in world.controller.cancel()
    assert world.backend.revoked == [granted] and world.connector.users == []
