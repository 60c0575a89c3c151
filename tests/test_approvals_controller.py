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


# -- a second request, and what the toolbar says ---------------------------------------------


class TwoProfiles(World):
    """``fake`` waits for approval; ``quick`` and ``other`` are granted at once unless told."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        profiles = {p.name: p for p in (faulty_profile(ttl=900.0, renew="never"),
                                        faulty_profile("quick", ttl=900.0, renew="never"),
                                        faulty_profile("other", ttl=900.0, renew="never"))}
        self.manager.config = Config(tmp_path / "c.toml", MappingProxyType(profiles), None, self.audit_path)
        self.waits = {"fake"}

    def _backend(self, profile, clock):  # type: ignore[no-untyped-def]
        if profile.name not in self.waits:
            return FaultyBackend(profile, clock=clock)
        backend = WaitingBackend(profile, clock=clock)
        if profile.name == "fake":
            self.backend = backend
        return backend


def test_a_request_for_another_profile_goes_ahead_while_one_waits(tmp_path: Path) -> None:
    """A waiting request blocked every other one; now only asking again for its profile is refused,
    and the waiting request still switches in when approved (the user has not withdrawn it)."""
    world = TwoProfiles(tmp_path)
    world.controller.request("fake", None, "")
    line = world.controller.request("quick", None, "")
    assert line.startswith("Connected as jit_fake_") and line.endswith("(quick).")
    assert world.controller.approvals.waiting is not None
    with pytest.raises(JitError, match="request 17 for fake is still waiting for approval"):
        world.controller.request("fake", None, "")
    assert world.backend is not None
    world.backend.decision = "approve"
    world.beat()
    lease = world.controller.lease
    assert lease is not None and lease.profile == "fake" and world.controller.approvals.waiting is None
    assert "Revoked the previous lease" in world.said[-1]


def test_a_second_request_that_needs_approval_is_withdrawn_and_the_first_waits(tmp_path: Path) -> None:
    world = TwoProfiles(tmp_path)
    world.waits.add("other")
    world.controller.request("fake", None, "")
    with pytest.raises(JitError, match="one request waits at a time") as refused:
        world.controller.request("other", None, "")
    assert "request 17 was withdrawn" in str(refused.value)
    other = world.manager.backend_for(world.manager.config.profiles["other"])
    assert isinstance(other, WaitingBackend) and other.cancelled == ["17"]
    waiting = world.controller.approvals.waiting
    assert waiting is not None and waiting.profile.name == "fake"


def test_the_toolbar_says_approved_while_the_switch_waits_for_commit(world: World) -> None:
    from pgcli_jit.shell.jitshell import JitShell

    shell = JitShell.__new__(JitShell)  # no pgcli start-up: only the toolbar is read
    shell._jit = world.controller
    world.controller.request(None, None, "")
    world.beat()
    assert "JIT fake pending 0:0" in "".join(text for _, text in shell.toolbar_tokens())
    assert world.backend is not None
    world.backend.decision = "approve"
    world.connector.transaction = True
    world.beat()
    toolbar = "".join(text for _, text in shell.toolbar_tokens())
    assert "JIT fake approved, waiting for COMMIT" in toolbar and "pending" not in toolbar


def test_an_approved_lease_replaces_a_waiting_rotation_and_status_shows_it(tmp_path: Path) -> None:
    """One lease waits to be switched in: the approved one outranks a rotation of the lease it
    replaces (revoked unused), ``\\jit status`` says what waits and why, COMMIT switches."""
    from pgcli_jit.session.commands import parse, run

    world = TwoProfiles(tmp_path)
    world.controller.request("quick", None, "")
    quick = world.controller.lease
    assert quick is not None
    world.controller.request("fake", None, "INC-7")
    world.connector.transaction = True
    rotating = world.manager.backend_for(world.manager.config.profiles["quick"])
    assert isinstance(rotating, FaultyBackend)
    rotating.not_renewable = True
    world.clock.advance(700)
    assert "when the open transaction ends" in world.controller.renew(None, rotate=True)
    rotation = world.controller.waiting_lease()
    assert rotation is not None
    assert world.backend is not None
    world.backend.decision = "approve"
    world.beat()
    assert world.controller.waiting_lease() is None and rotation in rotating.revoked
    granted = world.controller.handover.approval()
    assert granted is not None and granted.request_id == "17"
    rows = {str(k): str(v) for k, v in run(world.controller, parse("\\jit status"))[1] or []}
    assert rows["approved"] == "request 17 (fake) by an approver"
    assert rows["waiting to switch in"].startswith(granted.lease.username)
    world.connector.transaction = False
    world.beat()
    lease = world.controller.lease
    assert lease is granted.lease and world.controller.handover.incoming is None
    assert quick in rotating.revoked


def test_no_credentials_are_minted_for_a_lease_an_approved_one_replaces(tmp_path: Path) -> None:
    """While an approved lease waits for COMMIT, the lease it replaces is only extended: a
    rotation would mint credentials the approval makes moot (revoked unused, every minute)."""
    world = TwoProfiles(tmp_path)
    quick = faulty_profile("quick", ttl=900.0, renew="auto")
    profiles = {**world.manager.config.profiles, "quick": quick}
    world.manager.config = Config(tmp_path / "c.toml", MappingProxyType(profiles), None, world.audit_path)
    world.controller.request("quick", None, "")
    world.controller.request("fake", None, "")
    rotating = world.manager.backend_for(quick)
    assert isinstance(rotating, FaultyBackend)
    rotating.not_renewable = True
    world.connector.transaction = True
    assert world.backend is not None
    world.backend.decision = "approve"
    world.beat()
    assert world.controller.handover.approval() is not None
    minted = len(rotating.requests)
    for _ in range(4):  # through the window, past several retry intervals
        world.beat(200.0)
    assert len(rotating.requests) == minted and world.controller.waiting_lease() is None
    line = world.controller.renew(None, rotate=True)
    assert line.startswith("Not renewed: request 17 was approved and switches in when the open transaction")
    assert len(rotating.requests) == minted


# -- the approver's refusals ------------------------------------------------------------------


class RefusingApprover:
    def waiting_for_me(self) -> list[Any]:
        return []

    def approves_any(self) -> bool:
        return True

    def decide(self, request_id: int, approve: bool, text: str) -> dict[str, Any]:
        from pgcli_jit.core.errors import PermissionDenied

        raise PermissionDenied(f"no request {request_id} that you may decide", backend="postgres",
                               profile="read")


def test_a_refused_decision_names_no_unrelated_profile(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = world.controller.approvals
    monkeypatch.setattr(flow, "approver", RefusingApprover)
    with pytest.raises(JitError) as refused:
        flow.decide(999, True, "")
    said = "no request 999 that you may decide (\\jit pending lists what you may decide)"
    assert str(refused.value) == said


# -- --jit waiting at start-up ------------------------------------------------------------------


class SlowApproval(WaitingBackend):
    """Pending for ``polls_left`` polls (a second approval arrives half way), then granted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.polls_left = 6

    def poll(self, pending: PendingRequest) -> Lease | PendingRequest:
        self.polls_left -= 1
        if self.polls_left:
            import dataclasses

            return dataclasses.replace(pending, approvals=1 if self.polls_left < 3 else 0, needed=2)
        self.decision = "approve"
        return super().poll(pending)


