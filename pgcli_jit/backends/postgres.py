"""The embedded default: PostgreSQL itself mints the credentials.

A broker connection (``admin_dsn``) creates a temporary LOGIN role per lease.
The broker's own password never sits in the config: libpq finds it in
``.pgpass``/``PGPASSFILE``/a service file, or the profile names an env var
(``admin_password_env``) that holds it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgcli_jit.backends import pg_roles
from pgcli_jit.backends.base import Backend, LeaseRequest
from pgcli_jit.config import Profile
from pgcli_jit.errors import (
    BackendError,
    BackendUnavailable,
    NotRenewable,
    PermissionDenied,
    db_error_line,
)
from pgcli_jit.lease import Credentials, Lease


class PostgresBackend(Backend):
    name: ClassVar[str] = "postgres"
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"admin_dsn", "admin_password_env", "grant", "role_prefix", "reassign_to",
         "connection_limit"}
    )

    @classmethod
    def check_profile(cls, profile: Profile) -> None:
        opts = profile.options
        if not opts.get("admin_dsn"):
            raise profile.error("admin_dsn", "missing", 'e.g. admin_dsn = "host=db user=jit_broker"')
        try:
            params = conninfo_to_dict(str(opts["admin_dsn"]))
        except psycopg.ProgrammingError:
            raise profile.error("admin_dsn", "is not a libpq conninfo or URI") from None
        if "password" in params:
            raise profile.error(
                "admin_dsn", "holds a password; secrets never go in the config",
                "use ~/.pgpass, PGPASSFILE, a service file or admin_password_env",
            )
        grant = opts.get("grant", [])
        if not (isinstance(grant, list) and all(isinstance(g, str) and g for g in grant)):
            raise profile.error("grant", "must be a list of role names", 'e.g. grant = ["jit_read"]')
        prefix = opts.get("role_prefix", "jit_")
        if not (isinstance(prefix, str) and 0 < len(prefix.encode()) <= 20):
            raise profile.error("role_prefix", "must be a string of 1 to 20 bytes")
        limit = opts.get("connection_limit", -1)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise profile.error("connection_limit", "must be a whole number")

    # -- broker connection -------------------------------------------------

    @contextlib.contextmanager
    def _broker(self) -> Iterator[pg_roles.Conn]:
        """One short-lived broker connection per operation: nothing to go stale mid-lease."""
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 10}
        env_name = self.profile.options.get("admin_password_env")
        if env_name:
            if not os.environ.get(str(env_name)):
                raise self._error(BackendUnavailable, f"${env_name} (admin_password_env) is not set")
            kwargs["password"] = os.environ[str(env_name)]
        try:
            conn = psycopg.connect(str(self.profile.options["admin_dsn"]), **kwargs)
        except psycopg.OperationalError as exc:
            raise self._error(BackendUnavailable, f"cannot connect the broker: {db_error_line(exc)}",
                              "check admin_dsn and the broker's password source") from None
        try:
            with conn:
                yield conn
        except psycopg.errors.InsufficientPrivilege as exc:
            raise self._error(PermissionDenied, db_error_line(exc),
                              "the broker needs CREATEROLE and ADMIN OPTION on the grant roles"
                              " (pgcli-jit-admin setup)") from None
        except psycopg.Error as exc:
            raise self._error(BackendError, db_error_line(exc)) from None

    def _error(self, cls: type[BackendError], message: str, hint: str = "") -> BackendError:
        return cls(message, backend=self.name, profile=self.profile.name, hint=hint)

    # -- the Backend interface ----------------------------------------------

    def request(self, req: LeaseRequest) -> Lease:
        opts = self.profile.options
        now = self.clock()
        ttl = self.effective_ttl(req.ttl)
        max_at = now + self.profile.max_ttl if self.profile.max_ttl else None
        name = pg_roles.role_name(str(opts.get("role_prefix", "jit_")), req.requester)
        password = pg_roles.new_password()
        lease = Lease(
            profile=self.profile.name, backend=self.name, credentials=Credentials(name, password),
            issued_at=now, expires_at=now + ttl, lease_id=name, max_expires_at=max_at,
            reason=req.reason, requester=req.requester,
        )
        with self._broker() as conn:
            pg_roles.create_role(
                conn, name, password, list(opts.get("grant", [])), lease.expires_at,
                self._metadata(lease), int(opts.get("connection_limit", -1)),
            )
        return lease

    def renew(self, lease: Lease, ttl: float | None) -> Lease:
        now = self.clock()
        wanted = now + self.effective_ttl(ttl)
        new_expiry = min(wanted, lease.max_expires_at) if lease.max_expires_at else wanted
        if new_expiry <= lease.expires_at + 1:
            if new_expiry < wanted:
                raise self._error(NotRenewable, "max TTL reached", "\\jit renew will issue a new role")
            self._live_role_check(lease)
            return lease.extended(lease.expires_at, warnings=("already valid for longer than asked",))
        capped = ("renewal capped at max_ttl",) if new_expiry < wanted else ()
        renewed = lease.extended(new_expiry, warnings=capped)
        with self._broker() as conn:
            role = self._live_role(conn, lease)
            pg_roles.set_valid_until(conn, role.name, new_expiry, self._metadata(renewed))
        return renewed

    def revoke(self, lease: Lease) -> None:
        reassign = self.profile.options.get("reassign_to")
        with self._broker() as conn:
            if pg_roles.jit_roles(conn, lease.username):
                pg_roles.drop_role(conn, lease.username, str(reassign) if reassign else None)

    def lookup(self, lease: Lease) -> Lease:
        with self._broker() as conn:
            role = self._live_role(conn, lease)
        if role.valid_until is None:
            return lease
        return dataclasses.replace(lease, expires_at=role.valid_until.timestamp())

    def _live_role_check(self, lease: Lease) -> None:
        with self._broker() as conn:
            self._live_role(conn, lease)

    def _live_role(self, conn: pg_roles.Conn, lease: Lease) -> pg_roles.JitRole:
        roles = pg_roles.jit_roles(conn, lease.username)
        if not roles or not roles[0].can_login:
            raise self._error(NotRenewable, f"role {lease.username} no longer exists")
        if roles[0].expired(pg_roles.server_now(conn)):
            raise self._error(NotRenewable, f"role {lease.username} has expired")
        return roles[0]

    def _metadata(self, lease: Lease) -> dict[str, Any]:
        return {
            "requester": lease.requester, "reason": lease.reason, "profile": lease.profile,
            "issued": pg_roles._ts(lease.issued_at), "expires": pg_roles._ts(lease.expires_at),
            "max_expires": pg_roles._ts(lease.max_expires_at) if lease.max_expires_at else None,
            "renewals": lease.renewals,
        }
