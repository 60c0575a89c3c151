"""The credential JSON that the ``command`` and ``http`` backends read.

One format for both, modelled on AWS's ``credential_process``::

    {"version": 1, "username": "...", "password": "...",
     "expires_at": "2026-01-01T12:00:00Z"  or  "ttl": 900,
     "lease_id": "...", "renewable": true,
     "max_expires_at": "..."  or  "max_ttl": 28800}

Every error is one line that names the field and never quotes the raw text:
the output of a credential program may well hold a password, and error lines
end up on the terminal and in the audit log.

Times are bounded: a ``ttl`` or an expiry more than
:data:`~pgcli_jit.core.limits.MAX_DURATION` (366 days) away is refused, because a
lease that long is a broker bug, and one far enough out (``"ttl": 1e12``)
cannot even be written to the audit trail.  Names hold no control characters
and the password no NUL (libpq would cut it short).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgcli_jit.core.clock import parse_timestamp
from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.limits import MAX_DURATION, MAX_NAME
from pgcli_jit.core.sanitize import clean, first_unsafe

if TYPE_CHECKING:
    from pgcli_jit.backends.base import LeaseRequest
    from pgcli_jit.core.profile import Profile

VERSION = 1


class CredentialFormatError(ValueError):
    """The output is not valid credential JSON; the message is safe to show."""


@dataclass(frozen=True)
class ParsedCredential:
    """What a credential source said, with times already turned into POSIX seconds."""

    credentials: Credentials
    expires_at: float
    lease_id: str = ""
    renewable: bool = True
    max_expires_at: float | None = None
    warnings: tuple[str, ...] = ()


def parse_text(text: str, *, now: float, current: Credentials | None = None) -> ParsedCredential:
    """Parse program output; ``current`` fills a missing username/password (renewals)."""
    if not text.strip():
        raise CredentialFormatError("printed nothing (expected the credential JSON on stdout)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg/lineno/colno only: str(exc) is safe too, but never add exc.doc.
        raise CredentialFormatError(
            f"output is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError):  # a number of 5,000 digits; arrays nested 100,000 deep
        raise CredentialFormatError("output is not credential JSON (a number or nesting too big)") from None
    return parse_object(data, now=now, current=current)


def parse_object(data: Any, *, now: float, current: Credentials | None = None) -> ParsedCredential:
    """Validate already-decoded JSON (the http backend decodes it from the response)."""
    if not isinstance(data, Mapping):
        raise CredentialFormatError(f"expected a JSON object, got {_json_type(data)}")
    _check_version(data.get("version"))
    expires_at = _expiry(data, "expires_at", "ttl", now)
    if expires_at is None:
        raise CredentialFormatError('has neither "expires_at" (ISO-8601) nor "ttl" (seconds)')
    if expires_at <= now:
        raise CredentialFormatError('"expires_at" is already in the past (is a clock wrong?)')
    credentials = _credentials(data, current)
    return ParsedCredential(
        credentials=credentials,
        expires_at=expires_at,
        lease_id=_optional_str(data, "lease_id"),
        renewable=_optional_bool(data, "renewable", default=True),
        max_expires_at=_expiry(data, "max_expires_at", "max_ttl", now),
        warnings=_warnings(data, credentials.password),
    )


def _check_version(version: Any) -> None:
    if version is None:
        raise CredentialFormatError(f'"version" is missing (expected {VERSION})')
    if isinstance(version, bool) or version != VERSION:
        shown = repr(version) if isinstance(version, int | float) else _json_type(version)
        raise CredentialFormatError(f'"version" is {shown}; this pgcli-jit reads version {VERSION}')


def _credentials(data: Mapping[str, Any], current: Credentials | None) -> Credentials:
    username = _secret_or_name(data, "username", current.username if current else None)
    password = _secret_or_name(data, "password", current.password if current else None)
    return Credentials(username, password)


def _secret_or_name(data: Mapping[str, Any], key: str, fallback: str | None) -> str:
    """A required non-empty string; the value itself is never quoted in the error."""
    value = data.get(key)
    if value is None and fallback is not None:
        return fallback
    if not isinstance(value, str) or not value:
        what = "missing" if value is None else "empty" if value == "" else f"a {_json_type(value)}"
        raise CredentialFormatError(f'"{key}" is {what} (expected a non-empty string)')
    if "\0" in value or (key == "username" and (first_unsafe(value) or len(value) > MAX_NAME)):
        raise CredentialFormatError(f'"{key}" holds a control character or is too long')
    return value


def _expiry(data: Mapping[str, Any], at_key: str, ttl_key: str, now: float) -> float | None:
    """``at_key`` (ISO-8601) wins over ``ttl_key`` (seconds from now) when both are given."""
    if data.get(at_key) is not None:
        at = _timestamp(data[at_key], at_key)
        if at - now > MAX_DURATION:
            raise CredentialFormatError(f'"{at_key}" is more than {_limit()} away (the limit)')
        return at
    if data.get(ttl_key) is not None:
        return now + _ttl(data[ttl_key], ttl_key)
    return None


def _timestamp(value: Any, key: str) -> float:
    if not isinstance(value, str):
        raise CredentialFormatError(f'"{key}" must be an ISO-8601 string, not a {_json_type(value)}')
    try:
        return parse_timestamp(value[:64])
    except (ValueError, OverflowError, OSError):
        raise CredentialFormatError(f'"{key}" is not an ISO-8601 time') from None


def _ttl(value: Any, key: str) -> float:
    """Seconds, positive and at most MAX_DURATION; huge ints must not overflow on the way."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CredentialFormatError(f'"{key}" must be a positive number of seconds')
    seconds = float(value) if not isinstance(value, int) or value.bit_length() < 64 else math.inf
    if not (math.isfinite(seconds) and seconds > 0):
        raise CredentialFormatError(f'"{key}" must be a positive number of seconds')
    if seconds > MAX_DURATION:
        raise CredentialFormatError(f'"{key}" is longer than {_limit()} (the limit)')
    return seconds


