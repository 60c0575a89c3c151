"""Vault and OpenBao: dynamic credentials from the database secrets engine.

``GET <mount>/creds/<role>`` mints a user whose lease Vault tracks; renew,
look up and revoke go through ``sys/leases/*``, so Vault stays the authority on
expiry (``lookup`` reads it from the server, not the client clock).

The creds endpoint takes no TTL: every lease starts at the role's
``default_ttl``.  When the requested TTL differs, the lease is renewed right
after issue with ``increment`` = the requested TTL.  Checked on OpenBao 2.7:
an increment counts from now and may *shorten* the lease (the engine's renew
statements move ``VALID UNTIL`` along), and one past the role's ``max_ttl`` is
capped with a warning.  So a shorter ``--ttl`` is honoured exactly and a longer
one up to the role's ``max_ttl``.  Later renewals never ask for less than what
is left, so ``\\jit renew`` cannot shorten a lease by accident.

Every field of an answer is checked before use (:class:`Answer`, with the answer
toolkit :mod:`pgcli_jit.backends.answers`): a proxy or a fake server answering
``"lease_duration": "soon"`` or ``"data": []`` gets one line naming the field,
never a traceback, and durations past
:data:`~pgcli_jit.core.limits.MAX_DURATION` are refused like any other backend's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import requests

from pgcli_jit.backends import answers, httputil
from pgcli_jit.backends.answers import AnswerError
from pgcli_jit.backends.base import Backend, LeaseRequest, RoleInfo
from pgcli_jit.backends.vault.client import VaultClient
from pgcli_jit.core.clock import Clock, system_clock
from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.errors import BackendError, NotRenewable
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.limits import MAX_NAME
from pgcli_jit.core.profile import Profile

log = logging.getLogger(__name__)

#: A renewal that moves the expiry by less than this has not extended anything.
SLACK = 1.0
STRING_KEYS = ("addr", "mount", "role", "namespace", "ca_cert")


class VaultBackend(Backend):
    name: ClassVar[str] = "vault"
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"addr", "mount", "role", "namespace", "ca_cert", "allow_http", "timeout"}
    )

    def __init__(self, profile: Profile, *, clock: Clock = system_clock,
                 session: requests.Session | None = None) -> None:
        super().__init__(profile, clock=clock)
        self.mount = str(profile.options.get("mount", "database")).strip("/")
        self.role = str(profile.options.get("role", ""))
        self.client = VaultClient(profile.options, backend=self.name, profile=profile.name,
                                  session=session or httputil.new_session())

    def __repr__(self) -> str:
        return f"VaultBackend(profile={self.profile.name!r}, mount={self.mount!r}, role={self.role!r})"

    @classmethod
    def check_profile(cls, profile: Profile) -> None:
        opts = profile.options
        for key in STRING_KEYS:
            if key in opts and not (isinstance(opts[key], str) and opts[key].strip("/")):
                raise profile.error(key, "must be a non-empty string")
        if "role" not in opts:
            raise profile.error("role", "missing", 'the database engine role, e.g. role = "readonly"')
        allow_http = opts.get("allow_http", False)
        if not isinstance(allow_http, bool):
            raise profile.error("allow_http", "must be true or false")
        if "addr" in opts:
            problem = httputil.check_url(str(opts["addr"]), allow_http=allow_http)
            if problem:
                raise profile.error("addr", problem)
        profile.duration_option("timeout", httputil.DEFAULT_TIMEOUT)

    # -- the Backend interface ----------------------------------------------

    def request(self, req: LeaseRequest) -> Lease:
        now = self.clock()
        body = self.client.call("GET", f"{self.mount}/creds/{self.role}")
        try:
            answer = Answer(body)
            credentials = answer.credentials()
            lease_id, duration, renewable = answer.lease_id(), answer.duration(), answer.renewable()
            warnings = answer.warnings(credentials.password)
        except AnswerError as exc:
            raise self.client.error(f"the creds answer: {exc}",
                                    f"is {self.mount}/ a database secrets engine?") from None
        max_ttl = self._role_ttls(self.role)[1]
        lease = Lease(
            profile=self.profile.name, backend=self.name, credentials=credentials,
            issued_at=now, expires_at=now + duration, lease_id=lease_id, renewable=renewable,
            max_expires_at=now + max_ttl if max_ttl else None, reason=req.reason,
            requester=req.requester, warnings=warnings,
        )
        log.info("vault lease %s issued for %s", lease.lease_id, lease.username)
        return self._fit_ttl(lease, self.effective_ttl(req.ttl))

    def renew(self, lease: Lease, ttl: float | None) -> Lease:
        if not lease.renewable or not lease.lease_id:
            raise self.client.error("the lease is not renewable", "\\jit renew will request new credentials",
                                    NotRenewable)
        now = self.clock()
        increment = max(self.effective_ttl(ttl), lease.expires_at - now)
        answer = self._checked(self._renew_call(lease, increment), "renew")
        duration = answer.duration()
        if now + duration <= lease.expires_at + SLACK and duration < increment - SLACK:
            raise self.client.error("max TTL reached", "\\jit renew will request new credentials",
                                    NotRenewable)
        return lease.extended(now + duration, renewable=answer.renewable(),
                              warnings=answer.warnings(lease.credentials.password))

    def ended_without_revoke(self, lease: Lease) -> str:
        return (f"Vault revokes lease {lease.lease_id} at that expiry; "
                "bao/vault lease revoke ends it sooner")

    def revoke(self, lease: Lease) -> None:
        if lease.lease_id:
            self.client.call("PUT", "sys/leases/revoke", {"lease_id": lease.lease_id})
            log.info("vault lease %s revoked", lease.lease_id)

    def lookup(self, lease: Lease) -> Lease:
        if not lease.lease_id:
            return lease
        body = self.client.call("PUT", "sys/leases/lookup", {"lease_id": lease.lease_id})
        data = self._checked(body, "lookup").data()
        try:
            expires = _expire_time(data, self.clock()) or lease.expires_at
        except AnswerError as exc:
            raise self.client.error(f"the lookup answer: {exc}") from None
        return dataclasses.replace(lease, expires_at=expires, renewable=bool(data.get("renewable")))

    def roles(self) -> list[RoleInfo]:
        body = self.client.call("LIST", f"{self.mount}/roles", empty_on_404=True)
        try:
            names = answers.names(self._checked(body, "roles list").data(), "keys")
        except AnswerError as exc:
            raise self.client.error(f"the roles list answer: {exc}") from None
        return [self._role_info(name) for name in names]

    def close(self) -> None:
        self.client.session.close()

    # -- helpers --------------------------------------------------------------

    def _renew_call(self, lease: Lease, increment: float) -> dict[str, Any]:
        return self.client.call("PUT", "sys/leases/renew",
                                {"lease_id": lease.lease_id, "increment": math.ceil(increment)})

    def _fit_ttl(self, lease: Lease, wanted: float) -> Lease:
        """Bring a fresh lease from the role's default_ttl to the requested TTL (see the module doc)."""
        if abs(lease.lifetime - wanted) < SLACK:
            return lease
        if not lease.renewable:
            return self._warn(lease, f"the role's TTL {format_duration(lease.lifetime)} applies"
                                     " (the lease is not renewable)")
        now = self.clock()
        try:
            body = self._renew_call(lease, wanted)
        except BackendError as exc:
            return self._warn(lease, f"TTL left at the role's {format_duration(lease.lifetime)}: {exc}")
        answer = self._checked(body, "renew")
        warnings = lease.warnings + answer.warnings(lease.credentials.password)
        return dataclasses.replace(lease, expires_at=now + answer.duration(), warnings=warnings)

    def _checked(self, body: dict[str, Any], what: str) -> Answer:
        """``body`` as an Answer whose ``data`` and durations are known to be sane."""
        try:
            answer = Answer(body)
            answer.data(), answer.duration(), answer.warnings(""), answer.lease_id()
        except AnswerError as exc:
            raise self.client.error(f"the {what} answer: {exc}") from None
        return answer

    def _warn(self, lease: Lease, text: str) -> Lease:
        return dataclasses.replace(lease, warnings=(*lease.warnings, text))

    def _role_info(self, name: str) -> RoleInfo:
        default_ttl, max_ttl = self._role_ttls(name)
        note = "" if default_ttl is not None else "TTLs not readable with this token"
        return RoleInfo(name, default_ttl, max_ttl, note)

    def _role_ttls(self, name: str) -> tuple[float | None, float | None]:
        """Best effort: (default_ttl, max_ttl) if the token may read the role; 0 means unset."""
        try:
            data = self._checked(self.client.call("GET", f"{self.mount}/roles/{name}"), "role").data()
        except BackendError as exc:
            log.debug("vault role %s not readable: %s", name, exc)
            return None, None
        return _ttl(data, "default_ttl"), _ttl(data, "max_ttl")


