"""The pgcli subclass: the one module that touches pgcli's internals.

Everything else in pgcli-jit is plain Python; this module adapts it to pgcli.
Private pgcli symbols used here, checked on pgcli 4.7.1 / pgspecial 2.2.1 /
prompt_toolkit 3.0.53 (see docs/internals.md for why each is needed):

- ``PGCli.connect``, ``execute_command``, ``register_special_commands``,
  ``run_cli``, ``_build_cli``, ``_handle_server_closed_connection``,
  ``refresh_completions``, ``completion_refresher``, ``prompt_app``,
  ``get_prompt`` (the ``\\j`` prompt token), ``pgspecial.execute`` (local
  commands after access ended, without a cursor), ``less_chatty``
- ``PGExecute.conn`` from the statement watchdog's thread: only psycopg's
  ``cancel_safe()`` and a ``shutdown`` of ``conn.pgconn.socket`` (never a close)
- ``PGExecute.connect``, ``._conn_params``, ``.conn``, ``valid_transaction``,
  ``failed_transaction``
- ``PGCli._evaluate_command``, ``explain_mode``, ``force_destructive``; ``PGExecute.run``
  (wrapped for one command: which statement failed, with which exception);
  ``pgcli.packages.prompt_utils.confirm`` and ``prompt`` (the "permission denied" offer)
- ``pgcli.main.MetaQuery``, ``OutputSettings``, ``format_output``,
  ``PgCliQuitError``; ``pgcli.auth.keyring``;
  ``pgcli.completion_refresher.CompletionRefresher._bg_refresh``
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import getpass
import logging
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import click
import psycopg
import sqlparse
from pgcli import auth
from pgcli.completion_refresher import CompletionRefresher
from pgcli.main import MetaQuery, OutputSettings, PGCli, PgCliQuitError, format_output
from pgcli.packages import prompt_utils
from pgspecial.main import PARSED_QUERY
from prompt_toolkit.application import get_app, run_in_terminal
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, ThreadedCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.key_binding import KeyBindings, merge_key_bindings
from prompt_toolkit.styles import Style, merge_styles
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcli_jit.core.errors import BackendError, ConfigError, ConnectionSwitchError, JitError, db_error_line
from pgcli_jit.server import statements
from pgcli_jit.session import commands
from pgcli_jit.shell import later

# Everything else comes through ``later`` when first used: a session that never types \jit
# (``pgcli-jit -c ...``) reads no config, loads no backend and imports none of it.
if TYPE_CHECKING:
    from pgcli_jit.backends.base import Backend
    from pgcli_jit.backends.login import Login
    from pgcli_jit.core.clock import Clock
    from pgcli_jit.core.lease import Lease
    from pgcli_jit.core.profile import Profile
    from pgcli_jit.session.config import Config
    from pgcli_jit.session.controller import Controller
    from pgcli_jit.shell.watchdog import StatementWatchdog, Watch

log = logging.getLogger(__name__)
QUIT_WORDS = {"\\q", ":q", "quit", "exit"}
#: pgspecial commands that never use the server: they keep working after access ends
LOCAL_COMMANDS = {"\\?", "\\h", "\\pager", "\\timing", "\\x", "\\T", "\\o", "\\echo", "\\qecho",
                  "\\log-file", "\\ns", "\\nd", "\\!"}


@dataclass(frozen=True)
class Startup:
    """``--jit PROFILE``: credentials to request before the first connection."""

    profile: str
    ttl: float | None = None
    reason: str = ""
    #: the config the console script already read for the profile's host/port/dbname
    config: Config | None = None
    #: the profile is not in the config and no server was named: libpq's defaults are asked
    asks_defaults: bool = False


class SafeCompletionRefresher(CompletionRefresher):  # type: ignore[misc]
    """pgcli's refresher on a connection of its own whose names resolve in pg_catalog only;
    a refused connection is logged, not a thread traceback.

    pgcli refreshes its completions by itself, after connecting and after every switch to a
    lease, with catalog queries whose operators are unqualified (``prorettype::regtype !=
    'trigger'::regtype``): on the user's search_path an operator another login planted in
    ``public`` would be a closer match and run as the user, the approver or the lease.  The
    refresh reads the user's search path first (``current_schemas``, qualified) and hands it
    to the completer, then pins its connection (``statements.PIN_SEARCH_PATH``); its queries
    list every schema's objects, so the completions are the same."""

    def _bg_refresh(self, pgexecute: Any, special: Any, callbacks: Any, history: Any = None,
                    settings: dict[str, Any] | None = None) -> None:
        try:
            executor = pgexecute.copy()  # never the session's own connection (single_connection)
            try:
                executor.search_path = _pinned_search_path(executor.conn)
                # the copy is the refresh's one connection: pgcli must not copy it again
                settings = {**(settings or {}), "single_connection": True}
                super()._bg_refresh(executor, special, callbacks, history, settings)
            finally:
                if executor.conn is not None:
                    executor.conn.close()
        except Exception as exc:
            log.warning("completion refresh failed: %s", type(exc).__name__)


