"""Fields of an answer from outside, read one by one with the checks each kind needs.

Every backend reads JSON it did not write: a broker program's stdout, an HTTP broker's
or Vault's body, the ``jit`` schema's jsonb (the profile's ``host`` can point anywhere).
Such an answer is checked field by field before anything is built from it, and a field
that is wrong is one :class:`AnswerError` naming it and saying why, never quoting the
value (it may be a password) and never a ``KeyError`` or ``OverflowError`` traceback.

Each backend puts the error in its own frame (``the creds answer: "lease_id" must be a
string, not a number``); the words for what is wrong are the ones here, so the same
mistake reads the same whoever made it.  Times and lengths are bounded by
:data:`~pgcli_jit.core.limits.MAX_DURATION`: a lease of ``"ttl": 1e12`` is a broker bug,
and one that far out cannot even be written to the audit trail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pgcli_jit.core.clock import parse_timestamp
from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.limits import MAX_DURATION, MAX_NAME
from pgcli_jit.core.sanitize import clean, first_unsafe

#: how long an optional line of text (an id, a note) may be
MAX_TEXT = 1024
#: at most this many warnings are kept, each cut to :data:`WARNING_LENGTH` characters
MAX_WARNINGS = 10
WARNING_LENGTH = 200


class AnswerError(ValueError):
    """A field of an answer is missing or wrong: ``key`` names it (None: the answer as a
    whole), ``why`` says what is wrong.  The message is safe to show."""

    def __init__(self, why: str, key: str | None = None) -> None:
        super().__init__(f'"{key}" {why}' if key else why)
        self.key, self.why = key, why


def json_type(value: Any) -> str:
    """JSON's name for a value's type, for messages that must not show the value."""
    names = {bool: "boolean", int: "number", float: "number", str: "string",
             list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def limit_text() -> str:
    """The longest time an answer may name, as messages say it."""
    return f"{MAX_DURATION / 86400:g} days ({format_duration(MAX_DURATION)})"


def document(value: Any) -> Mapping[str, Any]:
    """The answer itself: a JSON object."""
    if not isinstance(value, Mapping):
        raise AnswerError(f"expected a JSON object, got {json_type(value)}")
    return value


def section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """An object inside the answer (Vault's ``data``); absent or empty reads as empty."""
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise AnswerError(f"must be an object, not a {json_type(value)}", key)
    return value


def text(data: Mapping[str, Any], key: str, *, limit: int = MAX_TEXT, optional: bool = False,
         fallback: str | None = None) -> str:
    """One line of printable text of at most ``limit`` characters.  Required and non-empty
    unless ``optional`` (absent then reads as ``""``); ``fallback`` stands in for an absent one."""
    value = data.get(key)
    if value is None and fallback is not None:
        return fallback
    if value is None and optional:
        return ""
    value = _string(value, key, optional=optional)
    if first_unsafe(value) or len(value) > limit:
        raise AnswerError(f"holds a control character or is longer than {limit}", key)
    return value


def secret(data: Mapping[str, Any], key: str, *, fallback: str | None = None) -> str:
    """A password: any non-empty string without NUL (libpq would cut it short there).
    ``fallback`` stands in for an absent one (a renewal that keeps the password)."""
    value = data.get(key)
    if value is None and fallback is not None:
        return fallback
    value = _string(value, key, optional=False)
    if "\0" in value:
        raise AnswerError("holds a NUL character", key)
    return value


def _string(value: Any, key: str, *, optional: bool) -> str:
    if isinstance(value, str) and (value or optional):
        return value
    if optional:
        raise AnswerError(f"must be a string, not a {json_type(value)}", key)
    what = "missing" if value is None else "empty" if value == "" else f"a {json_type(value)}"
    raise AnswerError(f"is {what} (expected a non-empty string)", key)


def number(data: Mapping[str, Any], key: str, *, default: float | None = None) -> float:
    """A finite number (a time on the server's clock, a pause); absent reads as ``default``
    when one is given."""
    value = data.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnswerError(f"must be a number, not a {json_type(value)}", key)
    found = _finite(value)
    if found is None:
        raise AnswerError("is out of range", key)
    return found


def seconds(data: Mapping[str, Any], key: str, *, zero: bool = False, default: float | None = None) -> float:
    """A length of time in seconds: more than zero (or zero too, with ``zero``), at most
    MAX_DURATION; absent reads as ``default`` when one is given."""
    value = data.get(key)
    if value is None and default is not None:
        return default
    found = None if isinstance(value, bool) or not isinstance(value, int | float) else _finite(value)
    if found is None or found < 0 or (found == 0 and not zero):
        raise AnswerError("must be a number of seconds, 0 or more" if zero
                          else "must be a positive number of seconds", key)
    if found > MAX_DURATION:
        raise AnswerError(f"is longer than {limit_text()} (the limit)", key)
    return found


def whole(data: Mapping[str, Any], key: str, *, low: int, high: int, default: int | None = None) -> int:
    """A whole number from ``low`` to ``high`` (a count, an id); absent reads as ``default``
    when one is given."""
    value = data.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AnswerError(f"must be a whole number from {low} to {high}", key)
    return value


def flag(data: Mapping[str, Any], key: str, *, default: bool) -> bool:
    """true or false; absent reads as ``default``."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise AnswerError("must be true or false", key)
    return value


def timestamp(data: Mapping[str, Any], key: str, *, now: float) -> float | None:
    """An ISO-8601 time as POSIX seconds, at most MAX_DURATION after ``now``; None if absent."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AnswerError(f"must be an ISO-8601 string, not a {json_type(value)}", key)
    try:
        at = parse_timestamp(value[:64])
    except (ValueError, OverflowError, OSError):
        raise AnswerError("is not an ISO-8601 time", key) from None
    return near(at, key, now=now)


def near(at: float, key: str, *, now: float, past_too: bool = False) -> float:
    """``at`` if it is at most MAX_DURATION after ``now`` (and before it, with ``past_too``)."""
    if at - now > MAX_DURATION or (past_too and now - at > MAX_DURATION):
        raise AnswerError(f"is more than {limit_text()} away (the limit)", key)
    return at


def warnings(data: Mapping[str, Any], key: str, secrets: Iterable[str | None]) -> tuple[str, ...]:
    """Notes to show the user: a list of strings, of which at most MAX_WARNINGS are kept,
    each its first line, cleaned (no controls, no secret) and cut to WARNING_LENGTH."""
    value = data.get(key)
    if value is None:
        return ()
    if not (isinstance(value, list) and all(isinstance(w, str) for w in value)):
        raise AnswerError("must be a list of strings", key)
    known = list(secrets)
    lines = (clean(w.strip().splitlines()[0], known, limit=WARNING_LENGTH)
             for w in value[:MAX_WARNINGS] if w.strip())
    return tuple(line for line in lines if line)


def names(data: Mapping[str, Any], key: str, *, strict: bool = True) -> list[str]:
    """A list of names (printable, 1 to MAX_NAME characters); absent reads as empty.
    Not ``strict`` (informational lists): what is not a name is left out, not refused."""
    value = data.get(key)
    if value is None:
        return []
    listed = value if isinstance(value, list) else []
    found = [v for v in listed if isinstance(v, str) and 0 < len(v) <= MAX_NAME and first_unsafe(v) is None]
    if strict and (not isinstance(value, list) or len(found) < len(value)):
        raise AnswerError("must be a list of names", key)
    return found


def _finite(value: int | float) -> float | None:
    """``value`` as a finite float, or None (NaN, infinity, an integer too big for a float)."""
    try:
        found = float(value)
    except OverflowError:
        return None
    return found if math.isfinite(found) else None
