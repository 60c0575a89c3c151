"""Four eyes inside one session: the requester's waiting request and the approver's decisions.

The requester's side: a request that waits (:class:`Waiting`) is polled on the session's
worker about once a second; once granted, its lease is handed to the session's
:class:`~pgcli_jit.session.switching.Handover`, where it waits to be switched in (at once
when no transaction is open, else when it ends, as a rotation does).  ``wait_at_startup``
is the other shape: ``--jit PROFILE`` has no session yet, so it waits in front of the
user, and Ctrl-C withdraws the request.

The approver's side: how many requests this login may decide (for the toolbar), the
break-glass uses on the profiles it approves (said once each, shown in the toolbar while they
last), ``\\jit pending``, ``\\jit approve`` and ``\\jit deny`` through the typed
:class:`~pgcli_jit.backends.base.Approver` of the first profile whose backend offers one,
and the table and lines both ends print (``pgcli-jit-admin pending|approve|deny`` prints
the same words).  Every name and reason was typed by someone else: it is made printable
before it reaches a terminal.

The flow needs the lease manager (clock, backends, audit, discard), the session's jobs, the
handover and a way to speak, never the controller: what touches the connection stays there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from pgcli_jit.backends import backend_class
from pgcli_jit.backends.base import Approver, Backend, BreakGlassUse, Decidable, PendingRequest
from pgcli_jit.core.clock import Clock, local_time
from pgcli_jit.core.durations import format_clock, format_duration
from pgcli_jit.core.errors import BackendError, JitError, PermissionDenied, RequestClosed
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.profile import Profile
from pgcli_jit.core.sanitize import printable
from pgcli_jit.session.bell import Bell
from pgcli_jit.session.jobs import Jobs, Slot
from pgcli_jit.session.switching import Handover, Incoming

if TYPE_CHECKING:
    from pgcli_jit.session.manager import LeaseManager

log = logging.getLogger(__name__)
Say = Callable[[str], None]
#: after a failed poll (server unreachable), wait this long before the next one
RETRY_AFTER = 5.0
#: poll at least this often, whatever the backend suggests: approval reaches the user in < 2 s
MAX_POLL_AFTER = 1.0
#: how often an approver's toolbar count is refreshed while idle
APPROVER_POLL = 2.0
#: after a failed count (server away), wait this long
APPROVER_BACKOFF = 60.0
#: while the server's doorbell is heard, polls and counts are only a net for a lost ring
HEARD_POLL = 15.0
HEARD_COUNT = 30.0
#: a ring makes a look at most this often: anyone may ring, so a flood costs one read per pace
RING_PACE = 0.5
#: how much of a break-glass reason the toolbar shows, and the line above the prompt
GLASS_REASON_TOOLBAR = 40
GLASS_REASON_LINE = 200
Count = tuple[list[Decidable], list[BreakGlassUse]]
PENDING_HEADERS = ("id", "requester", "profile", "ttl", "reason", "waiting since", "approvals")


@dataclass
class Waiting:
    """One pending request of this session, until it is granted, closed or withdrawn."""

    pending: PendingRequest
    profile: Profile
    ttl: float | None
    next_poll: float
    said_failure: bool = False

    def due(self, now: float) -> bool:
        return now >= self.next_poll

    def settle(self, result: PendingRequest, now: float, heard: bool) -> None:
        """A poll's answer that is not a lease: still waiting (maybe with more approvals).
        While the doorbell is ``heard``, a decision rings it, so the next poll can wait."""
        self.said_failure = False
        self.pending = result
        self.next_poll = now + (HEARD_POLL if heard else min(result.poll_after, MAX_POLL_AFTER))
        if result.expires_at is not None:  # a timeout rings no bell: look when it falls due
            self.next_poll = min(self.next_poll, max(now + MAX_POLL_AFTER, result.expires_at + 0.5))

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


class ApprovalFlow:
    """Both sides of an approval inside one session; touches no connection."""

    def __init__(self, manager: LeaseManager, jobs: Jobs, say: Say, handover: Handover) -> None:
        self.manager = manager
        self.say = say
        #: where a granted lease goes to wait for the switch
        self.handover = handover
        self.waiting: Waiting | None = None
        self._poll: Slot[Lease | PendingRequest] = Slot(jobs)
        #: requests this login may decide, as last counted (the approver's toolbar)
        self.decidable = 0
        self._count: Slot[Count] = Slot(jobs)
        #: live break-glass uses on profiles this login approves, as last read, and the
        #: leases already said (each use is said once, however often it is read)
        self.glass: list[BreakGlassUse] = []
        self._glass_said: set[str] = set()
        self._next_count = 0.0
        self._counting_off = False
        #: whether this login approves anything (asked once, on the worker); None: not yet
        self._approves: bool | None = None
        #: the approver the count asks, and its backend (found once)
        self._counted: tuple[Approver, Backend] | None = None
        #: the session's one doorbell (while a request waits or this login approves), the
        #: backend it was opened for, and what a ring asks for that has not been done yet
        self._bell: Bell | None = None
        self._bell_for: Backend | None = None
        self._ring_poll = False
        self._ring_count = False
        self._poll_started = self._count_started = float("-inf")
        #: set by the shell: run the idle tick now (from any thread), so a ring shows at once
        self.wake: Callable[[], None] = lambda: None

    # -- the requester ----------------------------------------------------------------

    def start(self, pending: PendingRequest, profile: Profile, ttl: float | None) -> str:
        """A request now waits.  One request waits at a time: a second one (for another
        profile) is withdrawn at once, and the first keeps waiting."""
        w = self.waiting
        if w is not None:
            with contextlib.suppress(JitError):
                self.manager.backend_for(profile).cancel(pending)
            raise JitError(f"{profile.name} needs approval too, and request {w.pending.request_id} for "
                           f"{w.profile.name} is still waiting: one request waits at a time",
                           f"request {pending.request_id} was withdrawn; \\jit cancel withdraws "
                           f"request {w.pending.request_id} first")
        now = self.manager.clock()
        self.waiting = Waiting(pending, profile, ttl, next_poll=now + min(pending.poll_after, 1.0))
        self._listen(self.manager.backend_for(profile))
        return waiting_line(pending)

    def refuse_second(self, profile: str) -> None:
        """Before a request: only asking again for the profile that waits is refused.  A request
        for another profile goes ahead and the waiting one stays waiting: the user asked for it
        and has not withdrawn it, so it still switches in when approved (``\\jit cancel``
        withdraws it)."""
        w = self.waiting
        if w is not None and w.profile.name == profile:
            raise JitError(f"request {w.pending.request_id} for {w.profile.name} is still waiting for "
                           "approval", "\\jit status shows it; \\jit cancel withdraws it")

    def superseded(self, profile: str) -> str:
        """After break-glass on ``profile`` was granted: the request for it that waited is over
        (the server withdrew it with the grant; asked again here for a server that did not),
        so it never lands later as a second lease.  The sentence that says so, or ''."""
        self._poll.settle()
        self._take_poll()
        w = self.waiting
        if w is None or w.profile.name != profile:
            return ""
        self.waiting = None
        with contextlib.suppress(JitError):
            self.manager.backend_for(w.profile).cancel(w.pending)
        rid = w.pending.request_id
        self.manager.audit.record("cancel", None, profile=profile, request_id=rid, why="break-glass")
        return f"Request {rid} for {profile} was withdrawn: break-glass took its place."

    def cancel(self) -> str:
        self._poll.settle()
        self._take_poll()
        w, self.waiting = self.waiting, None
        if w is None:
            if self.handover.approval() is None:
                return "No request is waiting for approval."
            granted = self.handover.drop(why="cancelled")  # it waited for a transaction: never used
            assert granted is not None
            return (f"Request {granted.request_id} withdrawn; the credentials it was granted were "
                    "revoked unused.")
        rid = w.pending.request_id
        try:
            self.manager.backend_for(w.profile).cancel(w.pending)
        except JitError:
            self.waiting = w
            raise
        self.manager.audit.record("cancel", None, profile=w.profile.name, request_id=rid)
        return f"Request {rid} for {w.profile.name} withdrawn."

    def tick(self) -> None:
        """Main thread, every idle second and before statements: apply a poll's answer (a
        granted lease goes to the handover) and start the next poll."""
        self._take_poll()
        w, now = self.waiting, self.manager.clock()
        if self._ring_poll and w is None:
            self._ring_poll = False
        elif self._ring_poll and w is not None and not self._poll.busy \
                and now >= self._poll_started + RING_PACE:
            self._ring_poll = False  # something changed on the server: look now (a ring during
            w.next_poll = 0.0        # a poll stays asked for, and is looked at after it)
        if w is not None and not self._poll.busy and w.due(now):
            self._poll_started = now
            self._poll.start(self.manager.backend_for(w.profile).poll, w.pending)
        self._quiet()

    def _take_poll(self) -> None:
        future, w = self._poll.finished(), self.waiting
        if future is None:
            return
        if w is None:  # withdrawn meanwhile: a lease that came back anyway is revoked unused
            with contextlib.suppress(Exception):
                result = future.result()
                if isinstance(result, Lease):
                    self.manager.discard(result, self.manager.config.requestable(result.profile),
                                         why="cancelled")
            return
        now = self.manager.clock()
        try:
            result = future.result()
            if isinstance(result, Lease):
                self.waiting = None
                self.handover.hold(Incoming(result, w.profile, w.ttl, request_id=w.pending.request_id))
                return
            w.settle(result, now, self._heard(self.manager.backend_for(w.profile)))
        except RequestClosed as exc:
            self.waiting = None
            self.manager.audit.record("approval_closed", None, profile=w.profile.name,
                                      request_id=w.pending.request_id, state=exc.state)
            self.say(closed_line(w.pending, exc))
        except JitError as exc:
            self.say(w.failed(exc, now) or "")

    # -- the doorbell -----------------------------------------------------------------------

    def _listen(self, backend: Backend) -> None:
        """Hear ``backend``'s doorbell from now on: one listening thread and connection per
        session, for the first broker that needs it (nothing when it has none)."""
        if self._bell is None:
            self._bell, self._bell_for = Bell(backend.doorbell, self._ring), backend
            self._bell.start()

    def _heard(self, backend: Backend) -> bool:
        """Whether a decision on ``backend`` rings a bell this session hears: its own, or one
        opened for the same login in the same place."""
        bell, heard_for = self._bell, self._bell_for
        if bell is None or heard_for is None or not bell.heard:
            return False
        if backend is heard_for:
            return True
        login = backend.asking_login()
        return login is not None and login == heard_for.asking_login()

    def _quiet(self) -> None:
        """Stop listening once nothing is left to hear: no request waits, and this login
        approves nothing (or was never asked whether it does)."""
        if self._bell is not None and self.waiting is None and not self._approves:
            self._bell.stop()
            self._bell = self._bell_for = None

    def _ring(self) -> None:
        """The bell's thread: mark "look now" for the next tick, and ask for that tick."""
        self._ring_poll = self._ring_count = True
        self.wake()

    def shutdown(self) -> None:
        """On exit (the worker has stopped): nothing asked for may be granted to nobody."""
        if self._bell is not None:
            self._bell.stop()
        self._take_poll()  # a lease the worker brought back goes to the handover
        if self.handover.approval() is not None:
            self.handover.drop(why="never used")
        w, self.waiting = self.waiting, None
        if w is None:
            return
        with contextlib.suppress(JitError):
            self.manager.backend_for(w.profile).cancel(w.pending)

    # -- the approver ---------------------------------------------------------------------

    def approver(self) -> Approver | None:
        """Where this login decides: the default profile, else the first, whose backend offers
        approvals; None without one."""
        found = self._approver_backend()
        return found[0] if found is not None else None

    def _approver_backend(self) -> tuple[Approver, Backend] | None:
        cfg = self.manager.config
        names = [cfg.default_profile, *cfg.profiles] if cfg.default_profile else list(cfg.profiles)
        for name in names:
            profile = cfg.profiles.get(name or "")
            if profile is None:
                continue
            with contextlib.suppress(JitError):  # a backend that cannot load offers nothing
                # the class says so first: no other profile's backend is built for the count
                if backend_class(profile.backend).offers_approvals:
                    backend = self.manager.backend_for(profile)
                    approver = backend.approver()
                    if approver is not None:
                        return approver, backend
        return None

    def count_tick(self) -> None:
        """Refresh the toolbar's count, in the worker: when the doorbell rings (a login that
        approves anything listens for it), else every couple of seconds."""
        now = self.manager.clock()
        if self._count.busy:
            future = self._count.finished()
            if future is None:
                return
            try:
                decidable, glass = future.result()
                self.decidable = len(decidable)
                self._glass_news(glass)
            except PermissionDenied:  # not even a requester: never ask again this session
                self._counting_off, self.decidable = True, 0
            except JitError:
                self.decidable, self._next_count = 0, now + APPROVER_BACKOFF
            else:
                if self._approves and self._counted is not None:
                    self._listen(self._counted[1])
                elif self._approves is False:  # a member of no approvers role: nothing to count
                    self._counting_off, self.decidable = True, 0
            return
        if self._ring_count and now >= self._count_started + RING_PACE:
            self._ring_count, self._next_count = False, 0.0
        if self._counting_off or now < self._next_count:
            return
        found = self._counted = self._counted or self._approver_backend()
        if found is None:
            self._counting_off = True
            return
        approver, backend = found
        self._next_count = now + (HEARD_COUNT if self._heard(backend) else APPROVER_POLL)
        self._count_started = now
        self._count.start(self._count_for, approver)

    def _count_for(self, approver: Approver) -> Count:
        """The worker: the requests this login may decide and the break-glass uses it should
        hear of; the first time, also whether it approves anything at all (only then is the
        doorbell worth a connection, and the break-glass uses worth asking for)."""
        if self._approves is None:
            with contextlib.suppress(JitError):  # asked again with the next count
                self._approves = approver.approves_any()
        uses = getattr(approver, "break_glass_uses", None)  # an approver without break-glass
        return approver.waiting_for_me(), (uses() if self._approves and uses is not None else [])

    def _glass_news(self, uses: list[BreakGlassUse]) -> None:
        """Main thread: keep the live uses for the toolbar; say each new one once."""
        self.glass = uses
        for use in uses:
            if use.lease_id not in self._glass_said:
                self._glass_said.add(use.lease_id)
                self.say(break_glass_line(use, GLASS_REASON_LINE))

    def glass_notice(self, now: float) -> str | None:
        """The toolbar's break-glass words: the newest use that has not expired (and how many
        more); None when there is none."""
        live = [u for u in self.glass if u.expires_at.timestamp() > now]
        if not live:
            return None
        more = f" +{len(live) - 1} more" if len(live) > 1 else ""
        return break_glass_line(live[-1], GLASS_REASON_TOOLBAR) + more

    def _need_approver(self) -> Approver:
        approver = self.approver()
        if approver is None:
            raise JitError("approvals need a profile with backend = \"postgres\"",
                           "add one for the database whose requests you approve")
        return approver

    def pending(self) -> list[Decidable]:
        requests = self._need_approver().waiting_for_me()
        self.decidable = len(requests)
        return requests

    def decide(self, request_id: int, approve: bool, text: str) -> str:
        approver = self._need_approver()
        try:
            answer = approver.decide(request_id, approve, text)
        except BackendError as exc:
            # the profile the approver was found through has nothing to do with the request
            hint = exc.hint or ("\\jit pending lists what you may decide"
                                if exc.reason.startswith("no request") else "")
            raise JitError(exc.reason, hint) from None
        self._next_count = 0.0  # the count changed: refresh it on the next beat
        return decided_line(answer, "approve" if approve else "deny")