def _pinned_search_path(conn: Any) -> Callable[[], list[str]]:
    """The user's search path, read before the connection is pinned; what pgcli's
    ``PGExecute.search_path`` returns for the refresh."""
    with conn.cursor() as cur:
        cur.execute(statements.CURRENT_SCHEMAS)
        row = cur.fetchone()
        cur.execute(statements.PIN_SEARCH_PATH)
    path = [str(name) for name in (row[0] if row else [])]
    return lambda: path


class PgcliConnector:
    """:class:`~pgcli_jit.session.controller.Connector` over pgcli's ``PGExecute``."""

    def __init__(self, shell: JitShell) -> None:
        self.shell = shell
        self.previous: dict[str, Any] | None = None
        self.active = False  # the session runs on JIT credentials
        #: set by ``--jit`` until the session's first connection is made: how to make it
        self.first_connection: Callable[[Lease, dict[str, str]], None] | None = None

    @property
    def executor(self) -> Any:
        return self.shell.pgexecute

    def in_transaction(self) -> bool:
        ex = self.executor
        if ex is None or ex.conn is None or ex.conn.closed:
            return False
        return bool(ex.valid_transaction() or ex.failed_transaction())

    def switch(self, lease: Lease, overrides: dict[str, str]) -> list[str]:
        first, self.first_connection = self.first_connection, None
        if first is not None:  # --jit: the session's first connection, nothing to carry over
            first(lease, overrides)
            self.active = True
            return []
        ex = self.executor
        if not self.active:
            self.previous = dict(ex._conn_params)
        params = {"database" if k == "dbname" else k: v for k, v in overrides.items()}
        state = later.session_state.capture(ex.conn)
        try:
            ex.connect(user=lease.username, password=lease.credentials.password, **params)
        except psycopg.Error as exc:
            raise ConnectionSwitchError(
                f"could not connect as {lease.username}: {db_error_line(exc)}",
                "the current connection was kept",
            ) from None
        self.active = True
        try:
            notes = later.session_state.apply(ex.conn, state)
        except KeyboardInterrupt:  # connected already: the switch stands, only the settings stop
            notes = ["Session settings were not carried over (Ctrl-C)."]
        self.shell.after_reconnect()
        return notes

    def previous_user(self) -> str | None:
        previous = self.previous
        if not previous:
            return None
        dsn_user = conninfo_to_dict(previous["dsn"]).get("user") if previous.get("dsn") else None
        return str(previous.get("user") or dsn_user or "the previous login")

    def rotation_cost(self) -> list[str]:
        ex = self.executor
        if ex is None or ex.conn is None or ex.conn.closed or ex.failed_transaction():
            return []
        return later.session_state.lost_on_reconnect(later.session_state.capture(ex.conn))

    def update_secret(self, lease: Lease) -> None:
        self.executor._conn_params["password"] = lease.credentials.password

    def restore(self) -> str | None:
        """The session's own login again.  Threads that ask as that login (the worker, the
        doorbell) read ``previous`` first and pgcli's parameters second, so the parameters
        are put back before ``previous`` is forgotten: no moment where they read the lease's."""
        previous = self.previous
        if not previous:
            self.previous, self.active = None, False
            self.close()
            return None
        ex = self.executor
        params, ex._conn_params = ex._conn_params, _same_database(previous, ex.dbname)
        try:
            ex.connect()
        except KeyboardInterrupt:  # still on the lease's connection: keep the way back
            ex._conn_params = params
            raise
        except psycopg.Error as exc:
            self.previous, self.active = None, False
            self.close()
            self.shell.jit_say(f"Could not reconnect as {previous.get('user')}: {db_error_line(exc)}")
            return None
        self.previous, self.active = None, False
        self.shell.after_reconnect()
        return str(ex.user)

    def close(self) -> None:
        ex = self.executor
        if ex is None:
            return
        if ex.conn is not None:
            ex.conn.close()
        ex._conn_params.pop("password", None)
        if ex._conn_params.get("dsn"):  # pgcli folds the password into a DSN
            params = conninfo_to_dict(ex._conn_params["dsn"])
            params.pop("password", None)
            ex._conn_params["dsn"] = make_conninfo("", **params)
        ex.password = None


class JitCompleter(Completer):
    """``\\jit`` subcommands, options and profile names; everything else goes to pgcli's completer."""

    def __init__(self, inner: Completer, shell: JitShell) -> None:
        self.inner = inner
        self.shell = shell

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterator[Completion]:
        line = document.text_before_cursor
        if commands.is_jit(line):
            catalog, config = self.shell.jit.catalog, self.shell.jit_config
            profiles = catalog.profile_names(config)  # never waits
            current = "" if line.endswith((" ", "\t")) else line.split()[-1]
            for word in commands.completions(line, profiles):
                # what a profile grants, as last read (never asked here): beside its name
                hint = catalog.hint(word, config) if word in profiles else ""
                yield Completion(word, start_position=-len(current), display_meta=hint or None)
            return
        yield from self.inner.get_completions(document, event)


