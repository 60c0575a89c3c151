"""Switching the session to a lease: the one place a connection changes identity.

A lease minted for this session becomes the session's in one way: connect as it (new
connection first), make it current, revoke the one it replaces.  A switch that fails keeps
the old connection and revokes the unused lease, so nothing minted is left live.

Some leases cannot be switched to at once, because a transaction is open: a rotation's new
credentials, or the lease an approver granted.  Such a lease waits in the :class:`Handover`
(one at a time) until no transaction is open; whatever ends access, and exit, discards it.
The approvals flow hands its granted lease here, so "what waits to be switched in" has one
home and one answer for ``\\jit status``, the toolbar and shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pgcli_jit.core.clock import local_time
from pgcli_jit.core.errors import ConnectionSwitchError
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.profile import Profile

if TYPE_CHECKING:
    from pgcli_jit.session.manager import LeaseManager, Renewal


class Connector(Protocol):
    """The session's connection, as the session needs it (pgcli's in the shell)."""

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

    def rotation_cost(self) -> list[str]:
        """What a reconnect would drop that cannot be carried over (``temp table t``,
        ``prepared statement p``, ``LISTEN c``); empty when nothing would be lost."""


@dataclass
class Incoming:
    """A lease minted for this session that waits for the open transaction to end.

    A rotation carries its ``renewal`` (the lease it replaces, and why); an approved request
    its ``request_id``.  ``said`` is set once its waiting line was said, so it is said once."""

    lease: Lease
    profile: Profile
    ttl: float | None = None
    renewal: Renewal | None = None
    request_id: str | None = None
    said: bool = False

    @property
    def approved(self) -> bool:
        return self.request_id is not None


class Handover:
    """The one lease minted for this session and not yet switched to.

    An approved lease outranks a rotation: it replaces the current lease altogether, so a
    rotation of that lease is moot and is revoked unused, whichever arrived first."""

    def __init__(self, manager: LeaseManager) -> None:
        self.manager = manager
        self.incoming: Incoming | None = None

    def hold(self, incoming: Incoming) -> None:
        old = self.incoming
        if old is not None and old.lease is not incoming.lease:
            if old.approved and not incoming.approved:
                self._discard(incoming, "replaced")
                return
            self._discard(old, "replaced")
        elif old is not None:
            incoming.said = incoming.said or old.said
        self.incoming = incoming

    def rotation(self) -> Incoming | None:
        incoming = self.incoming
        return incoming if incoming is not None and not incoming.approved else None

    def approval(self) -> Incoming | None:
        incoming = self.incoming
        return incoming if incoming is not None and incoming.approved else None

    def take(self) -> Incoming | None:
        """The waiting lease, now the caller's to switch to (it waits here no more)."""
        incoming, self.incoming = self.incoming, None
        return incoming

    def drop(self, why: str = "never used") -> Incoming | None:
        """Revoke the waiting lease unused (access ended, a withdrawal, exit); what it was."""
        incoming = self.take()
        if incoming is not None:
            self._discard(incoming, why)
        return incoming

    def _discard(self, incoming: Incoming, why: str) -> None:
        self.manager.discard(incoming.lease, incoming.profile, why=why)


class Switcher:
    """Connect as a new lease and make it current; revoke what it replaced, or what failed."""

    def __init__(self, manager: LeaseManager, connector: Connector) -> None:
        self.manager = manager
        self.connector = connector
        self.handover = Handover(manager)

    def adopt_new(self, lease: Lease, profile: Profile) -> list[str]:
        """Switch to freshly minted credentials (no transaction open) and make them current;
        the notes the switch made and the sentence on the lease it replaced.  A failed switch
        keeps the old connection and revokes ``lease``."""
        notes = self.switch_or_discard(lease, profile)
        old = self.manager.adopt(lease, profile)
        replaced = self.revoke_quietly(old) if old is not None else ""
        return [replaced, *notes]

    def rotate(self, renewal: Renewal, profile: Profile, explicit: bool = False) -> str:
        """Switch to a rotation's new credentials; inside a transaction they wait in the
        handover (said once, or whenever asked for) and the switch happens when it ends."""
        current = self.manager.lease
        if current is not None and current.same_grant(renewal.lease):
            return ""  # this rotation has already been applied
        if current is None or not current.same_grant(renewal.base):
            self.manager.discard(renewal.lease, profile)  # a newer lease won the race
            return "Renewal superseded by a newer lease."
        if self.connector.in_transaction():
            self.handover.hold(Incoming(renewal.lease, profile, renewal=renewal))
            incoming = self.handover.rotation()
            if incoming is None or (incoming.said and not explicit):
                return ""
            incoming.said = True
            return (f"New credentials are ready ({renewal.reason}); the session will reconnect "
                    f"when the open transaction ends. COMMIT before {local_time(current.expires_at)} "
                    "or the transaction is lost.")
        notes = self.switch_or_discard(renewal.lease, profile)
        old = self.manager.adopt(renewal.lease, profile, event="rotate")
        replaced = self.revoke_quietly(old) if old is not None else ""
        rotated = (f"Rotated to {renewal.lease.username} until {local_time(renewal.lease.expires_at)}"
                   f" ({renewal.reason}).")
        return " ".join(filter(None, [rotated, replaced, *notes]))

    def switch_or_discard(self, lease: Lease, profile: Profile) -> list[str]:
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
                    self.manager.backend_for(profile).ended_without_revoke(lease)) from None
            raise
        except BaseException:
            self.manager.discard(lease, profile)
            raise

    def revoke_quietly(self, old: Lease) -> str:
        """Revoke the lease a new one replaced; the sentence that says so (or that it failed).
        Its profile may exist only on the server (``requestable``): it is revoked all the same."""
        error = self.manager.discard(old, self.manager.config.requestable(old.profile), why="replaced")
        if error:
            return f"The previous lease {old.username} was not revoked: {error}."
        until = self.valid_after_revoke(old)
        if until is not None:
            return (f"The previous token of {old.username} stays valid until {local_time(until)} "
                    "(a signed token cannot be withdrawn).")
        return f"Revoked the previous lease {old.username}."

    def valid_after_revoke(self, lease: Lease) -> float | None:
        profile = self.manager.config.requestable(lease.profile)
        return self.manager.backend_for(profile).valid_after_revoke(lease)

    def revoked(self, lease: Lease) -> str:
        """What a revoke did, honestly: a token that cannot be withdrawn is only let go."""
        until = self.valid_after_revoke(lease)
        if until is None:
            return f"Revoked {lease.username} ({lease.profile})"
        return (f"Closed {lease.username} ({lease.profile}); its token stays valid until "
                f"{local_time(until)} (a signed token cannot be withdrawn)")


def approved_by(lease: Lease) -> str:
    """Who granted a lease, as its backend reported (names typed by others: made printable
    where they are printed)."""
    names = lease.backend_data.get("approved_by") or []
    return ", ".join(str(n) for n in names) or "an approver"


def incoming_rows(incoming: Incoming, current: Lease | None) -> list[tuple[str, str]]:
    """``\\jit status`` rows for the lease that waits to be switched in, and until when."""
    lease = incoming.lease
    rows = [("waiting to switch in", f"{lease.username} until {local_time(lease.expires_at, zone=True)}")]
    if incoming.approved:
        rows.append(("approved", f"request {incoming.request_id} ({lease.profile}) by {approved_by(lease)}"))
    deadline = f" (COMMIT before {local_time(current.expires_at)})" if current is not None else ""
    rows.append(("switches", f"when the open transaction ends{deadline}"))
    return rows

