"""A time limit for a call that blocks on a server: one thread acts on every call that overstays.

A call blocked in a socket read (a statement over the user's own login, an HTTP answer a
server dribbles out a byte at a time) cannot time itself out: something else has to act
when its time is up, in practice by shutting its socket down so the read fails at once.
A ``threading.Timer`` per call costs about 130 µs (a thread started and ended) on a call of
30 µs, so one daemon thread, started on first use, watches every armed :class:`Deadline`
of the process and waits on a condition in between.

An expiry action runs at most once, in that thread, and never after its call has ended:
:meth:`Deadline.end` waits for an action already running and stops one not yet started.
So the moment a call returns, its connection may be used again or handed back to a pool.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Deadline:
    """One call's time limit, ``seconds`` from now on the monotonic clock.

    Nothing is watched until :meth:`arm` gives it something to do at expiry: a call that
    never reaches a socket (a test's fake transport) costs no thread at all.  Use it as a
    context manager, or call :meth:`end` when the call returns.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        #: set once the expiry action has started
        self.fired = False
        self._lock = threading.Lock()
        self._action: Callable[[], None] | None = None
        self._over = False

    def arm(self, action: Callable[[], None]) -> None:
        """Run ``action`` when the time is up (from the watcher's thread), unless the call
        has ended by then.  Only the first action armed counts."""
        with self._lock:
            if self._over or self._action is not None:
                return
            self._action = action
        _WATCHER.add(self)

    def end(self) -> None:
        """The call is over: the action will not start, and one running has finished."""
        with self._lock:
            self._over = True
        _WATCHER.discard(self)

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    def _expire(self) -> None:
        with self._lock:  # held while the action runs: end() waits for it
            if self._over or self.fired or self._action is None:
                return
            self.fired = True
            try:
                self._action()
            except Exception:  # the watcher thread must outlive any one call's action
                log.exception("a deadline's expiry action failed")


class _Watcher:
    """The one thread that runs the actions of deadlines whose time is up."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._armed: set[Deadline] = set()
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf

    def add(self, deadline: Deadline) -> None:
        with self._cv:
            self._armed.add(deadline)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pgcli-jit-deadline", daemon=True)
                self._thread.start()
            if deadline.at < self._wakes_at:
                self._cv.notify()

    def discard(self, deadline: Deadline) -> None:
        with self._cv:
            self._armed.discard(deadline)

    def _run(self) -> None:
        while True:
            for deadline in self._due():
                deadline._expire()

    def _due(self) -> list[Deadline]:
        """Wait until some deadline's time is up; take those off the watch."""
        with self._cv:
            while True:
                now = time.monotonic()
                due = [d for d in self._armed if d.at <= now]
                if due:
                    self._armed.difference_update(due)
                    return due
                self._wakes_at = min((d.at for d in self._armed), default=math.inf)
                self._cv.wait(None if self._wakes_at == math.inf else self._wakes_at - now)


_WATCHER = _Watcher()
