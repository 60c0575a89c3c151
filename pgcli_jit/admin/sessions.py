"""``pgcli-jit-admin sessions [collect]`` and ``session LEASE``: what each lease ran.

The server writes each lease's statements to its log (the profile's ``log_statements``, set
on the lease's role where the lease cannot unset it); ``sessions collect`` has the server
read its own jsonlog into ``jit_data.session_log`` and seal each ended lease's lines into the
audit chain (``jit.collect_session_logs``: this command reads no file itself).  ``session``
and ``sessions`` read them back.  Statement text is a lease's own: it is printed through
:func:`pgcli_jit.core.sanitize.printable`, so no escape sequence reaches the terminal.
"""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import psycopg

from pgcli_jit.admin import fmt, session_archive
from pgcli_jit.admin.audit import before_time, current_database, since_time
from pgcli_jit.admin.connect import Conn, check_dsn, connect, dsn_option, error_text, open_conn
from pgcli_jit.core.durations import option_duration
from pgcli_jit.core.errors import JitError, UsageError
from pgcli_jit.core.sanitize import printable
from pgcli_jit.server import statements

#: what a statement cell shows of a long statement (--json carries all of it)
STATEMENT_WIDTH = 200
_DURATION = re.compile(r"^duration: ([0-9.]+) ms")
#: the log's message prefixes of what a lease ran: simple query, extended protocol, pgaudit,
#: a call over the function-call protocol (fastpath: the function's name, never its arguments)
_STATEMENT = re.compile(r"^(?:statement: |execute [^:]*: |AUDIT: |fastpath function call: )")
APPLICATION_NAME = "pgcli-jit-admin sessions collect"
LIST_HEADERS = ("LEASE", "ROLE", "REQUESTER", "PROFILE", "FROM", "UNTIL", "ENDED", "LOGGED",
                "STATEMENTS", "SEALED")


@dataclass
class Entry:
    """One thing a lease did, as its log says: a statement (with its duration when the
    profile logs durations), a connection, a disconnection, an error, or a message the lease
    raised itself; or what the log says about the lease: a line too long to collect (gap), a
    failed login that claimed its name."""

    at: datetime
    kind: str
    text: str
    detail: str | None = None
    duration_ms: float | None = None
    session_id: str = ""
    line_num: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "at": self.at.isoformat(), "text": self.text, "detail": self.detail,
                "duration_ms": self.duration_ms, "session_id": self.session_id, "line": self.line_num}


def entries(rows: Sequence[Sequence[Any]]) -> list[Entry]:
    """The lines of SESSION_LINES (log order) as entries: each ``duration:`` line is folded
    into the statement of its session it follows (the server writes it right after).

    A line with a context was raised from inside a function (PL/pgSQL's ``RAISE``), not
    written by the server's statement logging, which never gives one: whatever its text
    says, it is a message from the lease, not a statement."""
    out: list[Entry] = []
    last: dict[str, Entry] = {}
    for session_id, line_num, at, _db, remote, severity, _ps, message, detail, context in rows:
        text = str(message)
        found = _DURATION.match(text) if context is None else None
        if found:
            prior = last.get(session_id)
            if prior is not None and prior.kind == "statement" and prior.duration_ms is None:
                prior.duration_ms = float(found.group(1))
            continue
        if context is not None and severity not in ("ERROR", "FATAL", "PANIC"):
            kind = "message"
        elif _STATEMENT.match(text) and severity == "LOG":
            kind = "statement"
        elif text.startswith("connection authorized:"):
            kind, text = "connect", f"{text} from {remote or 'local socket'}"
        elif text.startswith("disconnection:"):
            kind = "disconnect"
        elif severity in ("ERROR", "FATAL", "PANIC"):
            kind = "error"
        else:
            continue
        entry = Entry(at, kind, text, detail, None, str(session_id), int(line_num))
        out.append(entry)
        last[session_id] = entry
    return out


