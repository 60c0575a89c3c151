"""How access ends and how that is said.

:class:`Access` holds whether this session's access stands and ends it in the ways it ends
without a command: the clock (expiry closes the connection and scrubs its secret, so
nothing, not pgcli's auto-reconnect either, logs back in with it) and the server (an
operator's revoke or the reaper, noticed at a statement or while idle, after which the
session goes back to the login that asked).  Around it: the refusal lines, the record of the
last end, the line a new lease is announced with, and the server's word on a lease.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pgcli_jit.backends.base import Backend
from pgcli_jit.core.clock import local_time
from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.errors import JitError, NotRenewable
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.profile import Profile
from pgcli_jit.session.jobs import Jobs, Slot
from pgcli_jit.session.manager import UNMOVED, LeaseManager
from pgcli_jit.session.switching import Connector, Handover

log = logging.getLogger(__name__)
#: how often, while idle, the server is asked whether the lease still stands
LOOKUP_EVERY = 5.0

EXPIRED = "JIT access expired: \\jit request to continue"
REVOKED = "JIT access revoked: \\jit request to continue"
ENDED_WORDS = {EXPIRED: "expired", REVOKED: "revoked"}  # read on every toolbar redraw
IN_TRANSACTION = "a transaction is open: COMMIT or ROLLBACK first (pgcli-jit never rolls it back for you)"


@dataclass(frozen=True)
class Ended:
    """How the last lease ended, for ``\\jit status`` after the fact."""

    how: str  # "expired", "revoked", "replaced"
    username: str
    profile: str
    at: float
    back_to: str | None = None


def ended_why(backend: Backend, lease: Lease) -> str | None:
    """Why the server says ``lease`` has ended; None while it stands, or on any doubt (the
    server unreachable, a bad answer): only the server's word ends access here."""
    try:
        backend.lookup(lease)
    except NotRenewable as exc:
        return exc.reason
    except JitError:
        return None
    return None


def connected_line(lease: Lease, profile: Profile, asked: float | None) -> str:
    """``Connected as ... until ...``, saying when the backend granted less than was asked
    (max_ttl): a user who asked ``--ttl 1h`` must not find out from the countdown."""
    line = f"Connected as {lease.username} until {local_time(lease.expires_at)} ({profile.name})"
    if lease.backend_data.get("logged"):   # the server logs this lease's statements: nobody is surprised
        line += ", logged"
    wanted = asked or profile.ttl
    granted = lease.lifetime
    notes = [f"{w}" for w in lease.warnings]
    said = any("cap" in w.lower() for w in lease.warnings)  # the backend already said it
    if asked and granted < wanted - UNMOVED and not said:
        cap = f"max_ttl {format_duration(profile.max_ttl)}" if profile.max_ttl else "the backend's limit"
        notes.insert(0, f"ttl capped at {format_duration(granted)} by {cap}; asked {format_duration(wanted)}")
    return line + "".join(f" ({n})" for n in notes) + "."


