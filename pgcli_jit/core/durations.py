"""Durations as users write them: ``90s``, ``15m``, ``1h30m``, ``2d`` or plain seconds.

Every duration is bounded (:data:`~pgcli_jit.core.limits.MAX_DURATION`, 366 days): a
lease longer than that is a typo or an attack, and times far enough out
overflow ``datetime`` (year 10000) in the audit trail and the toolbar.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pgcli_jit.core.errors import DurationError, UsageError
from pgcli_jit.core.limits import MAX_DURATION, MAX_DURATION_TEXT

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[dhms])+")


def parse_duration(text: Any) -> float:
    """Return seconds; raise :class:`DurationError` (a ``ValueError``) saying what is accepted.

    Any type may come in (config values are whatever TOML made of them), so
    anything but a string or a number is refused here, not by an AttributeError.
    """
    seconds = _seconds(text)
    if not math.isfinite(seconds) or seconds <= 0:
        raise DurationError(f"{_shown(text)} is not a duration: it must be a finite time longer than zero")
    if seconds > MAX_DURATION:
        raise DurationError(f"{_shown(text)} is too long: the limit is {MAX_DURATION / 86400:g} days")
    return seconds


def option_duration(text: str | None, option: str) -> float | None:
    """A command-line option's duration (``--ttl 15m``), None when not given; a bad one is a
    UsageError that names the option."""
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _seconds(text: Any) -> float:
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise DurationError(f"a {type(text).__name__} is not a duration: write 90s, 15m, 1h30m or seconds")
    if isinstance(text, int | float):
        try:
            return float(text)
        except OverflowError:  # an int past 1e308
            return math.inf
    value = text.strip().lower()
    if len(value) > MAX_DURATION_TEXT:
        raise DurationError(f"a duration of {len(value)} characters is not one: write 90s, 15m or 1h30m")
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    if _WHOLE.fullmatch(value):
        return sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    raise DurationError(f"{_shown(text)} is not a duration: write 90s, 15m, 1h30m or seconds")


def _shown(text: Any) -> str:
    """The value as the message quotes it: control characters escaped, never megabytes."""
    if isinstance(text, int) and text.bit_length() > 128:
        return "a number that large"  # repr() of a huge int raises past 4300 digits
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def format_duration(seconds: float) -> str:
    """Compact form for messages and tables: ``1h30m``, ``15m``, ``45s``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def format_clock(seconds: float) -> str:
    """Countdown form: ``m:ss`` under an hour, ``h:mm:ss`` above."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
