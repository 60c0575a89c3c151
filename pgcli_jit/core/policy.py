"""Where a lease is in its life: pure functions of the lease, the profile and the time.

Windows are fractions of the lease's lifetime unless the profile sets
``renew_before``: a 15-minute IAM token and an 8-hour Vault lease need
different windows.  The renewal window opens a third of the lifetime before
expiry (Vault's own lifetime watcher renews at about two thirds); its final
part (at most the last minute) is where a failed renewal means access ends.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from pgcli_jit.core.lease import Lease

DEFAULT_WINDOW_FRACTION = 1 / 3
MAX_WINDOW_FRACTION = 2 / 3
FINAL_PART = 60.0


class Phase(enum.Enum):
    FRESH = "fresh"
    WINDOW = "window"  # advisory: a failed renewal keeps the lease
    FINAL = "final"  # mandatory: a failed renewal means access ends at expiry
    EXPIRED = "expired"


class Windows(NamedTuple):
    """A tuple, not a frozen dataclass: :func:`phase` builds one on every toolbar redraw."""

    renew_at: float
    final_at: float
    expires_at: float


def windows(lease: Lease, renew_before: float | None) -> Windows:
    """The renewal window for ``lease``; ``renew_before`` never covers more than 2/3 of it."""
    lifetime = lease.lifetime
    before = renew_before if renew_before else lifetime * DEFAULT_WINDOW_FRACTION
    before = min(before, lifetime * MAX_WINDOW_FRACTION)
    final = min(FINAL_PART, before / 2)
    return Windows(lease.expires_at - before, lease.expires_at - final, lease.expires_at)


def phase(lease: Lease, renew_before: float | None, now: float) -> Phase:
    w = windows(lease, renew_before)
    if now >= w.expires_at:
        return Phase.EXPIRED
    if now >= w.final_at:
        return Phase.FINAL
    if now >= w.renew_at:
        return Phase.WINDOW
    return Phase.FRESH
