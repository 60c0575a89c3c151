"""Amazon RDS / Aurora IAM authentication: the password is a signed 15-minute token.

boto3's ``generate_db_auth_token`` signs ``connect`` for one database user
with the caller's AWS credentials, offline: no call reaches AWS, and the token
is checked by the database only when a connection is opened.  So:

* a lease lasts at most 900 s (the token's own lifetime), shorter if asked;
* renew signs a *new* token for the *same* user: the session keeps its
  connection and pgcli's automatic reconnects use the fresh token;
* revoke has nothing to call (a token cannot be withdrawn); the shell still
  closes its connection, and IAM policy is where access is really taken away;
* RDS refuses IAM logins without TLS, so the lease insists on
  ``sslmode=require`` unless the profile already asks for verify-ca/verify-full;
* every request is a lease of its own (its own lease id), though the user is
  always the same: a lease that reached ``max_ttl`` is replaced by a new one.

boto3 is an optional extra (``pgcli-jit[aws]``), imported on first use.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any, ClassVar

from pgcli_jit.backends.base import Backend, LeaseRequest
from pgcli_jit.core.clock import Clock, system_clock
from pgcli_jit.core.errors import BackendError, BackendUnavailable, NotRenewable
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.profile import Profile
from pgcli_jit.core.sanitize import clean

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 900.0
STRONG_SSLMODES = frozenset({"verify-ca", "verify-full"})
INSTALL_HINT = "pip install 'pgcli-jit[aws]'"

#: ``factory(profile)`` returns an object with boto3's ``generate_db_auth_token``.
ClientFactory = Callable[[Profile], Any]


def boto3_client(profile: Profile) -> Any:
    """An RDS client from the profile's AWS profile and region; boto3 imported only now."""
    try:
        import boto3
    except ImportError:
        raise BackendUnavailable("boto3 is not installed", backend=RdsIamBackend.name,
                                 profile=profile.name, hint=INSTALL_HINT) from None
    aws_profile = profile.options.get("aws_profile")
    session = boto3.Session(profile_name=str(aws_profile) if aws_profile else None,
                            region_name=str(profile.options["region"]))
    return session.client("rds")


class RdsIamBackend(Backend):
    name: ClassVar[str] = "aws-rds-iam"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"region", "username", "aws_profile"})
    #: an open RDS session outlives its token, but every reconnect needs a fresh one
    fresh_secret_per_connection: ClassVar[bool] = True

    def __init__(self, profile: Profile, *, clock: Clock = system_clock,
                 client_factory: ClientFactory = boto3_client) -> None:
        super().__init__(profile, clock=clock)
        self.client_factory = client_factory
        self._client: Any = None

    def __repr__(self) -> str:
        return f"RdsIamBackend(profile={self.profile.name!r}, user={self.profile.options.get('username')!r})"

    @classmethod
    def check_profile(cls, profile: Profile) -> None:
        for key in ("region", "username", "aws_profile"):
            value = profile.options.get(key)
            if value is not None and not (isinstance(value, str) and value.strip()):
                raise profile.error(key, "must be a non-empty string")
        if "region" not in profile.options:
            raise profile.error("region", "missing", 'the database\'s AWS region, e.g. region = "eu-west-1"')
        if "username" not in profile.options:
            raise profile.error("username", "missing", "the database user granted rds_iam")
        if not profile.host:
            raise profile.error("host", "missing", "the RDS endpoint the token is signed for")
        if not profile.port:
            raise profile.error("port", "missing", "the port is part of the signed token (usually 5432)")

    # -- the Backend interface ----------------------------------------------

    def request(self, req: LeaseRequest) -> Lease:
        now = self.clock()
        max_at = now + self.profile.max_ttl if self.profile.max_ttl else None
        lease = Lease(
            profile=self.profile.name, backend=self.name,
            credentials=Credentials(self.username, self._token()), issued_at=now,
            expires_at=now + self._ttl(req.ttl), lease_id=self._lease_id(),
            max_expires_at=max_at, reason=req.reason, requester=req.requester,
            conninfo={"sslmode": self._sslmode()},
        )
        log.info("signed an RDS IAM token for %s@%s", self.username, self.profile.host)
        return lease

    def renew(self, lease: Lease, ttl: float | None) -> Lease:
        """A fresh token for the same user; never shortens the lease, stops at max_ttl."""
        now = self.clock()
        wanted = max(lease.expires_at, now + self._ttl(ttl))
        expires = min(wanted, lease.max_expires_at) if lease.max_expires_at else wanted
        if expires <= now + 1:
            raise NotRenewable("max TTL reached", backend=self.name, profile=self.profile.name,
                               hint="\\jit renew will sign a new token")
        capped = ("renewal capped at max_ttl",) if expires < wanted else ()
        credentials = Credentials(lease.username, self._token())
        return lease.extended(expires, credentials=credentials, warnings=capped)

    def revoke(self, lease: Lease) -> None:
        """Nothing to call: a signed token cannot be withdrawn (it ends on its own)."""

    def valid_after_revoke(self, lease: Lease) -> float | None:
        """The newest token (signed at issue or at the last renewal) logs in for 15 minutes."""
        return (lease.renewed_at or lease.issued_at) + TOKEN_LIFETIME

    # -- helpers --------------------------------------------------------------

    @property
    def username(self) -> str:
        return str(self.profile.options["username"])

    def _lease_id(self) -> str:
        """The user is the same for every lease, so the id tells them apart: a rotation at
        max_ttl (and a late expiry of the lease before) is matched by id and user."""
        return f"rds-iam:{self.username}@{self.profile.host}#{secrets.token_hex(4)}"

    def _ttl(self, ttl: float | None) -> float:
        return min(TOKEN_LIFETIME, self.effective_ttl(ttl))

    def _sslmode(self) -> str:
        mode = self.profile.sslmode or ""
        return mode if mode in STRONG_SSLMODES else "require"

    def _token(self) -> str:
        try:
            if self._client is None:
                self._client = self.client_factory(self.profile)
            token: str = self._client.generate_db_auth_token(
                DBHostname=self.profile.host, Port=self.profile.port, DBUsername=self.username,
                Region=str(self.profile.options["region"]),
            )
        except BackendError:
            raise
        except Exception as exc:  # botocore's errors, without importing botocore up front
            raise self._aws_error(exc) from None
        return token

    def _aws_error(self, exc: Exception) -> BackendError:
        """botocore's words, cleaned: a ``credential_process`` program's stderr is in them."""
        text = clean(str(exc), limit=200) or type(exc).__name__
        aws_profile = self.profile.options.get("aws_profile")
        check = "aws sts get-caller-identity" + (f" --profile {aws_profile}" if aws_profile else "")
        return BackendUnavailable(f"cannot sign a token: {text}", backend=self.name,
                                  profile=self.profile.name, hint=f"check the AWS credentials: {check}")
