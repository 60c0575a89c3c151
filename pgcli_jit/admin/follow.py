"""``pgcli-jit-admin audit --follow``: the server's audit trail as a stream, one line per row
as it commits, for a SIEM shipper (Vector's ``exec`` source, Fluent Bit's ``exec`` input) or
an operator's terminal.

It is woken by the server's doorbell: every transaction that writes an audit row rings
``NOTIFY jit_audit`` (no payload) at its commit, and this process ``LISTEN``\\ s.  At a ring it
chains what has committed (``jit.chain_audit``, so it runs as a login in ``jit_admin``) and
prints the chained rows after its cursor.  Rows go out in chain order, which is commit order:
an id is taken before its transaction commits, so a row with a lower id can commit after one
with a higher id, and a cursor of ids would skip it.  The cursor is the chain position of the
last row printed; across a lost connection (a server restart) it is kept, so nothing is
lost or printed twice.  A slow safety look (:data:`NET`, 30 s) catches a ring the server did
not send (it rings only while the cluster's NOTIFY queue is under half full).

Where it starts: after ``--cursor-file``'s position when that file holds one (the shipper's
restart goes on where the last run stopped, like ``journalctl --cursor-file``), else after
``--after-id`` (0: every row the table holds), else at the end of the chain (what commits from
now on, like ``tail -f``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import psycopg

from pgcli_jit.admin import fmt
from pgcli_jit.admin.connect import Conn, error_text, open_conn
from pgcli_jit.core.errors import JitError
from pgcli_jit.server import statements

#: the safety look, when no doorbell rang: a ring is skipped while the NOTIFY queue is half full
NET = 30.0
#: a look never follows the last one closer than this, however often the doorbell rings (any
#: login may NOTIFY any channel)
MIN_GAP = 0.1
#: rows committed but not chained (another chainer held the lock): looked at again this soon
RETRY = 0.2
#: rows read at a time
BATCH = 500
#: the pause before a reconnect doubles up to this
MAX_PAUSE = 10.0


@dataclass(frozen=True)
class Cursor:
    """The last row printed: its chain position (what the stream goes on after) and its id."""

    seq: int
    id: int | None = None

    def __str__(self) -> str:
        if self.id is None:
            return "the start of the chain" if self.seq < 0 else f"seq {self.seq}"
        return f"row {self.id} (seq {self.seq})"


class CursorFile:
    """Where a shipper's stream stands between runs: written (atomically, fsynced) after each
    batch of lines is flushed to stdout.  An audit id and a chain position are no secret."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Cursor | None:
        """The saved position; None when the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JitError(f"--cursor-file {self.path}: cannot read it ({exc.strerror})") from None
        try:
            data = json.loads(text)
            return Cursor(int(data["seq"]), int(data["id"]) if data.get("id") is not None else None)
        except (ValueError, TypeError, KeyError):
            raise JitError(f"--cursor-file {self.path} holds no audit cursor",
                           "remove it to start at the end of the chain, or choose another file") from None

    def save(self, cursor: Cursor) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"id": cursor.id, "seq": cursor.seq}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise JitError(f"--cursor-file {self.path}: cannot write it ({exc.strerror})") from None


def json_line(names: Sequence[str], row: Sequence[object]) -> str:
    """One row as ``audit --json`` shows it, on one line."""
    return fmt.json_line(dict(zip(names, row, strict=True)))


def text_line(_names: Sequence[str], row: Sequence[object]) -> str:
    """One row as ``audit`` shows it, its cells two spaces apart (no padding: a stream has no
    columns to align)."""
    cells = (*row[:8], fmt.clip(fmt.printable(row[8] or "-")), row[9])
    return "  ".join(fmt.cell(v) for v in cells)


Emit = Callable[[str], None]
Say = Callable[[str], None]


class Follower:
    """The stream's state: the cursor, and how rows become lines."""

    def __init__(self, emit: Emit, shape: Callable[[Sequence[str], Sequence[object]], str],
                 stop: threading.Event, saved: CursorFile | None = None, net: float = NET) -> None:
        self.emit, self.shape, self.stop, self.saved, self.net = emit, shape, stop, saved, net
        self.cursor: Cursor | None = None

    def look(self, conn: Conn) -> bool:
        """Print every chained row after the cursor; True when committed rows still wait to
        be chained (another chainer held the lock): then look again soon."""
        assert self.cursor is not None
        conn.execute(statements.CHAIN_AUDIT)
        while True:
            cur = conn.execute(statements.AUDIT_FOLLOW, (self.cursor.seq, BATCH))
            names = [c.name for c in cur.description or []][1:]
            rows = cur.fetchall()
            for row in rows:
                self.emit(self.shape(names, row[1:]))
                self.cursor = Cursor(int(row[0]), int(row[1]))
            if rows and self.saved is not None:
                self.saved.save(self.cursor)
            if len(rows) < BATCH:
                break
        waiting = conn.execute(statements.AUDIT_UNCHAINED).fetchone()
        return bool(waiting and waiting[0])

    def watch(self, conn: Conn) -> None:
        """Look, then sleep until the doorbell (or the net, or a retry) until ``stop``.  LISTEN
        comes first, so a row committed during a look rings for the next one."""
        conn.execute(statements.LISTEN_AUDIT)
        while not self.stop.is_set():
            looked = time.monotonic()
            waiting = self.look(conn)
            self.sleep(conn, RETRY if waiting else self.net, looked)

    def sleep(self, conn: Conn, seconds: float, looked: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if any(True for _ in conn.notifies(timeout=min(left, 1.0), stop_after=1)):
                if (gap := looked + MIN_GAP - time.monotonic()) > 0:
                    self.stop.wait(gap)
                return


def follow(open_conn: Callable[[], Conn], start: Callable[[Conn], Cursor], follower: Follower,
           say: Say) -> None:
    """Run until ``follower.stop``.  The first connection and the start position fail with one
    line; after that a lost connection is opened again with a growing pause (said on stderr,
    with the time), and the stream goes on after the last row printed."""
    conn: Conn | None = open_conn()
    pause, lost = 1.0, False
    while not follower.stop.is_set():
        try:
            if conn is None:
                conn = open_conn()
            with conn:
                if follower.cursor is None:
                    follower.cursor = start(conn)
                    say(f"audit --follow: after {follower.cursor} (Ctrl-C or SIGTERM to stop)")
                elif lost:
                    say(f"audit --follow: reconnected; going on after {follower.cursor}")
                lost, pause = False, 1.0
                follower.watch(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if follower.cursor is None:
                raise
            if follower.stop.is_set():
                return
            say(f"audit --follow: {error_text(exc)}; reconnecting in {pause:.0f}s, "
                f"going on after {follower.cursor}")
            lost, conn = True, None
            follower.stop.wait(pause)
            pause = min(pause * 2, MAX_PAUSE)


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _stderr(text: str) -> None:
    click.echo(f"{fmt.stamp()} {text}", err=True)


def run(dsn: str, as_json: bool, start: Callable[[Conn], Cursor], cursor_file: Path | None,
        application_name: str) -> None:
    """The command: signals stop it cleanly (exit 0); a closed stdout (the shipper went away)
    ends it quietly."""
    stop = threading.Event()
    saved = CursorFile(cursor_file) if cursor_file is not None else None
    resumed = saved.load() if saved is not None else None
    follower = Follower(_stdout, json_line if as_json else text_line, stop, saved)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def open_follower() -> Conn:
        return open_conn(dsn, application_name)

    def position(conn: Conn) -> Cursor:
        return resumed if resumed is not None else start(conn)

    try:
        follow(open_follower, position, follower, _stderr)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return
    except psycopg.errors.InsufficientPrivilege as exc:
        raise JitError(f"permission denied: audit --follow needs a login in jit_admin ({error_text(exc)})",
                       "as a superuser: GRANT jit_admin TO the shipper's login") from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise JitError(f"cannot connect: {error_text(exc)}") from None
    _stderr("audit --follow: stopped" + (f" after {follower.cursor}" if follower.cursor else ""))


def end_of_chain(conn: Conn) -> Cursor:
    """The default start: the chain's end now (the rows committed so far chained first)."""
    conn.execute(statements.CHAIN_AUDIT)
    row: Any = conn.execute(statements.AUDIT_LAST).fetchone()
    return Cursor(int(row[0]), int(row[1])) if row else Cursor(-1)
