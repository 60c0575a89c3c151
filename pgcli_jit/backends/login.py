"""The user's own database login, for backends that ask as the user (``uses_session_login``).

A broker inside PostgreSQL (the ``postgres`` backend's ``jit`` schema) takes the
requester's identity from ``session_user``, so such a backend must ask over a connection
that PostgreSQL authenticated as the user: the login the pgcli session started with (its
password, if one was typed, stays in memory only), or the profile's
``host``/``port``/``dbname``/``user`` with libpq finding the password (``.pgpass``,
``PGPASSFILE``, a service file, a certificate, GSSAPI).  No broker secret exists.

One connection is kept warm (a request then costs one round trip, not a login)
and reopened when the server closed it.  Every call has a deadline
(:mod:`pgcli_jit.backends.deadline`, the one the HTTP backends' calls have too): a
server that accepts and never answers (stopped, partitioned away) costs the caller the
profile's timeout, not the shell.  :func:`sever` is also how the shell ends a statement that
outlives its lease.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcli_jit.backends.deadline import Deadline
from pgcli_jit.server.statements import PIN_SEARCH_PATH

Conn = psycopg.Connection[tuple[Any, ...]]
#: libpq parameters that say where and as whom to connect; everything else pgcli keeps
#: (cursor factories, DSN fragments) is not ours to copy
WHERE = ("host", "hostaddr", "port", "dbname", "user", "sslmode", "sslrootcert", "sslcert", "sslkey",
         "passfile", "service", "gssencmode", "krbsrvname", "target_session_attrs", "options")
APPLICATION_NAME = "pgcli-jit"
T = TypeVar("T")


@dataclass(frozen=True)
class Login:
    """Where and as whom to log in; the password (if the user typed one) never in ``repr``."""

    params: Mapping[str, str]
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @classmethod
    def from_pgcli(cls, conn_params: Mapping[str, Any]) -> Login:
        """From pgcli's ``PGExecute._conn_params`` (a DSN and/or separate keys, maybe a password)."""
        flat = {k: str(v) for k, v in conn_params.items() if v not in (None, "") and k != "dsn"}
        if "database" in flat:
            flat["dbname"] = flat.pop("database")
        dsn = conn_params.get("dsn")
        merged = conninfo_to_dict(make_conninfo(str(dsn or ""), **flat))
        password = merged.pop("password", None)
        return cls({k: str(v) for k, v in merged.items() if k in WHERE},
                   str(password) if password else None)

    def overlaid(self, overrides: Mapping[str, str]) -> Login:
        """The same login aimed where ``overrides`` say.  A typed password goes only to the
        server and user it was typed for."""
        params = {**self.params, **{k: v for k, v in overrides.items() if v}}
        same = all(params.get(k) == self.params.get(k) for k in ("host", "port", "user"))
        return Login(params, self.password if same else None)

    def connect(self, timeout: float) -> Conn:
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, int(timeout)),
                                  "application_name": APPLICATION_NAME}
        if self.password:
            kwargs["password"] = self.password
        conn = psycopg.connect(make_conninfo(**self.params), **kwargs)
        try:  # what the broker sends resolves names in pg_catalog only (statements.PIN_SEARCH_PATH)
            conn.execute(PIN_SEARCH_PATH)
        except BaseException:
            conn.close()
            raise
        return conn

    def describe(self) -> str:
        """``alice@db:5432/app`` for messages; never the password."""
        p = self.params
        who = p.get("user") or "(libpq default user)"
        where = p.get("host") or "local socket"
        return f"{who}@{where}:{p.get('port') or 5432}/{p.get('dbname') or who}"


def needs_password(exc: psycopg.Error) -> bool:
    """libpq's "no password supplied": the server wants a password and none was found."""
    return "no password supplied" in str(exc)


class NoAnswer(psycopg.OperationalError):
    """The server did not answer within the deadline; the connection was severed."""


def sever(conn: Conn) -> None:
    """End a connection from another thread without freeing it: shut its socket down, so the
    statement blocked on it fails at once; the owning thread closes the connection afterwards."""
    with contextlib.suppress(Exception):
        fd = os.dup(conn.pgconn.socket)
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)


class WarmConnection:
    """One connection as a :class:`Login`, reused across calls and reopened after a break.

    Calls are serialized: the shell's main thread and the renewal worker share it.
    """

    def __init__(self, login: Callable[[], Login], timeout: float) -> None:
        self._login = login
        self._timeout = timeout
        self._conn: Conn | None = None
        self._used: Login | None = None
        self._lock = threading.Lock()

    def call(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit: its own transaction) and fetch its rows.

        A connection the server dropped while idle (restart, idle timeout) is
        reopened once; an error from the statement itself is raised as it is.  The
        statement sent again is the same one: the server answers a repeated
        ``jit.request`` with what the first one made (it may have committed before the
        connection broke).  No answer within the timeout raises :class:`NoAnswer`, with no
        second try: a hung server would only hang again.
        """
        with self._lock:
            conn = self._open()
            try:
                return self._run(conn, query, params)
            except NoAnswer:
                raise
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
            self._conn = None
            return self._run(self._open(), query, params)

    def _run(self, conn: Conn, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One statement with a deadline: past it, the deadline thread severs the socket."""
        with Deadline(self._timeout) as deadline:
            deadline.arm(lambda: sever(conn))
            try:
                return conn.execute(query, params).fetchall()
            except psycopg.OperationalError:
                if not deadline.fired:
                    raise
                self._drop()
                raise NoAnswer(f"no answer within {self._timeout:g}s") from None
            except KeyboardInterrupt:
                # Ctrl-C: psycopg has asked the server to cancel the statement, but a second
                # Ctrl-C can leave the connection mid-answer; the next call opens a fresh one
                self._drop()
                raise

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def with_conn(self, fn: Callable[[Conn], T]) -> T:
        """``fn`` on the open connection, under the lock (libpq calls that need a handle)."""
        with self._lock:
            return fn(self._open())

    def _open(self) -> Conn:
        """The warm connection, unless the login changed since (``\\c`` to another user or server)."""
        login = self._login()
        if self._conn is not None and (self._conn.closed or login != self._used):
            self._conn.close()
            self._conn = None
        if self._conn is None:
            self._conn, self._used = login.connect(self._timeout), login
        return self._conn

    def close(self) -> None:
        with self._lock:
            self._drop()


class Listener:
    """A connection of its own, as a :class:`Login`, that LISTENs on one channel: a
    :class:`~pgcli_jit.backends.base.Doorbell` for the thread that waits on it.  Opened on
    the first wait and reopened after a break; the first wait on a new connection answers
    True at once, since a ring may have been missed while there was none."""

    def __init__(self, login: Callable[[], Login], listen: str, timeout: float) -> None:
        self._login = login
        self._listen = listen
        self._timeout = timeout
        self._conn: Conn | None = None

    def wait(self, timeout: float) -> bool:
        if self._conn is None or self._conn.closed:
            conn = self._login().connect(self._timeout)
            try:
                with Deadline(self._timeout) as deadline:  # a server that accepts and hangs
                    deadline.arm(lambda: sever(conn))
                    conn.execute(self._listen)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            return True
        try:
            return any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1))
        except psycopg.Error:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

