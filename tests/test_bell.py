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