def _limit() -> str:
    return f"{MAX_DURATION / 86400:g} days ({format_duration(MAX_DURATION)})"


def _optional_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CredentialFormatError(f'"{key}" must be a string, not a {_json_type(value)}')
    if first_unsafe(value) or len(value) > 1024:
        raise CredentialFormatError(f'"{key}" holds a control character or is longer than 1024')
    return value


def _optional_bool(data: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CredentialFormatError(f'"{key}" must be true or false')
    return value


def _warnings(data: Mapping[str, Any], password: str) -> tuple[str, ...]:
    """At most 10, each one safe line (no controls, no secret, 200 characters)."""
    value = data.get("warnings")
    if value is None:
        return ()
    if not (isinstance(value, list) and all(isinstance(w, str) for w in value)):
        raise CredentialFormatError('"warnings" must be a list of strings')
    lines = (clean(w.strip().splitlines()[0], [password], limit=200) for w in value[:10] if w.strip())
    return tuple(line for line in lines if line)


def _json_type(value: Any) -> str:
    """JSON's name for a value's type, for messages that must not show the value."""
    names = {bool: "boolean", int: "number", float: "number", str: "string",
             list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def new_lease(parsed: ParsedCredential, profile: Profile, backend: str, now: float,
              req: LeaseRequest, renewable: bool = True) -> Lease:
    """The lease a credential answer describes; the profile's max_ttl is the hard limit
    when the answer names none."""
    max_at = parsed.max_expires_at
    if max_at is None and profile.max_ttl:
        max_at = now + profile.max_ttl
    return Lease(
        profile=profile.name, backend=backend, credentials=parsed.credentials,
        issued_at=now, expires_at=parsed.expires_at, lease_id=parsed.lease_id,
        renewable=parsed.renewable and renewable, max_expires_at=max_at,
        reason=req.reason, requester=req.requester, warnings=parsed.warnings,
    )


def renewed_lease(lease: Lease, parsed: ParsedCredential) -> Lease:
    """``lease`` extended as a renewal answer says; a renewal never changes the user."""
    if parsed.credentials.username != lease.username:
        raise CredentialFormatError("the renewal answered with a different username")
    return lease.extended(
        parsed.expires_at, credentials=parsed.credentials, renewable=parsed.renewable,
        lease_id=parsed.lease_id or lease.lease_id, warnings=parsed.warnings,
        max_expires_at=parsed.max_expires_at or lease.max_expires_at,
    )
