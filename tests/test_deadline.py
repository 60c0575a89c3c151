"""The one deadline mechanism the login and the HTTP calls share (``backends/deadline.py``)."""

from __future__ import annotations

import threading
import time

from pgcli_jit.backends.deadline import Deadline


def watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pgcli-jit-deadline"]


def test_the_action_runs_once_when_the_time_is_up() -> None:
    ran = threading.Event()
    count = []
    with Deadline(0.05) as deadline:
        deadline.arm(lambda: (count.append(1), ran.set()))
        assert ran.wait(5)
        time.sleep(0.1)
    assert deadline.fired and count == [1]


def test_a_call_that_ends_in_time_never_sees_its_action() -> None:
    ran = threading.Event()
    with Deadline(0.05) as deadline:
        deadline.arm(ran.set)
    assert not ran.wait(0.3) and not deadline.fired


def test_end_waits_for_an_action_already_running() -> None:
    """What ends the call may then reuse the connection: no shutdown lands after ``end``."""
    started, finished = threading.Event(), threading.Event()

    def slow_action() -> None:
        started.set()
        time.sleep(0.2)
        finished.set()

    deadline = Deadline(0.0)
    deadline.arm(slow_action)
    assert started.wait(5)
    deadline.end()
    assert finished.is_set()


def test_an_earlier_deadline_armed_later_fires_first_and_one_thread_serves_all() -> None:
    early = threading.Event()
    late = Deadline(30.0)
    late.arm(lambda: None)
    armed = [Deadline(30.0) for _ in range(50)]
    for d in armed:
        d.arm(lambda: None)
    started = time.monotonic()
    with Deadline(0.1) as deadline:
        deadline.arm(early.set)
        assert early.wait(5)
    assert time.monotonic() - started < 5
    assert len(watchers()) == 1
    for d in (late, *armed):
        d.end()
    assert not late.fired
