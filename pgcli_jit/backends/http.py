"""A generic HTTPS credential broker: the protocol is in docs/backends/http.md.

For teams whose access broker is an in-house web service: three POSTs
(``/credentials``, ``/renew``, ``/revoke``), JSON in, the shared credential
JSON out.  The bearer token is read from its env var or file for every call,
so rotating it needs no restart, and it never appears in a log, an error or
``repr``.  Redirects are not followed: a broker that moves must be
reconfigured, never followed blindly with a token attached.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests

from pgcli_jit.backends import credential_json, httputil
from pgcli_jit.backends.base import ApprovalPending, Backend, LeaseRequest, PendingRequest
from pgcli_jit.core.clock import Clock, system_clock
from pgcli_jit.core.errors import BackendError, NotRenewable, PermissionDenied, RequestClosed
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.profile import Profile

log = logging.getLogger(__name__)

#: Answers to /renew meaning "this lease cannot be extended": rotate instead.
NOT_RENEWABLE = frozenset({409, 410})
#: Answers to /revoke meaning "no such lease": it is already over, which is what was asked.
ALREADY_GONE = frozenset({404, 410})
#: Answers to /request-status that close a pending request: denied, or gone (timed out, cancelled).
CLOSED = {403: "denied", 404: "cancelled", 410: "timed_out"}
#: the longest pause between polls, whatever the broker says
MAX_POLL_AFTER = 30.0


class HttpBackend(Backend):
    name: ClassVar[str] = "http"
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"url", "token_env", "token_file", "ca_cert", "allow_http", "timeout"}
    )

    def __init__(self, profile: Profile, *, clock: Clock = system_clock,
                 session: requests.Session | None = None) -> None:
        super().__init__(profile, clock=clock)
        self.session = session or httputil.new_session()
        self.url = str(profile.options["url"]).rstrip("/")
        self.timeout = profile.duration_option("timeout", httputil.DEFAULT_TIMEOUT)

    def __repr__(self) -> str:
        return f"HttpBackend(profile={self.profile.name!r}, url={self.url!r})"

    @classmethod
    def check_profile(cls, profile: Profile) -> None:
        opts = profile.options
        allow_http = opts.get("allow_http", False)
        if not isinstance(allow_http, bool):
            raise profile.error("allow_http", "must be true or false")
        _check_url(profile, allow_http)
        for key in ("token_env", "token_file", "ca_cert"):
            if key in opts and not (isinstance(opts[key], str) and opts[key]):
                raise profile.error(key, "must be a non-empty string")
        if "token_env" in opts and "token_file" in opts:
            raise profile.error("token_file", "token_env and token_file are both set", "keep one")
        profile.duration_option("timeout", httputil.DEFAULT_TIMEOUT)

    # -- the Backend interface ----------------------------------------------

    def request(self, req: LeaseRequest) -> Lease:
        now = self.clock()
        body = {"profile": self.profile.name, "ttl": math.ceil(self.effective_ttl(req.ttl)),
                "reason": req.reason, "requester": req.requester}
        resp = self._post("credentials", body)
        if resp.status_code == 202:  # asked, not yet granted: someone must approve
            raise ApprovalPending(self._pending(resp, now, req.reason))
        parsed = self._parse(resp, now)
        return credential_json.new_lease(parsed, self.profile, self.name, now, req)

    def poll(self, pending: PendingRequest) -> Lease | PendingRequest:
        """``POST /request-status``: 202 still waiting, 200 the credentials, 403 denied,
        404/410 cancelled or timed out."""
        now = self.clock()
        resp = self._post("request-status", {"request_id": pending.request_id},
                          ok_statuses=frozenset(CLOSED))
        if resp.status_code in CLOSED:
            messages = httputil.error_messages(resp, [self._token()])
            state = CLOSED[resp.status_code]
            raise RequestClosed(f"request {pending.request_id} was {state.replace('_', ' ')}",
                                state=state, note="; ".join(messages), backend=self.name,
                                profile=self.profile.name)
        if resp.status_code == 202:
            return self._pending(resp, pending.asked_at, pending.reason)
        parsed = self._parse(resp, now)
        req = LeaseRequest(ttl=0, reason=pending.reason, requester="")
        return credential_json.new_lease(parsed, self.profile, self.name, now, req)

    def cancel(self, pending: PendingRequest) -> None:
        self._post("cancel", {"request_id": pending.request_id}, ok_statuses=ALREADY_GONE)

    def _pending(self, resp: requests.Response, asked_at: float, reason: str) -> PendingRequest:
        try:
            data = resp.json()
            rid, after = data["request_id"], float(data.get("poll_after", 1))
        except (ValueError, RecursionError, TypeError, KeyError):
            raise self._error("HTTP 202 without a request_id",
                              'a pending answer is {"request_id": ..., "poll_after": seconds}') from None
        if not isinstance(rid, str | int) or isinstance(rid, bool) or not str(rid) or len(str(rid)) > 200:
            raise self._error("HTTP 202 with a request_id that is not a short string or number")
        approvers = data.get("approvers") if isinstance(data.get("approvers"), str) else ""
        return PendingRequest(request_id=str(rid), profile=self.profile.name, backend=self.name,
                              asked_at=asked_at, poll_after=min(max(after, 0.2), MAX_POLL_AFTER),
                              approvers=str(approvers)[:100], reason=reason)

    def renew(self, lease: Lease, ttl: float | None) -> Lease:
        now = self.clock()
        body = {"lease_id": lease.lease_id, "username": lease.username,
                "ttl": math.ceil(self.effective_ttl(ttl))}
        resp = self._post("renew", body, not_renewable=NOT_RENEWABLE, secret=lease.credentials.password)
        parsed = self._parse(resp, now, lease.credentials)
        try:
            return credential_json.renewed_lease(lease, parsed)
        except credential_json.CredentialFormatError as exc:
            raise self._error(f"/renew: {exc}",
                              "a renewal keeps the user; the broker should answer 409 instead") from None

    def revoke(self, lease: Lease) -> None:
        self._post("revoke", {"lease_id": lease.lease_id, "username": lease.username},
                   ok_statuses=ALREADY_GONE, secret=lease.credentials.password)
        log.info("http broker revoked lease %s (%s)", lease.lease_id, lease.username)

    def close(self) -> None:
        self.session.close()

    # -- helpers --------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], *, not_renewable: frozenset[int] = frozenset(),
              ok_statuses: frozenset[int] = frozenset(), secret: str | None = None) -> requests.Response:
        """POST ``body``; an error answer becomes one clean line, with the token and
        ``secret`` (the lease's password) redacted should the broker echo them."""
        token = self._token()
        headers = {"Accept": "application/json"}
        if token:
            if not httputil.header_safe(token):
                raise self._error("the bearer token contains spaces or control characters",
                                  "the token_env variable or token_file must hold one token",
                                  cls=PermissionDenied)
            headers["Authorization"] = f"Bearer {token}"
        resp = httputil.send(
            self.session, "POST", f"{self.url}/{path}", backend=self.name, profile=self.profile.name,
            timeout=self.timeout, json=body, headers=headers, verify=self._verify(),
            allow_redirects=False,
        )
        log.debug("http broker POST /%s -> %s", path, resp.status_code)
        if 200 <= resp.status_code < 300 or resp.status_code in ok_statuses:
            return resp
        messages = httputil.error_messages(resp, [token, secret])
        if resp.status_code in not_renewable:
            raise NotRenewable(f"HTTP {resp.status_code}: {'; '.join(messages) or 'not renewable'}",
                               backend=self.name, profile=self.profile.name,
                               status=resp.status_code, hint="\\jit renew will request new credentials")
        raise httputil.error_from_response(resp, backend=self.name, profile=self.profile.name,
                                           messages=messages)

    def _parse(self, resp: requests.Response, now: float,
               current: Credentials | None = None) -> credential_json.ParsedCredential:
        try:
            data = resp.json()
        except (ValueError, RecursionError):
            raise self._error(f"HTTP {resp.status_code}: the answer is not JSON",
                              "is url the broker's base URL?") from None
        try:
            return credential_json.parse_object(data, now=now, current=current)
        except credential_json.CredentialFormatError as exc:
            raise self._error(f"the broker's answer {exc}") from None

    def _token(self) -> str | None:
        """The bearer token, read now (so a rotated token applies at once); never kept."""
        opts = self.profile.options
        if opts.get("token_env"):
            token = os.environ.get(str(opts["token_env"]), "").strip()
            if not token:
                raise self._error(f"${opts['token_env']} (token_env) is not set", cls=PermissionDenied)
            return token
        if opts.get("token_file"):
            return self._token_from_file(Path(os.path.expanduser(str(opts["token_file"]))))
        return None

    def _token_from_file(self, path: Path) -> str:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise self._error(f"cannot read token_file {path}: {exc.strerror}",
                              cls=PermissionDenied) from None
        if not token:
            raise self._error(f"token_file {path} is empty", cls=PermissionDenied)
        return token

    def _verify(self) -> bool | str:
        ca_cert = self.profile.options.get("ca_cert")
        return os.path.expanduser(str(ca_cert)) if ca_cert else True

    def _error(self, message: str, hint: str = "", cls: type[BackendError] = BackendError) -> BackendError:
        return cls(message, backend=self.name, profile=self.profile.name, hint=hint)


def _check_url(profile: Profile, allow_http: bool) -> None:
    url = profile.options.get("url")
    if not isinstance(url, str) or not url:
        raise profile.error("url", "missing" if url is None else "must be a string",
                            'the broker\'s base URL, e.g. url = "https://jit.example.com/v1"')
    problem = httputil.check_url(url, allow_http=allow_http)
    if problem:
        raise profile.error("url", problem)
    parts = urlsplit(url)
    if parts.username or parts.password or parts.query:
        raise profile.error("url", "must not hold credentials or a query string",
                            "put the token in token_env or token_file")
