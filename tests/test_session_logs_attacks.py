"""Session logs under attack, against a cluster writing jsonlog with logging_collector: a
chunk with a byte that is not UTF-8 costs no more than a clean one, a line too long to read
seals its lease as incomplete, a failed login claiming a lease's name and a line a lease
raises itself are never filed as what it ran, and a fastpath call is."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgcli_jit.admin import main
from tests.session_logs import (
    COLLECTOR,
    OPERATOR,
    LeaseLogin,
    LogsCluster,
    end_lease,
    lease_conn,
    request_lease,
)

pytestmark = pytest.mark.security

#: the collector reads a log file 16 MiB at a time
CHUNK = 16 * 1024 * 1024


def run(lc: LogsCluster, user: str, *args: str) -> Result:
    os.environ["PGPASSWORD"] = lc.passwords[user]
    try:
        dsn = f"host={lc.cluster.host} port={lc.cluster.port} dbname=app user={user}"
        return CliRunner().invoke(main, [*args, "--dsn", dsn], catch_exceptions=False)
    finally:
        del os.environ["PGPASSWORD"]


@pytest.fixture(scope="module")
def lc(logs_cluster: LogsCluster) -> LogsCluster:
    with logs_cluster.superuser() as conn:
        conn.execute("UPDATE jit_data.session_log_config SET seal_after = '0'")
    return logs_cluster


def collect(lc: LogsCluster, timeout: str = "5min") -> dict[str, object]:
    """One pass as the collector's login, under a statement_timeout of its own."""
    with lc.login(COLLECTOR) as conn:
        conn.execute(f"SET statement_timeout = '{timeout}'".encode())
        row = conn.execute("SELECT jit.collect_session_logs()").fetchone()
    assert row is not None
    return dict(row[0])  # type: ignore[call-overload]


def sealed(lc: LogsCluster, lease: LeaseLogin) -> dict[str, object]:
    """Collect until the lease is sealed; its 'session' audit row's detail."""
    for _ in range(50):
        collect(lc)
        with lc.superuser() as conn:
            row = conn.execute("SELECT detail FROM jit_data.audit WHERE event = 'session'"
                               " AND (detail->>'lease_id')::bigint = %s", (lease.lease_id,)).fetchone()
        if row is not None:
            return dict(row[0])  # type: ignore[call-overload]
        time.sleep(0.1)
    raise AssertionError(f"lease {lease.lease_id} was never sealed")


