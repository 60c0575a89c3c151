"""A request that waits for approval, as the shell lives with it.

The session goes on as before while a :class:`Waiting` request is polled from the
background worker (never on the thread that draws the prompt): the controller
asks :meth:`Waiting.due` every idle second, hands the poll to its worker, and gives
the result back to :meth:`Waiting.settle` on the main thread.  ``wait_at_startup``
is the other shape: ``--jit PROFILE`` has no session yet, so it waits in front of the
user, with the time waited on one line, and Ctrl-C withdraws the request.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from pgcli_jit.backends.base import Backend, PendingRequest
from pgcli_jit.core.clock import Clock
from pgcli_jit.core.durations import format_clock
from pgcli_jit.core.errors import JitError, RequestClosed
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.profile import Profile

log = logging.getLogger(__name__)
#: after a failed poll (server unreachable), wait this long before the next one
RETRY_AFTER = 5.0
#: poll at least this often, whatever the backend suggests: approval reaches the user in < 2 s
MAX_POLL_AFTER = 1.0


@dataclass
class Waiting:
    """One pending request of this session; ``approved`` holds the lease until it can switch."""

    pending: PendingRequest
    profile: Profile
    ttl: float | None
    next_poll: float
    approved: Lease | None = None
    said_transaction: bool = False
    said_failure: bool = False

    def due(self, now: float) -> bool:
        return self.approved is None and now >= self.next_poll

    def settle(self, result: Lease | PendingRequest, now: float) -> None:
        """A poll's answer: still waiting (maybe with more approvals), or granted."""
        self.said_failure = False
        if isinstance(result, Lease):
            self.approved = result
            return
        self.pending = result
        self.next_poll = now + min(result.poll_after, MAX_POLL_AFTER)

    def failed(self, exc: JitError, now: float) -> str | None:
        """A poll that could not reach the backend: retry later; the first failure is said."""
        self.next_poll = now + RETRY_AFTER
        log.warning("polling request %s failed: %s", self.pending.request_id, exc)
        if self.said_failure:
            return None
        self.said_failure = True
        return f"Could not check request {self.pending.request_id}: {exc}; will retry."

    def waited(self, now: float) -> float:
        return max(0.0, now - self.pending.asked_at)


def waiting_line(pending: PendingRequest) -> str:
    """What ``\\jit request`` answers at once on a profile that needs approval."""
    who = pending.approvers or "an approver"
    return (f"Request {pending.request_id} for {pending.profile} is waiting for approval by {who}; "
            f"keep working, the session switches when it is approved (\\jit cancel to withdraw)")


def closed_line(pending: PendingRequest, exc: RequestClosed) -> str:
    """Denied, timed out or cancelled, as the requester reads it (said once)."""
    rid = pending.request_id
    if exc.state == "denied":
        by = f" by {exc.decided_by}" if exc.decided_by else ""
        return f"Request {rid} denied{by}: {exc.note or 'no reason given'}"
    if exc.state == "timed_out":
        return f"Request {rid} for {pending.profile} timed out: nobody approved it in time."
    return f"Request {rid} for {pending.profile} was cancelled" + (f": {exc.note}" if exc.note else ".")


def approved_by(lease: Lease) -> str:
    names = lease.backend_data.get("approved_by") or []
    return ", ".join(str(n) for n in names) or "an approver"


def status_rows(waiting: Waiting, now: float) -> list[tuple[str, str]]:
    """``\\jit status`` rows for a request that waits."""
    p = waiting.pending
    state = ("approved: switching when the open transaction ends" if waiting.approved is not None
             else f"waiting for approval by {p.approvers or 'an approver'} ({p.approvals} of {p.needed})")
    rows = [("request", f"{p.request_id} ({p.profile})"), ("state", state),
            ("waited", format_clock(waiting.waited(now)))]
    if p.expires_at is not None and waiting.approved is None:
        rows.append(("times out in", format_clock(max(0.0, p.expires_at - now))))
    if p.reason:
        rows.append(("reason", p.reason))
    rows.append(("withdraw", "\\jit cancel"))
    return rows


def wait_at_startup(backend: Backend, pending: PendingRequest, clock: Clock,
                    out: TextIO = sys.stderr, sleep: Callable[[float], None] = time.sleep) -> Lease:
    """``--jit PROFILE`` on a profile that needs approval: poll until granted, in front of the
    user.  Ctrl-C withdraws the request; a denial or timeout raises RequestClosed."""
    line = waiting_line(pending).split(";")[0]
    try:
        while True:
            out.write(f"\r{line}: waited {format_clock(max(0.0, clock() - pending.asked_at))} "
                      "(Ctrl-C to withdraw)")
            out.flush()
            sleep(min(pending.poll_after, MAX_POLL_AFTER))
            result = backend.poll(pending)
            if isinstance(result, Lease):
                out.write("\n")
                return result
            pending = result
    except KeyboardInterrupt:
        out.write("\n")
        backend.cancel(pending)
        raise JitError(f"Request {pending.request_id} withdrawn.") from None
    except RequestClosed as exc:
        out.write("\n")
        raise JitError(closed_line(pending, exc)) from None