# -- what both ends print ------------------------------------------------------------------

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


def break_glass_line(use: BreakGlassUse, reason_limit: int) -> str:
    """``BREAK-GLASS: alice took write until 14:05:12: "INC-7 db down"``: what an approver
    reads.  The reason is the requester's own text, last and in quotes it cannot close, so it
    cannot read as more of the line ("- already withdrawn, no action needed")."""
    reason = printable(use.reason).replace('"', "'")
    if len(reason) > reason_limit:
        reason = reason[:reason_limit - 3] + "..."
    return (f"BREAK-GLASS: {printable(use.requester)} took {printable(use.profile)} until "
            f"{local_time(use.expires_at)}: " + (f'"{reason}"' if reason else "no reason given"))


def status_rows(waiting: Waiting, now: float) -> list[tuple[str, str]]:
    """``\\jit status`` rows for a request that waits."""
    p = waiting.pending
    state = f"waiting for approval by {p.approvers or 'an approver'} ({p.approvals} of {p.needed})"
    rows = [("request", f"{p.request_id} ({p.profile})"), ("state", state),
            ("waited", format_clock(waiting.waited(now)))]
    if p.expires_at is not None:
        rows.append(("times out in", format_clock(max(0.0, p.expires_at - now))))
    if p.reason:
        rows.append(("reason", p.reason))
    rows.append(("withdraw", "\\jit cancel"))
    return rows