def gap_entries(rows: Sequence[Sequence[Any]], issued_at: datetime) -> list[Entry]:
    """SESSION_GAPS as entries: where each line is that the collector could not read (a line
    whose time could not be read is placed at the lease's start)."""
    return [Entry(at or issued_at, "gap", f"a line of {n:,} bytes is not in this record (longer than "
                                          f"the collector reads at once): {file} at byte {at_byte}")
            for at, file, at_byte, n in rows]


def attempt_entries(rows: Sequence[Sequence[Any]]) -> list[Entry]:
    """SESSION_LOGIN_ATTEMPTS as entries: anyone may claim a name at login, so these are not
    the lease's doing."""
    return [Entry(at, "failed_login", f"{message} (from {remote or 'local socket'}, database {db!r})", detail)
            for at, remote, db, _severity, message, detail in rows]


_LABEL = {"error": "error: ", "message": "message from the lease: ", "gap": "NOT COLLECTED: ",
          "failed_login": "failed login claiming this name, not the lease: "}


def shown_statement(entry: Entry, width: int = STATEMENT_WIDTH) -> str:
    """The entry as one safe line: controls and newlines are ``?``, a long one is cut."""
    text = _LABEL.get(entry.kind, "") + entry.text
    if entry.detail:
        text += f" ({entry.detail})"
    safe = printable(text)
    return safe if len(safe) <= width else f"{safe[: width - 1]}… ({len(safe):,} characters)"


def _duration(entry: Entry) -> str:
    return "-" if entry.duration_ms is None else f"{entry.duration_ms:.3f} ms"


@click.command("session")
@click.argument("lease")
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: the lease, then each entry.")
def session(lease: str, dsn: str, as_json: bool) -> None:
    """What LEASE (its id or role name) ran: who asked, why, who approved, from when until
    when and how it ended, then each statement with its time and duration."""
    with connect(dsn) as conn:
        cur = conn.execute(statements.SESSION_HEADER, (lease, lease))
        names = [c.name for c in cur.description or []]
        row = cur.fetchone()
        if row is None:
            raise JitError(f"no lease {printable(lease)}", "pgcli-jit-admin sessions lists them")
        header = dict(zip(names, row, strict=True))
        lines = conn.execute(statements.SESSION_LINES, (header["lease_id"],)).fetchall()
        gaps = gap_entries(conn.execute(statements.SESSION_GAPS, (header["lease_id"],)).fetchall(),
                           header["issued_at"])
        tried = attempt_entries(conn.execute(statements.SESSION_LOGIN_ATTEMPTS,
                                             (header["lease_id"],)).fetchall())
    header["gaps"], header["failed_logins"] = len(gaps), len(tried)
    found = sorted(entries(lines) + gaps + tried, key=lambda e: e.at)
    if as_json:
        click.echo(json.dumps({"type": "lease", **header}, default=fmt._json_default))
        for entry in found:
            click.echo(json.dumps({"lease_id": header["lease_id"], **entry.to_json()}))
        return
    click.echo(_header_text(header, len(found)))
    if not found:
        click.echo("\nNo statements collected." if header["log_statements"] not in (None, "none")
                   else "\nThis lease's profile logs no statements.")
        return
    click.echo("")
    click.echo(fmt.table(("TIME", "DURATION", "STATEMENT"),
                         [(e.at, _duration(e), shown_statement(e)) for e in found]))


def _header_text(h: dict[str, Any], n: int) -> str:
    approvals = "; ".join(f"{a['approver']} at {a['at']}" for a in h["approvals"]) or "none needed"
    if h["ended_at"] is not None:
        ended = f"{h['end_event'] or 'ended'}d" if h["end_event"] else "ended"
    else:
        ended = "live (or expired, not yet reaped)"
    sealed = (f"sealed into the audit chain at {fmt.local_time(h['sealed_at'])}" if h["sealed_at"]
              else "not sealed yet (sessions collect seals it once it has ended)")
    if h.get("gaps"):
        sealed += f"; INCOMPLETE: {h['gaps']} line(s) too long to collect (see NOT COLLECTED below)"
    rows = [("lease", f"{h['lease_id']} ({h['rolname']})"), ("requester", h["requester"]),
            ("profile", h["profile"]), ("reason", h["reason"] or "-"), ("approvals", approvals),
            ("from", fmt.local_time(h["issued_at"])), ("until", fmt.local_time(h["until"])),
            ("ended", ended), ("logged", h["log_statements"] or "not set (issued before session logs)"),
            ("entries", f"{n}; {sealed}")]
    return "\n".join(f"{k:<10} {printable(v)}" for k, v in rows)


