"""HTTP plumbing shared by the vault and http backends.

One table maps HTTP status codes to error classes (hvac's habit), every
request has a timeout, TLS is verified by default, and plain ``http://`` is
accepted only to a loopback address unless the profile explicitly allows it:
a bearer token must never cross a network in clear text by accident.

Every answer is read in full here, up to :data:`~pgcli_jit.core.limits.MAX_OUTPUT`
(4 MiB, counted after decompression): a broker or proxy that streams forever
fails with one line instead of filling memory.  Error text from a server passes
through :func:`~pgcli_jit.core.sanitize.clean` before anyone sees it.

The timeout bounds the whole call, not each read.  ``requests`` only bounds a
single ``recv``, so a server that answers a byte every second (headers or body)
kept a caller waiting for minutes; sessions made by :func:`new_session` hand their
sockets to the call's :class:`~pgcli_jit.backends.deadline.Deadline` (the one a
PostgreSQL login call has too: one watcher thread, no thread per call), which shuts
them down when the time is up, and the blocked read returns at once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.poolmanager import pool_classes_by_scheme as _DEFAULT_POOLS

from pgcli_jit.backends.deadline import Deadline
from pgcli_jit.core.errors import BackendError, BackendUnavailable, NotRenewable, PermissionDenied
from pgcli_jit.core.limits import MAX_OUTPUT
from pgcli_jit.core.sanitize import clean

DEFAULT_TIMEOUT = 10.0

#: status -> (error class, hint); anything else >= 400 is a plain BackendError.
STATUS_ERRORS: dict[int, tuple[type[BackendError], str]] = {
    400: (BackendError, "the server rejected the request"),
    401: (PermissionDenied, "the token is missing or invalid: log in again"),
    403: (PermissionDenied, "the token is not allowed to do this: check its policy"),
    404: (BackendError, "no such path, or the token may not see it"),
    429: (BackendUnavailable, "rate limited: try again shortly"),
    500: (BackendError, "the server failed: see its log"),
    502: (BackendUnavailable, "a proxy could not reach the server"),
    503: (BackendUnavailable, "the server is sealed, in standby or down"),
    504: (BackendUnavailable, "a proxy timed out reaching the server"),
}

#: Vault's words (400) for a lease that no longer exists: renew says the first, lookup the second.
LEASE_GONE = ("lease not found", "invalid lease")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def header_safe(value: str) -> bool:
    """A token must be one printable word: anything else would end up quoted in an error."""
    return bool(value) and value.isprintable() and not any(c.isspace() for c in value)


def check_url(url: str, *, allow_http: bool) -> str | None:
    """None if ``url`` is acceptable, else what is wrong with it (for a ConfigError)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s):// URL"
    if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
        return "plain http:// is only allowed to a loopback address (set allow_http = true to override)"
    return None


def error_messages(resp: requests.Response, secrets: Iterable[str | None] = ()) -> list[str]:
    """The server's own words, one clean line each (at most 5): ``{"errors": [...]}`` (Vault,
    also its "1 error occurred:\\n\\t* permission denied" form) or ``{"error": "..."}``.
    ``secrets`` (the token, a password) are redacted wherever they appear."""
    try:
        data = resp.json()
    except (ValueError, RecursionError):
        return []
    if not isinstance(data, dict):
        return []
    raw = data.get("errors") or ([data["error"]] if data.get("error") else [])
    items = raw[:20] if isinstance(raw, list) else [raw]
    known = list(secrets)
    lines = (line.strip().lstrip("*").strip() for item in items for line in str(item)[:4096].splitlines())
    cleaned = (clean(line, known) for line in lines if line and not line.endswith("occurred:"))
    return [line for line in cleaned if line][:5]


def error_from_response(resp: requests.Response, *, backend: str, profile: str,
                        messages: list[str] | None = None) -> BackendError:
    """The one place a non-2xx answer becomes an exception."""
    cls, hint = STATUS_ERRORS.get(resp.status_code, (BackendError, ""))
    text = "; ".join(messages or []) or clean(str(resp.reason or "")) or "no message"
    if resp.status_code == 400 and any(m in text for m in LEASE_GONE):
        cls, hint = NotRenewable, "the lease is gone: past its max TTL, or revoked"
    return cls(f"HTTP {resp.status_code}: {text}", backend=backend, profile=profile,
               status=resp.status_code, hint=hint)