def _ttl(data: Mapping[str, Any], key: str) -> float | None:
    """A role's TTL field: best effort, so 0 (unset), absent or absurd means unknown here."""
    try:
        return answers.seconds(data, key)
    except AnswerError:
        return None


class Answer:
    """One decoded Vault answer, its fields read with the answer toolkit."""

    def __init__(self, body: object) -> None:
        self.body = answers.document(body)

    def data(self) -> Mapping[str, Any]:
        return answers.section(self.body, "data")

    def credentials(self) -> Credentials:
        data = self.data()
        return Credentials(answers.text(data, "username", limit=MAX_NAME), answers.secret(data, "password"))

    def duration(self) -> float:
        return answers.seconds(self.body, "lease_duration", zero=True, default=0.0)

    def lease_id(self) -> str:
        return answers.text(self.body, "lease_id", optional=True)

    def renewable(self) -> bool:
        return self.body.get("renewable") is True

    def warnings(self, secret: str) -> tuple[str, ...]:
        return answers.warnings(self.body, "warnings", [secret])


def _expire_time(data: Mapping[str, Any], now: float) -> float | None:
    """Vault's ``expire_time``; empty when the lease never expires."""
    return None if data.get("expire_time") == "" else answers.timestamp(data, "expire_time", now=now)