class JitShell(PGCli):  # type: ignore[misc]
    #: set by the console script before pgcli's cli() builds the shell
    jit_startup: ClassVar[Startup | None] = None
    # set by PGCli.__init__; declared so the type checker knows them
    never_passwd_prompt: bool
    force_passwd_prompt: bool
    force_destructive: bool
    explain_mode: bool
    #: a denied statement kept while its request waits for approval (made when needed),
    #: and the one F7 has just handed to the prompt
    _rerun: later.Rerun | None = None
    _rerunning: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._jit: Controller | None = None  # built by the first use of self.jit
        self._jit_config: Config | None = None
        self._jit_config_error: str | None = None
        startup = type(self).jit_startup
        self._jit_config_read = startup.config if startup is not None else None  # read once, not twice
        self.jit_connector = PgcliConnector(self)
        self._jit_login: tuple[int, Login] | None = None  # see _requester_login
        self.completion_refresher = SafeCompletionRefresher()
        self._paging = False  # a statement's output is in the pager: no statement runs
        self._watchdog: StatementWatchdog | None = None  # made by the first statement on a lease
        self._idle_ticks = 0
        #: asks the running prompt's idle ticker to tick now (set while a prompt is up)
        self._wake: Callable[[], None] = lambda: None
        self._shut_down = False
        #: the failed statement of the last command and its exception; the statement being
        #: run again after an offer (it gets no second one)
        self._denied_failure: tuple[str, BaseException] | None = None
        self._denied_retry: str | None = None
        _share_pgcli_log()
        # pgcli's cli() may sys.exit() before run_cli (-l, --ping): revoke on that way out too
        atexit.register(self._jit_shutdown)

    @property
    def jit(self) -> Controller:
        """The \\jit machinery, built on first use (a \\jit command, ``--jit``): the config is
        read then, at call time, and a session that never uses it pays nothing for it."""
        if self._jit is None:
            self._jit = self._make_jit()
        return self._jit

    def _make_jit(self) -> Controller:
        try:
            self._jit_config = self._jit_config_read or later.load_config()
        except ConfigError as exc:
            self._jit_config, self._jit_config_error = None, str(exc)
        config = self._jit_config
        cfg = config or later.Config.empty()
        manager = later.LeaseManager(cfg, later.AuditLog(cfg.audit_log if config else None),
                                     getpass.getuser(), backend_factory=self._jit_backend)
        controller = later.Controller(manager, self.jit_connector, self.jit_say)
        controller.access.unattended = self._unattended()
        return controller

    @property
    def jit_config(self) -> Config | None:
        """The config file as read at first use; None when it could not be read."""
        _ = self.jit
        return self._jit_config

    @property
    def jit_config_error(self) -> str | None:
        _ = self.jit
        return self._jit_config_error

    # -- registering and running \jit -------------------------------------------

    def register_special_commands(self) -> None:
        super().register_special_commands()
        self.pgspecial.register(
            self._jit_from_pgspecial, "\\jit", commands.MENU_SYNTAX, commands.MENU_DESCRIPTION,
            arg_type=PARSED_QUERY, case_sensitive=False,
        )

    def _jit_from_pgspecial(self, pattern: str = "", **_: Any) -> list[tuple[Any, ...]]:
        """Reached only from a \\i file: pgcli has stripped ``--`` options there, and the
        file runs on the connection these actions would switch, so they are refused."""
        cmd = commands.parse("\\jit " + pattern)
        if not commands.subcommand(cmd.action).from_file:
            raise JitError(f"\\jit {cmd.action} cannot run from a \\i file",
                           "pgcli strips its --options there: type it at the prompt, or use -f FILE")
        return list(self.jit_results("\\jit " + pattern))

    def execute_command(self, text: str, handle_closed_connection: bool = True) -> Any:
        if commands.is_jit(text):
            return self._run_jit(text)
        again, self._rerunning = self._rerunning, None
        if self._rerun is not None:  # a statement runs: the kept one is never run unasked after it
            self._rerun.drop()
        if again is None:
            return self._offer_if_denied(text, self._execute_sql(text, handle_closed_connection))
        self._denied_retry = again  # run again as the granted role: no second offer for it
        try:
            return self._offer_if_denied(text, self._execute_sql(text, handle_closed_connection))
        finally:
            self._denied_retry = None

    def _execute_sql(self, text: str, handle_closed_connection: bool) -> Any:
        if self._jit is None:  # \jit never used: no lease to gate, watch or renew
            return super().execute_command(text, handle_closed_connection)
        quitting = text.strip().rstrip(";").lower() in QUIT_WORDS
        self.jit.step()
        blocked = self.jit.gate()
        if blocked:
            if quitting:
                raise PgCliQuitError
            self._stop_if_unattended()
            if is_local(text):
                return self._run_results(text, lambda: self.pgspecial.execute(None, text.strip().rstrip(";")))
            click.secho(blocked, err=True, fg="red")
            return MetaQuery(query=text, successful=False)
        self.jit.begin_statement()
        self._paging = False  # a \jit table paged before this statement is not this statement's
        try:
            if self._watchdog is None:
                self._watchdog = later.StatementWatchdog()
            with self._watchdog.guard(self._watch()):
                result = super().execute_command(text, handle_closed_connection)
        finally:
            self.jit.end_statement()
            self._paging = False
        self.jit.access.enforce_expiry()  # a statement the watchdog cancelled: say so, close, revoke
        self._stop_if_unattended()
        return result

    # -- "permission denied": the profile that grants it ----------------------------------

    def _evaluate_command(self, text: str) -> Any:
        """pgcli's own, keeping the error of a statement that failed (``PGExecute.run`` is
        wrapped for this call only): a 42501 may be offered the profile that grants it."""
        self._denied_failure = None
        executor = self.pgexecute
        executor.run = functools.partial(self._watched_run, executor.run)
        try:
            return super()._evaluate_command(text)
        finally:
            with contextlib.suppress(AttributeError):
                del executor.run

    def _watched_run(self, run: Callable[..., Iterator[tuple[Any, ...]]], statement: str,
                     pgspecial: Any = None, exception_formatter: Any = None, *args: Any,
                     **kwargs: Any) -> Iterator[tuple[Any, ...]]:
        """``PGExecute.run``, noting which statement failed with which exception: the last
        result's, so a failure followed by more results (``on_error = RESUME``) is not kept."""
        caught: list[BaseException] = []

        def keep(exc: BaseException) -> Any:
            caught.append(exc)
            return exception_formatter(exc)

        failure = None
        for row in run(statement, pgspecial, keep if exception_formatter else None, *args, **kwargs):
            failure = (str(row[4]), caught[-1]) if not row[5] and caught else None
            caught.clear()
            yield row
        self._denied_failure = failure

    def _on_session(self, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """A statement on the session's own connection (autocommit, no transaction open):
        the lookup after a denied statement, as the identity and search_path it ran with."""
        with self.pgexecute.conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())

    def _offer_if_denied(self, text: str, result: Any) -> Any:
        """After a statement denied for lack of a privilege: offer the profile that grants it,
        and run the statement once more as the new role when the user takes it."""
        failure, self._denied_failure = self._denied_failure, None
        if failure is None or self.explain_mode:
            return result
        statement, exc = failure
        if getattr(exc, "sqlstate", None) != "42501" or self._denied_retry == statement \
                or not is_last_statement(text, statement):
            return result
        diag = getattr(exc, "diag", None)
        try:
            if self._rerun is None:
                self._rerun = later.Rerun()
            offers = later.DeniedOffers(self.jit, PgcliAsker(self), self._on_session, self._rerun,
                                        later.toolbar.RERUN_KEY)
            again = offers.after_failure(
                "42501", getattr(diag, "message_primary", None), statement,
                in_transaction=self.jit_connector.in_transaction())
        except KeyboardInterrupt:  # as for a \jit command: the session is kept
            click.secho("The offer was cancelled: the session is kept.", err=True, fg="red")
            return result
        except Exception:  # an offer is a convenience: never a traceback over the prompt
            log.exception("the offer after permission denied failed")
            return result
        if again is None:
            return result
        saved = self.force_destructive  # the user confirmed this very statement already
        self._denied_retry, self.force_destructive = again, True
        try:
            return self.execute_command(again)
        finally:
            self._denied_retry, self.force_destructive = None, saved

    def echo_via_pager(self, text: str, color: Any = None) -> None:
        """The statement is over while its output is read: the watchdog keeps renewing but
        cancels nothing (at expiry the connection is closed once the pager is left)."""
        self.jit_statement_done()
        super().echo_via_pager(text, color)

    def jit_statement_done(self) -> None:
        if self._jit is not None:
            self._paging = True
            self._jit.end_statement()

    def _watch(self) -> Watch:
        """What the statement watchdog guards: the current lease's expiry, this connection."""
        manager, conn = self.jit.manager, self.pgexecute.conn

        def deadline() -> float | None:
            lease = manager.lease
            return lease.expires_at if lease is not None and self.jit.ended is None else None

        def cancel() -> None:
            self.jit.access.cancelled_at_expiry = True
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=GRACE_CANCEL)

        return later.Watch(deadline, cancel, lambda: later.sever(conn), manager.clock,
                           beat=self.jit.beat, paging=lambda: self._paging)

    def _run_jit(self, text: str) -> Any:
        return self._run_results(text, lambda: self.jit_results(text))

    def _run_results(self, text: str, run: Any) -> Any:
        """Run ``\\jit`` (or a local command after access ended) without pgcli reaching for a
        cursor: print its results as pgcli prints pgspecial's, one line for an error.

        Ctrl-C cancels the command (the server call it waits on is cancelled with it), as
        Ctrl-C cancels a query in pgcli: the session and its open transaction are kept."""
        words = text.split()
        label = " ".join(words[:2]) if words else "command"
        try:
            with later.Waiting(label, sys.stderr):
                results = list(run())
        except KeyboardInterrupt:
            kept = "the session and its open transaction are" if self.jit_connector.in_transaction() \
                else "the session is"
            click.secho(f"{label} cancelled: {kept} kept.", err=True, fg="red")
            return MetaQuery(query=text, successful=False)
        except JitError as exc:
            click.secho(str(exc), err=True, fg="red")
            return MetaQuery(query=text, successful=False)
        except Exception as exc:  # a bug must not end the session with a traceback
            log.exception("%s failed", text.split()[0] if text.split() else "command")
            click.secho(f"{text.split()[0]} failed: {type(exc).__name__}: {exc} (details in pgcli's log)",
                        err=True, fg="red")
            return MetaQuery(query=text, successful=False)
        output: list[str] = []
        for title, rows, headers, status in results:
            output.extend(format_output(title, rows, headers, status, self._output_settings()))
        if output and all(rows is None for _, rows, _, _ in results):
            click.echo(fit("\n".join(output)))  # a notice, never worth a pager: wrapped at words
        elif output:
            self.echo_via_pager("\n".join(output))
        return MetaQuery(query=text, successful=True, is_special=True)

    def jit_results(self, text: str) -> Iterable[commands.Result]:
        """Run one \\jit line; yields pgspecial-style (title, rows, headers, status)."""
        cmd = commands.parse(text)
        if self.jit_config_error and commands.subcommand(cmd.action).needs_config:
            raise JitError(self.jit_config_error)
        yield commands.run(self.jit, cmd)

    def _output_settings(self) -> Any:
        return OutputSettings(table_format=self.table_format, missingval=self.null_string,
                              style_output=self.style_output, max_field_width=self.max_field_width)

    # -- connecting -------------------------------------------------------------

    def connect(self, database: str = "", host: str = "", user: str = "", port: Any = "",
                passwd: str = "", dsn: str = "", **kwargs: Any) -> None:
        startup, type(self).jit_startup = type(self).jit_startup, None
        if startup is None:
            super().connect(database, host, user, port, passwd, dsn, **kwargs)
            return
        self._connect_with_jit(startup, database, host, port, dsn, kwargs, user, passwd)

    def _unattended(self) -> bool:
        """``-c`` or ``-f``: nobody is at a prompt to type ``\\jit request``."""
        return bool(getattr(self, "commands", None) or getattr(self, "input_files", None))

    def _stop_if_unattended(self) -> None:
        """``-c``/``-f`` once access has ended: no statement can run and nobody can take a new
        lease, so the run stops here with exit status 1, as psql's does when its connection
        is lost (the lease is revoked on the way out)."""
        if self._jit is not None and self._jit.ended is not None and self._unattended():
            raise SystemExit(1)

    def _jit_backend(self, profile: Profile, clock: Clock) -> Backend:
        backend = later.load_backend(profile, clock)
        backend.use_session(self._requester_login)
        return backend

    def _requester_login(self) -> Login | None:
        """The login the session had before any \\jit request: the identity that may ask."""
        params = self.jit_connector.previous
        if params is None and self.pgexecute is not None and not self.jit_connector.active:
            params = self.pgexecute._conn_params
        if not params:
            return None
        # asked before every call to the server (~0.1 ms to rebuild): reused while pgcli's
        # parameters stay the same (the warm connection holds the same Login anyway); the key
        # is a hash, so it holds no password, and Login hides its own from repr
        key = hash(tuple(sorted((str(k), str(v)) for k, v in params.items())))
        cached = self._jit_login
        if cached is None or cached[0] != key:
            cached = self._jit_login = (key, later.Login.from_pgcli(params))
        return cached[1]

    def _connect_with_jit(self, startup: Startup, database: str, host: str, port: Any, dsn: str,
                          kwargs: dict[str, Any], user: str = "", passwd: str = "") -> None:
        """``--jit``: mint first, then take the lease up as ``\\jit request`` does
        (:meth:`Controller.adopt_new`), with pgcli's first connection as the switch.

        The only password ever asked for is the user's own (``-W``, or when the server
        wants one and libpq found none), for the login that asks: it stays in memory.
        """
        if self.jit_config_error:
            fail(self.jit_config_error)
        connector = self.jit_connector
        connector.previous = {"dbname": database, "host": host, "port": port, "user": user,
                              "password": passwd, "dsn": dsn}
        try:
            profile = self.jit.config.requestable(startup.profile)
            lease = self._mint_at_startup(profile, startup, ask_first=self.force_passwd_prompt and not passwd)
        except JitError as exc:
            fail(later.startup.failure_line(exc, startup.profile, self.jit_config, startup.asks_defaults))
        asked = self._asking_login(profile)
        # \jit revoke returns to the login that asked; with no login of the user's own, to none
        connector.previous = {**asked.params, "password": asked.password} if asked is not None else None
        connector.first_connection = functools.partial(self._connect_as, database, host, port, dsn, kwargs)
        try:
            line = self.jit.adopt_new(lease, profile, startup.ttl)
        finally:
            connector.first_connection = None
        if not self.less_chatty:
            click.secho(line, err=True)

    def _connect_as(self, database: str, host: str, port: Any, dsn: str, kwargs: dict[str, Any],
                    lease: Lease, overrides: dict[str, str]) -> None:
        """pgcli's own first connection, as the lease: never the keyring, never a password prompt.
        Where to connect is already settled (the profile's host, port and dbname, overridden by
        the command line), so only the other connection parameters are taken from ``overrides``.
        pgcli exits when it fails, having said why."""
        extra = {k: v for k, v in overrides.items() if k not in ("host", "port", "dbname")}
        if dsn:
            dsn = make_conninfo(dsn, user=lease.username, **extra)
        saved = (auth.keyring, self.never_passwd_prompt, self.force_passwd_prompt)
        auth.keyring, self.never_passwd_prompt, self.force_passwd_prompt = None, True, False
        try:
            super().connect(database, host, lease.username, port, lease.credentials.password, dsn,
                            **{**kwargs, **extra})
        finally:
            auth.keyring, self.never_passwd_prompt, self.force_passwd_prompt = saved

    def _asking_login(self, profile: Profile) -> Login | None:
        """The user's own login the profile's backend asks as; None when it asks otherwise."""
        backend = self.jit.manager.backend_for(profile)
        return backend.asking_login() if backend.uses_session_login else None

    def _mint_at_startup(self, profile: Profile, startup: Startup, ask_first: bool = False) -> Lease:
        try:
            return self._mint_as_own_login(profile, startup, ask_first)
        except later.ApprovalPending as exc:
            return self._wait_at_startup(profile, exc)

    def _mint_as_own_login(self, profile: Profile, startup: Startup, ask_first: bool) -> Lease:
        """Mint as the user's own login, asking its password (``-W``: first; otherwise when the
        server wants one that libpq did not find).  A typed password the server refuses is
        asked again, three tries in all, then one line and exit 1: a typo is not the end."""
        words = later.startup
        tries = 0
        if ask_first:
            self._ask_requester_password(profile)
            tries = 1
        while True:
            try:
                return self.jit.manager.mint(profile, startup.ttl, startup.reason)
            except later.NeedsPassword:
                if self.never_passwd_prompt or not sys.stdin.isatty() or tries >= words.PASSWORD_TRIES:
                    raise
            except BackendError as exc:
                if not (tries and words.wrong_password(exc)):
                    raise
                if tries >= words.PASSWORD_TRIES:
                    asked = self._asking_login(profile)
                    raise words.out_of_tries(exc, asked.describe() if asked else "your login") from None
                click.secho(f"Password authentication failed for {self._asking_who(profile)}: try again.",
                            err=True, fg="red")
            self._ask_requester_password(profile)
            tries += 1

    def _ask_requester_password(self, profile: Profile) -> None:
        """The password of the login that asks (the profile's ``user``, else ``-U``, else
        libpq's default), typed once.  It is kept for that user: a password typed for
        demo_user must reach demo_user's login, not be dropped as another user's."""
        previous = self.jit_connector.previous
        assert previous is not None
        who = self._asking_who(profile)
        if who:
            previous["user"] = who
        previous["password"] = ask_password(who)

    def _asking_who(self, profile: Profile) -> str:
        """The user name of the login that asks, "" for libpq's default."""
        previous = self.jit_connector.previous or {}
        asked = self._asking_login(profile)
        who = asked.params.get("user", "") if asked is not None else ""
        return who or str(previous.get("user") or "")

    def _wait_at_startup(self, profile: Profile, exc: Any) -> Lease:
        """``--jit`` on a profile that needs approval: wait in front of the user (Ctrl-C withdraws)."""
        manager = self.jit.manager
        return later.wait_at_startup(manager.backend_for(profile), exc.pending, manager.clock)

    def after_reconnect(self) -> None:
        """A new identity sees other objects: refresh completions (interactive only)."""
        if self.prompt_app is not None:
            self.refresh_completions(persist_priorities="keywords")

    def _handle_server_closed_connection(self, text: str) -> None:
        """pgcli's auto-reconnect, unless the lease is over: never log in with ended credentials."""
        if self._jit is None:  # \jit never used: pgcli's own reconnect, as in pgcli
            super()._handle_server_closed_connection(text)
            return
        self.jit.access.enforce_expiry()
        if self.jit.ended:
            return  # enforce_expiry said why, once
        if self.jit.access.ended_on_server():
            return  # back as the login that asked: the statement is not run under it unasked
        self.jit.refresh_for_reconnect()
        super()._handle_server_closed_connection(text)

    # -- the live lease in the prompt -------------------------------------------

    def _build_cli(self, history: Any) -> Any:
        toolbar = later.toolbar
        session = super()._build_cli(history)
        session.completer = ThreadedCompleter(JitCompleter(session.completer, self))
        if self.show_bottom_toolbar and session.bottom_toolbar is not None:
            pgcli_tokens = session.bottom_toolbar
            # first: pgcli's items fill 80 columns and prompt_toolkit cuts the line at the edge
            session.bottom_toolbar = lambda: [*self.toolbar_tokens(), *pgcli_tokens()]
            session.style = merge_styles([session.style, Style.from_dict(
                {k: v for k, v in toolbar.STYLE_RULES.items() if k not in self.cli_style})])
        session.refresh_interval = 1.0
        keys = KeyBindings()
        keys.add(later.toolbar.OFFER_KEY.lower())(self._take_offer)
        keys.add(later.toolbar.RERUN_KEY.lower())(self._take_rerun)
        session.key_bindings = merge_key_bindings([session.key_bindings, keys])
        original_prompt = session.prompt

        def prompt(*args: Any, **kw: Any) -> Any:
            kw.setdefault("pre_run", self._start_ticker)
            return original_prompt(*args, **kw)

        session.prompt = prompt
        return session

    def get_prompt(self, string: str) -> str:
        """pgcli's ``prompt`` setting, plus ``\\j``: the lease in the prompt (``JIT demo 4:59 ``),
        for users who hide the toolbar; redrawn every second like the toolbar."""
        if "\\j" in string and self._jit is None:
            string = string.replace("\\j", "")  # no lease was ever taken: the token shows nothing
        elif "\\j" in string:
            manager = self.jit.manager
            string = string.replace("\\j", later.toolbar.prompt_text(manager.lease, manager.clock(),
                                                               ended=self.jit.access.word()))
        return str(super().get_prompt(string))

    def toolbar_tokens(self) -> list[tuple[str, str]]:
        """Called on every redraw (every second while idle): no work before \\jit is used."""
        jit = self._jit
        if jit is None:
            return []
        toolbar = later.toolbar
        manager = jit.manager
        profile = manager.profile
        now = manager.clock()
        flow = jit.approvals
        waiting, granted = flow.waiting, jit.handover.approval()
        name = granted.profile.name if granted else waiting.profile.name if waiting else None
        kept = self._rerun.ready(jit) if self._rerun is not None else None
        return [*toolbar.segment(manager.lease, profile.renew_before if profile else None, now,
                                 ended=jit.access.word(), offer=jit.offer()),
                *toolbar.rerun_segment(kept.profile if kept else None),
                *toolbar.pending_segment(name, waiting.waited(now) if waiting else None, flow.decidable,
                                         approved=granted is not None),
                *toolbar.glass_segment(flow.glass_notice(now))]

    def _start_ticker(self) -> None:
        get_app().create_background_task(self._ticker())

    async def _ticker(self) -> None:
        """While the prompt is idle: apply renewals, end expired access, start or ask renewals;
        every second, and at once when background work ends or the server's doorbell rings
        (an approval shows within a moment of its commit, not at the next poll)."""
        loop, woken = asyncio.get_running_loop(), asyncio.Event()

        def wake() -> None:  # any thread; the prompt's loop may have closed meanwhile
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(woken.set)

        self._wake = wake
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), 1.0)
            rung = woken.is_set()
            woken.clear()
            try:
                await self._tick()
                if rung:
                    get_app().invalidate()
            except JitError as exc:
                self.jit_say(str(exc))
            except Exception as exc:  # never an event-loop traceback over the prompt
                log.exception("pgcli-jit idle tick failed")
                self.jit_say(f"pgcli-jit: {type(exc).__name__} in the background (see pgcli's log)")

    async def _tick(self) -> None:
        if self._jit is None:  # no lease was ever taken: nothing to renew or end
            self._idle_ticks += 1
            if self._idle_ticks < APPROVER_START_TICKS:
                return
            # an approver sees "JIT: 1 request waiting" without typing \jit first: the
            # machinery is built once the prompt has been up a while, never before it
            self.jit  # noqa: B018 (builds the controller)
        self.jit.set_waker(self._wake)
        self.jit.step()
        self._announce_rerun()
        self.jit.access.watch_server()  # idle only: before a statement, gate() decides

    def _take_offer(self, _event: Any) -> None:
        """F6 at the prompt: take what the toolbar offers (renew, or new credentials).  It runs
        in the background; the result is said above the prompt, the input line is kept."""
        if self._jit is None:
            return
        self.jit_say(self.jit.accept_offer() or "")

    def _announce_rerun(self) -> None:
        """Once the approved request of a denied statement is switched in: say, once, that
        F7 runs it again (the toolbar shows it while it stands)."""
        kept = self._rerun.announce(self.jit) if self._rerun is not None else None
        if kept is not None:
            self.jit_say(f"{later.toolbar.RERUN_KEY} runs the denied statement again as {kept.profile}: "
                         f"{' '.join(kept.statement.split())}")

    def _take_rerun(self, event: Any) -> None:
        """F7 at the prompt: the kept denied statement, once, on an empty input line, submitted
        as if typed (pgcli's own path: its destructive question, history, output).  A line
        being typed is never replaced: F7 then says so and does nothing."""
        if self._jit is None or self._rerun is None or self._rerun.ready(self.jit) is None:
            return
        buffer = event.app.current_buffer
        if buffer.text.strip():
            self.jit_say(f"{later.toolbar.RERUN_KEY} runs the denied statement on an empty input line; "
                         "yours is kept.")
            return
        statement = self._rerun.take(self.jit)
        if statement is None:
            return
        self._rerunning = statement
        buffer.text = statement
        buffer.validate_and_handle()

    def jit_say(self, text: str) -> None:
        """One line of notice; above the prompt when it is up, so the input line survives."""
        if not text:
            return
        text = fit(text)
        app = self.prompt_app.app if self.prompt_app is not None else None
        if app is not None and app.is_running:
            run_in_terminal(lambda: click.secho(text, fg="yellow"))
        else:
            click.secho(text, fg="yellow", err=True)

    def run_cli(self) -> None:
        try:
            super().run_cli()
        finally:
            self._jit_shutdown()

    def _jit_shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        if self._jit is None:  # \jit never used: nothing minted, nothing to revoke
            return
        lease = self.jit.lease
        try:
            with later.Waiting("revoking on exit", sys.stderr):
                message = self.jit.shutdown()
        except JitError as exc:
            message = str(exc)
        except KeyboardInterrupt:  # the server does not answer: leave, and say what stays
            who = f"{lease.username} stays valid until {later.local_time(lease.expires_at)}" \
                if lease is not None else "nothing was revoked"
            message = f"Left without revoking (Ctrl-C): {who}."
        if message and not self.less_chatty:
            click.secho(message, err=True)