class Access:
    """Whether this session's access stands (``ended`` is None) or why statements are
    refused (:data:`EXPIRED`, :data:`REVOKED`), and the ends that come without a command."""

    def __init__(self, manager: LeaseManager, connector: Connector, say: Callable[[str], None],
                 jobs: Jobs, handover: Handover) -> None:
        self.manager = manager
        self.connector = connector
        self.say = say
        self.jobs = jobs
        self.handover = handover
        self.ended: str | None = None
        self.last_end: Ended | None = None
        #: set when a statement was cancelled because the lease expired under it
        self.cancelled_at_expiry = False
        #: set by the shell for -c/-f: nobody can type a \jit command, so none is advised
        self.unattended = False
        #: the idle check that the server still holds the lease (an operator may end it)
        self._lookup: Slot[tuple[Lease, str | None]] = Slot(jobs)
        self._looked_up = 0.0

    def message(self) -> str | None:
        """Why statements are refused, with the ways on: a new lease or the old login."""
        if self.ended is None:
            return None
        back = self.connector.previous_user()
        return self.ended + (f", or \\jit revoke to return to {back}" if back else "")

    def word(self) -> str:
        """For the toolbar: "expired", "revoked" or "" while access has not ended."""
        return ENDED_WORDS.get(self.ended or "", "")

    def record(self, how: str, lease: Lease, back_to: str | None = None) -> None:
        at = lease.expires_at if how == "expired" else self.manager.clock()
        self.last_end = Ended(how, lease.username, lease.profile, at, back_to)

    def status(self) -> str:
        """``\\jit status`` with no lease: what ended, when, and what to do next."""
        end, now = self.last_end, self.manager.clock()
        if end is None:
            return "No JIT lease: \\jit request [PROFILE] to get one."
        ago = format_duration(max(0.0, now - end.at))
        what = (f"JIT lease {end.username} ({end.profile}) {end.how} at "
                f"{local_time(end.at, zone=True, now=now)} ({ago} ago).")
        if self.ended is not None:
            back = self.connector.previous_user()
            way_back = f", or \\jit revoke to return to {back}" if back else ""
            return f"{what} Statements are refused: \\jit request [PROFILE] to continue{way_back}."
        where = f" Now connected as {end.back_to}." if end.back_to else ""
        return f"{what}{where} \\jit request [PROFILE] to get a new one."

    def return_to_login(self) -> str:
        """After expiry (or a revoke that found no way back) ``\\jit revoke`` still means
        "take me back to the login I had before \\jit request": the lease is gone, the
        identity is not."""
        if self.ended is None or self.connector.previous_user() is None:
            return "No JIT lease to revoke."
        back_to = self.connector.restore()
        if back_to is None:
            return "No JIT lease to revoke; could not return to the previous identity."
        self.ended = None
        if self.last_end is not None:
            self.last_end = dataclasses.replace(self.last_end, back_to=back_to)
        return f"JIT access had ended; back to {back_to}."

    def drop_rotation(self) -> None:
        """Access ended: a rotation of the lease that ended is revoked unused.  A granted
        request's lease still switches in: the user asked for it."""
        if self.handover.rotation() is not None:
            self.handover.drop()

    def enforce_expiry(self) -> None:
        lease = self.manager.lease
        now = self.manager.clock()
        if lease is None or self.ended is not None or not lease.is_expired(now):
            return
        lost = self.connector.in_transaction()
        self.connector.close()
        self.drop_rotation()
        self.ended = EXPIRED
        self.record("expired", lease)
        cancelled, self.cancelled_at_expiry = self.cancelled_at_expiry, False
        why = ("; the running statement was cancelled" if cancelled else "") + (
            "; the open transaction was rolled back by the server" if lost else "")
        at = local_time(lease.expires_at)
        head = f"JIT access expired at {at}" if self.unattended else self.message()
        self.say(f"{head}{why}")
        self.jobs.submit(self.release_expired, lease)

    def release_expired(self, lease: Lease) -> None:
        try:
            self.manager.release("expire", expected=lease)
        except JitError as exc:
            log.warning("revoking the expired lease failed: %s", exc)

    def ended_on_server(self) -> bool:
        """The server closed the session: was it the lease that ended (an operator's revoke, the
        reaper)?  Then it is let go here and the session goes back to the login that asked,
        instead of a reconnect failing with a password the server no longer takes.  Asked of
        backends whose server keeps the lease (``server_policy``) only; on any doubt (the
        server unreachable) it answers no and pgcli reconnects as usual."""
        lease, profile = self.manager.lease, self.manager.profile
        if lease is None or profile is None or self.ended is not None:
            return False
        backend = self.manager.backend_for(profile)
        if not backend.server_policy:
            return False
        why = ended_why(backend, lease)
        if why is None:
            return False
        self._let_go(lease, why, "The statement was not run.")
        return True

    def watch_server(self) -> None:
        """While idle (main thread): every :data:`LOOKUP_EVERY` seconds, ask the server in the
        background whether the lease still stands, so an operator's revoke is noticed within
        seconds, not at the next statement.  Only backends whose server keeps the lease."""
        lease, profile = self.manager.lease, self.manager.profile
        future = self._lookup.finished()
        if future is not None:
            checked, why = future.result()
            if why is not None and lease is not None and checked is lease and self.ended is None:
                self._let_go(lease, why, "")
            return
        if lease is None or profile is None or self.ended is not None or self._lookup.busy:
            return
        backend = self.manager.backend_for(profile)
        now = self.manager.clock()
        if backend.server_policy and now - self._looked_up >= LOOKUP_EVERY:
            self._looked_up = now
            self._lookup.start(lambda: (lease, ended_why(backend, lease)))

    def _let_go(self, lease: Lease, why: str, what_now: str) -> None:
        """The server ended ``lease``: forget it (nothing to revoke) and go back to the login
        that asked, saying so."""
        lost = self.connector.in_transaction()
        self.drop_rotation()
        self.manager.release("revoke", revoke=False, expected=lease, note=f"ended on the server: {why}")
        back_to = self.connector.restore()
        self.ended = None if back_to else REVOKED
        self.record("revoked", lease, back_to)
        where = f"back to {back_to}" if back_to else "\\jit request to continue"
        txn = " The open transaction ended with it." if lost else ""
        self.say(f"JIT access ended on the server: {why}; {where}.{txn} {what_now}".rstrip())

