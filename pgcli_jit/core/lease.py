"""Credentials and leases: frozen snapshots that the rest of the code passes around.

A connection is always made from one frozen :class:`Lease`, never from fields of
an object that may change in between (botocore's lesson).  ``repr`` of anything
that holds a password hides it, so a lease can be logged or shown in a traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Credentials:
    """A database user and its password; the password never appears in ``repr``."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Lease:
    """One grant of access: who, until when, and how it can be extended.

    Times are POSIX seconds.  ``max_expires_at`` is the hard limit (max TTL)
    when the backend knows it.  ``conninfo`` carries connection parameters the
    backend insists on (for example ``sslmode=require`` for RDS IAM tokens).
    ``backend_data`` is private to the backend that issued the lease.
    """

    profile: str
    backend: str
    credentials: Credentials
    issued_at: float
    expires_at: float
    lease_id: str = ""
    renewable: bool = True
    max_expires_at: float | None = None
    renewals: int = 0
    #: when the current term began (the last renewal); windows are fractions of the term
    renewed_at: float | None = None
    reason: str = ""
    requester: str = ""
    conninfo: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    backend_data: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "conninfo", _frozen(self.conninfo))
        object.__setattr__(self, "backend_data", MappingProxyType(dict(self.backend_data)))

    @property
    def username(self) -> str:
        return self.credentials.username

    @property
    def lifetime(self) -> float:
        """Length of the current term: from issue, or from the last renewal."""
        start = self.issued_at if self.renewed_at is None else self.renewed_at
        return max(0.0, self.expires_at - start)

    def remaining(self, now: float) -> float:
        return self.expires_at - now

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    def same_grant(self, other: Lease | None) -> bool:
        """The same grant, renewed or not: renewals replace the object, never the id or user."""
        return other is not None and (other.lease_id, other.username) == (self.lease_id, self.username)

    def short_id(self) -> str:
        """A lease id short enough for a status line, still enough to find it in logs."""
        lid = self.lease_id
        return lid if len(lid) <= 24 else f"{lid[:10]}…{lid[-10:]}"

    def extended(self, expires_at: float, *, renewed_at: float | None = None, **changes: Any) -> Lease:
        """The same grant with a new expiry: one more renewal, a new term from ``renewed_at``."""
        start = self.renewed_at if renewed_at is None else renewed_at
        return dataclasses.replace(self, expires_at=expires_at, renewals=self.renewals + 1,
                                   renewed_at=start, **changes)

    def audit_fields(self) -> dict[str, Any]:
        """What the audit trail may record of a lease: everything but the password."""
        return {
            "profile": self.profile,
            "backend": self.backend,
            "db_user": self.username,
            "lease_id": self.lease_id,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "renewals": self.renewals,
        }