class PgcliAsker:
    """The offer's questions, through pgcli's own prompts (``pgcli.packages.prompt_utils``:
    a line of input, as pgcli asks before a destructive statement), never the prompt's keys."""

    def __init__(self, shell: JitShell) -> None:
        self.shell = shell

    def confirm(self, question: str) -> bool:
        return sys.stdin.isatty() and bool(prompt_utils.confirm(fit(question), default=False))

    def text(self, question: str) -> str:
        if not sys.stdin.isatty():
            return ""
        return str(prompt_utils.prompt(question, default="", show_default=False) or "")

    def say(self, line: str) -> None:
        click.secho(fit(line), fg="yellow", err=True)


def is_last_statement(text: str, statement: str) -> bool:
    """Whether ``statement`` (as pgcli ran it) is the last of the line: only then is running
    it again the same as running the line again."""
    parts = [sqlparse.format(s, strip_comments=True).strip().rstrip(";").strip()
             for s in sqlparse.split(text)]
    parts = [p for p in parts if p]
    return bool(parts) and parts[-1] == statement


def _same_database(params: dict[str, Any], dbname: str | None) -> dict[str, Any]:
    """The login of before, in the database the session is in now: a ``\\c other`` made under
    the lease is kept when ``\\jit revoke`` goes back (not silently undone)."""
    params = dict(params)
    if not dbname:
        return params
    if params.get("dsn"):
        params["dsn"] = make_conninfo(params["dsn"], dbname=dbname)
    else:
        params["dbname"] = dbname  # the key PGExecute keeps it under
    return params


