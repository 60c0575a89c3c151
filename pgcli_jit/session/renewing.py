"""One background renewal at a time, started from any thread, its results taken in order.

The idle ticker and the statement watchdog's thread may both start a renewal; a long
statement can renew several times before the main thread takes the first result.  This
runner holds that mechanism (which thread may start, what is in flight, what has landed
and not been applied), so the controller keeps only the policy: when to renew, what a
result means for the connection and what to say.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, NamedTuple

from pgcli_jit.core.lease import Lease
from pgcli_jit.session.jobs import Jobs, Slot
from pgcli_jit.session.manager import LeaseManager, Renewal, Rotate

if TYPE_CHECKING:
    from concurrent.futures import Future


class Landed(NamedTuple):
    """A finished renewal, with how it was started."""

    future: Future[Renewal]
    rotate: Rotate  # what it was allowed to do when the lease could not be extended
    explicit: bool  # asked for (F6), not started by the clock


class RenewalRunner:
    def __init__(self, jobs: Jobs, manager: LeaseManager) -> None:
        self._manager = manager
        self._slot: Slot[Renewal] = Slot(jobs)
        self._mode: tuple[Rotate, bool] = ("never", False)
        self._landed: list[Landed] = []
        self._lock = threading.Lock()

    def running(self) -> bool:
        future = self._slot.future
        return future is not None and not future.done()

    def start(self, lease: Lease, rotate: Rotate, explicit: bool) -> bool:
        """Renew ``lease`` on the worker; False when a renewal is already running.  An
        extension takes effect in the manager when it lands, before anyone applies it."""
        with self._lock:
            if self.running():
                return False
            done = self._slot.clear()
            if done is not None:
                self._landed.append(Landed(done, *self._mode))
            self._mode = (rotate, explicit)
            self._slot.start(self._manager.renew, None, lease, rotate)
            return True

    def take(self) -> list[Landed]:
        """Main thread: the renewals that finished since the last call, oldest first."""
        with self._lock:
            done, self._landed = self._landed, []
            future = self._slot.finished()
            if future is not None:
                done.append(Landed(future, *self._mode))
            return done

    def settle(self) -> None:
        """Before a user command: let the renewal in flight finish."""
        self._slot.settle()

    def drop(self) -> list[Renewal]:
        """On exit: forget everything; the results that landed fine, for what they minted."""
        with self._lock:
            futures = [landed.future for landed in self._landed]
            self._landed = []
            current = self._slot.clear()
        if current is not None:
            futures.append(current)
        return [f.result() for f in futures if f.done() and not f.cancelled() and f.exception() is None]
