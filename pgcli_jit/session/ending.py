"""How access ends and how that is said: the refusal lines, the record of the last end,
the line a new lease is announced with, and the server's word on a lease that ended."""

from __future__ import annotations

from dataclasses import dataclass

from pgcli_jit.backends.base import Backend
from pgcli_jit.core.clock import local_time
from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.errors import JitError, NotRenewable
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.profile import Profile
from pgcli_jit.session.manager import UNMOVED

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
