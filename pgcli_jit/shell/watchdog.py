"""Access ends on time even while a statement runs.

The idle ticker and the pre-statement gate cannot act while pgcli is blocked
in a query: a ``pg_sleep(50)`` crossing expiry finished, and a ``DO`` loop kept
committing past ``VALID UNTIL``.  While a statement runs, the watchdog's thread
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

One thread serves the whole session, started by its first statement: a thread
started and joined around each statement cost more than the rest of pgcli-jit's
work per statement, and more on a busy machine, where a new thread waits for a core
(``docs/performance.md``).  A statement's end never waits for the thread, except while
it is acting on that statement's expiry, so a cancel or a sever never reaches the
statement after it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
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
    """The session's watchdog: :meth:`guard` one statement at a time (main thread)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._watch: Watch | None = None  # the statement guarded now, if any
        self._statement = 0  # counts guarded statements: which one a wait was for
        #: held while acting on an expiry: a statement's end waits for it, so the
        #: cancel and the sever only ever reach the statement they were meant for
        self._acting = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, watch: Watch) -> Iterator[None]:
        with self._changed:
            self._statement += 1
            self._watch = watch
            self._changed.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pgcli-jit-watchdog", daemon=True)
            self._thread.start()
        try:
            yield
        finally:
            with self._changed:
                self._watch = None
                self._changed.notify()
            with self._acting:  # an expiry being acted on is over before the next statement
                pass

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._watch is None:
                    self._changed.wait()
                watch, statement = self._watch, self._statement
            try:
                self._guard(watch, statement)
            except Exception:  # the thread outlives one statement's trouble
                log.exception("pgcli-jit: the statement watchdog failed")
            with self._changed:  # this statement is done with: wait for the next one
                while self._statement == statement and self._watch is not None:
                    self._changed.wait()

    def _running(self, statement: int) -> bool:
        return self._watch is not None and self._statement == statement

    def _guard(self, watch: Watch, statement: int) -> None:
        while True:
            deadline = watch.deadline()
            if deadline is None:
                return
            left = deadline - watch.clock()
            if left <= 0:
                if not watch.paging():
                    self._expire(watch, statement)
                return
            try:
                watch.beat()
            except Exception:  # a failed beat must not stop the guard of the deadline
                log.exception("pgcli-jit: a renewal could not be started during a statement")
            with self._changed:
                if self._changed.wait_for(lambda: not self._running(statement), min(left, BEAT)):
                    return

    def _expire(self, watch: Watch, statement: int) -> None:
        with self._acting:
            with self._changed:
                if not self._running(statement):
                    return
            watch.on_expiry()
            with self._changed:
                over = self._changed.wait_for(lambda: not self._running(statement), GRACE)
            if not over:
                watch.sever()