def _share_pgcli_log() -> None:
    """Our log lines go where pgcli's go (~/.config/pgcli/log), never to the terminal."""
    ours, theirs = logging.getLogger("pgcli_jit"), logging.getLogger("pgcli")
    ours.handlers = list(theirs.handlers) or [logging.NullHandler()]
    ours.setLevel(theirs.level or logging.WARNING)
    ours.propagate = False


GRACE_CANCEL = 0.5
#: idle seconds at the prompt before the \jit machinery is built without a \jit command
#: (so that an approver's toolbar can count the requests waiting for them)
APPROVER_START_TICKS = 2


def fit(text: str) -> str:
    """A notice wrapped at words to the terminal's width (a terminal breaks it mid-word)."""
    width = shutil.get_terminal_size().columns
    return "\n".join(textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
                     if len(line) > width else line for line in text.split("\n"))


def is_local(text: str) -> bool:
    """A special command that works without a server (``\\?``, ``\\timing``, ``\\pager`` ...)."""
    words = text.strip().rstrip(";").split()
    return bool(words) and words[0].lower() in {c.lower() for c in LOCAL_COMMANDS}


def ask_password(user: str) -> str:
    """The user's own password, typed at start-up (like pgcli's own prompt); never stored."""
    who = user or getpass.getuser()
    return str(click.prompt(f"Password for {who}", hide_input=True, show_default=False, err=True))


def fail(message: str) -> Any:
    click.secho(message, err=True, fg="red")
    raise SystemExit(1)
