"""The countdown segment of pgcli's bottom toolbar: a pure function of lease and time.

It is called on every redraw (every second while idle), so it does no I/O and
no backend calls: just arithmetic on a frozen lease.

The style follows the lease's phase (:mod:`pgcli_jit.core.policy`), never a fixed
number of seconds: warning from when the renewal window opens, alarm in its
final part (where a failed renewal means access ends).  A fixed "last minute"
alarm turned a 90 s lease red before anything was asked and skipped warning.
"""

from __future__ import annotations

from pgcli_jit.core.durations import format_clock
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.policy import Phase, phase

Tokens = list[tuple[str, str]]

STYLES = {
    "fresh": "class:bottom-toolbar.jit",
    "warning": "class:bottom-toolbar.jit.warning",
    "alarm": "class:bottom-toolbar.jit.alarm",
    "expired": "class:bottom-toolbar.jit.expired",
    "offer": "class:bottom-toolbar.jit.offer",
}
#: added to pgcli's style so the segment stands out; users may override in pgcli's [colors].
STYLE_RULES = {
    "bottom-toolbar.jit": "bg:#222222 #aaffaa",
    "bottom-toolbar.jit.warning": "bg:#222222 #ffdd00 bold",
    "bottom-toolbar.jit.alarm": "bg:#aa0000 #ffffff bold",
    "bottom-toolbar.jit.expired": "bg:#aa0000 #ffffff bold",
    "bottom-toolbar.jit.offer": "bg:#ffdd00 #000000 bold",
}


def segment(lease: Lease | None, renew_before: float | None, now: float, ended: str = "",
            offer: str | None = None) -> Tokens:
    """``JIT <profile> as <user> <m:ss>`` styled by phase; ``JIT expired`` after; nothing without a lease.

    ``ended`` is ``"expired"`` or ``"revoked"`` once access has ended and no new lease was taken.
    ``offer`` is what F6 does now (``renew``, ``new credentials``): drawn as ``[F6] renew``,
    where pgcli shows its own keys; it is the renewal offer, so nothing ever reads the
    terminal to ask (keys typed for SQL or for the pager stay theirs).
    """
    if lease is None:
        return [(STYLES["expired"], f"  JIT {ended} ")] if ended else []
    where = phase(lease, renew_before, now)
    if where is Phase.EXPIRED:
        return [(STYLES["expired"], "  JIT expired ")]
    text = f"  JIT {lease.profile} as {lease.username} {format_clock(lease.remaining(now))} "
    tokens = [(STYLES[_STAGE[where]], text)]
    if offer:
        tokens.append((STYLES["offer"], f" [{OFFER_KEY}] {offer} "))
    return tokens


#: the key that takes the toolbar's offer; pgcli binds F2-F4 to its own toggles
OFFER_KEY = "F6"
#: the key that runs a denied statement again once its approved request is switched in
RERUN_KEY = "F7"


def rerun_segment(profile: str | None) -> Tokens:
    """``[F7] run again`` while a denied statement may be run again as ``profile``."""
    return [(STYLES["offer"], f" [{RERUN_KEY}] run again as {profile} ")] if profile else []


_STAGE = {Phase.FRESH: "fresh", Phase.WINDOW: "warning", Phase.FINAL: "alarm", Phase.EXPIRED: "expired"}


def prompt_text(lease: Lease | None, now: float, ended: str = "") -> str:
    """The short form for pgcli's ``prompt`` setting (``\\j``), for users who hide the toolbar:
    ``JIT demo 4:59 ``, ``JIT expired ``, or nothing without a lease."""
    if lease is None:
        return f"JIT {ended} " if ended else ""
    if lease.is_expired(now):
        return "JIT expired "
    return f"JIT {lease.profile} {format_clock(lease.remaining(now))} "


def pending_segment(profile: str | None, waited: float | None, decidable: int,
                    approved: bool = False) -> Tokens:
    """``JIT write pending 1:12`` while our request waits for approval (time waited);
    ``JIT write approved, waiting for COMMIT`` once granted while a transaction is open (the
    switch waits for it); ``JIT: 1 request waiting`` while this login may decide someone
    else's; else nothing."""
    tokens: Tokens = []
    if profile is not None and approved:
        tokens.append((STYLES["warning"], f"  JIT {profile} approved, waiting for COMMIT "))
    elif profile is not None and waited is not None:
        tokens.append((STYLES["warning"], f"  JIT {profile} pending {format_clock(waited)} "))
    if decidable > 0:
        plural = "s" if decidable != 1 else ""
        tokens.append((STYLES["warning"], f"  JIT: {decidable} request{plural} waiting "))
    return tokens


def glass_segment(notice: str | None) -> Tokens:
    """``BREAK-GLASS: alice took write until 14:05:12 (INC-7 db down)`` in alarm style while a
    break-glass lease on a profile this login approves lasts; else nothing."""
    return [(STYLES["alarm"], f"  {notice} ")] if notice else []
