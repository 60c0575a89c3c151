"""Background work of one session: one worker thread, and one slot per kind of job.

Backend calls that must not block the prompt (a renewal, a release, an approval poll, the
approver's count) run on a single worker thread, so two of them never overlap and typing
never waits.  A :class:`Slot` holds the one job of its kind that is in flight; its result
is taken on the main thread, the only thread that touches the connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

T = TypeVar("T")
#: how long a user command waits for a job in flight to finish (backends time out sooner)
SETTLE_TIMEOUT = 60.0


class Jobs:
    """The worker thread, started (and :mod:`concurrent.futures` imported) only when a
    session first has background work: a session that never renews never starts it."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # the statement watchdog's thread may submit too
        #: called on the worker when a job ends: the shell runs its idle tick then, so a
        #: result is applied at once instead of at the next second
        self.on_done: Callable[[], None] = lambda: None

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        with self._lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgcli-jit")
            future = self._pool.submit(fn, *args)
        future.add_done_callback(lambda _: self.on_done())
        return future

    def shutdown(self, wait: bool = True) -> None:
        """On exit: what has not started is dropped, what runs is waited for."""
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


class Slot(Generic[T]):
    """At most one job of one kind in flight; the main thread takes its result when done."""

    def __init__(self, jobs: Jobs) -> None:
        self._jobs = jobs
        self.future: Future[T] | None = None

    @property
    def busy(self) -> bool:
        return self.future is not None

    def start(self, fn: Callable[..., T], *args: object) -> None:
        self.future = self._jobs.submit(fn, *args)

    def finished(self) -> Future[T] | None:
        """The job, once done (and the slot free again); None while it runs or when idle."""
        future = self.future
        if future is None or not future.done():
            return None
        self.future = None
        return future

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Before a user command: let the job finish, so the command never races it."""
        future = self.future
        if future is not None:
            with contextlib.suppress(Exception):
                future.result(timeout=timeout)

    def clear(self) -> Future[T] | None:
        """Forget the job (it may still be running); the future, for a caller that must
        look at what it brought back."""
        future, self.future = self.future, None
        return future
