"""A denied statement kept while the request that would allow it waits for approval.

After "permission denied" the user may take a profile that needs a second person's approval:
the request is submitted and the session switches only when it is granted, maybe minutes
later, while the user types other things.  The statement is then run again only when the
user says so at that moment (the shell's key; nothing reads the terminal to ask), and never
behind their back:

* it is kept for one request: once a lease of that profile has been switched in, the shell
  offers it (said once, and shown while it stands);
* it is dropped when the request ends without a switch (denied, cancelled, expired), when
  another statement runs in between (then the user has moved on: nothing is run unasked),
  and when it is taken: it runs at most once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgcli_jit.core.lease import Lease
    from pgcli_jit.session.controller import Controller


class Stage(Enum):
    """Where a kept statement stands."""

    WAITING = "waiting"  # the request waits for approval
    READY = "ready"  # a lease of its profile is switched in: it may be run again
    GONE = "gone"  # the request ended without a switch: nothing to offer


@dataclass(frozen=True)
class Kept:
    """The denied statement, the profile asked for, and the lease the session had then."""

    statement: str
    profile: str
    before: Lease | None


def stage(kept: Kept, jit: Controller) -> Stage:
    """Where ``kept`` stands now: read from the session's lease and its approval flow."""
    lease = jit.lease
    if lease is not None and lease is not kept.before and lease.profile == kept.profile:
        return Stage.READY
    waiting = jit.approvals.waiting
    if (waiting is not None and waiting.profile.name == kept.profile) or jit.handover.approval() is not None:
        return Stage.WAITING
    return Stage.GONE


class Rerun:
    """The one kept statement of a session; the key binding (the prompt's thread) and the
    statement path (the main thread) both reach it, so taking it is one locked step."""

    def __init__(self) -> None:
        self._kept: Kept | None = None
        self._said = False
        self._lock = threading.Lock()

    def keep(self, statement: str, profile: str, before: Lease | None) -> None:
        """Keep ``statement`` for the request of ``profile`` that now waits."""
        with self._lock:
            self._kept, self._said = Kept(statement, profile, before), False

    def drop(self) -> None:
        """Forget it: another statement ran, or the session is ending."""
        with self._lock:
            self._kept = None

    def ready(self, jit: Controller) -> Kept | None:
        """The statement when it may be run again now; it is dropped once its request has
        ended without a switch."""
        kept = self._kept
        if kept is None:
            return None
        where = stage(kept, jit)
        if where is Stage.GONE:
            self.drop()
        return kept if where is Stage.READY else None

    def announce(self, jit: Controller) -> Kept | None:
        """The statement the first time it is ready (to be said once), else None."""
        kept = self.ready(jit)
        with self._lock:
            if kept is None or self._said or kept is not self._kept:
                return None
            self._said = True
        return kept

    def take(self, jit: Controller) -> str | None:
        """The statement to run again, once: it is forgotten as it is handed out."""
        if self.ready(jit) is None:
            return None
        with self._lock:
            kept, self._kept = self._kept, None
        return kept.statement if kept is not None else None