def pending_rows(requests: Sequence[Decidable], now: datetime) -> list[tuple[str, ...]]:
    """One line per request the caller may decide, with how long it has waited."""
    out: list[tuple[str, ...]] = []
    for r in requests:
        waited = format_clock(max(0.0, (now - r.created_at).total_seconds()))
        since = local_time(r.created_at, date=False)
        out.append((str(r.request_id), printable(r.requester), printable(r.profile), format_duration(r.ttl),
                    printable(r.reason or "-"), f"{since} ({waited} ago)", f"{r.approvals} of {r.needed}"))
    return out


def decided_line(answer: Mapping[str, Any], verb: str) -> str:
    """``Approved request 17 (alice, write)``, or how many approvals are still missing."""
    rid, who, profile = answer.get("request_id"), answer.get("requester"), answer.get("profile")
    head = f"request {rid} ({printable(who)}, {printable(profile)})"
    state = answer.get("state")
    if verb == "deny":
        return f"Denied {head}: {printable(answer.get('note') or '')}"
    if state == "approved":
        return f"Approved {head}: {printable(who)}'s session switches when it collects the role."
    got, needed = len(answer.get("approved_by") or ()), answer.get("needed")
    return f"Approval recorded for {head}: {got} of {needed}; waiting for another member of " \
           f"{printable(answer.get('approvers'))}."


