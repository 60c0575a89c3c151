"""``pgcli-jit-admin audit --follow``: the audit trail streamed as rows commit, against a
cluster of this module's own (one test restarts it).

The operator is ``flw_ops`` (in ``jit_admin``), the requester ``flw_dave``.  Rows are written
by the broker's own ``jit._audit`` (as the superuser), the function every audit row comes from.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psycopg
import pytest
from click.testing import CliRunner

from pgcli_jit import server
from pgcli_jit.admin import follow, main
from pgcli_jit.core.errors import JitError
from pgcli_jit.devtools.cluster import Cluster, _as_server_user, start_cluster
from tests.conftest import make_login

ADMIN = Path(sys.executable).with_name("pgcli-jit-admin")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d audit --follow: ")
#: longer than any wait below and shorter than the net: a line within it came from a ring
WAIT = 15.0
assert WAIT < follow.NET


@pytest.fixture(scope="module")
def own(cluster: Cluster) -> Iterator[Cluster]:
    """A cluster only this module restarts (``cluster`` is requested for ``$PGPASSFILE``)."""
    c = start_cluster()
    try:
        c.execute("CREATE DATABASE app")
        with c.connect("app") as conn:
            server.apply(conn)
        make_login(c, "flw_ops", member_of="jit_admin")
        make_login(c, "flw_dave", member_of="jit_requester")
        yield c
    finally:
        c.stop()


def dsn(c: Cluster, user: str) -> str:
    return f"host={c.host} port={c.port} dbname=app user={user}"


def write_row(c: Cluster, reason: str) -> int:
    """One audit row, committed; its id."""
    with c.connect("app") as conn:
        conn.execute("SELECT jit._audit('test', 'p', NULL, 'dave', %s, NULL)", (reason,))
        row = conn.execute("SELECT max(id) FROM jit_data.audit WHERE reason = %s", (reason,)).fetchone()
    assert row is not None
    return int(row[0])


def pg_ctl(c: Cluster, *args: str) -> None:
    cmd = [str(c.bindir / "pg_ctl"), "-D", str(c.datadir), "-l", str(c.logfile), "-w", "-t", "60", *args]
    proc = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


class Lines:
    """A stream's lines, read by a thread so a test can wait for one with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait(self, count: int, timeout: float = WAIT) -> list[str]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.lines) >= count, timeout), self.lines
            return list(self.lines)


