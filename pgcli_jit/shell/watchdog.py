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
threads): the main thread does that when the statement returns.

The idle ticker is also stopped while pgcli runs a statement or pages its output,
so the watchdog beats for it (``beat``, every second): a due renewal starts in the
background whether the prompt shows or not, and an extension moves the deadline
it reads.  While the output is paged (``paging``) no statement runs: nothing is
cancelled; at expiry the main thread closes the connection after the pager.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pgcli_jit.core.clock import Clock

log = logging.getLogger(__name__)
GRACE = 0.5
BEAT = 1.0


@dataclass
class Watch:
    """What the watchdog may read and do; all callables are safe to call from its thread."""

    deadline: Callable[[], float | None]  # the current lease's expiry; None: nothing to guard
    on_expiry: Callable[[], None]  # cancel the running statement
    sever: Callable[[], None]  # end the connection when the cancel was not enough
    clock: Clock
    #: start what the clock makes due (a renewal in the background); never blocks
    beat: Callable[[], None] = lambda: None
    #: the statement is over and its output is in the pager
    paging: Callable[[], bool] = lambda: False


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
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.is_set():
            deadline = self.watch.deadline()
            if deadline is None:
                return
            left = deadline - self.watch.clock()
            if left <= 0:
                if not self.watch.paging():
                    self._expire()
                return
            try:
                self.watch.beat()
            except Exception:  # a failed beat must not stop the guard of the deadline
                log.exception("pgcli-jit: a renewal could not be started during a statement")
            self._done.wait(min(left, BEAT))

    def _expire(self) -> None:
        self.fired = True
        self.watch.on_expiry()
        if not self._done.wait(GRACE):
            self.watch.sever()
