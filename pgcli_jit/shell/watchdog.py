"""Access ends on time even while a statement runs.

The idle ticker and the pre-statement gate cannot act while pgcli is blocked
in a query: a ``pg_sleep(50)`` crossing expiry finished, and a ``DO`` loop kept
committing past ``VALID UNTIL``.  While a statement runs, a watchdog thread
waits for the lease's expiry (re-read every second: a background renewal may
move it) and then

1. sends the server's cancel request (``on_expiry``), and
2. if the statement has not returned within :data:`GRACE` seconds, severs the
   connection's socket (``sever``), so the blocked read fails at once.

It never closes the connection itself (libpq objects are not shared across
threads): the main thread does that when the statement returns.  In ``prompt``
mode the watchdog also asks the renewal question when the window opens during
the statement (``ask``), so a long statement does not skip the question.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from pgcli_jit.core.clock import Clock

GRACE = 0.5
BEAT = 1.0


@dataclass
class Watch:
    """What the watchdog may read and do; all callables are safe to call from its thread."""

    deadline: Callable[[], float | None]  # the current lease's expiry; None: nothing to guard
    on_expiry: Callable[[], None]  # cancel the running statement
    sever: Callable[[], None]  # end the connection when the cancel was not enough
    clock: Clock
    question_due: Callable[[], bool] = lambda: False
    #: ask the question until answered, or until the callable says the statement is over
    ask: Callable[[Callable[[], bool]], None] = lambda over: None


class StatementWatchdog:
    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgcli-jit-watchdog", daemon=True)

    def __enter__(self) -> StatementWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """The statement is over: a question still up is withdrawn (the idle prompt asks
        again) before pgcli reads the terminal, so nothing else ever reads it with us."""
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        asked = False
        while not self._done.is_set():
            deadline = self.watch.deadline()
            if deadline is None:
                return
            left = deadline - self.watch.clock()
            if left <= 0:
                self._expire()
                return
            if not asked and self.watch.question_due():
                asked = True
                self.watch.ask(self._done.is_set)
                continue
            self._done.wait(min(left, BEAT))

    def _expire(self) -> None:
        self.fired = True
        self.watch.on_expiry()
        if not self._done.wait(GRACE):
            self.watch.sever()
