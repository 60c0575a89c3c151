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