def send(session: requests.Session, method: str, url: str, *, backend: str, profile: str,
         timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> requests.Response:
    """``session.request`` within ``timeout`` as a whole, the body read (capped); network
    failures become BackendUnavailable."""
    call = _Call(timeout)
    resp: requests.Response | None = None
    try:
        with call:
            try:
                resp = session.request(method, url, timeout=timeout, stream=True, **kwargs)
                _read_capped(resp, call.at)
            except Exception:
                if not call.cut:
                    raise
                # whatever the cut read then raised, the reason is the deadline: no answer
                # at all (as a per-read timeout says it), or an answer that never ended
                raise (_TooSlow if resp is not None else requests.exceptions.ReadTimeout()) from None
        return resp
    except _TooSlow:
        reason, hint = f"no complete answer from {_origin(url)} within {timeout:g}s", "the server is too slow"
    except _TooLarge:
        raise BackendError(f"the answer from {_origin(url)} is larger than {MAX_OUTPUT // 2**20} MiB",
                           backend=backend, profile=profile, hint="is the URL the right server?") from None
    except requests.exceptions.SSLError as exc:
        reason = f"TLS verification failed for {_origin(url)}: {_short(exc)}"
        hint = "set ca_cert (or VAULT_CACERT) to the server's CA bundle"
    except requests.exceptions.ConnectTimeout:
        reason, hint = f"timed out connecting to {_origin(url)}", "is the server up and reachable?"
    except requests.exceptions.Timeout:
        reason, hint = f"no answer from {_origin(url)} within {timeout:g}s", "the server may be overloaded"
    except requests.exceptions.ConnectionError:
        reason, hint = f"cannot connect to {_origin(url)}", "is the server running at that address?"
    except requests.exceptions.RequestException as exc:
        # never the exception text: for a bad header requests quotes the header's value (a token)
        reason, hint = f"request to {_origin(url)} failed: {type(exc).__name__}", ""
    raise BackendUnavailable(reason, backend=backend, profile=profile, hint=hint)


def new_session() -> requests.Session:
    """A ``requests`` session whose calls through :func:`send` end at their deadline,
    however slowly the server dribbles its answer."""
    session = requests.Session()
    adapter = _DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_current = threading.local()


class _Call:
    """One call through :func:`send`: its :class:`~pgcli_jit.backends.deadline.Deadline`,
    enforced on the sockets the call uses.

    Connections made by :func:`new_session` register here (:meth:`watch`) while the call
    runs in this thread; the first one arms the deadline, which, when the time is up, shuts
    their sockets down (``shutdown``, not ``close``: a read blocked in another thread
    returns at once, and the socket object stays valid for urllib3 to close).  Sessions
    from elsewhere (tests' fake transports) arm nothing; the body loop still checks
    :attr:`at`.
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = Deadline(seconds)
        self.at = self.deadline.at
        #: set once a socket this call was using has been shut down at the deadline
        self.cut = False
        self._conns: list[Any] = []

    def __enter__(self) -> _Call:
        _current.call = self
        return self

    def __exit__(self, *exc: object) -> None:
        _current.call = None
        self.deadline.end()  # no socket is shut after this: the pool may reuse it

    def watch(self, conn: Any) -> None:
        if conn not in self._conns:
            self._conns.append(conn)
            self.deadline.arm(self._expire)
        # after the append: an expiry that began earlier is seen here, a later one sees conn
        if self.deadline.fired:
            self._shut(conn)

    def _expire(self) -> None:
        for conn in list(self._conns):
            self._shut(conn)

    def _shut(self, conn: Any) -> None:
        sock = getattr(conn, "sock", None)
        if sock is None:
            return
        self.cut = True
        with contextlib.suppress(OSError):
            # the plain socket's shutdown, also under TLS: SSLSocket.shutdown would unwrap
            # the TLS object under a reader in another thread
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


if TYPE_CHECKING:
    _ConnectionBase = urllib3.connection.HTTPConnection
else:
    _ConnectionBase = object


class _Watched(_ConnectionBase):
    """A urllib3 connection that puts itself under the current call's deadline."""

    def connect(self) -> None:
        call: _Call | None = getattr(_current, "call", None)
        if call is not None:
            call.watch(self)  # a TLS handshake can dribble too
        super().connect()
        if call is not None:
            call.watch(self)  # the time ran out while connecting: shut it now

    def request(self, *args: Any, **kwargs: Any) -> None:
        call: _Call | None = getattr(_current, "call", None)
        if call is not None:
            call.watch(self)  # also a kept-alive connection, connected in an earlier call
        super().request(*args, **kwargs)


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """``requests``' own adapter over the watched connections (proxies too; a SOCKS
    proxy keeps its own connection classes and only the per-read timeout)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is _DEFAULT_POOLS:
            manager.pool_classes_by_scheme = _POOLS
        return manager


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


def _read_capped(resp: requests.Response, deadline: float) -> None:
    """Read the body into ``resp`` (so ``.json()``/``.content`` work as usual), at most
    MAX_OUTPUT bytes and before ``deadline``; the connection is released either way."""
    try:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_OUTPUT:
            raise _TooLarge
        body = bytearray()
        for chunk in resp.iter_content(65536):
            body.extend(chunk)
            if len(body) > MAX_OUTPUT:
                raise _TooLarge
            if time.monotonic() > deadline:
                raise _TooSlow
        resp._content = bytes(body)  # requests' own cache of the body
    finally:
        resp.close()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _short(exc: BaseException) -> str:
    """First line of an exception's text: never headers, never the request body."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
