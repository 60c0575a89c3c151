"""The credential JSON that the ``command`` and ``http`` backends read.

One format for both, modelled on AWS's ``credential_process``::

    {"version": 1, "username": "...", "password": "...",
     "expires_at": "2026-01-01T12:00:00Z"  or  "ttl": 900,
     "lease_id": "...", "renewable": true,
     "max_expires_at": "..."  or  "max_ttl": 28800}

Every error is one line that names the field and never quotes the raw text:
the output of a credential program may well hold a password, and error lines
end up on the terminal and in the audit log.  The fields are read with the answer
toolkit (:mod:`pgcli_jit.backends.answers`), as the vault and postgres backends read theirs.

Times are bounded: a ``ttl`` or an expiry more than
:data:`~pgcli_jit.core.limits.MAX_DURATION` (366 days) away is refused, because a
lease that long is a broker bug, and one far enough out (``"ttl": 1e12``)
cannot even be written to the audit trail.  Names hold no control characters
and the password no NUL (libpq would cut it short).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgcli_jit.backends import answers
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.limits import MAX_NAME

if TYPE_CHECKING:
    from pgcli_jit.backends.base import LeaseRequest
    from pgcli_jit.core.profile import Profile

VERSION = 1


#: the credential JSON's errors are the answer toolkit's: one line naming the field
CredentialFormatError = answers.AnswerError


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
    data = answers.document(data)
    _check_version(data.get("version"))
    expires_at = _expiry(data, "expires_at", "ttl", now)
    if expires_at is None:
        raise CredentialFormatError('has neither "expires_at" (ISO-8601) nor "ttl" (seconds)')
    if expires_at <= now:
        raise CredentialFormatError('"expires_at" is already in the past (is a clock wrong?)')
    credentials = Credentials(
        answers.text(data, "username", limit=MAX_NAME, fallback=current.username if current else None),
        answers.secret(data, "password", fallback=current.password if current else None),
    )
    return ParsedCredential(
        credentials=credentials,
        expires_at=expires_at,
        lease_id=answers.text(data, "lease_id", optional=True),
        renewable=answers.flag(data, "renewable", default=True),
        max_expires_at=_expiry(data, "max_expires_at", "max_ttl", now),
        warnings=answers.warnings(data, "warnings", [credentials.password]),
    )


def _check_version(version: Any) -> None:
    if version is None:
        raise CredentialFormatError(f"is missing (expected {VERSION})", "version")
    if isinstance(version, bool) or version != VERSION:
        shown = repr(version) if isinstance(version, int | float) else answers.json_type(version)
        raise CredentialFormatError(f"is {shown}; this pgcli-jit reads version {VERSION}", "version")


def _expiry(data: Mapping[str, Any], at_key: str, ttl_key: str, now: float) -> float | None:
    """``at_key`` (ISO-8601) wins over ``ttl_key`` (seconds from now) when both are given."""
    if data.get(at_key) is not None:
        return answers.timestamp(data, at_key, now=now)
    if data.get(ttl_key) is not None:
        return now + answers.seconds(data, ttl_key)
    return None


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