def wait_at_startup(backend: Backend, pending: PendingRequest, clock: Clock,
                    out: TextIO = sys.stderr, sleep: Callable[[float], None] = time.sleep) -> Lease:
    """``--jit PROFILE`` on a profile that needs approval: poll until granted, in front of the
    user.  Ctrl-C withdraws the request; a denial or timeout raises RequestClosed.

    On a terminal one line is redrawn in place every poll, cut to the terminal's width (a
    line that wraps cannot be redrawn with ``\\r``: each redraw would add a row).  Elsewhere
    (a log, a pipe) a line is written only when something changes: asked, another approval."""
    width = terminal_width(out)
    said = ""
    try:
        while True:
            if width is None:
                line = progress_line(pending)
                if line != said:
                    out.write(line + "\n")
                    said = line
            else:
                out.write("\r" + redraw_line(pending, clock(), width) + "\x1b[K")
            out.flush()
            sleep(min(pending.poll_after, MAX_POLL_AFTER))
            result = backend.poll(pending)
            if isinstance(result, Lease):
                _end_line(out, width)
                return result
            pending = result
    except KeyboardInterrupt:
        _end_line(out, width)
        backend.cancel(pending)
        raise JitError(f"Request {pending.request_id} withdrawn.") from None
    except RequestClosed as exc:
        _end_line(out, width)
        raise JitError(closed_line(pending, exc)) from None


def terminal_width(out: TextIO) -> int | None:
    """The columns of the terminal ``out`` writes to; None when it is not a terminal."""
    try:
        if not out.isatty():
            return None
        return os.get_terminal_size(out.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return None


def redraw_line(pending: PendingRequest, now: float, width: int) -> str:
    """The line redrawn in place while ``--jit`` waits, never reaching the last column."""
    who = pending.approvers or "an approver"
    waited = format_clock(max(0.0, now - pending.asked_at))
    line = (f"Request {pending.request_id} for {pending.profile} is waiting for {who}: {waited} "
            "(Ctrl-C withdraws)")
    return line if len(line) < width else line[:max(1, width - 4)] + "..."


def progress_line(pending: PendingRequest) -> str:
    """What a log of ``--jit`` reads while it waits: written again only when it changes."""
    return (f"{waiting_line(pending).split(';')[0]} ({pending.approvals} of {pending.needed} "
            "approvals; Ctrl-C withdraws)")


def _end_line(out: TextIO, width: int | None) -> None:
    if width is not None:
        out.write("\n")
