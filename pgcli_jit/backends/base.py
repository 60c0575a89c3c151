"""The interface every backend implements, built-in or third-party.

A backend turns a :class:`LeaseRequest` into a :class:`~pgcli_jit.core.lease.Lease`
and later extends or ends it.  It never touches the shell or the connection:
reconnecting is the caller's job, so a backend can be tested on its own (the
contract test in :mod:`pgcli_jit.testing` runs against every backend).

``__all__`` is the backend author's API: the classes to subclass, raise and return, and
the values a backend receives (the profile) and hands back (the lease).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pgcli_jit.core.clock import Clock, system_clock
from pgcli_jit.core.durations import parse_duration
from pgcli_jit.core.errors import BackendError, BackendUnavailable, JitError, UsageError
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.limits import MAX_NAME, MAX_REASON
from pgcli_jit.core.profile import Profile
from pgcli_jit.core.sanitize import check_text

if TYPE_CHECKING:
    from pgcli_jit.backends.login import Login


@dataclass(frozen=True)
class LeaseRequest:
    """What the user asked for: ``ttl`` in seconds, a reason, and who asks.

    Checked on construction, the one point every request passes through
    (``\\jit request``, ``--jit``, renew-by-rotation, every backend): no control
    character in the reason or the requester, a reason of at most
    :data:`~pgcli_jit.core.limits.MAX_REASON` characters, a bounded TTL.
    """

    ttl: float
    reason: str
    requester: str
    #: False when ``ttl`` is only the client's default: a backend with a policy of its own
    #: (the postgres broker's server profile) then applies its own default instead
    ttl_given: bool = True
    #: break-glass: granted without approval where the server's profile allows it (only the
    #: postgres backend sends it; the server refuses it on every other profile)
    break_glass: bool = False

    def __post_init__(self) -> None:
        check_text(self.reason, "the reason", limit=MAX_REASON)
        check_text(self.requester, "the requester name", limit=MAX_NAME)
        if self.ttl:  # 0 means "the profile's ttl" (Backend.effective_ttl)
            try:
                parse_duration(self.ttl)
            except ValueError as exc:
                raise UsageError(f"the TTL: {exc}") from None


@dataclass(frozen=True)
class RoleInfo:
    """One line of ``\\jit profiles`` that the backend itself knows of (e.g. Vault roles)."""

    name: str
    default_ttl: float | None = None
    max_ttl: float | None = None
    note: str = ""
    #: what the backend calls it: a Vault "role", the postgres broker's "server profile"
    kind: str = "role"
    #: the broker refuses a request for it without a reason
    reason_required: bool = False
    #: who must approve a request before it is granted: ``""`` nobody, else the approvers
    #: role; None when the broker does not say (an older server schema)
    approvers: str | None = None
    #: how many members of ``approvers`` must approve
    approvals: int = 0
    #: the server logs the statements of this profile's leases (session logs)
    logged: bool = False


@dataclass(frozen=True)
class Privilege:
    """What a denied statement lacked, as the server's error names it: ``UPDATE`` on the
    ``table`` ``public.orders`` (``obj`` spelled as SQL spells it: quoted where needed),
    maybe one ``column`` (its name as it is)."""

    privilege: str
    kind: str
    obj: str
    column: str | None = None


#: a statement and its parameters run on the session's own connection: its rows
SessionQuery = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class GrantingProfile:
    """A profile the login may request whose grants hold a :class:`Privilege`, as the broker
    states it; ``grant_roles`` and ``max_ttl`` order several (the smallest first)."""

    name: str
    target: str
    ttl: float | None
    max_ttl: float | None
    reason_required: bool
    approval_required: bool
    grant_roles: int


@dataclass(frozen=True)
class ProfileGrants:
    """What a profile the login may request gives, as the broker describes it to this login
    (``\\jit profiles``, the hints of ``\\jit request`` completion).  ``grants`` are compact
    items such as ``SELECT on public.*`` or ``UPDATE on public.orders``; ``listed`` is False
    when the broker could not list them (too many objects), ``more`` how many items it left
    out."""

    name: str
    grants: tuple[str, ...] = ()
    listed: bool = True
    more: int = 0
    #: the profile may be requested with ``--break-glass``
    break_glass: bool = False
    #: this login's requests for it skip its approval (an auto-approval rule applies)
    auto_approved: bool = False

    def summary(self) -> str:
        """``SELECT on public.*; UPDATE on public.orders``, or why there is none."""
        if not self.listed:
            return "too many objects to list"
        return "; ".join(self.grants) + (f"; {self.more} more" if self.more else "")


@dataclass(frozen=True)
class PendingRequest:
    """Asked, not yet granted: the backend waits for a second person to approve.

    Times are on this client's clock.  ``secret`` is whatever the backend must keep on
    the client until the grant (the postgres backend: the password whose verifier the
    request carries); it is never shown.
    """

    request_id: str
    profile: str
    backend: str
    asked_at: float
    poll_after: float = 1.0
    approvers: str = ""
    approvals: int = 0
    needed: int = 1
    expires_at: float | None = None
    reason: str = ""
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Decidable:
    """A request someone else made that the user may approve or deny; every text was typed
    by someone else (the table that shows it makes it printable)."""

    request_id: int
    requester: str
    profile: str
    ttl: float
    reason: str
    created_at: datetime
    expires_at: datetime | None
    approvals: int
    needed: int


@dataclass(frozen=True)
class BreakGlassUse:
    """A live lease someone took with break-glass on a profile the user approves: what the
    approver's shell says once.  ``lease_id`` tells one use from another; every text was typed
    by someone else."""

    lease_id: str
    requester: str
    profile: str
    reason: str
    expires_at: datetime


class Approver(Protocol):
    """What a backend that offers approvals answers (:meth:`Backend.approver`): typed, so a
    broker other than PostgreSQL (an HTTP one) can offer them the same way."""

    def waiting_for_me(self) -> list[Decidable]:
        """Requests the user may decide now, never the user's own."""

    def decide(self, request_id: int, approve: bool, text: str) -> dict[str, Any]:
        """Approve (``text``: a comment) or deny (``text``: the reason) someone's request; the
        broker's answer (``request_id``, ``requester``, ``profile``, ``state``, ...)."""

    def approves_any(self) -> bool:
        """Whether the user approves some profile's requests at all: only then does the
        session keep listening for new ones (:meth:`Backend.doorbell`)."""

    def break_glass_uses(self) -> list[BreakGlassUse]:
        """Live break-glass leases on profiles the user approves, never the user's own (the
        broker decides who hears of what); [] from a broker without break-glass."""


