"""The statement watchdog on its own: one thread for the session, cancel then sever at expiry.

Real time, short deadlines (tenths of a second): the thread's waits are real waits.  The
pty tests (``test_lease_ends_pty.py``) drive the same watchdog through pgcli and a server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pgcli_jit.shell.watchdog import GRACE, StatementWatchdog, Watch


class Statement:
    """What a statement's watch did: cancels, severs and beats, with when."""

    def __init__(self, deadline: Callable[[], float | None], paging: bool = False) -> None:
        self.cancelled = threading.Event()
        self.severed = threading.Event()
        self.beats = 0
        self.watch = Watch(deadline=deadline, on_expiry=self.cancelled.set, sever=self.severed.set,
                           clock=time.time, beat=self._beat, paging=lambda: paging)

    def _beat(self) -> None:
        self.beats += 1


def in_(seconds: float) -> Callable[[], float]:
    at = time.time() + seconds
    return lambda: at


def watchdog_threads() -> int:
    return sum(t.name == "pgcli-jit-watchdog" for t in threading.enumerate())


def test_a_statement_that_ends_in_time_is_left_alone_and_the_thread_serves_the_next() -> None:
    dog = StatementWatchdog()
    before = watchdog_threads()
    first, second = Statement(in_(5)), Statement(in_(5))
    with dog.guard(first.watch):
        time.sleep(0.05)
    with dog.guard(second.watch):
        time.sleep(0.05)
    time.sleep(0.1)
    assert not (first.cancelled.is_set() or first.severed.is_set() or second.cancelled.is_set())
    assert first.beats >= 1 and second.beats >= 1  # renewals are started while statements run
    assert watchdog_threads() == before + 1


def test_expiry_cancels_and_a_statement_that_then_returns_is_not_severed() -> None:
    dog = StatementWatchdog()
    statement = Statement(in_(0.2))
    with dog.guard(statement.watch):
        assert statement.cancelled.wait(2)
    time.sleep(GRACE + 0.2)
    assert not statement.severed.is_set()


def test_a_statement_the_cancel_does_not_stop_is_severed_after_the_grace() -> None:
    dog = StatementWatchdog()
    statement = Statement(in_(0.1))
    with dog.guard(statement.watch):
        assert statement.cancelled.wait(2)
        started = time.monotonic()
        assert statement.severed.wait(GRACE + 2)
        assert time.monotonic() - started >= GRACE * 0.8


def test_the_end_of_a_statement_waits_for_an_expiry_being_acted_on() -> None:
    """A cancel or sever meant for one statement never lands on the next: leaving ``guard``
    while the thread acts on the expiry waits until it is done (and cuts the grace short)."""
    dog = StatementWatchdog()
    acting = threading.Event()
    order: list[str] = []

    def cancel() -> None:
        acting.set()
        time.sleep(0.3)
        order.append("cancel done")

    statement = Statement(in_(0.05))
    statement.watch.on_expiry = cancel
    with dog.guard(statement.watch):
        assert acting.wait(2)
    order.append("statement left")
    assert order == ["cancel done", "statement left"]
    time.sleep(GRACE + 0.2)
    assert not statement.severed.is_set()


def test_output_in_the_pager_is_not_cancelled_at_expiry() -> None:
    dog = StatementWatchdog()
    paged = Statement(in_(0.1), paging=True)
    with dog.guard(paged.watch):
        time.sleep(0.4)
    assert not paged.cancelled.is_set() and not paged.severed.is_set()


def test_a_deadline_moved_by_a_renewal_is_read_again() -> None:
    dog = StatementWatchdog()
    deadline = [time.time() + 0.3]
    statement = Statement(lambda: deadline[0])
    with dog.guard(statement.watch):
        deadline[0] += 30  # an extension landed in the manager
        time.sleep(0.6)
    assert not statement.cancelled.is_set()


def test_no_lease_means_nothing_to_guard() -> None:
    dog = StatementWatchdog()
    statement = Statement(lambda: None)
    with dog.guard(statement.watch):
        time.sleep(0.1)
    assert statement.beats == 0 and not statement.cancelled.is_set()
