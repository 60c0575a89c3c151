"""What the ``\\jit`` commands and the live lease *do* to a session, without pgcli.

The controller joins the :class:`LeaseManager` (credentials) to a
:class:`Connector` (the session's connection).  The shell implements the
connector over pgcli's ``PGExecute``; tests can implement it over a plain
psycopg connection.  The rules that protect the user live here:

- a connection is switched only outside a transaction, new one first, and a
  failed switch keeps the old connection (and revokes the unused lease);
- background work (renewals, releases, approval polls) runs on the session's one worker
  (:mod:`~pgcli_jit.session.jobs`) and never touches the connection: its results are
  applied on the main thread, before a statement or while idle (:meth:`apply_pending`);
- a renewal never shortens a lease, and new credentials (a reconnect) are taken unasked
  only when the reconnect drops nothing and they add enough; otherwise they are offered;
- a lease that waits to be switched in (a rotation, or an approved request) is switched
  in from here (:meth:`_switch_in`), when no transaction is open.

Its neighbours hold the rest, each one part: :mod:`~pgcli_jit.session.ending` (whether
access stands; expiry and the server's end, and their words),
:mod:`~pgcli_jit.session.switching` (connecting as a new lease, and the one lease that waits
to be switched in), :mod:`~pgcli_jit.session.renewing` (one background renewal at a time),
:mod:`~pgcli_jit.session.offers` (what is offered and said once per lease) and
:mod:`~pgcli_jit.session.approvals` (requests waiting for a second person).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pgcli_jit.backends.base import ApprovalPending
from pgcli_jit.core.clock import local_time
from pgcli_jit.core.errors import ConnectionSwitchError, JitError
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.policy import Phase
from pgcli_jit.core.profile import Profile
from pgcli_jit.session.approvals import ApprovalFlow
from pgcli_jit.session.catalog import ServerCatalog
from pgcli_jit.session.config import Config
from pgcli_jit.session.ending import EXPIRED, IN_TRANSACTION, REVOKED, Access, connected_line
from pgcli_jit.session.jobs import Jobs
from pgcli_jit.session.manager import LeaseManager, Renewal, Rotate
from pgcli_jit.session.offers import Offers
from pgcli_jit.session.renewing import RenewalRunner
from pgcli_jit.session.switching import Connector, Incoming, Switcher, approved_by

if TYPE_CHECKING:
    from concurrent.futures import Future

log = logging.getLogger(__name__)
Say = Callable[[str], None]
T = TypeVar("T")


__all__ = ["EXPIRED", "REVOKED", "Connector", "Controller", "connected_line"]


class Controller:
    def __init__(self, manager: LeaseManager, connector: Connector, say: Say) -> None:
        self.manager = manager
        self.connector = connector
        self.say = say
        self.jobs = Jobs()
        #: background renewals, started from the idle ticker or the statement watchdog's thread
        self._renewals = RenewalRunner(self.jobs, manager)
        #: connecting as a new lease; the one lease that waits to be switched in
        self.switcher = Switcher(manager, connector)
        self.handover = self.switcher.handover
        #: what is offered (F6) and said once per lease; the statement kept alive
        self.offers = Offers()
        #: whether access stands; the ends that come without a command (expiry, the server)
        self.access = Access(manager, connector, say, self.jobs, self.handover)
        #: requests that wait for a second person (ours), and those we may decide
        self.approvals = ApprovalFlow(manager, self.jobs, say, self.handover)
        #: the server's profile names for Tab completion, filled on the worker
        self.catalog = ServerCatalog(self.jobs, manager)

    def set_waker(self, wake: Callable[[], None]) -> None:
        """How the shell is asked (from any thread) to run its idle tick now: when background
        work ends, or the server's doorbell rings."""
        self.jobs.on_done = wake
        self.approvals.wake = wake

    @property
    def config(self) -> Config:
        return self.manager.config

    @property
    def lease(self) -> Lease | None:
        return self.manager.lease

    # -- commands -------------------------------------------------------------

    def settle(self) -> None:
        """Before a user command: let a background renewal finish and apply its result,
        so the command acts on the current lease and never races the worker."""
        self._renewals.settle()
        self.apply_pending()

    def request(self, profile_name: str | None, ttl: float | None, reason: str) -> str:
        self.settle()
        if self.connector.in_transaction():
            raise JitError(f"\\jit request refused: {IN_TRANSACTION}")
        profile = self.config.requestable(profile_name)
        self.approvals.refuse_second(profile.name)
        try:
            lease = self.manager.mint(profile, ttl, reason)
        except ApprovalPending as exc:  # the session goes on; it switches once approved
            return self.approvals.start(exc.pending, profile, ttl)
        return self.adopt_new(lease, profile, ttl)

    def adopt_new(self, lease: Lease, profile: Profile, ttl: float | None) -> str:
        """Switch to freshly minted credentials (no transaction open) and make them current;
        the line that says so.  A failed switch keeps the old connection and revokes ``lease``."""
        notes = self.switcher.adopt_new(lease, profile)
        self.access.ended = None
        return " ".join(filter(None, [connected_line(lease, profile, ttl), *notes]))

    def cancel(self) -> str:
        """``\\jit cancel``: withdraw the request that waits for approval."""
        return self.approvals.cancel()

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Run ``fn`` on the background worker (backend calls that must not block the prompt)."""
        return self.jobs.submit(fn, *args)

    def renew(self, ttl: float | None, rotate: bool = False) -> str:
        r"""``\jit renew``: extend; never shorten; new credentials only when they cost nothing
        and add at least half a term, or when asked for (``--rotate``)."""
        self.settle()
        if self.ended and self.lease is None:
            raise JitError(self.ended_message() or self.ended)
        if self.lease is None:
            raise JitError("no JIT lease to renew", "\\jit request [PROFILE] to get one")
        renewal = self.manager.renew(ttl, rotate=self._rotate_mode(asked=rotate))
        return self._apply(renewal, explicit=True)

    def _rotate_mode(self, asked: bool = False) -> Rotate:
        """New credentials when asked for, or without asking when the reconnect loses nothing;
        never while an approved lease waits to replace this one (they would be revoked unused)."""
        if self.handover.approval() is not None:
            return "never"
        return "always" if asked else "never" if self.connector.rotation_cost() else "if_worth"

    def accept_offer(self) -> str | None:
        """F6: renew now, in the background (the prompt never waits on the server); new
        credentials when they were offered.  The result is said when it is applied."""
        lease = self.lease
        if lease is None or self.ended is not None:
            return "No JIT lease to renew: \\jit request [PROFILE] to get one."
        offer = self.offers.rotation(lease)
        rotate = self._rotate_mode(asked=offer is not None)
        if self.start_background_renewal(rotate, explicit=True):  # busy: that one's result is said
            self.offers.take_rotation(lease)
        return None

    def revoke(self) -> str:
        self.settle()
        lease = self.lease
        if lease is None:
            return self.access.return_to_login()
        if self.connector.in_transaction():
            raise JitError(f"\\jit revoke refused: {IN_TRANSACTION}")
        back_to = self.connector.restore()
        self.access.drop_rotation()
        try:
            self.manager.release("revoke", expected=lease)
        finally:
            self.access.ended = None if back_to else REVOKED
            self.access.record("revoked", lease, back_to)
        where = f"back to {back_to}" if back_to else "no identity to return to: \\jit request to continue"
        return f"{self.switcher.revoked(lease)}; {where}."

    def ended_message(self) -> str | None:
        return self.access.message()

    def status_after_end(self) -> str:
        """``\\jit status`` with no lease: what ended, when, and what to do next."""
        return self.access.status()

    def waiting_lease(self) -> Lease | None:
        """New credentials minted for a rotation that waits for the open transaction."""
        waiting = self.handover.rotation()
        return waiting.lease if waiting is not None else None

    @property
    def ended(self) -> str | None:
        """Why statements are refused (expired, revoked); None while access stands."""
        return self.access.ended

    # -- the live lease ------------------------------------------------------

    def step(self) -> None:
        """One beat of the live lease, while idle or before a statement (main thread): apply
        finished work, end expired access, start a due auto-renewal, say what is offered."""
        self.apply_pending()
        self.access.enforce_expiry()
        self.approvals.tick()
        self._switch_in()
        self.approvals.count_tick()
        self.beat()
        self._announce()

    def beat(self) -> None:
        """Start what the clock makes due; from any thread (the idle ticker, the statement
        watchdog while a statement runs or its output is paged).  It never touches the
        connection: extensions land in the manager at once, so the watchdog's deadline
        moves.  It only ever starts renewals that may not mint: new credentials are minted
        after the main thread has looked at what a reconnect would cost (:meth:`_take`)."""
        if self.auto_renew_due():
            self.start_background_renewal("never")
        elif self._keep_alive_due():
            lease = self.lease
            if self.start_background_renewal("never"):
                self.offers.kept(lease)

    def gate(self) -> str | None:
        """Before a statement: apply what is pending, enforce expiry; a message blocks it."""
        self.apply_pending()
        self.access.enforce_expiry()
        self.approvals.tick()
        self._switch_in()
        return self.ended_message()

    def refresh_for_reconnect(self) -> None:
        """Before pgcli reconnects on its own: a backend whose secrets are per-connection
        (an IAM token) gets a fresh one, so the reconnect never uses a stale token."""
        profile = self.manager.profile
        if self.lease is None or profile is None:
            return
        if self.manager.backend_for(profile).fresh_secret_per_connection:
            try:
                self.say(self._apply(self.manager.renew(None)))
            except JitError as exc:
                self.say(f"No fresh credentials for the reconnect: {exc}")

    def auto_renew_due(self) -> bool:
        profile = self.manager.profile
        return (profile is not None and profile.renew == "auto" and self._free_to_renew()
                and self.manager.due(self.manager.clock()))

    def _keep_alive_due(self) -> bool:
        """``renew = "prompt"`` asks at the prompt; a statement that runs into the lease's final
        part cannot be asked about without taking keys typed for the next one, so the lease is
        renewed once to keep it running (said when the statement returns)."""
        lease, profile = self.lease, self.manager.profile
        offers = self.offers
        if (lease is None or profile is None or profile.renew != "prompt" or not offers.statement_running
                or offers.kept_alive_this_statement or self.access.unattended or not self._free_to_renew()):
            return False
        now = self.manager.clock()
        return self.manager.phase(now) is Phase.FINAL and self.manager.due(now)

    def begin_statement(self) -> None:
        self.offers.begin_statement()

    def end_statement(self) -> None:
        self.offers.end_statement()

    def _free_to_renew(self) -> bool:
        return (not self._renewals.running() and self.handover.rotation() is None
                and self.offers.rotation(self.lease) is None and self.ended is None)

    def start_background_renewal(self, rotate: Rotate = "never", explicit: bool = False) -> bool:
        """Renew in the worker thread; the result is applied later by :meth:`apply_pending`.
        False when one is already running (from any thread: one at a time).  An extension
        takes effect in the manager when it lands, so a statement that runs on can be renewed
        again before the main thread has said the first."""
        lease = self.lease
        return lease is not None and self._renewals.start(lease, rotate, explicit)

    def apply_pending(self) -> None:
        """Main thread only: take the background renewals that finished; switch in a lease that
        waited, once no transaction is open."""
        done = self._renewals.take()
        extended = [i for i, (f, _, _) in enumerate(done)
                    if f.exception() is None and f.result().kind == "extended"]
        for i, (future, rotate, explicit) in enumerate(done):
            try:
                renewal = future.result()
            except JitError as exc:
                if self.ended is None:
                    self._report_failure(exc)
            else:  # of several extensions, only the last is said
                self._take(renewal, rotate, explicit, quiet=i in extended[:-1])
        self._switch_in()

    def offer(self) -> str | None:
        """What the toolbar offers on F6: ``renew`` while a ``prompt`` lease is in its window,
        ``new credentials`` while a rotation waits for a yes; None otherwise."""
        if self.offers.rotation(self.lease) is not None:
            return "new credentials"
        lease, profile = self.lease, self.manager.profile
        if lease is None or profile is None or profile.renew != "prompt" or self.ended is not None:
            return None
        if self._renewals.running() or self.handover.rotation() is not None:
            return None
        return "renew" if self.manager.due(self.manager.clock()) else None

    def _announce(self) -> None:
        """Once per lease, above the prompt (never a question that reads the terminal): the
        window opened (F6 renews), and in the final part, an open transaction's deadline."""
        lease, profile = self.lease, self.manager.profile
        if lease is None or profile is None or self.ended is not None or self.access.unattended:
            return  # -c / -f: nobody at a prompt to press F6
        now = self.manager.clock()
        if self.offer() == "renew":
            line = self.offers.window_line(lease, profile.name, now, self.connector.in_transaction())
            if line:  # said now, with the transaction's deadline if one is open
                self.say(line)
                if self.manager.phase(now) is Phase.FINAL:
                    self.offers.final_line(lease)  # that deadline is said; not twice in a row
                return
        if (self.manager.phase(now) is Phase.FINAL and not self.offers.said_final(lease)
                and self.connector.in_transaction()):  # whether or not the offer still stands
            self.say(self.offers.final_line(lease))

    def shutdown(self) -> str | None:
        """On exit: revoke unless the profile says ``revoke_on_exit = false``.

        Nothing minted may outlive the session: a replacement waiting for a
        transaction, or one a background renewal just finished, is revoked too.
        """
        self.jobs.shutdown()
        self._discard_unapplied()
        self.approvals.shutdown()
        lease, profile = self.lease, self.manager.profile
        message = None
        if lease is not None and self.ended is not None:  # expired: its release was still queued
            self.access.release_expired(lease)
        elif lease is not None and profile is not None:
            if profile.revoke_on_exit:
                self.connector.close()
                self.manager.release("revoke", expected=lease)
                message = f"{self.switcher.revoked(lease)}."
            else:
                until = local_time(lease.expires_at)
                message = f"Kept {lease.username} until {until} (revoke_on_exit = false)."
        self.manager.close()
        return message

    # -- internals ---------------------------------------------------------------

    def _take(self, renewal: Renewal, rotate: Rotate, explicit: bool, quiet: bool = False) -> None:
        """A background result: applied, or dropped when access ended while it was running
        (an extension is then revoked by the expiry's release, queued behind it).

        A clock-started renewal that found the lease cannot be extended only looked: if a
        reconnect would lose nothing, new credentials are minted now (when they add enough);
        otherwise they are offered, with what they would cost."""
        current = self.lease
        if renewal.kind == "extended" and not (current is not None and current.same_grant(renewal.base)):
            return  # the lease it extended was let go meanwhile (an operator ended it)
        if self.ended is None and renewal.kind == "offer" and rotate == "never" \
                and self._rotate_mode() == "if_worth":
            self.start_background_renewal("if_worth", explicit=explicit)
            return
        if self.ended is None:
            message = self._apply(renewal, explicit=explicit)
            if message and not quiet:
                self.say(self.offers.kept_note(renewal, message))
        elif renewal.kind == "rotate":
            self.manager.discard(renewal.lease, self.config.requestable(renewal.lease.profile))

    def _apply(self, renewal: Renewal, explicit: bool = False) -> str:
        profile = self.manager.profile
        if renewal.kind == "superseded":
            return f"Already renewed: {renewal.lease.username} until {local_time(renewal.lease.expires_at)}."
        if renewal.kind == "unchanged":
            note = f" ({renewal.reason})" if renewal.reason else ""
            return (f"Nothing to renew: valid until {local_time(renewal.lease.expires_at)} "
                    f"({renewal.lease.username}){note}.")
        if renewal.kind == "offer":
            granted = self.handover.approval()
            if granted is not None:  # the approved lease replaces this one at COMMIT
                return (f"Not renewed: request {granted.request_id} was approved and switches in when "
                        "the open transaction ends; no new credentials are needed." if explicit else "")
            return self.offers.offer_rotation(renewal, self.connector.rotation_cost(), explicit)
        if renewal.kind == "extended":
            if renewal.new_secret:
                self.connector.update_secret(renewal.lease)
            note = "".join(f" ({w})" for w in renewal.lease.warnings)
            return f"Renewed {renewal.lease.username} until {local_time(renewal.lease.expires_at)}{note}."
        assert profile is not None
        return self.switcher.rotate(renewal, profile, explicit)

    def _switch_in(self) -> None:
        """Switch to the lease that waits (a rotation, or a granted request) once no
        transaction is open; while one is, an approval says so once."""
        incoming = self.handover.incoming
        if incoming is None:
            return
        if self.connector.in_transaction():
            if incoming.approved and not incoming.said:
                incoming.said = True
                self.say(f"Request {incoming.request_id} approved by {approved_by(incoming.lease)}: the "
                         "session switches when the open transaction ends (COMMIT or ROLLBACK).")
            return
        self.handover.take()
        if incoming.renewal is not None:
            self._switch_rotation(incoming)
        else:
            self._switch_approved(incoming)

    def _switch_rotation(self, incoming: Incoming) -> None:
        assert incoming.renewal is not None
        try:
            message = self.switcher.rotate(incoming.renewal, incoming.profile)
        except JitError as exc:
            self._report_failure(exc)
            return
        if message:
            self.say(message)

    def _switch_approved(self, incoming: Incoming) -> None:
        who, rid = approved_by(incoming.lease), incoming.request_id
        try:
            line = self.adopt_new(incoming.lease, incoming.profile, incoming.ttl)
        except ConnectionSwitchError as exc:
            self.say(f"Request {rid} was approved by {who}, but: {exc}")
            return
        self.say(f"Approved by {who}: {line[0].lower()}{line[1:]}")

    def _discard_unapplied(self) -> None:
        """On exit: rotations the worker minted and nobody switched to are revoked unused."""
        profile = self.manager.profile
        for renewal in self._renewals.drop():
            if renewal.kind == "rotate" and profile is not None:
                self.handover.hold(Incoming(renewal.lease, profile, renewal=renewal))
        self.access.drop_rotation()

    def _report_failure(self, exc: JitError) -> None:
        lease = self.lease
        if lease is None or not self.manager.first_failure_report():
            return
        if self.manager.phase() is Phase.FINAL:
            self.say(f"Renewal failed: {exc}. JIT access ends at {local_time(lease.expires_at)}.")
        else:
            self.say(f"Renewal failed: {exc}. Keeping the current lease until "
                     f"{local_time(lease.expires_at)}; will retry.")
