"""Time as an injected dependency, so lease logic is tested by moving a clock, not by sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time as POSIX seconds."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    return time.time()


def to_datetime(ts: float) -> datetime:
    """An aware UTC datetime for display and for SQL literals."""
    return datetime.fromtimestamp(ts, tz=UTC)


def local_time(when: float | datetime, *, zone: bool = False, now: float | None = None,
               date: bool | None = None) -> str:
    """A time as people read it: local wall-clock time, the one format every line uses.

    ``date``: None shows the date only when ``when`` is not today (``now``'s day), True
    always, False never.  ``zone`` adds the zone name (``14:02:29 CET``): the audit log is in
    UTC, so a table that will be compared with it must say which clock it uses.
    """
    moment = when if isinstance(when, datetime) else datetime.fromtimestamp(when)
    local = moment.astimezone()
    if date is None:
        today = (datetime.now() if now is None else datetime.fromtimestamp(now)).astimezone().date()
        date = local.date() != today
    fmt = "%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S"
    return local.strftime(fmt + (" %Z" if zone else ""))


def parse_timestamp(text: str) -> float:
    """ISO-8601 (``Z`` or offset; naive means UTC) to POSIX seconds.

    Vault prints nanoseconds (``2026-11-23T19:20:00.123456789Z``); Python's parser
    takes at most microseconds, so the fraction is cut to six digits first.
    """
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in value:
        head, _, tail = value.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        value = f"{head}.{tail[:min(digits, 6)]}{tail[digits:]}"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