@click.group("sessions", invoke_without_command=True)
@dsn_option
@click.option("--requester", metavar="LOGIN", help="Only this requester's leases.")
@click.option("--profile", metavar="NAME", help="Only leases of this profile.")
@click.option("--since", metavar="WHEN", default="24h", show_default=True,
              help="Leases issued since: a duration ago (2h) or an ISO-8601 time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per lease, one per line.")
@click.pass_context
def sessions(ctx: click.Context, dsn: str, requester: str | None, profile: str | None, since: str,
             as_json: bool) -> None:
    """Leases with what was collected of them: statements, lines, sealed or not.

    ``sessions collect`` gathers the server's log into the database."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(dsn) as conn:
        cur = conn.execute(statements.SESSIONS, (since_time(since), requester, requester, profile, profile))
        names = [c.name for c in cur.description or []]
        rows = cur.fetchall()
    if as_json:
        for row in rows:
            click.echo(json.dumps(dict(zip(names, row, strict=True)), default=fmt._json_default))
        return
    if not rows:
        click.echo("No leases in that time.")
        return
    click.echo(fmt.table(LIST_HEADERS, [
        (r[0], r[1], r[2], r[3], r[5], r[6], f"{r[7]}d" if r[7] else "-", r[8] or "-", r[9],
         "yes" if r[11] else "no") for r in rows]))


@sessions.command("collect")
@dsn_option
@click.option("--watch", is_flag=True, help="Keep collecting, every --every, until SIGTERM or Ctrl-C.")
@click.option("--every", default="5s", show_default=True, metavar="DUR", help="With --watch: how often.")
def collect(dsn: str, watch: bool, every: str) -> None:
    """Collect the server's log into jit_data.session_log and seal ended leases.

    Needs a login in jit_collector (or jit_admin).  Without --watch: one pass; exit 1 when
    the log could not be read, a line did not parse or a lease's line was too long to collect
    (each is said, on stderr)."""
    if not watch:
        with connect(dsn, APPLICATION_NAME) as conn:
            result = one_pass(conn)
        _report(result, click.echo)
        if result.get("problem") or result.get("unparsed") or result.get("gaps"):
            raise click.exceptions.Exit(1)
        return
    check_dsn(dsn)
    interval = option_duration(every, "--every") or 5.0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def say(text: str, err: bool = False) -> None:
        click.echo(f"{fmt.stamp()} {text}", err=err)

    say("sessions collect: watching the server's log (Ctrl-C or SIGTERM to stop)", err=True)
    watch_loop(lambda: open_conn(dsn, APPLICATION_NAME), stop, interval, say)
    say("sessions collect: stopped", err=True)


def one_pass(conn: Conn) -> dict[str, Any]:
    conn.execute(statements.COLLECT_TIMEOUT)
    row = conn.execute(statements.COLLECT_SESSION_LOGS).fetchone()
    assert row is not None
    return dict(row[0])


def _report(result: dict[str, Any], say: Callable[..., None], quiet: bool = False) -> None:
    """One line per pass; a problem or unparsed lines on stderr, every time they happen."""
    if result.get("busy"):
        say("another collector is running: this pass did nothing", err=True)
        return
    if result.get("problem"):
        say(f"cannot read the server's log: {printable(result['problem'])} (retrying)", err=True)
    if result.get("unparsed"):
        say(f"{result['unparsed']} log line(s) did not parse as JSON: is log_destination jsonlog?",
            err=True)
    if result.get("gaps"):
        say(f"{result['gaps']} lease log line(s) too long to collect: their leases are sealed as "
            "incomplete (pgcli-jit-admin session LEASE shows where each line is)", err=True)
    if quiet and not (result.get("kept") or result.get("sealed") or result.get("late")
                      or result.get("login_attempts")):
        return
    late = f", {result['late']} late (their lease was sealed)" if result.get("late") else ""
    if result.get("login_attempts"):
        late += f", {result['login_attempts']} failed login line(s) claiming a lease's name (kept apart)"
    say(f"read {result.get('lines', 0)} line(s) from {result.get('files', 0)} file(s): "
        f"kept {result.get('kept', 0)}, sealed {result.get('sealed', 0)} lease(s){late}")


def watch_loop(open_conn: Callable[[], Conn], stop: threading.Event, interval: float,
               say: Callable[..., None]) -> None:
    """Collect every ``interval`` until ``stop``; a lost connection is said once per failure
    and retried, never a traceback."""
    conn: Conn | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = open_conn()
            _report(one_pass(conn), say, quiet=True)
        except psycopg.Error as exc:
            say(f"collect failed: {error_text(exc)} (retrying in {interval:g}s)", err=True)
            if conn is not None:
                conn.close()
            conn = None
        stop.wait(interval)
    if conn is not None:
        conn.close()


@sessions.command("archive")
@dsn_option
@click.option("--before", metavar="DATE|DUR",
              help="Archive the lines of sealed leases that ended before this (2026-01-01, or 90d).")
@click.option("--to", "target", type=click.Path(dir_okay=False, path_type=Path),
              help="The JSON-lines file to write (a new one for each archive).")
@click.option("--verify", "check", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Instead: check an archive file on its own, with no server.")
def archive_lines(dsn: str, before: str | None, target: Path | None, check: Path | None) -> None:
    """Move the session-log lines of sealed leases that ended before DATE to FILE, then have
    the server remove them (a login in jit_archiver and jit_admin).

    The file is written and fsynced first; the server removes a lease's lines only when the
    file's digest is its seal's.  Stopped in between, the same command can be run again."""
    if check is not None:
        if before or target:
            raise UsageError("--verify FILE checks a file: not with --before or --to")
        found = verify_archive(check)
        click.echo(f"session log archive intact: {len(found.leases)} lease(s), {found.lines} line(s) "
                   f"({check})")
        return
    if not before or target is None:
        raise UsageError("sessions archive needs --before DATE and --to FILE (or --verify FILE)")
    cutoff = before_time(before)
    with connect(dsn) as conn:
        try:
            done = (verify_archive(target) if target.exists() or target.is_symlink()
                    else _write_archive(conn, target, cutoff))
            if done is None:
                click.echo(f"No sealed session logs of leases that ended before {cutoff.isoformat()}.")
                return
            ids, digests = [lid for lid, _ in done.leases], [d for _, d in done.leases]
            row = conn.execute(statements.SESSION_LOG_ARCHIVE, (ids, digests, cutoff)).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            raise JitError("archiving removes session-log lines: only a login in jit_archiver may",
                           "as a superuser: GRANT jit_archiver TO the one login that ships "
                           "archives") from None
    result = dict(row[0]) if row else {}
    if result.get("status") != "archived":
        click.echo(f"{target} holds {len(done.leases)} lease(s) archived already: nothing to do")
        return
    click.echo(f"archived {result['lines']} session-log line(s) of {result['leases']} lease(s) that ended "
               f"before {cutoff.isoformat()} to {target}")


def _write_archive(conn: Conn, target: Path, cutoff: datetime) -> session_archive.Summary | None:
    head = session_archive.header(database=current_database(conn), before=cutoff.isoformat())
    rows = conn.cursor().stream(statements.SESSION_LOG_ARCHIVE_ROWS, (cutoff,))
    try:
        return session_archive.write(target, head, session_archive.records(rows))
    except session_archive.SessionArchiveError as exc:
        raise JitError(f"the lines read do not match their seal, nothing written or removed: "
                       f"{exc.problem}", "pgcli-jit-admin audit --verify says what is wrong") from None


def verify_archive(path: Path) -> session_archive.Summary:
    try:
        return session_archive.verify(path)
    except session_archive.SessionArchiveError as exc:
        click.echo(f"session log archive broken: {exc}", err=True)
        raise click.exceptions.Exit(1) from None


COMMANDS = [sessions, session]
