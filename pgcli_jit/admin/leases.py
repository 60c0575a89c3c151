"""``pgcli-jit-admin leases`` and ``reap``: who holds access, and ending it on time."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from pgcli_jit.admin import fmt, reaper
from pgcli_jit.admin.connect import LIBPQ_SOURCES, Conn, check_dsn, connect, dsn_option, error_text, open_conn
from pgcli_jit.server import statements

HEADERS = ("ROLE", "REQUESTER", "PROFILE", "REASON", "ISSUED", "EXPIRES", "REMAINING", "SESSIONS",
           "STATE")


@click.command()
@dsn_option
@click.option("--all", "show_all", is_flag=True, help="Include leases whose roles are gone.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def leases(dsn: str, show_all: bool, as_json: bool) -> None:
    """Who holds access now: requester, reason, expiry, open sessions."""
    with connect(dsn) as conn:
        cur = conn.execute(statements.LEASES, (show_all,))
        names = [c.name for c in cur.description or []]
        rows = cur.fetchall()
    if as_json:
        click.echo(fmt.to_json([dict(zip(names, row, strict=True)) for row in rows]))
        return
    if not rows:
        click.echo("No JIT leases.")
        return
    click.echo(fmt.table(HEADERS, [_row(r) for r in rows]))


def _row(row: tuple[Any, ...]) -> tuple[object, ...]:
    from pgcli_jit.core.durations import format_duration

    name, requester, profile, reason, issued, expires, remaining, sessions, state = row[:9]
    return (name, requester, profile, fmt.clip(fmt.printable(reason or "-")), issued, expires,
            _remaining(row, format_duration(float(remaining))), sessions, fmt.clip(state, 60))


def _remaining(row: tuple[Any, ...], left: str) -> str:
    """Time left only while the lease is live: an ended one shows how it ended (``revoked``,
    ``expired``), since the minutes it had left when it ended mean nothing now."""
    state, ended_at, end_event = row[8], row[11], row[13]
    if ended_at is None and state != "dropped":
        return left
    return f"{fmt.printable(end_event)}d" if end_event else "ended"


@click.command()
@click.option("--dsn", "dsns", metavar="CONNINFO", multiple=True,
              help=f"libpq conninfo, URI or service=NAME of a database with the jit schema, no "
                   f"password ({LIBPQ_SOURCES}); repeat it to reap several databases or clusters "
                   f"in one process; none: libpq's PG* defaults.")
@click.option("--all-databases", is_flag=True,
              help="Each --dsn names a cluster: reap every database of it that has the jit "
                   "schema (searched again every minute with --watch).")
@click.option("--watch", is_flag=True,
              help="Keep running: wake at each expiry (and each NOTIFY), until SIGTERM or Ctrl-C.")
@click.option("-v", "--verbose", is_flag=True, help="Say so when there is nothing to do.")
def reap(dsns: tuple[str, ...], all_databases: bool, watch: bool, verbose: bool) -> None:
    """End expired leases: NOLOGIN, end their sessions, drop their roles.

    Needs a login in jit_admin.  Without --watch: one pass, quiet when there is
    nothing to do (for cron), exit 1 if a role could not be dropped.  With --watch
    every line starts with the time (ISO 8601).  With several databases every line
    also names its database, and one that is down never stops the others.
    """
    targets = list(dsns) or [""]
    if all_databases or len(targets) > 1:
        for dsn in targets:
            check_dsn(dsn)
        if watch:
            _watch_many(targets, all_databases)
            return
        _reap_many(targets, all_databases, verbose)
        return
    dsn = targets[0]
    if watch:
        _watch(dsn)
        return
    with connect(dsn, reaper.APPLICATION_NAME) as conn:
        outcomes = reaper.one_pass(conn)
    for outcome in outcomes:
        _report(outcome)
    if not outcomes and verbose:
        click.echo("nothing to reap")
    if not all(o.ok for o in outcomes):
        raise click.exceptions.Exit(1)


def _reap_many(clusters: list[str], all_databases: bool, verbose: bool) -> None:
    """One pass over each database; a failure in one is said and the rest still run."""
    import psycopg

    from pgcli_jit.admin import reap_many

    ok = True
    targets: list[str] = []
    for dsn in clusters:
        if not all_databases:
            targets.append(dsn)
            continue
        try:
            targets += [reap_many.in_database(dsn, name)
                        for name in reap_many.databases_with_schema(dsn)]
        except psycopg.Error as exc:
            ok = False
            click.echo(f"[{reap_many.label(dsn)}] cannot list the cluster's databases: "
                       f"{error_text(exc)}", err=True)
    for dsn in targets:
        name = reap_many.label(dsn)

        def line(text: str, err: bool = False, name: str = name) -> None:
            click.echo(f"[{name}] {text}", err=err)

        try:
            with reap_many.open_conn(dsn) as conn:
                outcomes = reaper.one_pass(conn)
        except psycopg.Error as exc:
            ok = False
            line(error_text(exc), err=True)
            continue
        for outcome in outcomes:
            _report(outcome, line)
        if not outcomes and verbose:
            line("nothing to reap")
        ok = ok and all(o.ok for o in outcomes)
    if not ok:
        raise click.exceptions.Exit(1)


Say = Callable[..., None]


def _report(outcome: reaper.Outcome, say: Say = click.echo) -> None:
    name = fmt.printable(outcome.rolname)
    ended = f"; {outcome.sessions} session(s) ended" if outcome.sessions else ""
    if outcome.action == "expired":
        say(f"expired {name}: it can no longer log in{ended}")
    elif outcome.ok:   # an action may quote a name a lease chose (a prepared transaction's)
        say(f"{fmt.printable(outcome.action)} {name}{ended}")
    else:
        say(f"{name}: {fmt.printable(outcome.action)}", err=True)


def _stamped(text: str, err: bool = False) -> None:
    """A line of the long-running reaper: the time first, so its log reads on its own."""
    click.echo(f"{fmt.stamp()} {text}", err=err)


def _watch(dsn: str) -> None:
    check_dsn(dsn)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def open_reaper() -> Conn:
        return open_conn(dsn, reaper.APPLICATION_NAME)

    _stamped("reaper: watching for expiries (Ctrl-C or SIGTERM to stop)", err=True)
    reaper.watch(open_reaper, lambda outcome: _report(outcome, _stamped), stop,
                 on_error=lambda text: _stamped(text, err=True),
                 on_info=lambda text: _stamped(text, err=True))
    _stamped("reaper: stopped", err=True)
    sys.stdout.flush()


def _watch_many(dsns: list[str], all_databases: bool) -> None:
    """Several databases, each in its own thread; lines are written whole, one at a time."""
    from pgcli_jit.admin import reap_many

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    lock = threading.Lock()

    def say(text: str, err: bool = False) -> None:
        with lock:
            _stamped(text, err=err)

    where = "every database with the jit schema of " if all_databases else ""
    say(f"reaper: watching for expiries in {where}{', '.join(reap_many.label(d) for d in dsns)} "
        f"(Ctrl-C or SIGTERM to stop)", err=True)
    reap_many.watch_many(dsns, all_databases, say, _report, stop)
    say("reaper: stopped", err=True)
    sys.stdout.flush()


COMMANDS = [leases, reap]
