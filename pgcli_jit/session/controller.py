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
- a lease that waits to be switched in (a rotation, or an approved request) is switched
  here, when no transaction is open;
- at expiry the connection is closed and its secret scrubbed, so nothing (not
  pgcli's auto-reconnect either) can log back in with it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from pgcli_jit.backends.base import ApprovalPending
from pgcli_jit.core.clock import local_time
from pgcli_jit.core.durations import format_clock, format_duration
from pgcli_jit.core.errors import ConnectionSwitchError, JitError, NotRenewable
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.policy import Phase
from pgcli_jit.core.profile import Profile
from pgcli_jit.session.approvals import ApprovalFlow, approved_by
from pgcli_jit.session.config import Config
from pgcli_jit.session.jobs import Jobs, Slot
from pgcli_jit.session.manager import UNMOVED, LeaseManager, Renewal

if TYPE_CHECKING:
    from concurrent.futures import Future

log = logging.getLogger(__name__)
Say = Callable[[str], None]
T = TypeVar("T")

EXPIRED = "JIT access expired: \\jit request to continue"
REVOKED = "JIT access revoked: \\jit request to continue"
_ENDED_WORDS = {EXPIRED: "expired", REVOKED: "revoked"}  # read on every toolbar redraw
IN_TRANSACTION = "a transaction is open: COMMIT or ROLLBACK first (pgcli-jit never rolls it back for you)"


class Connector(Protocol):
    """The session's connection, as the controller needs it."""

    def in_transaction(self) -> bool: ...

    def switch(self, lease: Lease, overrides: dict[str, str]) -> list[str]:
        """Connect as ``lease`` (new connection first); raise ConnectionSwitchError and keep the old.

        Returns notes on session state that was carried over or could not be (settings,
        temp tables, prepared statements, LISTENs): a switch must not drop them silently.
        """

    def update_secret(self, lease: Lease) -> None:
        """Same user, new password: store it for reconnects without reconnecting."""

    def restore(self) -> str | None:
        """Go back to the identity used before the first switch; its user name, or None."""

    def close(self) -> None:
        """Close the JIT connection and forget its secret."""

    def previous_user(self) -> str | None:
        """The user :meth:`restore` would return to, without reconnecting; None if none."""


@dataclass(frozen=True)
class Ended:
    """How the last lease ended, for ``\\jit status`` after the fact."""

    how: str  # "expired", "revoked", "replaced"
    username: str
    profile: str
    at: float
    back_to: str | None = None


class Controller:
    def __init__(self, manager: LeaseManager, connector: Connector, say: Say) -> None:
        self.manager = manager
        self.connector = connector
        self.say = say
        self.ended: str | None = None  # why statements are refused: EXPIRED or REVOKED
        self.jobs = Jobs()
        self._renewal: Slot[Renewal] = Slot(self.jobs)
        self._waiting_rotation: Renewal | None = None
        self._said_waiting = False
        self.last_end: Ended | None = None
        #: set when a statement was cancelled because the lease expired under it
        self.cancelled_at_expiry = False
        #: set by the shell for -c/-f: nobody can type a \jit command, so none is advised
        self.unattended = False
        #: requests that wait for a second person (ours), and those we may decide
        self.approvals = ApprovalFlow(manager, self.jobs, say)

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
        self._renewal.settle()
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
        notes = self._switch_or_discard(lease, profile)
        old = self.manager.adopt(lease, profile)
        self.ended = None
        replaced = self._revoke_quietly(old) if old is not None else ""
        return " ".join(filter(None, [connected_line(lease, profile, ttl), replaced, *notes]))

    def cancel(self) -> str:
        """``\\jit cancel``: withdraw the request that waits for approval."""
        return self.approvals.cancel()

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Run ``fn`` on the background worker (backend calls that must not block the prompt)."""
        return self.jobs.submit(fn, *args)

    def renew(self, ttl: float | None) -> str:
        self.settle()
        if self.ended and self.lease is None:
            raise JitError(self.ended_message() or self.ended)
        renewal = self.manager.renew(ttl)
        return self._apply(renewal, explicit=True)

    def revoke(self) -> str:
        self.settle()
        lease = self.lease
        if lease is None:
            return self._return_after_end()
        if self.connector.in_transaction():
            raise JitError(f"\\jit revoke refused: {IN_TRANSACTION}")
        back_to = self.connector.restore()
        self._cancel_waiting()
        try:
            self.manager.release("revoke", expected=lease)
        finally:
            self.ended = None if back_to else REVOKED
            self._record_end("revoked", lease, back_to)
        where = f"back to {back_to}" if back_to else "no identity to return to: \\jit request to continue"
        return f"{self._revoked(lease)}; {where}."

    def _return_after_end(self) -> str:
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

    def ended_message(self) -> str | None:
        """Why statements are refused, with the ways on: a new lease or the old login."""
        if self.ended is None:
            return None
        back = self.connector.previous_user()
        return self.ended + (f", or \\jit revoke to return to {back}" if back else "")

    def status_after_end(self) -> str:
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

    def waiting_lease(self) -> Lease | None:
        """New credentials minted for a rotation that waits for the open transaction."""
        waiting = self._waiting_rotation
        return waiting.lease if waiting is not None else None

    def _record_end(self, how: str, lease: Lease, back_to: str | None = None) -> None:
        at = lease.expires_at if how == "expired" else self.manager.clock()
        self.last_end = Ended(how, lease.username, lease.profile, at, back_to)

    def ended_word(self) -> str:
        """For the toolbar: "expired", "revoked" or "" while access has not ended."""
        return _ENDED_WORDS.get(self.ended or "", "")

    # -- the live lease ------------------------------------------------------

    def step(self) -> str | None:
        """One beat of the live lease, while idle or before a statement: apply finished work,
        end expired access, start a due auto-renewal; returns the renewal question if one is due."""
        self.apply_pending()
        self.enforce_expiry()
        self._switch_approved()
        self.approvals.count_tick()
        if self.auto_renew_due():
            self.start_background_renewal()
        return self.question()

    def gate(self) -> str | None:
        """Before a statement: apply what is pending, enforce expiry; a message blocks it."""
        self.apply_pending()
        self.enforce_expiry()
        self._switch_approved()
        return self.ended_message()

    def enforce_expiry(self) -> None:
        lease = self.lease
        now = self.manager.clock()
        if lease is None or self.ended is not None or not lease.is_expired(now):
            return
        lost = self.connector.in_transaction()
        self.connector.close()
        self._cancel_waiting()
        self.ended = EXPIRED
        self._record_end("expired", lease)
        cancelled, self.cancelled_at_expiry = self.cancelled_at_expiry, False
        why = ("; the running statement was cancelled" if cancelled else "") + (
            "; the open transaction was rolled back by the server" if lost else "")
        at = local_time(lease.expires_at)
        head = f"JIT access expired at {at}" if self.unattended else self.ended_message()
        self.say(f"{head}{why}")
        self.jobs.submit(self._release_expired, lease)

    def _release_expired(self, lease: Lease) -> None:
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
        lease, profile = self.lease, self.manager.profile
        if lease is None or profile is None or self.ended is not None:
            return False
        backend = self.manager.backend_for(profile)
        if not backend.server_policy:
            return False
        try:
            backend.lookup(lease)
            return False
        except NotRenewable as exc:
            why = exc.reason
        except JitError:
            return False
        self._cancel_waiting()
        self.manager.release("revoke", revoke=False, expected=lease, note=f"ended on the server: {why}")
        back_to = self.connector.restore()
        self.ended = None if back_to else REVOKED
        self._record_end("revoked", lease, back_to)
        where = f"back to {back_to}" if back_to else "\\jit request to continue"
        self.say(f"JIT access ended on the server: {why}; {where}. The statement was not run.")
        return True

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
        return (profile is not None and profile.renew == "auto" and not self._renewal.busy
                and self._waiting_rotation is None and self.manager.due(self.manager.clock()))

    def start_background_renewal(self) -> None:
        """Renew in the worker thread; the result is applied later by :meth:`apply_pending`."""
        lease = self.lease
        if lease is None or self._renewal.busy:
            return
        self._renewal.start(self.manager.renew, None, lease)

    def apply_pending(self) -> None:
        """Main thread only: take a finished background renewal, or a rotation that waited."""
        future = self._renewal.finished()
        if future is not None:
            try:
                renewal = future.result()
            except JitError as exc:
                if self.ended is None:
                    self._report_failure(exc)
            else:
                self._take(renewal)
        if self._waiting_rotation is not None:
            waiting, self._waiting_rotation = self._waiting_rotation, None
            try:
                message = self._apply(waiting)
            except JitError as exc:
                self._report_failure(exc)
                return
            if self._waiting_rotation is None:
                self.say(message)

    def question(self) -> str | None:
        """The renewal question, when ``renew = "prompt"`` and one is due."""
        lease, profile = self.lease, self.manager.profile
        now = self.manager.clock()
        if lease is None or profile is None or profile.renew != "prompt" or not self.manager.due(now):
            return None
        if self._renewal.busy or self._waiting_rotation is not None:
            return None
        left = format_clock(lease.remaining(now))
        rotate = " (new credentials: reconnects)" if self._will_rotate(lease, profile) else ""
        return f"Lease for {profile.name} ends in {left}. Renew{rotate}? [Y/n]"

    def _will_rotate(self, lease: Lease, profile: Profile) -> bool:
        """Renewal cannot extend: the backend never does, or the hard limit is (nearly) reached."""
        at_cap = lease.max_expires_at is not None and lease.expires_at >= lease.max_expires_at - 1
        return at_cap or not lease.renewable or not self.manager.backend_for(profile).can_renew

    def answer(self, yes: bool) -> None:
        if not yes:
            self.manager.decline()
            self.say("Not renewing: \\jit renew still works until the lease ends.")
            return
        try:
            self.say(self.renew(None))
        except JitError as exc:
            self._report_failure(exc)

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
        if lease is not None and profile is not None:
            if profile.revoke_on_exit:
                self.connector.close()
                self.manager.release("revoke", expected=lease)
                message = f"{self._revoked(lease)}."
            else:
                until = local_time(lease.expires_at)
                message = f"Kept {lease.username} until {until} (revoke_on_exit = false)."
        self.manager.close()
        return message

    # -- internals ---------------------------------------------------------------

    def _take(self, renewal: Renewal) -> None:
        """A background result: applied, or dropped when access ended while it was running
        (an extension is then revoked by the expiry's release, queued behind it)."""
        if self.ended is None:
            self.say(self._apply(renewal))
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
        if renewal.kind == "extended":
            if renewal.new_secret:
                self.connector.update_secret(renewal.lease)
            note = "".join(f" ({w})" for w in renewal.lease.warnings)
            return f"Renewed {renewal.lease.username} until {local_time(renewal.lease.expires_at)}{note}."
        assert profile is not None
        return self._rotate(renewal, profile, explicit)

    def _rotate(self, renewal: Renewal, profile: Profile, explicit: bool = False) -> str:
        current = self.lease
        if current is not None and current.same_grant(renewal.lease):
            return ""  # this rotation has already been applied
        if current is None or not current.same_grant(renewal.base):
            self.manager.discard(renewal.lease, profile)  # a newer lease won the race
            return "Renewal superseded by a newer lease."
        if self.connector.in_transaction():
            if self._waiting_rotation is not None and self._waiting_rotation.lease is not renewal.lease:
                self.manager.discard(self._waiting_rotation.lease, profile)
            self._waiting_rotation = renewal
            if explicit or not self._said_waiting:
                self._said_waiting = True
                return (f"New credentials are ready ({renewal.reason}); the session will reconnect "
                        f"when the open transaction ends. COMMIT before {local_time(current.expires_at)} "
                        "or the transaction is lost.")
            return ""
        self._said_waiting = False
        notes = self._switch_or_discard(renewal.lease, profile)
        old = self.manager.adopt(renewal.lease, profile, event="rotate")
        replaced = self._revoke_quietly(old) if old is not None else ""
        rotated = (f"Rotated to {renewal.lease.username} until {local_time(renewal.lease.expires_at)}"
                   f" ({renewal.reason}).")
        return " ".join(filter(None, [rotated, replaced, *notes]))

    def _switch_or_discard(self, lease: Lease, profile: Profile) -> list[str]:
        """Connect as ``lease``; when that fails in any way (a refused login, pgcli's exit when
        a ``--jit`` first connection fails, Ctrl-C) the unused lease is revoked, never left live."""
        overrides = {**profile.connection_overrides(), **lease.conninfo}
        try:
            return self.connector.switch(lease, overrides)
        except ConnectionSwitchError as exc:
            error = self.manager.discard(lease, profile)
            if error:  # connect and revoke both failed (say, no connection slots): say so
                raise ConnectionSwitchError(
                    f"{exc.message}; {lease.username} could not be revoked either ({error}): "
                    f"it can log in until {local_time(lease.expires_at)}",
                    self._who_ends(lease, profile)) from None
            raise
        except BaseException:
            self.manager.discard(lease, profile)
            raise

    def _who_ends(self, lease: Lease, profile: Profile) -> str:
        """What ends a minted role the client could neither use nor revoke."""
        return self.manager.backend_for(profile).ended_without_revoke(lease)

    def _switch_approved(self) -> None:
        """Switch to the lease an approver granted, once no transaction is open (said once
        while one is); the request then stops waiting."""
        w = self.approvals.tick()
        if w is None:
            return
        lease = w.approved
        assert lease is not None
        who, rid = approved_by(lease), w.pending.request_id
        if self.connector.in_transaction():
            if not w.said_transaction:
                w.said_transaction = True
                self.say(f"Request {rid} approved by {who}: the session switches when the open "
                         "transaction ends (COMMIT or ROLLBACK).")
            return
        self.approvals.switched()
        try:
            line = self.adopt_new(lease, w.profile, w.ttl)
        except ConnectionSwitchError as exc:
            self.say(f"Request {rid} was approved by {who}, but: {exc}")
            return
        self.say(f"Approved by {who}: {line[0].lower()}{line[1:]}")

    def _revoke_quietly(self, old: Lease) -> str:
        """Revoke the lease a new one replaced; the sentence that says so (or that it failed).
        Its profile may exist only on the server (``requestable``): it is revoked all the same."""
        error = self.manager.discard(old, self.config.requestable(old.profile), why="replaced")
        if error:
            return f"The previous lease {old.username} was not revoked: {error}."
        until = self._valid_after_revoke(old)
        if until is not None:
            return (f"The previous token of {old.username} stays valid until {local_time(until)} "
                    "(a signed token cannot be withdrawn).")
        return f"Revoked the previous lease {old.username}."

    def _valid_after_revoke(self, lease: Lease) -> float | None:
        return self.manager.backend_for(self.config.requestable(lease.profile)).valid_after_revoke(lease)

    def _revoked(self, lease: Lease) -> str:
        """What a revoke did, honestly: a token that cannot be withdrawn is only let go."""
        until = self._valid_after_revoke(lease)
        if until is None:
            return f"Revoked {lease.username} ({lease.profile})"
        return (f"Closed {lease.username} ({lease.profile}); its token stays valid until "
                f"{local_time(until)} (a signed token cannot be withdrawn)")

    def _discard_unapplied(self) -> None:
        future = self._renewal.clear()
        if future is not None and future.done() and not future.cancelled() and future.exception() is None:
            renewal = future.result()
            if renewal.kind == "rotate" and self._waiting_rotation is None:
                self._waiting_rotation = renewal
        self._cancel_waiting()

    def _cancel_waiting(self) -> None:
        self._said_waiting = False
        waiting, self._waiting_rotation = self._waiting_rotation, None
        if waiting is not None and self.manager.profile is not None:
            self.manager.discard(waiting.lease, self.manager.profile)

    def _report_failure(self, exc: JitError) -> None:
        lease = self.lease
        if lease is None or not self.manager.first_failure_report():
            return
        if self.manager.phase() is Phase.FINAL:
            self.say(f"Renewal failed: {exc}. JIT access ends at {local_time(lease.expires_at)}.")
        else:
            self.say(f"Renewal failed: {exc}. Keeping the current lease until "
                     f"{local_time(lease.expires_at)}; will retry.")


def connected_line(lease: Lease, profile: Profile, asked: float | None) -> str:
    """``Connected as ... until ...``, saying when the backend granted less than was asked
    (max_ttl): a user who asked ``--ttl 1h`` must not find out from the countdown."""
    line = f"Connected as {lease.username} until {local_time(lease.expires_at)} ({profile.name})"
    wanted = asked or profile.ttl
    granted = lease.lifetime
    notes = [f"{w}" for w in lease.warnings]
    said = any("cap" in w.lower() for w in lease.warnings)  # the backend already said it
    if asked and granted < wanted - UNMOVED and not said:
        cap = f"max_ttl {format_duration(profile.max_ttl)}" if profile.max_ttl else "the backend's limit"
        notes.insert(0, f"ttl capped at {format_duration(granted)} by {cap}; asked {format_duration(wanted)}")
    return line + "".join(f" ({n})" for n in notes) + "."
