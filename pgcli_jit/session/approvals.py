"""Both sides of four eyes inside one session, apart from the lease's own life.

The requester's side: a request that waits (:class:`~pgcli_jit.session.waiting.Waiting`),
polled from the controller's worker thread about once a second, switched to when
granted — at once when no transaction is open, else when it ends, as a rotation
does.  The approver's side: how many requests this login may decide (for the
toolbar), ``\\jit pending``, ``\\jit approve`` and ``\\jit deny``.

Everything that touches the connection runs on the main thread (from
:meth:`ApprovalFlow.tick`); the worker only asks the backend.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from pgcli_jit.backends.base import Backend, PendingRequest
from pgcli_jit.core.errors import ConnectionSwitchError, JitError, PermissionDenied, RequestClosed
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.profile import Profile
from pgcli_jit.session import approval
from pgcli_jit.session.waiting import Waiting, approved_by, closed_line, waiting_line

if TYPE_CHECKING:
    from concurrent.futures import Future

    from pgcli_jit.session.controller import Controller

log = logging.getLogger(__name__)
#: how often an approver's toolbar count is refreshed while idle
APPROVER_POLL = 2.0
#: after a failed count (server away), wait this long
APPROVER_BACKOFF = 60.0
SETTLE_TIMEOUT = 30.0


class ApprovalFlow:
    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.waiting: Waiting | None = None
        self._poll: Future[Lease | PendingRequest] | None = None
        #: requests this login may decide, as last counted (the approver's toolbar)
        self.decidable = 0
        self._count: Future[list[tuple[Any, ...]]] | None = None
        self._next_count = 0.0
        self._counting_off = False

    # -- the requester ----------------------------------------------------------------

    def start(self, pending: PendingRequest, profile: Profile, ttl: float | None) -> str:
        now = self.c.manager.clock()
        self.waiting = Waiting(pending, profile, ttl, next_poll=now + min(pending.poll_after, 1.0))
        return waiting_line(pending)

    def refuse_second(self) -> None:
        if self.waiting is not None:
            raise JitError(f"request {self.waiting.pending.request_id} for {self.waiting.profile.name} "
                           "is still waiting for approval", "\\jit cancel withdraws it first")

    def settle(self) -> None:
        """Before a user command: let a poll in flight finish and apply its answer."""
        if self._poll is not None:
            with contextlib.suppress(Exception):
                self._poll.result(timeout=SETTLE_TIMEOUT)
        self._take_poll()

    def cancel(self) -> str:
        self.settle()
        w, self.waiting = self.waiting, None
        if w is None:
            return "No request is waiting for approval."
        rid = w.pending.request_id
        if w.approved is not None:  # granted while it waited for a transaction: never used
            self.c.manager.discard(w.approved, w.profile, why="cancelled")
            return f"Request {rid} withdrawn; the credentials it was granted were revoked unused."
        try:
            self.c.manager.backend_for(w.profile).cancel(w.pending)
        except JitError:
            self.waiting = w
            raise
        self.c.manager.audit.record("cancel", None, profile=w.profile.name, request_id=rid)
        return f"Request {rid} for {w.profile.name} withdrawn."

    def tick(self) -> None:
        """Main thread, every idle second and before statements: apply a poll's answer,
        switch to granted credentials when no transaction is open, start the next poll."""
        self._take_poll()
        w = self.waiting
        if w is None:
            return
        if w.approved is not None:
            self._switch(w)
        elif self._poll is None and w.due(self.c.manager.clock()):
            self._poll = self.c.submit(self.c.manager.backend_for(w.profile).poll, w.pending)

    def _take_poll(self) -> None:
        future, w = self._poll, self.waiting
        if future is None or not future.done():
            return
        self._poll = None
        if w is None:  # withdrawn meanwhile: a lease that came back anyway is revoked unused
            self._discard_result(future)
            return
        now = self.c.manager.clock()
        try:
            w.settle(future.result(), now)
        except RequestClosed as exc:
            self.waiting = None
            self.c.manager.audit.record("approval_closed", None, profile=w.profile.name,
                                        request_id=w.pending.request_id, state=exc.state)
            self.c.say(closed_line(w.pending, exc))
        except JitError as exc:
            self.c.say(w.failed(exc, now) or "")

    def _discard_result(self, future: Future[Lease | PendingRequest]) -> None:
        with contextlib.suppress(Exception):
            result = future.result()
            if isinstance(result, Lease):
                self.c.manager.discard(result, self.c.config.requestable(result.profile),
                                       why="cancelled")

    def _switch(self, w: Waiting) -> None:
        lease = w.approved
        assert lease is not None
        who, rid = approved_by(lease), w.pending.request_id
        if self.c.connector.in_transaction():
            if not w.said_transaction:
                w.said_transaction = True
                self.c.say(f"Request {rid} approved by {who}: the session switches when the open "
                           "transaction ends (COMMIT or ROLLBACK).")
            return
        self.waiting = None
        try:
            line = self.c.adopt_new(lease, w.profile, w.ttl)
        except ConnectionSwitchError as exc:
            self.c.say(f"Request {rid} was approved by {who}, but: {exc}")
            return
        self.c.say(f"Approved by {who}: {line[0].lower()}{line[1:]}")

    def shutdown(self) -> None:
        """On exit: nothing asked for may be granted to nobody."""
        self._take_poll()  # the worker has stopped: a lease it brought back settles into w
        w, self.waiting = self.waiting, None
        if w is None:
            return
        if w.approved is not None:
            self.c.manager.discard(w.approved, w.profile, why="never used")
            return
        with contextlib.suppress(JitError):
            self.c.manager.backend_for(w.profile).cancel(w.pending)

    # -- the approver ---------------------------------------------------------------------

    def backend(self) -> Backend | None:
        """Where this login decides: the default profile, else the first, that uses the
        postgres backend (the broker that knows approvals); None without one."""
        cfg = self.c.config
        names = [cfg.default_profile, *cfg.profiles] if cfg.default_profile else list(cfg.profiles)
        for name in names:
            profile = cfg.profiles.get(name or "")
            if profile is not None and profile.backend == "postgres":
                return self.c.manager.backend_for(profile)
        return None

    def count_tick(self) -> None:
        """Refresh the toolbar's count every couple of seconds, in the worker."""
        future = self._count
        now = self.c.manager.clock()
        if future is not None:
            if not future.done():
                return
            self._count = None
            try:
                self.decidable = len(future.result())
            except PermissionDenied:  # not even a requester: never ask again this session
                self._counting_off, self.decidable = True, 0
            except JitError:
                self.decidable, self._next_count = 0, now + APPROVER_BACKOFF
            return
        if self._counting_off or now < self._next_count:
            return
        backend = self.backend()
        if backend is None:
            self._counting_off = True
            return
        self._next_count = now + APPROVER_POLL
        self._count = self.c.submit(backend.waiting_for_me)

    def _need_backend(self) -> Backend:
        backend = self.backend()
        if backend is None:
            raise JitError("approvals need a profile with backend = \"postgres\"",
                           "add one for the database whose requests you approve")
        return backend

    def pending(self) -> list[tuple[Any, ...]]:
        rows = self._need_backend().waiting_for_me()
        self.decidable = len(rows)
        return rows

    def decide(self, request_id: int, approve: bool, text: str) -> str:
        answer = self._need_backend().decide(request_id, approve, text)
        self._next_count = 0.0  # the count changed: refresh it on the next beat
        return approval.decided_line(answer, "approve" if approve else "deny")