def start_follow(c: Cluster, *more: str) -> tuple[subprocess.Popen[str], Lines, Lines]:
    proc = subprocess.Popen([str(ADMIN), "audit", "--follow", "--json", "--dsn", dsn(c, "flw_ops"), *more],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    assert "audit --follow: after " in err.wait(1)[0]   # it listens and has looked once
    return proc, out, err


def stop_follow(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    finally:
        proc.kill()


def ids(lines: list[str]) -> list[int]:
    return [json.loads(line)["id"] for line in lines]


# -- the doorbell, the order, the fields -----------------------------------------------------------

def test_a_row_is_printed_at_the_doorbell_not_at_the_net(own: Cluster) -> None:
    """The net is an hour: a line soon after the commit was woken by the ring."""
    stop = threading.Event()
    got: list[str] = []
    follower = follow.Follower(got.append, follow.json_line, stop, net=3600.0)
    with psycopg.connect(dsn(own, "flw_ops"), autocommit=True) as conn:
        follower.cursor = follow.end_of_chain(conn)
        thread = threading.Thread(target=follower.watch, args=(conn,), daemon=True)
        thread.start()
        time.sleep(0.5)   # its first look is done: the next one needs a ring
        first = write_row(own, "rung-1")
        committed = time.monotonic()
        deadline = committed + WAIT
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = time.monotonic()
        stop.set()
        thread.join(5)
    assert ids(got) == [first]
    print(f"commit to line: {(seen - committed) * 1000:.0f} ms")


def test_rows_go_out_in_commit_order_a_late_lower_id_included(own: Cluster) -> None:
    """An id is taken before its transaction commits: the row that took the lower id and
    committed last comes out last, not skipped."""
    stop = threading.Event()
    got: list[str] = []
    follower = follow.Follower(got.append, follow.json_line, stop, net=3600.0)
    with psycopg.connect(dsn(own, "flw_ops"), autocommit=True) as conn, own.connect("app") as slow:
        follower.cursor = follow.end_of_chain(conn)
        thread = threading.Thread(target=follower.watch, args=(conn,), daemon=True)
        thread.start()
        slow.autocommit = False
        slow.execute("SELECT jit._audit('test', 'p', NULL, 'dave', 'late', NULL)")
        fast = write_row(own, "early")
        wait_until(lambda: len(got) == 1)
        slow.commit()
        wait_until(lambda: len(got) == 2)
        stop.set()
        thread.join(5)
    late = ids(got)[1]
    assert ids(got) == [fast, late] and late < fast


def wait_until(check: object, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_lines_carry_the_fields_of_audit_json(own: Cluster) -> None:
    first = write_row(own, "fields")
    listed = json.loads(CliRunner().invoke(main, ["audit", "--json", "--limit", "1",
                                                  "--dsn", dsn(own, "flw_ops")]).output)[0]
    got: list[str] = []
    follower = follow.Follower(got.append, follow.json_line, threading.Event())
    with psycopg.connect(dsn(own, "flw_ops"), autocommit=True) as conn:
        follower.cursor = follow.Cursor(-1)
        follower.look(conn)
    line = json.loads(got[-1])
    assert line["id"] == first and line == listed


# -- the command: restart, Ctrl-C, cursor file, who may --------------------------------------------

def test_a_server_restart_loses_nothing_and_ctrl_c_exits_0(own: Cluster) -> None:
    proc, out, err = start_follow(own)
    try:
        before = write_row(own, "before restart")
        assert ids(out.wait(1)) == [before]
        pg_ctl(own, "-m", "fast", "restart")
        after = [write_row(own, f"after restart {i}") for i in range(3)]
        assert ids(out.wait(4, timeout=60)) == [before, *after]
        code = stop_follow(proc)
    finally:
        proc.kill()
    err.thread.join(5)
    out.thread.join(5)
    assert code == 0, err.lines
    assert all(STAMP.match(line) for line in err.lines), err.lines
    assert any("reconnecting in" in line and f"going on after row {before}" in line for line in err.lines)
    assert any(f"reconnected; going on after row {before}" in line for line in err.lines), err.lines
    assert f"stopped after row {after[-1]} (seq " in err.lines[-1]
    assert "Traceback" not in "\n".join(err.lines)
    assert len(out.lines) == 4


def test_a_shipper_that_goes_away_ends_it_quietly(own: Cluster) -> None:
    """Its stdout closed, the next line cannot be written: exit 0, no traceback."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([str(ADMIN), "audit", "--follow", "--json", "--dsn", dsn(own, "flw_ops")],
                            stdout=write_end, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    os.close(write_end)
    try:
        assert proc.stderr is not None
        err = Lines(proc.stderr)
        assert "audit --follow: after " in err.wait(1)[0]
        os.close(read_end)   # the shipper is gone
        write_row(own, "nobody reads this")
        assert proc.wait(timeout=WAIT) == 0
    finally:
        proc.kill()
    err.thread.join(5)
    assert "Traceback" not in "\n".join(err.lines) and "Error" not in "\n".join(err.lines), err.lines


def test_a_cursor_file_goes_on_where_the_last_run_stopped(own: Cluster, tmp_path: Path) -> None:
    cursor = tmp_path / "audit.cursor"
    proc, out, _ = start_follow(own, "--cursor-file", str(cursor))
    try:
        first = write_row(own, "run one")
        assert ids(out.wait(1)) == [first]
        assert stop_follow(proc, signal.SIGTERM) == 0
    finally:
        proc.kill()
    assert json.loads(cursor.read_text())["id"] == first
    missed = [write_row(own, f"while stopped {i}") for i in range(2)]
    proc, out, _ = start_follow(own, "--cursor-file", str(cursor))
    try:
        assert ids(out.wait(2)) == missed
        assert stop_follow(proc) == 0
    finally:
        proc.kill()
    out.thread.join(5)
    assert len(out.lines) == 2


def test_a_requester_cannot_follow(own: Cluster) -> None:
    result = CliRunner().invoke(main, ["audit", "--follow", "--dsn", dsn(own, "flw_dave")])
    assert result.exit_code == 1
    assert "permission denied: audit --follow needs a login in jit_admin" in result.output
    assert "Traceback" not in result.output


def test_a_requester_cannot_read_the_trail_it_hears_ring(own: Cluster) -> None:
    """Any login may LISTEN: the ring carries nothing, and the rows stay unreadable."""
    with psycopg.connect(dsn(own, "flw_dave"), autocommit=True) as conn:
        conn.execute("LISTEN jit_audit")
        write_row(own, "private reason")
        heard = list(conn.notifies(timeout=WAIT, stop_after=1))
        assert [n.payload for n in heard] == [""]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT reason FROM jit_data.audit")


# -- usage and the cursor file, without a server ---------------------------------------------------

def test_cursor_file_goes_with_follow_only() -> None:
    result = CliRunner().invoke(main, ["audit", "--cursor-file", "x"])
    assert result.exit_code == 2 and "--cursor-file goes with --follow" in result.output
    result = CliRunner().invoke(main, ["audit", "--follow", "--verify"])
    assert result.exit_code == 2 and "--follow streams rows from a cursor" in result.output


def test_a_cursor_file_round_trips_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    saved = follow.CursorFile(tmp_path / "c")
    assert saved.load() is None
    saved.save(follow.Cursor(41, 57))
    assert saved.load() == follow.Cursor(41, 57)
    (tmp_path / "c").write_text("not a cursor")
    with pytest.raises(JitError, match="holds no audit cursor"):
        saved.load()
