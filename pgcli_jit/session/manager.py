"""The lease state machine: one current lease, renewals that never overlap, paced retries.

No connection lives here.  A renewal either *extends* the lease (same user;
maybe a new secret, as with RDS tokens) or needs a *rotation* (new user): the
manager then mints the replacement and hands it back, and the caller switches
the connection before calling :meth:`LeaseManager.adopt`.  Everything takes an
injected clock, so windows, pacing and expiry are tested by moving time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pgcli_jit.backends import backend_class
from pgcli_jit.backends.base import ApprovalPending, Backend, LeaseRequest
from pgcli_jit.core.clock import Clock, local_time, system_clock
from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.errors import BackendError, JitError, LeaseExpired, NotRenewable
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.policy import Phase, phase
from pgcli_jit.core.profile import Profile
from pgcli_jit.session.audit import AuditLog, iso
from pgcli_jit.session.config import Config

RETRY_INTERVAL = 60.0
BackendFactory = Callable[[Profile, Clock], Backend]


#: a renewal that moves the expiry by less than this renewed nothing
UNMOVED = 1.0
#: a rotation is worth its reconnect only when it adds at least this part of the term
WORTH_ROTATING = 0.5
#: may a renewal that cannot extend mint new credentials (and so reconnect)?
#: "never": say so (an offer); "if_worth": when it adds at least half a term; "always": asked for
Rotate = Literal["never", "if_worth", "always"]


def not_moved(before: Lease, after: Lease) -> bool:
    """The backend's side of "nothing to renew": its ``renew`` returned the lease with the
    same credentials and an expiry that did not move (it was already valid for at least
    as long as asked).  Any backend signals it that way; no exception class is needed."""
    return after.credentials == before.credentials and abs(after.expires_at - before.expires_at) < UNMOVED


def load_backend(profile: Profile, clock: Clock) -> Backend:
    return backend_class(profile.backend, path=profile.source)(profile, clock=clock)


@dataclass(frozen=True)
class Renewal:
    """What a renewal produced.  ``kind`` says what the caller must do with the connection."""

    kind: Literal["extended", "rotate", "offer", "superseded", "unchanged"]
    lease: Lease
    base: Lease  # the lease this renewal started from
    reason: str = ""  # why a rotation was needed
    #: ``offer``: the lease cannot be extended and new credentials were not minted; they
    #: would end ``gain`` seconds later than the current lease
    gain: float = 0.0

    @property
    def new_secret(self) -> bool:
        """Same user, new password (an RDS token): reconnects must use the new one."""
        return self.kind == "extended" and self.lease.credentials != self.base.credentials


@dataclass
class _Held:
    lease: Lease
    profile: Profile
    backend: Backend
    ttl: float  # default length of a renewal: the lease's first term
    last_failure: float | None = None
    failure_said: Phase | None = None  # the phase a failure was last reported in
    pending: Lease | None = None  # a replacement minted for rotation, not yet switched to
    #: the term the backend really gave a replacement that was then refused (it capped it)
    minted_term: float | None = None


class LeaseManager:
    def __init__(self, config: Config, audit: AuditLog, requester: str, *,
                 clock: Clock = system_clock, backend_factory: BackendFactory = load_backend) -> None:
        self.config = config
        self.audit = audit
        self.requester = requester
        self.clock = clock
        self._factory = backend_factory
        self._backends: dict[str, Backend] = {}
        self._held: _Held | None = None
        self._lock = threading.RLock()
        self._cache_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------

    @property
    def lease(self) -> Lease | None:
        held = self._held
        return held.lease if held else None

    @property
    def profile(self) -> Profile | None:
        held = self._held
        return held.profile if held else None

    def backend_for(self, profile: Profile) -> Backend:
        """One backend per profile, shared by the main thread and the renewal worker.

        Its own lock: the renewal lock is held across slow backend calls, and the
        idle ticker (which must never block typing) asks for backends every second.
        """
        with self._cache_lock:
            if profile.name not in self._backends:
                self._backends[profile.name] = self._factory(profile, self.clock)
            return self._backends[profile.name]

    def phase(self, now: float | None = None) -> Phase | None:
        held = self._held
        if held is None:
            return None
        return phase(held.lease, held.profile.renew_before, self.clock() if now is None else now)

    # -- minting -----------------------------------------------------------------

    def mint(self, profile: Profile, ttl: float | None, reason: str,
             break_glass: bool = False) -> Lease:
        """New credentials from ``profile``'s backend; not yet the current lease."""
        req = LeaseRequest(ttl=ttl or profile.ttl, reason=reason, requester=self.requester,
                           ttl_given=bool(ttl) or profile.ttl_given, break_glass=break_glass)
        try:
            lease = self.backend_for(profile).request(req)
        except ApprovalPending as exc:  # asked, not granted: the caller waits for it
            self.audit.record("pending", None, profile=profile.name, backend=profile.backend,
                              requester=self.requester, reason=reason,
                              request_id=exc.pending.request_id)
            raise
        except JitError as exc:
            self.audit.record("failure", None, action="request", profile=profile.name,
                              backend=profile.backend, requester=self.requester, reason=reason,
                              error=str(exc))
            raise
        try:
            self._reject_expired(lease, "request")
            self.audit.ensure_writable(lease, required=profile.audit_required)  # fail closed
        except JitError as exc:
            self.discard(lease, profile)
            self.audit.record("failure", lease, action="request", error=str(exc))
            raise
        return lease

    def adopt(self, lease: Lease, profile: Profile, event: str = "request") -> Lease | None:
        """Make ``lease`` current (after the connection switched); returns the lease it replaces.

        Its first term becomes the default length of later renewals, so a lease
        requested with ``--ttl 45s`` is renewed for 45 s, not for the profile's ttl.
        """
        with self._lock:
            old = self._held.lease if self._held else None
            self._held = _Held(lease, profile, self.backend_for(profile), ttl=lease.lifetime)
        self.audit.record(event, lease, ttl=round(lease.lifetime),
                          replaced=old.username if old else None)
        return old

    def discard(self, lease: Lease, profile: Profile, why: str = "never used") -> str | None:
        """Revoke a lease that is not (or no longer) current: replaced, or never switched to.

        Never raises: this runs on the way out of other failures.  Returns the
        error, if the backend refused; either way the audit trail records it.
        """
        held = self._held
        if held is not None and held.pending is lease:
            held.pending = None
        try:
            self.backend_for(profile).revoke(lease)
        except JitError as exc:
            self.audit.record("failure", lease, action="revoke", note=why, error=str(exc))
            return str(exc)
        valid = self.backend_for(profile).valid_after_revoke(lease)
        self.audit.record("revoke", lease, note=why, revoked=valid is None,
                          valid_until=None if valid is None else iso(valid))
        return None

    # -- renewing ------------------------------------------------------------------

    def renew(self, ttl: float | None = None, expected: Lease | None = None,
              rotate: Rotate = "if_worth") -> Renewal:
        """Extend the current lease, or mint its replacement when it cannot be extended and
        ``rotate`` allows it.  A renewal never shortens access: one that would (a ``--ttl``
        shorter than what is left, new credentials ending sooner) renews nothing.

        Only one renewal runs at a time; a renewal that finds the lease already
        replaced (``expected`` no longer current) returns ``superseded``
        instead of renewing twice.  A failure is recorded for retry pacing
        and re-raised.
        """
        with self._lock:
            held = self._require()
            if expected is not None and held.lease is not expected:
                return Renewal("superseded", held.lease, expected)
            try:
                return self._renew_locked(held, ttl, rotate)
            except JitError as exc:
                held.last_failure = self.clock()
                self.audit.record("failure", held.lease, action="renew", error=str(exc))
                raise

    def _renew_locked(self, held: _Held, asked: float | None, rotate: Rotate) -> Renewal:
        ttl = asked or held.ttl  # an explicit --ttl also shapes later renewals, once it renewed
        now = self.clock()
        if held.lease.is_expired(now):
            raise LeaseExpired("the lease has expired", "\\jit request to continue")
        if held.pending is not None:  # one replacement per lease, however many ask
            return Renewal("rotate", held.pending, held.lease, "new credentials are waiting")
        if now + ttl < held.lease.expires_at - UNMOVED:  # Vault's increment counts from now
            held.last_failure = now  # paced like any renewal that renewed nothing
            return Renewal("unchanged", held.lease, held.lease,
                           f"already valid for longer than {format_duration(ttl)}")
        backend = held.backend
        try:
            if not (backend.can_renew and held.lease.renewable):
                raise NotRenewable("the backend cannot extend this lease", backend=backend.name)
            renewed = backend.renew(held.lease, ttl)
        except NotRenewable as exc:
            return self._rotation(held, ttl, exc.reason, rotate)
        if not_moved(held.lease, renewed):  # nothing was renewed: no new term, no audit line
            held.last_failure = self.clock()  # pace the question / auto retry as after a failure
            return Renewal("unchanged", held.lease, held.lease, "; ".join(renewed.warnings))
        renewed = dataclasses.replace(renewed, renewed_at=self.clock())
        self._reject_expired(renewed, "renew")
        base = held.lease
        held.lease, held.last_failure, held.failure_said = renewed, None, None
        held.ttl = ttl
        self.audit.record("renew", renewed, ttl=round(renewed.expires_at - self.clock()))
        return Renewal("extended", renewed, base)

    def _rotation(self, held: _Held, ttl: float, why: str, rotate: Rotate) -> Renewal:
        """The lease cannot be extended: new credentials, when they are worth a reconnect.

        What they would add is known only roughly before minting (the backend may cap the
        term), so it is checked again on what was minted: a replacement that ends no later
        than the current lease is revoked at once, nothing changes, and that term is
        remembered.  Every outcome that changes nothing is paced like a failure, so the clock
        does not ask again every second."""
        now = self.clock()
        term = min(x for x in (ttl, held.profile.max_ttl, held.minted_term) if x)
        gain = now + term - held.lease.expires_at
        if gain < UNMOVED:
            held.last_failure = now
            return Renewal("unchanged", held.lease, held.lease, f"{why}; new credentials would end sooner")
        if rotate == "never" or (rotate == "if_worth" and gain < WORTH_ROTATING * held.ttl):
            held.last_failure = now
            return Renewal("offer", held.lease, held.lease, why, gain=gain)
        lease = self._mint_replacement(held, ttl)
        if lease.expires_at < held.lease.expires_at + UNMOVED:
            held.minted_term, held.last_failure = lease.lifetime, now
            self.discard(lease, held.profile, why="it would end sooner than the current lease")
            return Renewal("unchanged", held.lease, held.lease, f"{why}; new credentials would end sooner")
        held.pending = lease
        return Renewal("rotate", lease, held.lease, why)

    def _mint_replacement(self, held: _Held, ttl: float) -> Lease:
        """A rotation's new credentials.  A profile that needs approval cannot rotate in the
        background: the request is withdrawn and the user told to ask (and wait) themselves."""
        try:
            return self.mint(held.profile, ttl, held.lease.reason)
        except ApprovalPending as exc:
            with contextlib.suppress(JitError):
                held.backend.cancel(exc.pending)
            raise NotRenewable("the lease cannot be extended and new credentials need approval",
                               backend=held.backend.name, profile=held.profile.name,
                               hint=f"\\jit request {held.profile.name} asks for them") from None

    def _reject_expired(self, lease: Lease, action: str) -> None:
        if lease.expires_at <= self.clock():
            raise BackendError(f"{action} returned a lease that has already expired",
                               backend=lease.backend, profile=lease.profile)

    def _require(self) -> _Held:
        if self._held is None:
            raise JitError("no JIT lease is held", "\\jit request first")
        return self._held

    # -- pacing and prompting --------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether a background renewal (or the renewal offer) is due now."""
        held = self._held
        if held is None or held.profile.renew == "never":
            return False
        if self.phase(now) not in (Phase.WINDOW, Phase.FINAL):
            return False
        return held.last_failure is None or now - held.last_failure >= RETRY_INTERVAL

    def first_failure_report(self) -> bool:
        """True once per run of failures and phase: said once, not every minute, and said
        again when the final part begins, where a failure means access will end."""
        held = self._held
        where = self.phase()
        if held is None or held.failure_said is where:
            return False
        held.failure_said = where
        return True

    # -- ending ------------------------------------------------------------------------------

    def release(self, event: Literal["revoke", "expire"], *, revoke: bool = True,
                expected: Lease | None = None, note: str | None = None) -> Lease | None:
        """Forget the current lease, revoking it at the backend first when asked.

        With ``expected``, only that lease is released: a late expiry must not
        end a lease requested in the meantime.
        """
        with self._lock:
            held = self._held
            if held is None or (expected is not None and not held.lease.same_grant(expected)):
                return None
            self._held = None
        error = None
        if revoke:
            try:
                held.backend.revoke(held.lease)
            except JitError as exc:
                error = str(exc)
            except KeyboardInterrupt:  # the server did not answer and the user stopped waiting
                error = "cancelled (Ctrl-C)"
                self.audit.record(event, held.lease, revoked=False, error=error, note=note)
                raise JitError(f"revoke cancelled (Ctrl-C): {held.lease.username} stays valid until "
                               f"{local_time(held.lease.expires_at)}", "its server ends it then") from None
        valid = held.backend.valid_after_revoke(held.lease) if revoke and error is None else None
        self.audit.record(event, held.lease, revoked=revoke and error is None and valid is None,
                          error=error, valid_until=None if valid is None else iso(valid), note=note)
        if error:
            raise JitError(f"revoke failed: {error}", "the credentials end at their expiry anyway")
        return held.lease

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