class Doorbell(Protocol):
    """A wait for the broker's word that something changed (a request decided, a request
    arrived), from :meth:`Backend.doorbell`: the session then looks at once instead of
    polling often.  The ring carries nothing; the state is read the usual way."""

    def wait(self, timeout: float) -> bool:
        """Block until the bell rings (True) or ``timeout`` seconds pass (False); True also
        after (re)connecting, since a ring may have been missed meanwhile.  Raise
        BackendError when the broker cannot be reached."""

    def close(self) -> None:
        """Stop listening; from the thread that waits."""


class ApprovalPending(JitError):
    """Raised by :meth:`Backend.request` when the answer is "asked, not yet granted".

    An exception, not a second return type, so that every caller written before
    approvals existed fails closed (it reports the request as not granted) instead of
    treating the pending request as a lease.
    """

    def __init__(self, pending: PendingRequest) -> None:
        who = f" by {pending.approvers}" if pending.approvers else ""
        super().__init__(f"request {pending.request_id} for {pending.profile} is waiting for "
                         f"approval{who}", "\\jit status shows it; \\jit cancel withdraws it")
        self.pending = pending


class NeedsPassword(BackendUnavailable):
    """The login a backend asks as (``uses_session_login``) needs a password that libpq did not
    find; the shell may ask the user for it."""


