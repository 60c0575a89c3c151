"""The server's doorbell, heard by one session: a request decided, a request arrived.

Approvals reach the shell pushed, not polled: while a request of ours waits, or this login
may decide others', a daemon thread waits on the broker's :class:`~pgcli_jit.backends.base.Doorbell`
(for the postgres broker, a connection of the user's own login that LISTENs; one per session,
never one per statement).  A ring only marks the approvals flow "look now" and wakes the
prompt; the state is read on the session's worker as before, so a forged or lost ring
changes nothing but timing.  While the bell is not heard (the broker has none, or its
connection broke), the flow polls at its old pace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pgcli_jit.backends.base import Doorbell

log = logging.getLogger(__name__)
#: how long one wait lasts: also how long a stop may take to be noticed
WAIT = 2.0
#: after a failure (server away), wait this long before listening again
RETRY_AFTER = 10.0


class Bell:
    """One listening thread for one broker, started on first need, stopped at exit."""

    def __init__(self, open_doorbell: Callable[[], Doorbell | None], on_ring: Callable[[], None]) -> None:
        self._open = open_doorbell
        self._on_ring = on_ring
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: True while a wait is in place: a ring will be heard, so polls may slow down
        self.heard = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pgcli-jit-bell", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (within :data:`WAIT`); it is not waited for."""
        self._stop.set()

    def _run(self) -> None:
        door: Doorbell | None = None
        while not self._stop.is_set():
            try:
                if door is None:
                    door = self._open()
                    if door is None:
                        return  # this broker has no doorbell: the flow keeps polling
                rang = door.wait(WAIT)
                self.heard = True
                if rang and not self._stop.is_set():
                    self._on_ring()
            except Exception as exc:  # the server went away: poll meanwhile, listen again later
                self.heard = False
                log.info("pgcli-jit: not listening for approvals for %gs: %s", RETRY_AFTER, exc)
                if door is not None:
                    door.close()
                    door = None
                self._stop.wait(RETRY_AFTER)
        self.heard = False
        if door is not None:
            door.close()