def _wait(tmp_path: Path, out: Any, width: int | None, monkeypatch: pytest.MonkeyPatch) -> Lease:
    from pgcli_jit.session import approvals

    clock = FakeClock(T0)
    backend = SlowApproval(faulty_profile(), clock=clock)
    with pytest.raises(ApprovalPending) as asked:
        backend.request(LeaseRequest(900.0, "", "alice"))
    monkeypatch.setattr(approvals, "terminal_width", lambda out: width)
    return approvals.wait_at_startup(backend, asked.value.pending, clock, out=out, sleep=clock.advance)


def test_waiting_at_startup_without_a_terminal_writes_a_line_only_when_it_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    out = io.StringIO()
    assert isinstance(_wait(tmp_path, out, None, monkeypatch), Lease)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3, lines  # six polls, three states
    assert lines[0].startswith("Request 17 for fake is waiting for approval by jit_leads (0 of 1")
    assert "(0 of 2 approvals" in lines[1] and "(1 of 2 approvals" in lines[2]


def test_waiting_at_startup_on_a_terminal_redraws_within_its_width(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    out = io.StringIO()
    assert isinstance(_wait(tmp_path, out, 40, monkeypatch), Lease)
    redraws = out.getvalue().split("\r")[1:]
    assert len(redraws) == 6 and redraws[-1].endswith("\x1b[K\n")
    assert all(len(r.split("\x1b[K")[0]) < 40 for r in redraws), redraws