class Backend(ABC):
    """Mint, extend, inspect and end leases for one profile.

    Subclasses set ``name`` (the entry-point name) and ``OPTIONS`` (the profile
    keys of their own; config validation rejects any other).  Optional
    dependencies are imported when first used, never at module import, so a
    missing one can be reported with the extra to install.
    """

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[frozenset[str]] = frozenset()
    #: keys the backend no longer uses: passed on to check_profile, which says what replaced
    #: them, instead of being refused as unknown
    RETIRED_OPTIONS: ClassVar[frozenset[str]] = frozenset()
    #: False for backends whose credentials can only be replaced, never extended
    #: (an instance attribute: a backend may decide per profile).
    can_renew: bool = True
    #: True when every new connection needs a fresh secret (IAM tokens): pgcli's
    #: automatic reconnect then gets one from :meth:`renew` first.
    fresh_secret_per_connection: ClassVar[bool] = False
    #: True when the backend asks as the user's own database login (postgres): the shell
    #: then hands it the session's login through :meth:`use_session`
    uses_session_login: ClassVar[bool] = False
    #: True when :meth:`approver` answers: the session then asks it for the requests the user
    #: may decide (the toolbar's count, ``\\jit pending|approve|deny``)
    offers_approvals: ClassVar[bool] = False
    #: True when the server decides TTLs and grants (the client's ttl is only a wish)
    server_policy: ClassVar[bool] = False
    #: True when :meth:`profiles_granting` answers: the broker can say which profiles the
    #: login may request hold a privilege (the shell then offers one after "permission denied")
    says_what_grants: ClassVar[bool] = False
    #: True when :meth:`profile_grants` answers: the broker can describe what each profile the
    #: login may request grants (``\\jit profiles``, completion hints); others are not asked
    describes_grants: ClassVar[bool] = False
    #: True when the backend sends a request's ``break_glass`` (the server's profile decides
    #: whether it is allowed); a backend without it is never asked for break-glass
    offers_break_glass: ClassVar[bool] = False

    def __init__(self, profile: Profile, *, clock: Clock = system_clock) -> None:
        self.profile = profile
        self.clock = clock

    @classmethod
    def check_profile(cls, profile: Profile) -> None:
        """Raise ConfigError for keys that are present but wrong (called at config load)."""

    @abstractmethod
    def request(self, req: LeaseRequest) -> Lease:
        """Mint new credentials.  Raise BackendError subclasses on failure."""

    @abstractmethod
    def renew(self, lease: Lease, ttl: float | None) -> Lease:
        """Extend ``lease``; raise NotRenewable when it cannot be extended any further."""

    @abstractmethod
    def revoke(self, lease: Lease) -> None:
        """End ``lease`` at the source, so its credentials stop working."""

    def ended_without_revoke(self, lease: Lease) -> str:
        """What ends ``lease`` when the client could neither use nor revoke it (say, a switch
        and the revoke both failed): the user is told who to expect it from."""
        return "its broker must end it; until then it stays valid"

    def approver(self) -> Approver | None:
        """The approver's side of four eyes, when this backend offers it: the requests the
        user may decide, and the decision.  None when it has no approvals to decide."""
        return None

    def doorbell(self) -> Doorbell | None:
        """A new wait for the broker's word on requests (see :class:`Doorbell`), for a
        thread of its own; None when this backend has none (the session then polls)."""
        return None

    def valid_after_revoke(self, lease: Lease) -> float | None:
        """When credentials that :meth:`revoke` cannot withdraw stop working on their own (a
        signed token), so the user and the audit trail are not told they ended; None when
        revoke ends them."""
        return None

    def lookup(self, lease: Lease) -> Lease:
        """The lease as the backend sees it now (default: as the client knows it)."""
        return lease

    def roles(self) -> list[RoleInfo]:
        """What this backend offers beyond the profile itself (e.g. Vault's role list)."""
        return []

    def requestable(self) -> list[RoleInfo]:
        """What the login may request by name from this broker beyond the config file's
        profiles (the postgres broker's server profiles, ``\\jit request NAME``); none by default."""
        return []

    def profiles_granting(self, wanted: Privilege,
                          on_session: SessionQuery | None = None) -> list[GrantingProfile]:
        """The profiles this login may request whose grants hold ``wanted``, smallest first
        (see ``says_what_grants``); none by default.  ``on_session`` runs a statement on the
        session's own connection (the identity that was denied, its search_path), when the
        shell can offer one: a broker that resolves names in the database asks there."""
        return []

    def profile_grants(self) -> list[ProfileGrants]:
        """What each profile the login may request grants (see ``describes_grants``); none by
        default."""
        return []

    def close(self) -> None:
        """Release sessions or connections the backend holds."""

    # -- approvals (backends whose requests may wait for a second person) ----------------

    def poll(self, pending: PendingRequest) -> Lease | PendingRequest:
        """The request's state now: the lease once granted, else the request (maybe with
        more approvals); raise RequestClosed when it was denied, timed out or cancelled."""
        raise BackendError("this backend has no requests that wait for approval",
                           backend=self.name, profile=self.profile.name)

    def cancel(self, pending: PendingRequest) -> None:
        """Withdraw a pending request (default: nothing to withdraw)."""

    def use_session(self, login: Callable[[], Login | None]) -> None:
        """Receive the session's own login (see ``uses_session_login``); others ignore it."""

    def asking_login(self) -> Login | None:
        """The user's own database login this backend asks as (``uses_session_login``): ``--jit``
        asks its password and ``\\jit revoke`` returns to it.  None for backends that ask
        with credentials of their own."""
        return None

    def effective_ttl(self, ttl: float | None) -> float:
        """The TTL to ask for: the request's, else the profile's, capped at max_ttl."""
        wanted = ttl or self.profile.ttl
        return min(wanted, self.profile.max_ttl) if self.profile.max_ttl else wanted


#: what a backend author imports from here; errors come from :mod:`pgcli_jit.errors`
__all__ = [
    "ApprovalPending",
    "Approver",
    "Backend",
    "BreakGlassUse",
    "Credentials",
    "Decidable",
    "Doorbell",
    "GrantingProfile",
    "Lease",
    "LeaseRequest",
    "NeedsPassword",
    "PendingRequest",
    "Privilege",
    "Profile",
    "ProfileGrants",
    "RoleInfo",
    "SessionQuery",
]
