"""The countdown segment of pgcli's bottom toolbar: a pure function of lease and time.

It is called on every redraw (every second while idle), so it does no I/O and
no backend calls: just arithmetic on a frozen lease.
"""

from __future__ import annotations

from pgcli_jit.durations import format_clock
from pgcli_jit.lease import Lease
from pgcli_jit.policy import ALARM, Phase, phase

Tokens = list[tuple[str, str]]

STYLES = {
    "fresh": "class:bottom-toolbar.jit",
    "warning": "class:bottom-toolbar.jit.warning",
    "alarm": "class:bottom-toolbar.jit.alarm",
    "expired": "class:bottom-toolbar.jit.expired",
}
#: added to pgcli's style so the segment stands out; users may override in pgcli's [colors].
STYLE_RULES = {
    "bottom-toolbar.jit": "bg:#222222 #aaffaa",
    "bottom-toolbar.jit.warning": "bg:#222222 #ffdd00 bold",
    "bottom-toolbar.jit.alarm": "bg:#aa0000 #ffffff bold",
    "bottom-toolbar.jit.expired": "bg:#aa0000 #ffffff bold",
}


def segment(lease: Lease | None, renew_before: float | None, now: float, ended: str = "") -> Tokens:
    """``JIT <profile> as <user> <m:ss>`` styled by phase; ``JIT expired`` after; nothing without a lease.

    ``ended`` is ``"expired"`` or ``"revoked"`` once access has ended and no new lease was taken.
    """
    if lease is None:
        return [(STYLES["expired"], f"  JIT {ended} ")] if ended else []
    where = phase(lease, renew_before, now)
    if where is Phase.EXPIRED:
        return [(STYLES["expired"], "  JIT expired ")]
    remaining = lease.remaining(now)
    if remaining <= ALARM:
        style = STYLES["alarm"]
    elif where is Phase.FRESH:
        style = STYLES["fresh"]
    else:
        style = STYLES["warning"]
    return [(style, f"  JIT {lease.profile} as {lease.username} {format_clock(remaining)} ")]
