"""The embedded default: PostgreSQL itself decides, mints and ends the credentials.

The client holds no broker secret.  It asks the ``jit`` schema's functions
(installed by ``pgcli-jit-admin setup``, see ``pgcli_jit/server/sql``) over the
user's own login; the server takes the requester from ``session_user``, applies
the server profile's grants and TTL caps, builds the role, writes the audit row
and ends the role at expiry.  The client contributes only a wish (profile name,
TTL, reason) and a SCRAM verifier of a password it generated: the plaintext never
leaves this process.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import psycopg

from pgcli_jit.backends import answers
from pgcli_jit.backends.base import (
    ApprovalPending,
    Approver,
    Backend,
    BreakGlassUse,
    Decidable,
    Doorbell,
    GrantingProfile,
    LeaseRequest,
    NeedsPassword,
    PendingRequest,
    Privilege,
    ProfileGrants,
    RoleInfo,
    SessionQuery,
)
from pgcli_jit.backends.login import Listener, Login, NoAnswer, WarmConnection, needs_password
from pgcli_jit.backends.postgres import scram
from pgcli_jit.backends.postgres.answers import Answer
from pgcli_jit.core.clock import Clock, system_clock
from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.errors import (
    BackendError,
    BackendUnavailable,
    NotRenewable,
    PermissionDenied,
    RequestClosed,
    db_error_line,
)
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.limits import MAX_NAME, PROFILE_NAME_PATTERN
from pgcli_jit.core.profile import Profile
from pgcli_jit.core.sanitize import printable
from pgcli_jit.server import statements

#: profile keys of the client-side broker this backend replaced: each gets one line saying so
RETIRED = frozenset({"admin_dsn", "admin_password_env", "grant", "role_prefix", "reassign_to",
                     "connection_limit"})
#: the JIT connection must prove the password with SCRAM: a server that asks for it in
#: cleartext or md5 (a fake one, say) never sees a fresh password
JIT_CONNINFO = {"require_auth": "scram-sha-256"}
#: for logging in and for each answer; the profile's ``timeout`` changes it
DEFAULT_TIMEOUT = 10.0
#: how a request that needed approval can end without a role (jit.requests.status)
CLOSED_STATES = frozenset({"denied", "cancelled", "timed_out", "issued"})
#: a profile name as the server's table holds one: nothing else from an answer is offered
PROFILE_NAME = re.compile(PROFILE_NAME_PATTERN)


class PostgresBackend(Backend):
    name: ClassVar[str] = "postgres"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"user", "server_profile", "timeout"})
    RETIRED_OPTIONS: ClassVar[frozenset[str]] = RETIRED
    offers_approvals: ClassVar[bool] = True

    uses_session_login: ClassVar[bool] = True
    server_policy: ClassVar[bool] = True
    says_what_grants: ClassVar[bool] = True
    describes_grants: ClassVar[bool] = True
    offers_break_glass: ClassVar[bool] = True

    def __init__(self, profile: Profile, *, clock: Clock = system_clock) -> None:
        super().__init__(profile, clock=clock)
        self._session: Callable[[], Login | None] = lambda: None
        self.timeout = profile.duration_option("timeout", DEFAULT_TIMEOUT)
        self._warm = WarmConnection(self.login, self.timeout)

    @classmethod
    def check_profile(cls, profile: Profile) -> None:
        retired = sorted(RETIRED & set(profile.options))
        if retired:
            raise profile.error(
                retired[0], "is no longer used: grants and TTLs are declared in the database now",
                "by an operator, with pgcli-jit-admin profile add; a postgres profile keeps host, port, "
                "dbname, user and server_profile",
            )
        for key in ("user", "server_profile"):
            value = profile.options.get(key)
            if value is not None and not (isinstance(value, str) and value):
                raise profile.error(key, "must be a non-empty string")
        profile.duration_option("timeout", DEFAULT_TIMEOUT)

    # -- whose login ---------------------------------------------------------------

    def use_session(self, login: Callable[[], Login | None]) -> None:
        """The shell hands over the session's own login (the identity before any \\jit request)."""
        self._session = login

    def login(self) -> Login:
        """The session's login aimed where the profile says, else the profile alone."""
        wanted = {**self.profile.connection_overrides(), **self._profile_user()}
        session = self._session()
        return session.overlaid(wanted) if session is not None else Login(wanted)

    def asking_login(self) -> Login:
        """Requests are made as the session's own login: :meth:`login`."""
        return self.login()

    def _profile_user(self) -> dict[str, str]:
        user = self.profile.options.get("user")
        return {"user": str(user)} if user else {}

    @property
    def server_profile(self) -> str:
        return str(self.profile.options.get("server_profile") or self.profile.name)

    # -- calling the server ------------------------------------------------------------

    def _call(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        try:
            return self._warm.call(query, params)
        except NoAnswer:
            raise self._no_answer() from None
        except psycopg.Error as exc:
            raise self._db_error(exc) from None

    def _call_if_installed(self, query: str) -> list[tuple[Any, ...]] | None:
        """``query`` into a function that older schemas lack: None when this server's has no
        such function, or has not granted it to this login yet (``setup --apply`` grants it);
        every other failure as :meth:`_call`."""
        try:
            return self._warm.call(query, ())
        except (psycopg.errors.UndefinedFunction, psycopg.errors.InsufficientPrivilege):
            return None
        except NoAnswer:
            raise self._no_answer() from None
        except psycopg.Error as exc:
            raise self._db_error(exc) from None

    def _db_error(self, exc: psycopg.Error) -> BackendError:
        if isinstance(exc, psycopg.OperationalError):
            return self._login_error(exc)
        if isinstance(exc, psycopg.errors.UndefinedFunction | psycopg.errors.InvalidSchemaName):
            return self._error(BackendUnavailable, "the jit schema is not installed in this database",
                               "an operator runs pgcli-jit-admin setup --apply")
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return self._error(PermissionDenied, db_error_line(exc),
                               "your login is not a requester: ask an operator (GRANT jit_requester TO you)")
        return self._error(BackendError, db_error_line(exc))

    def _login_error(self, exc: psycopg.OperationalError) -> BackendError:
        login = self.login()
        if needs_password(exc):
            return NeedsPassword(f"{login.describe()} needs a password", backend=self.name,
                                 profile=self.profile.name,
                                 hint="put it in ~/.pgpass, or start pgcli-jit with -W")
        return self._error(BackendUnavailable, f"cannot reach the server as {login.describe()}: "
                           f"{db_error_line(exc)}")

    def _no_answer(self) -> BackendError:
        return self._error(BackendUnavailable, f"no answer from {self.login().describe()} within "
                           f"{format_duration(self.timeout)}", "the server may be overloaded or "
                           "unreachable; try again, or raise timeout in the profile")

    def _answer(self, query: str, *params: Any) -> Answer:
        rows = self._call(query, *params)
        return self._checked(rows[0][0] if rows and rows[0] else None)

    def _checked(self, data: object) -> Answer:
        if not isinstance(data, Mapping):
            raise self._error(BackendError, "the server's jit schema gave no answer")
        answer = Answer(data, self.clock(), lambda message, hint: self._error(BackendError, message, hint))
        if answer.get("status") in ("denied", "ended"):
            raise self._error(PermissionDenied, answer.message("error", "refused"), answer.message("hint"))
        return answer

    def _error(self, cls: type[BackendError], message: str, hint: str = "") -> BackendError:
        return cls(message, backend=self.name, profile=self.profile.name, hint=hint)

    # -- the Backend interface ---------------------------------------------------------

    def request(self, req: LeaseRequest) -> Lease:
        password = scram.new_password()
        verifier = self._verifier(password)
        wish = float(req.ttl) if req.ttl and req.ttl_given else None  # None: the server's default
        query = statements.REQUEST_BREAK_GLASS if req.break_glass else statements.REQUEST
        answer = self._answer(query, self.server_profile, wish, req.reason, verifier)
        if answer.get("status") == "pending":  # no role yet: the password waits with the client
            raise ApprovalPending(self._pending(answer, password, self.clock()))
        return self._granted(answer, password)

    def _granted(self, answer: Answer, password: str) -> Lease:
        warnings: tuple[str, ...] = ()
        if answer.get("capped") is True:
            longest = answer.length("max_ttl_seconds")
            warnings = (f"TTL capped at the server profile's max_ttl ({format_duration(longest)})",)
        lease = self._lease(answer, Credentials(answer.role(), password), warnings=warnings)
        approved_by = answer.names("approved_by")
        if approved_by:  # issued after approval: say by whom
            lease = dataclasses.replace(lease, backend_data={**lease.backend_data,
                                                             "approved_by": approved_by})
        return lease

    def renew(self, lease: Lease, ttl: float | None) -> Lease:
        answer = self._answer(statements.RENEW, lease.username, ttl)
        status = answer.get("status")
        if status == "max_ttl":
            raise self._error(NotRenewable, "max TTL reached", "\\jit renew will issue a new role")
        if status == "unchanged":
            return dataclasses.replace(lease, warnings=("already valid for longer than asked",))
        renewed = self._lease(answer, lease.credentials)
        capped = ("renewal capped at max_ttl",) if answer.get("capped") is True else ()
        return lease.extended(renewed.expires_at, renewed_at=self.clock(), warnings=capped)

    def revoke(self, lease: Lease) -> None:
        """NOLOGIN now (committed), then end its sessions and drop it in a second transaction."""
        try:
            self._answer(statements.REVOKE, lease.username)
        except PermissionDenied:
            return  # gone already (or never ours): nothing left to end
        answer = self._answer(statements.FINISH, lease.username)
        error = answer.message("drop_error")
        if error:
            raise self._error(BackendError, f"{lease.username} can no longer log in, but: {error}")

    def lookup(self, lease: Lease) -> Lease:
        for (row,) in self._call(statements.MY_LEASES):
            if isinstance(row, Mapping) and row.get("rolname") == lease.username:
                if row.get("status") == "ended":
                    event = row.get("end_event") if row.get("end_event") in ("revoke", "expire") else "end"
                    why = row.get("revoke_reason")
                    if event == "revoke" and isinstance(why, str) and why:
                        why = printable(why if len(why) <= 200 else why[:199] + "…")
                        raise self._error(NotRenewable, f"lease {lease.username} was revoked by an "
                                                        f"operator: {why}")
                    raise self._error(NotRenewable, f"lease {lease.username} has ended ({event})")
                answer = self._checked(row)
                return dataclasses.replace(lease, expires_at=self._expiry(answer),
                                           renewals=answer.count("renewals"))
        raise self._error(NotRenewable, f"lease {lease.username} no longer exists")

    def roles(self) -> list[RoleInfo]:
        """The server profile this profile asks for, as the server states it (TTLs, reason),
        if the login may request it: the client's own ttl is only a wish."""
        rows = self._call(statements.MY_PROFILE, self.server_profile)
        if not rows:
            return [RoleInfo(self.server_profile, note="not requestable by this login",
                             kind="server profile")]
        return [RoleInfo(str(name), ttl, max_ttl,
                         "; ".join(filter(None, ("reason required" if needs_reason else "",
                                                 str(description or "")))), kind="server profile")
                for name, ttl, max_ttl, needs_reason, description in rows]

    def requestable(self) -> list[RoleInfo]:
        """Every server profile this login may request by name, as the server states it, with
        who must approve a request for it (unknown where the server's schema does not say)."""
        rows = self._call(statements.MY_PROFILES)
        rules = self._approval_rules()
        return [RoleInfo(str(name), ttl, max_ttl, str(description or ""), kind="server profile",
                         reason_required=bool(needs_reason),
                         **rules.get(str(name), {"approvers": None, "approvals": 0}))
                for name, ttl, max_ttl, needs_reason, description in rows]

    def _approval_rules(self) -> dict[str, dict[str, Any]]:
        """``jit.my_profile_rules()``: per profile, the approvers role (``""``: none) and how
        many approvals; empty on a schema older than the function.  Informational: a row that
        does not read as one is left out (that profile's approval is then unknown)."""
        rules: dict[str, dict[str, Any]] = {}
        for (row,) in self._call_if_installed(statements.MY_PROFILE_RULES) or ():
            try:
                data = answers.document(row)
                needed = answers.flag(data, "approval_required", default=False)
                rules[answers.text(data, "profile", limit=MAX_NAME)] = {
                    "approvers": answers.text(data, "approvers", limit=MAX_NAME) if needed else "",
                    "approvals": answers.whole(data, "approvals", low=1, high=1_000_000) if needed else 0,
                    "logged": answers.flag(data, "statements_logged", default=False)}
            except answers.AnswerError:
                continue
        return rules

    def profile_grants(self) -> list[ProfileGrants]:
        """``jit.my_profile_grants()``: what each profile this login may request grants, in
        the server's compact items; empty on a schema older than the function.  A profile
        whose row does not read is left out, an item that does not read is left out of its
        profile (shown as one more): this is informational, never an error."""
        found = []
        for (row,) in self._call_if_installed(statements.MY_PROFILE_GRANTS) or ():
            try:
                found.append(profile_grants(answers.document(row)))
            except answers.AnswerError:
                continue
        return found

    def profiles_granting(self, wanted: Privilege,
                          on_session: SessionQuery | None = None) -> list[GrantingProfile]:
        """``jit.profiles_granting``, asked on the session's own connection when there is one
        (the server resolves the object as the denied identity names it, with its search_path;
        a lease is answered for its own requester), else as the user's own login.  Empty on a
        schema older than the function; a row that does not read as one is left out (an
        offer is a convenience: it is right or absent)."""
        params = (wanted.privilege, wanted.kind, wanted.obj, wanted.column)
        try:
            rows = on_session(statements.PROFILES_GRANTING, params) if on_session is not None \
                else self._warm.call(statements.PROFILES_GRANTING, params)
        except (psycopg.errors.UndefinedFunction, psycopg.errors.InsufficientPrivilege):
            return []
        except NoAnswer:
            raise self._no_answer() from None
        except psycopg.Error as exc:
            raise self._db_error(exc) from None
        found = []
        for row in rows:
            try:
                found.append(granting(row))
            except answers.AnswerError:
                continue
        return found

    def close(self) -> None:
        self._warm.close()

    # -- approvals ------------------------------------------------------------------------

    def poll(self, pending: PendingRequest) -> Lease | PendingRequest:
        """``jit.request_status``: the server issues the role on the first poll after approval."""
        answer = self._answer(statements.REQUEST_STATUS, int(pending.request_id))
        status = answer.get("status")
        if status == "granted":
            return self._granted(answer, pending.secret or "")
        if status == "pending":
            return self._pending(answer, pending.secret, pending.asked_at)
        state = answer.get("state")
        state = state if isinstance(state, str) and state in CLOSED_STATES else "closed"
        by, note = answer.message("decided_by"), answer.message("note")
        raise RequestClosed(f"request {pending.request_id} was {state.replace('_', ' ')}",
                            state=state, decided_by=by, note=note, backend=self.name,
                            profile=self.profile.name)

    def cancel(self, pending: PendingRequest) -> None:
        self._answer(statements.CANCEL, int(pending.request_id))

    def approver(self) -> Approver:
        """The ``jit`` schema decides who may approve what (``jit._decidable``)."""
        return self

    def doorbell(self) -> Doorbell:
        """The schema rings ``jit_requests`` (no payload) when a request is asked, decided or
        withdrawn; any login may LISTEN, and the ring says only that something changed."""
        return _Ring(self, Listener(self.login, statements.LISTEN_REQUESTS, self.timeout))

    def waiting_for_me(self) -> list[Decidable]:
        return [decidable(row) for row in self._call(statements.PENDING)]

    def approves_any(self) -> bool:
        """A schema older than ``jit.approves_any`` answers no: the count is then polled."""
        rows = self._call_if_installed(statements.APPROVES_ANY)
        return bool(rows and rows[0] and rows[0][0] is True)

    def break_glass_uses(self) -> list[BreakGlassUse]:
        """A schema older than ``jit.break_glass_for_me`` has nothing to tell: []."""
        return [break_glass_use(row) for row in self._call_if_installed(statements.BREAK_GLASS_FOR_ME) or ()]

    def decide(self, request_id: int, approve: bool, text: str) -> dict[str, Any]:
        """The server checks who may (``jit._decidable``); its refusal is the message."""
        return dict(self._answer(statements.APPROVE if approve else statements.DENY, request_id, text).data)

    def ended_without_revoke(self, lease: Lease) -> str:
        return ("the operator's reaper, pgcli-jit-admin reap --watch, drops it at that expiry; "
                "pgcli-jit-admin leases shows it until then")

    def _pending(self, answer: Answer, password: str | None, asked_at: float) -> PendingRequest:
        poll_after = answer.get("poll_after")
        return PendingRequest(
            request_id=answer.identifier("request_id"), profile=self.profile.name, backend=self.name,
            asked_at=asked_at, poll_after=answer.seconds("poll_after") if poll_after is not None else 1.0,
            approvers=answer.text("approvers", MAX_NAME), approvals=len(answer.names("approved_by")),
            needed=answer.count("needed", low=0, high=10) or 1, expires_at=self._expiry(answer),
            reason=answer.text("reason"), secret=password)

    # -- helpers ------------------------------------------------------------------------

    def _verifier(self, password: str) -> str:
        """Computed by libpq on this machine (``PQencryptPasswordConn``), never on the server."""
        try:
            return self._warm.with_conn(lambda conn: scram.scram_verifier(conn, password))
        except NoAnswer:
            raise self._no_answer() from None
        except psycopg.OperationalError as exc:
            raise self._login_error(exc) from None

    def _lease(self, answer: Answer, credentials: Credentials, warnings: tuple[str, ...] = ()) -> Lease:
        expires_at = self._expiry(answer)
        return Lease(
            profile=self.profile.name, backend=self.name, credentials=credentials,
            issued_at=answer.when("issued_at"), expires_at=expires_at,
            lease_id=answer.identifier("lease_id"),
            max_expires_at=max(expires_at, answer.when("max_expires_at")),
            renewals=answer.count("renewals"), reason=answer.text("reason"),
            requester=answer.text("requester", MAX_NAME), conninfo=JIT_CONNINFO, warnings=warnings,
            backend_data={"logged": True} if logged(answer.get("log_statements")) else {},
        )

    def _expiry(self, answer: Answer) -> float:
        """``expires_at`` on this client's clock; one already past is not a lease."""
        expires_at = answer.when("expires_at")
        if expires_at <= answer.now:
            raise answer.malformed("expires_at has already passed")
        return expires_at


def logged(mode: object) -> bool:
    """Whether the server says it logs this lease's statements (its profile's log_statements)."""
    return isinstance(mode, str) and mode != "none" and bool(mode)


#: the columns of statements.PROFILES_GRANTING, in order
GRANTING_COLUMNS = ("profile", "object", "ttl_seconds", "max_ttl_seconds", "reason_required",
                    "approval_required", "grant_roles")


def granting(row: Sequence[Any]) -> GrantingProfile:
    """One row of ``jit.profiles_granting``, checked field by field."""
    data = dict(zip(GRANTING_COLUMNS, row, strict=True))
    name = answers.text(data, "profile", limit=MAX_NAME)
    if not PROFILE_NAME.fullmatch(name):
        raise answers.AnswerError("is not a profile name", "profile")
    return GrantingProfile(name, answers.text(data, "object", limit=MAX_NAME),
                           answers.seconds(data, "ttl_seconds"), answers.seconds(data, "max_ttl_seconds"),
                           answers.flag(data, "reason_required", default=False),
                           answers.flag(data, "approval_required", default=False),
                           answers.whole(data, "grant_roles", low=0, high=1000))


#: the most grant items of one profile read (the server sends at most 20)
MAX_GRANT_ITEMS = 50


def profile_grants(data: Mapping[str, Any]) -> ProfileGrants:
    """One object of ``jit.my_profile_grants()``, checked field by field."""
    name = answers.text(data, "profile", limit=MAX_NAME)
    if not PROFILE_NAME.fullmatch(name):
        raise answers.AnswerError("is not a profile name", "profile")
    items = data.get("grants") or []
    if not isinstance(items, list):
        raise answers.AnswerError("must be a list", "grants")
    grants = []
    for item in items[:MAX_GRANT_ITEMS]:
        if isinstance(item, str) and item and len(item) <= 2 * MAX_NAME and item.isprintable():
            grants.append(item)
    more = answers.whole(data, "more", low=0, high=1_000_000, default=0)
    more += len(items) - len(grants)
    return ProfileGrants(name, tuple(grants), answers.flag(data, "listed", default=True), more,
                         answers.flag(data, "break_glass", default=False),
                         answers.flag(data, "auto_approved", default=False))


def decidable(row: Sequence[Any]) -> Decidable:
    """One row of :data:`~pgcli_jit.server.statements.PENDING` as the approver's interface types it."""
    rid, requester, profile, ttl, reason, created, expires, got, needed = row
    return Decidable(int(rid), str(requester), str(profile), float(ttl), str(reason or ""),
                     created, expires, int(got), int(needed))


def break_glass_use(row: Sequence[Any]) -> BreakGlassUse:
    """One row of :data:`~pgcli_jit.server.statements.BREAK_GLASS_FOR_ME`."""
    lease_id, requester, profile, reason, _issued, expires = row
    return BreakGlassUse(str(lease_id), str(requester), str(profile), str(reason or ""), expires)


__all__ = ["JIT_CONNINFO", "NeedsPassword", "PostgresBackend"]


class _Ring:
    """A :class:`Listener` whose failures are the backend's one-line errors."""

    def __init__(self, backend: PostgresBackend, listener: Listener) -> None:
        self._backend = backend
        self._listener = listener

    def wait(self, timeout: float) -> bool:
        try:
            return self._listener.wait(timeout)
        except psycopg.Error as exc:
            raise self._backend._db_error(exc) from None

    def close(self) -> None:
        self._listener.close()