def session_json(lc: LogsCluster, lease: LeaseLogin) -> list[dict[str, object]]:
    result = run(lc, OPERATOR, "session", str(lease.lease_id), "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def jsonlog_line(user: str, sid: str, n: int, message: str) -> bytes:
    return (json.dumps({"timestamp": "2026-12-05 09:00:00.000 UTC", "user": user, "dbname": "app",
                        "pid": 1, "session_id": sid, "line_num": n, "ps": "idle",
                        "error_severity": "LOG", "message": message}) + "\n").encode()


def test_a_chunk_with_a_byte_that_is_not_utf8_is_parsed_in_one_linear_pass(lc: LogsCluster) -> None:
    """Before, each line of such a chunk was cut from the rest of it and appended to the text
    so far: 12,000 lines took a minute, 30,000 several.  Within a 30 s statement_timeout
    the whole file is read, every line counted, the one bad line alone unparsed."""
    lease = request_lease(lc, "logs_read")
    collect(lc)   # what the log holds so far
    n = 30_000
    lines = [jsonlog_line("someone_else", f"syn.{i}", 1, f"statement: SELECT {i}") for i in range(n)]
    lines[n // 2] = lines[n // 2].replace(b"someone_else", b"evil\xff\xfe\xc3")
    lines[-1] = jsonlog_line(lease.rolname, "syn.last", 1, "statement: SELECT 'after the bad byte'")
    junk = lc.cluster.datadir / "log" / "zz-bad-utf8.json"
    junk.write_bytes(b"".join(lines))
    try:
        result = collect(lc, timeout="30s")
    finally:
        junk.unlink()
    assert result["unparsed"] == 1 and int(result["lines"]) >= n   # type: ignore[call-overload]
    with lc.superuser() as conn:
        kept = conn.execute("SELECT message FROM jit_data.session_log WHERE lease_id = %s"
                            " AND session_id = 'syn.last'", (lease.lease_id,)).fetchall()
    assert kept == [("statement: SELECT 'after the bad byte'",)]
    end_lease(lc, lease)


def test_a_real_pre_auth_packet_with_a_bad_user_name_is_one_unparsed_line(lc: LogsCluster) -> None:
    body = struct.pack("!I", 196608) + b"user\0evil\xff\xfe\xc3\0database\0app\0\0"
    with socket.create_connection((lc.cluster.host, lc.cluster.port), timeout=10) as s:
        s.sendall(struct.pack("!I", len(body) + 4) + body)
        s.recv(4096)   # the SASL request: answered with nonsense, the server logs a FATAL
        data = b"n,,n=,r=abcdefghijklmnop"
        first = b"SCRAM-SHA-256\0" + struct.pack("!i", len(data)) + data
        s.sendall(b"p" + struct.pack("!I", len(first) + 4) + first)
        s.recv(4096)
        s.sendall(b"p" + struct.pack("!I", 14) + b"c=biws,r=x")
        s.recv(4096)
    for _ in range(50):   # the logging collector writes the line a moment later
        logged = b"".join(f.read_bytes() for f in (lc.cluster.datadir / "log").glob("*.json"))
        if b"evil\xff\xfe\xc3" in logged:   # the server wrote the bytes as they came
            break
        time.sleep(0.1)
    else:
        pytest.fail("the server never logged the user name that is not UTF-8")
    result = collect(lc, timeout="30s")
    assert result["problem"] is None and result["caught_up"] is True
    assert int(result["unparsed"]) >= 1   # type: ignore[call-overload]


def test_a_line_longer_than_a_chunk_seals_its_lease_as_incomplete(lc: LogsCluster) -> None:
    lease = request_lease(lc, "logs_read")
    with lease_conn(lc, lease) as conn:
        conn.execute(("SELECT owner FROM accounts WHERE id = 2 /*" + "x" * (CHUNK + 1024) + "*/").encode())
        conn.execute("SELECT 'small statement'")
    end_lease(lc, lease)
    for _ in range(50):   # the pass that meets the line says so, and exits 1
        said = run(lc, COLLECTOR, "sessions", "collect")
        if "too long to collect" in said.output:
            break
        assert said.exit_code == 0, said.output
        time.sleep(0.1)
    assert said.exit_code == 1 and "1 lease log line(s) too long to collect" in said.output, said.output
    assert "did not parse" not in said.output   # a gap of a lease, not junk
    detail = sealed(lc, lease)
    assert detail["complete"] is False and detail["gaps"] == 1, detail
    entries = session_json(lc, lease)
    assert entries[0]["gaps"] == 1
    gaps = [e for e in entries[1:] if e["type"] == "gap"]
    assert len(gaps) == 1 and "bytes is not in this record" in str(gaps[0]["text"])
    assert any(e["text"] == "statement: SELECT 'small statement'" for e in entries[1:])
    shown = run(lc, OPERATOR, "session", str(lease.lease_id)).output
    assert "INCOMPLETE: 1 line(s) too long to collect" in shown and "NOT COLLECTED: a line of" in shown
    verified = run(lc, OPERATOR, "audit", "--verify")
    assert verified.exit_code == 0, verified.output
    assert f"lease {lease.lease_id} was sealed incomplete: 1 line(s)" in verified.output
    with lc.superuser() as conn:   # the gap's record is sealed too
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM jit_data.session_log_gaps WHERE lease_id = %s", (lease.lease_id,))
    broken = run(lc, OPERATOR, "audit", "--verify")
    assert broken.exit_code == 1 and "too long to collect no longer matches its seal" in broken.output


def test_a_failed_login_claiming_a_lease_and_a_raised_statement_are_not_what_it_ran(lc: LogsCluster) -> None:
    lease = request_lease(lc, "logs_write")
    forged = "statement: DROP TABLE accounts"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(lc.cluster.conninfo(forged, user=lease.rolname, password="wrong")).close()
    with lease_conn(lc, lease) as conn:
        conn.execute("DO $$BEGIN UPDATE accounts SET balance = balance WHERE id = 2;"
                     " RAISE LOG 'statement: SELECT balance FROM accounts WHERE id = 2'; END$$")
    end_lease(lc, lease)
    sealed(lc, lease)
    entries = session_json(lc, lease)
    statements = [e["text"] for e in entries[1:] if e["type"] == "statement"]
    assert not any(str(t).startswith("statement: SELECT balance") for t in statements)
    assert any(str(t).startswith("statement: DO $$BEGIN UPDATE accounts") for t in statements)
    [raised] = [e for e in entries[1:] if e["type"] == "message"]
    assert raised["text"] == "statement: SELECT balance FROM accounts WHERE id = 2"
    [tried] = [e for e in entries[1:] if e["type"] == "failed_login"]
    assert "password authentication failed" in str(tried["text"]) and forged in str(tried["text"])
    assert not any(e["type"] == "error" for e in entries[1:])
    with lc.superuser() as conn:
        mine = conn.execute("SELECT count(*) FROM jit_data.session_log WHERE lease_id = %s AND dbname = %s",
                            (lease.lease_id, forged)).fetchone()
    assert mine == (0,)   # nor hashed into the seal
    shown = run(lc, OPERATOR, "session", str(lease.lease_id)).output
    assert "failed login claiming this name, not the lease: password authentication failed" in shown
    assert "message from the lease: statement: SELECT balance" in shown
    listed = run(lc, OPERATOR, "sessions", "--since", "1h", "--json").output
    [row] = [r for r in map(json.loads, listed.splitlines()) if r["lease_id"] == lease.lease_id]
    assert row["statements"] == len(statements)


def _libpq() -> ctypes.CDLL:
    import psycopg_binary

    found = sorted((Path(psycopg_binary.__file__).parent.parent / "psycopg_binary.libs").glob("libpq*.so*"))
    if not found:
        pytest.skip("no libpq of psycopg_binary to call PQfn through")
    return ctypes.CDLL(str(found[0]))


class _ArgBlock(ctypes.Structure):
    class _U(ctypes.Union):
        _fields_ = [("ptr", ctypes.c_void_p), ("integer", ctypes.c_int)]

    _fields_ = [("len", ctypes.c_int), ("isint", ctypes.c_int), ("u", _U)]


def fastpath(conn: psycopg.Connection[tuple[object, ...]], oid: int, *args: str) -> int:
    """A call over the function-call protocol (libpq's PQfn): no statement text on the wire."""
    lib = _libpq()
    lib.PQfn.restype = ctypes.c_void_p
    lib.PQfn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                         ctypes.c_int, ctypes.POINTER(_ArgBlock), ctypes.c_int]
    lib.PQresultStatus.argtypes = [ctypes.c_void_p]
    lib.PQclear.argtypes = [ctypes.c_void_p]
    buffers = [ctypes.create_string_buffer(a.encode()) for a in args]
    block = (_ArgBlock * len(args))()
    for i, a in enumerate(args):
        block[i].len, block[i].isint = len(a.encode()), 0
        block[i].u.ptr = ctypes.cast(buffers[i], ctypes.c_void_p)
    out, out_len = ctypes.create_string_buffer(65536), ctypes.c_int(0)
    result = lib.PQfn(conn.pgconn.pgconn_ptr, oid, out, ctypes.byref(out_len), 0, block, len(args))
    status = int(lib.PQresultStatus(result))
    lib.PQclear(result)
    return status


def test_a_fastpath_call_is_a_statement_the_lease_ran(lc: LogsCluster) -> None:
    lease = request_lease(lc, "logs_read")
    with lease_conn(lc, lease) as conn:
        # query_to_xml would read a table this way (where the server has libxml; the
        # embedded 18 has not): any function shows the call's line
        row = conn.execute("SELECT 'md5(text)'::regprocedure::oid").fetchone()
        assert row is not None
        assert fastpath(conn, int(str(row[0])), "called without a statement") == 1   # PGRES_COMMAND_OK
    end_lease(lc, lease)
    sealed(lc, lease)
    entries = session_json(lc, lease)
    called = 'fastpath function call: "md5"'
    assert any(e["type"] == "statement" and str(e["text"]).startswith(called) for e in entries[1:]), entries


def test_mod_is_accepted_with_a_warning_because_it_misses_writes_inside_a_statement(lc: LogsCluster) -> None:
    """What the warning says, seen: a DO block's UPDATE and a writable CTE leave no line on a
    mod profile, a plain UPDATE does."""
    added = run(lc, OPERATOR, "profile", "add", "logs_mod", "--grant", "jit_write", "--requesters",
                "jit_requester", "--log-statements", "mod")
    assert added.exit_code == 0, added.output
    assert "warning: log_statements mod logs top-level statements only" in added.output
    kept = run(lc, OPERATOR, "profile", "set", "logs_mod", "--ttl", "10m")
    assert "warning" not in kept.output   # said when mod is chosen, not on every change
    lease = request_lease(lc, "logs_mod")
    with lease_conn(lc, lease) as conn:
        conn.execute("DO $$BEGIN UPDATE accounts SET balance = balance WHERE id = 1; END$$")
        conn.execute("WITH x AS (UPDATE accounts SET balance = balance WHERE id = 1 RETURNING 1) SELECT 1")
        conn.execute("UPDATE accounts SET balance = balance WHERE id = 2")
    end_lease(lc, lease)
    sealed(lc, lease)
    statements = [str(e["text"]) for e in session_json(lc, lease)[1:] if e["type"] == "statement"]
    assert statements == ["statement: UPDATE accounts SET balance = balance WHERE id = 2"]
    assert run(lc, OPERATOR, "profile", "rm", "logs_mod").exit_code == 0


def test_pgaudit_lines_of_statements_inside_a_do_block_are_statements(lc: LogsCluster) -> None:
    """pgaudit writes its AUDIT lines without a context, nested statements too: they stay
    statements, while a raised look-alike does not."""
    if not lc.pgaudit:
        pytest.skip("pgaudit is not installed for this PostgreSQL (the embedded 18 has none)")
    chosen = run(lc, OPERATOR, "profile", "set", "logs_write", "--log-statements", "pgaudit:write")
    assert chosen.exit_code == 0, chosen.output
    try:
        lease = request_lease(lc, "logs_write")
        with lease_conn(lc, lease) as conn:
            conn.execute("DO $$BEGIN UPDATE accounts SET balance = balance WHERE id = 2;"
                         " RAISE LOG 'AUDIT: SESSION,1,1,WRITE,UPDATE,,,forged,<not logged>'; END$$")
        end_lease(lc, lease)
        sealed(lc, lease)
        entries = session_json(lc, lease)[1:]
        audited = [str(e["text"]) for e in entries if e["type"] == "statement"]
        assert any(t.startswith("AUDIT: SESSION") and "UPDATE accounts" in t for t in audited), entries
        assert not any("forged" in t for t in audited)
        assert [e["type"] for e in entries if "forged" in str(e["text"])] == ["message"]
    finally:
        run(lc, OPERATOR, "profile", "set", "logs_write", "--log-statements", "all")


@pytest.mark.parametrize(("size", "newlines", "expected"), [
    (200_000, [10], 11),                  # the last newline three blocks back from the end
    (200_000, [10, 150_000], 150_001),
    (200_000, [199_999], 200_000),        # the chunk ends with one
    (200_000, [], 0),
    (1, [0], 1),
])
def test_whole_lines_finds_the_last_newline(lc: LogsCluster, size: int, newlines: list[int],
                                            expected: int) -> None:
    chunk = bytearray(b"x" * size)
    for at in newlines:
        chunk[at] = 10
    with lc.superuser() as conn:
        row = conn.execute("SELECT jit._whole_lines(%s)", (bytes(chunk),)).fetchone()
    assert row == (expected,)


def test_a_chunk_is_split_into_the_same_lines_with_or_without_a_bad_byte(lc: LogsCluster) -> None:
    lines = [b'{"a":"caf\xc3\xa9 \\\\ \\"q\\""}', b'{"b":1}', b"not json", b'{"c":"\xff"}', b'{"d":[2]}']
    with lc.superuser() as conn:
        got = conn.execute("SELECT j FROM jit._chunk_json(%s) j", (b"\n".join(lines) + b"\n",)).fetchall()
        clean = conn.execute("SELECT j FROM jit._chunk_json(%s) j",
                             (b"\n".join(lines[:3] + lines[4:]) + b"\n",)).fetchall()
    assert [j for (j,) in got] == [{"a": 'café \\ "q"'}, {"b": 1}, None, None, {"d": [2]}]
    assert [j for (j,) in clean] == [{"a": 'café \\ "q"'}, {"b": 1}, None, {"d": [2]}]


def test_a_lease_cannot_pass_its_own_lines_off_as_a_failed_login(lc: LogsCluster) -> None:
    lease = request_lease(lc, "logs_read")
    with lease_conn(lc, lease) as conn, pytest.raises(psycopg.Error):
        conn.execute("DO $$BEGIN RAISE EXCEPTION 'password authentication failed for user \"x\"'"
                     " USING ERRCODE = '28P01'; END$$")
    end_lease(lc, lease)
    sealed(lc, lease)
    kinds = {str(e["text"]): e["type"] for e in session_json(lc, lease)[1:]}
    assert kinds['password authentication failed for user "x"'] == "error"
    assert "failed_login" not in kinds.values()
