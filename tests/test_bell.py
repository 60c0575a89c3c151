"""The doorbell heard by a session: a ring makes the waiting request (or the approver's count)
be looked at now instead of at the next poll; a broken bell falls back to polling.  A doorbell
the test rings stands in for the server's (the real one is tested in test_approvals_backends)."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import pytest

from pgcli_jit.core.errors import BackendUnavailable
from pgcli_jit.session import approvals, bell
from pgcli_jit.session.bell import Bell
from tests.test_approvals_controller import WaitingBackend, World

pytestmark = pytest.mark.unit


class Door:
    """A doorbell the test rings (True) or breaks (an exception); silence times out."""

    def __init__(self) -> None:
        self.rings: queue.Queue[bool | Exception] = queue.Queue()
        self.closed = 0

    def wait(self, timeout: float) -> bool:
        try:
            ring = self.rings.get(timeout=timeout)
        except queue.Empty:
            return False
        if isinstance(ring, Exception):
            raise ring
        return ring

    def close(self) -> None:
        self.closed += 1


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bell, "WAIT", 0.02)
    monkeypatch.setattr(bell, "RETRY_AFTER", 0.02)


def until(condition: Any, timeout: float = 5.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


def test_a_ring_is_passed_on_and_a_broken_bell_is_reopened() -> None:
    doors: list[Door] = []
    rung = threading.Event()

    def open_door() -> Door:
        doors.append(Door())
        return doors[-1]

    b = Bell(open_door, rung.set)
    b.start()
    until(lambda: b.heard)
    doors[0].rings.put(BackendUnavailable("server went away"))
    until(lambda: len(doors) == 2)
    assert doors[0].closed == 1  # the broken connection is closed, a new one opened
    until(lambda: b.heard)
    doors[1].rings.put(True)
    assert rung.wait(5.0)
    b.stop()
    until(lambda: doors[1].closed == 1)
    assert not b.heard


def test_a_broker_without_a_doorbell_starts_no_listening() -> None:
    b = Bell(lambda: None, lambda: None)
    b.start()
    until(lambda: b._thread is not None and not b._thread.is_alive())
    assert not b.heard


class RingingWorld(World):
    """A request that waits on a broker whose doorbell the test rings."""

    def __init__(self, tmp_path: Path) -> None:
        self.door = Door()
        self.woken = threading.Event()
        super().__init__(tmp_path)
        self.controller.set_waker(self.woken.set)

    def _backend(self, profile, clock):  # type: ignore[no-untyped-def]
        backend = super()._backend(profile, clock)
        backend.doorbell = lambda: self.door  # type: ignore[method-assign]
        return backend


def test_a_decision_is_seen_at_the_ring_not_at_the_next_poll(tmp_path: Path) -> None:
    world = RingingWorld(tmp_path)
    world.controller.request(None, None, "INC-42")
    until(lambda: world.controller.approvals._heard(world.backend))  # type: ignore[arg-type]
    world.beat()  # the first poll: still pending, and the next one waits for the net's pace
    backend = world.backend
    assert isinstance(backend, WaitingBackend)
    polls = backend.polls
    waiting = world.controller.approvals.waiting
    assert waiting is not None and waiting.next_poll >= world.clock() + approvals.HEARD_POLL - 1.5
    backend.decision = "approve"
    world.beat()
    assert backend.polls == polls and world.controller.lease is None  # no ring, no poll
    world.woken.clear()
    world.door.rings.put(True)
    assert world.woken.wait(5.0)  # the shell is asked to tick now
    world.beat(0.0)
    lease = world.controller.lease
    assert lease is not None and world.said[-1].startswith("Approved by an approver: connected as")
    # nothing left to hear (no request waits, this login approves nothing): the bell stops
    assert world.controller.approvals._bell is None
    until(lambda: world.door.closed == 1)


class HeldPoll(WaitingBackend):
    """A poll that reads the request's state, then waits for the test before answering."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def poll(self, pending: Any) -> Any:
        answer = super().poll(pending)
        self.started.set()
        self.gate.wait(5.0)
        return answer


class HeldWorld(RingingWorld):
    def _backend(self, profile, clock):  # type: ignore[no-untyped-def]
        self.backend = HeldPoll(profile, clock=clock)
        self.backend.doorbell = lambda: self.door  # type: ignore[method-assign]
        return self.backend


def test_a_ring_during_a_poll_is_looked_at_after_it(tmp_path: Path) -> None:
    """The decision commits (and rings) while a poll that read "pending" is on the wire: the
    ring is kept and answered by another look, not lost to the 15 s net."""
    world = HeldWorld(tmp_path)
    world.controller.request(None, None, "")
    until(lambda: world.controller.approvals._heard(world.backend))  # type: ignore[arg-type]
    world.beat()
    backend = world.backend
    assert isinstance(backend, HeldPoll)
    backend.gate.clear()
    backend.started.clear()
    world.door.rings.put(True)
    until(lambda: world.controller.approvals._ring_poll)
    world.clock.advance(1.0)
    world.controller.step()  # the ring's poll starts, reads "pending" and is held
    assert backend.started.wait(5.0)
    backend.decision = "approve"
    world.door.rings.put(True)  # the approval's ring, while that poll is in flight
    until(lambda: world.controller.approvals._ring_poll)
    backend.gate.set()
    world.beat()
    world.beat()
    assert world.controller.lease is not None


def test_a_flood_of_rings_is_one_look_per_pace(tmp_path: Path) -> None:
    """Any login may NOTIFY: a flood makes a look at most every RING_PACE seconds."""
    world = RingingWorld(tmp_path)
    world.controller.request(None, None, "")
    until(lambda: world.controller.approvals._heard(world.backend))  # type: ignore[arg-type]
    world.beat()
    backend = world.backend
    assert isinstance(backend, WaitingBackend)
    polls = backend.polls
    for _ in range(20):
        world.door.rings.put(True)
        until(lambda: world.controller.approvals._ring_poll)
        world.beat(0.01)  # 0.2 s in all: under one pace
    assert backend.polls <= polls + 1


class BrokenDoor(Door):
    def wait(self, timeout: float) -> bool:
        raise BackendUnavailable("cannot reach the server")


def test_a_bell_that_is_not_heard_keeps_the_fast_poll(tmp_path: Path) -> None:
    world = RingingWorld(tmp_path)
    world.door = BrokenDoor()
    world.controller.request(None, None, "")
    until(lambda: world.door.closed >= 2)  # it keeps trying, and is never heard
    world.beat()
    waiting = world.controller.approvals.waiting
    assert waiting is not None and waiting.next_poll <= world.clock() + approvals.MAX_POLL_AFTER
