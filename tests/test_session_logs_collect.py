"""Collected into the database and sealed: ``pgcli-jit-admin sessions collect``, ``session``,
``sessions`` and ``audit --verify``, against a cluster writing jsonlog with logging_collector.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgcli_jit.admin import main
from pgcli_jit.devtools.cluster import _as_server_user
from tests.session_logs import (
    COLLECTOR,
    OPERATOR,
    REQUESTER,
    LeaseLogin,
    LogsCluster,
    end_lease,
    lease_conn,
    request_lease,
)

#: a statement no terminal should ever receive raw: a newline, ESC, a bell, a bidi override
HOSTILE = "SELECT 'one\ntwo\x1b[2J\x1b]0;owned\x07 \u202e' AS hostile"


def dsn(lc: LogsCluster, user: str) -> str:
    return f"host={lc.cluster.host} port={lc.cluster.port} dbname=app user={user}"


def run(lc: LogsCluster, user: str, *args: str) -> Result:
    os.environ["PGPASSWORD"] = lc.passwords[user]
    try:
        return CliRunner().invoke(main, [*args, "--dsn", dsn(lc, user)], catch_exceptions=False)
    finally:
        del os.environ["PGPASSWORD"]


@pytest.fixture(scope="module")
def sealing_now(logs_cluster: LogsCluster) -> LogsCluster:
    """Seal a lease as soon as it has ended: the tests end their leases themselves."""
    with logs_cluster.superuser() as conn:
        conn.execute("UPDATE jit_data.session_log_config SET seal_after = '0'")
    return logs_cluster


def collect_until_sealed(lc: LogsCluster, lease: LeaseLogin) -> None:
    """Collect until the lease is sealed: the server writes its last lines a moment later."""
    for _ in range(50):
        result = run(lc, COLLECTOR, "sessions", "collect")
        assert result.exit_code == 0, result.output
        with lc.superuser() as conn:
            row = conn.execute("SELECT log_sealed_at FROM jit_data.leases WHERE id = %s",
                               (lease.lease_id,)).fetchone()
        if row and row[0] is not None:
            return
        time.sleep(0.1)
    raise AssertionError(f"lease {lease.lease_id} was never sealed")


def lines_of(lc: LogsCluster, lease: LeaseLogin) -> list[str]:
    with lc.superuser() as conn:
        rows = conn.execute("SELECT message FROM jit_data.session_log WHERE lease_id = %s"
                            " ORDER BY logged_at, session_id, line_num", (lease.lease_id,)).fetchall()
    return [str(m) for (m,) in rows]


@pytest.fixture(scope="module")
def worked(sealing_now: LogsCluster) -> Iterator[tuple[LeaseLogin, LeaseLogin]]:
    """A lease that ran statements from psycopg and from psql, and a second lease that tries
    to pass its statements off as the first's (its name in application_name and in text)."""
    lc = sealing_now
    lease = request_lease(lc, "logs_write", reason="fix ticket 42")
    other = request_lease(lc, "logs_read", reason="look around")
    with lease_conn(lc, lease) as conn:
        conn.execute(HOSTILE.encode())
        conn.execute("SELECT length(%s)", ("x" * 1_000_000,))
        conn.execute("UPDATE accounts SET balance = balance WHERE id = %s", (1,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET log_statement = 'none'")
        with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
            conn.execute(b"SELECT '\xff\xfe' AS not_utf8")
    psql = shutil.which("psql") or pytest.skip("psql not installed")
    proc = subprocess.run([psql, "-X", "-h", lc.cluster.host, "-p", str(lc.cluster.port), "-U", lease.rolname,
                           "-d", "app", "-c", "SELECT 'from psql' AS via"],
                          env={**os.environ, "PGPASSWORD": lease.password}, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(lc.cluster.conninfo("app", user=other.rolname, password=other.password,
                                             application_name=lease.rolname), autocommit=True) as conn:
        conn.execute(f"SELECT '{{\"user\":\"{lease.rolname}\"}}' AS forged".encode())
    end_lease(lc, lease)
    end_lease(lc, other)
    collect_until_sealed(lc, lease)
    collect_until_sealed(lc, other)
    yield lease, other


def test_statements_from_psycopg_and_psql_are_collected_and_attributed(
        sealing_now: LogsCluster, worked: tuple[LeaseLogin, LeaseLogin]) -> None:
    lease, other = worked
    mine = lines_of(sealing_now, lease)
    assert f"statement: {HOSTILE}" in mine   # stored exactly, controls and all
    assert any(m.startswith("execute") and "length($1)" in m for m in mine)
    assert any("UPDATE accounts" in m for m in mine)
    assert "statement: SET log_statement = 'none'" in mine   # the attempt itself is logged
    assert "statement: SELECT 'from psql' AS via" in mine
    assert any(m.startswith("connection authorized:") for m in mine)
    assert any(m.startswith("disconnection:") for m in mine)
    assert any("invalid byte sequence" in m for m in mine)   # invalid UTF-8: refused, and said
    assert not any("forged" in m for m in mine)
    theirs = lines_of(sealing_now, other)
    assert any("forged" in m for m in theirs)
    with sealing_now.superuser() as conn:
        rows = conn.execute("SELECT detail FROM jit_data.audit WHERE event = 'session'"
                            " AND (detail->>'lease_id')::bigint = %s", (lease.lease_id,)).fetchall()
    assert len(rows) == 1
    detail = dict(rows[0][0])  # type: ignore[call-overload]
    assert detail["lines"] == len(mine) and len(detail["digest"]) == 64


def test_session_prints_the_lease_and_its_statements_safely(
        sealing_now: LogsCluster, worked: tuple[LeaseLogin, LeaseLogin]) -> None:
    lease, _ = worked
    result = run(sealing_now, OPERATOR, "session", str(lease.lease_id))
    assert result.exit_code == 0, result.output
    out = result.output
    assert not any(ch in out for ch in "\x1b\x07\u202e")
    for expected in (REQUESTER, "logs_write", "fix ticket 42", "revoked", "sealed into the audit chain",
                     "SELECT 'one?two?[2J?]0;owned? ?' AS hostile", "SELECT 'from psql' AS via", " ms"):
        assert expected in out, expected
    assert "characters)" in out   # the 1 MB literal is cut on screen
    by_name = run(sealing_now, OPERATOR, "session", lease.rolname)
    assert by_name.output == out

    as_json = run(sealing_now, OPERATOR, "session", lease.rolname, "--json")
    objects = [json.loads(line) for line in as_json.output.splitlines()]
    assert objects[0]["type"] == "lease" and objects[0]["rolname"] == lease.rolname
    assert any(o.get("text") == f"statement: {HOSTILE}" for o in objects[1:])
    assert "\x1b" not in as_json.output   # JSON escapes it


def test_sessions_lists_leases_by_requester_and_profile(
        sealing_now: LogsCluster, worked: tuple[LeaseLogin, LeaseLogin]) -> None:
    lease, other = worked
    result = run(sealing_now, OPERATOR, "sessions", "--requester", REQUESTER, "--profile", "logs_write",
                 "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    ids = {r["lease_id"] for r in rows}
    assert lease.lease_id in ids and other.lease_id not in ids
    mine = next(r for r in rows if r["lease_id"] == lease.lease_id)
    assert mine["statements"] >= 4 and mine["sealed_at"] is not None
    table = run(sealing_now, OPERATOR, "sessions", "--since", "1h")
    assert lease.rolname in table.output and "STATEMENTS" in table.output
    bad = run(sealing_now, OPERATOR, "sessions", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_reading_again_from_the_start_and_rotation_store_nothing_twice(sealing_now: LogsCluster) -> None:
    lc = sealing_now
    lease = request_lease(lc, "logs_read")
    with lease_conn(lc, lease) as conn:
        conn.execute("SELECT 'before rotation'")
        with lc.superuser() as su:
            su.execute("SELECT pg_rotate_logfile()")
        time.sleep(1.1)   # the rotated file's name has a new second
        conn.execute("SELECT 'after rotation'")
    assert run(lc, COLLECTOR, "sessions", "collect").exit_code == 0
    first = lines_of(lc, lease)
    with lc.superuser() as conn:   # a collector that lost its place reads every file again
        conn.execute("DELETE FROM jit_data.session_log_files")
    assert run(lc, COLLECTOR, "sessions", "collect").exit_code == 0
    assert run(lc, COLLECTOR, "sessions", "collect").exit_code == 0
    again = lines_of(lc, lease)
    assert again[: len(first)] == first   # nothing stored twice, nothing reordered
    assert "statement: SELECT 'before rotation'" in again and "statement: SELECT 'after rotation'" in again
    with lc.superuser() as conn:
        dupes = conn.execute("SELECT count(*) - count(DISTINCT (session_id, line_num))"
                             " FROM jit_data.session_log").fetchone()
    assert dupes == (0,)
    end_lease(lc, lease)
    collect_until_sealed(lc, lease)


def _verify(lc: LogsCluster) -> Result:
    return run(lc, OPERATOR, "audit", "--verify")


def test_audit_verify_catches_an_edited_deleted_or_added_line(
        sealing_now: LogsCluster, worked: tuple[LeaseLogin, LeaseLogin]) -> None:
    lc = sealing_now
    lease, _ = worked
    ok = _verify(lc)
    assert ok.exit_code == 0 and "session logs intact" in ok.output, ok.output
    tamper = {
        "edited": ["UPDATE jit_data.session_log SET message = 'statement: SELECT 1'"
                   " WHERE lease_id = %(id)s AND message LIKE '%%UPDATE accounts%%'"],
        "deleted": ["DELETE FROM jit_data.session_log WHERE lease_id = %(id)s"
                    " AND message LIKE '%%from psql%%'"],
        "added": ["INSERT INTO jit_data.session_log (session_id, line_num, lease_id, rolname, logged_at,"
                  " message, file) VALUES ('forged.1', 1, %(id)s, 'x', now(), 'statement: SELECT 2', 'x')"],
    }
    for what, sql in tamper.items():
        with lc.superuser() as conn, conn.transaction():
            # as a superuser who sidesteps the append-only triggers
            conn.execute("SET LOCAL session_replication_role = replica")
            saved = conn.execute("SELECT * FROM jit_data.session_log WHERE lease_id = %s",
                                 (lease.lease_id,)).fetchall()
            for statement in sql:
                conn.execute(statement.encode(), {"id": lease.lease_id})
        broken = _verify(lc)
        assert broken.exit_code == 1, (what, broken.output)
        assert "session log broken" in broken.output and f"a line was {what}" in broken.output
        with lc.superuser() as conn, conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("DELETE FROM jit_data.session_log WHERE lease_id = %s", (lease.lease_id,))
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO jit_data.session_log VALUES ("
                                + ", ".join(["%s"] * len(saved[0])) + ")", saved)
        assert _verify(lc).exit_code == 0


def test_the_table_is_append_only_even_for_a_superuser(
        sealing_now: LogsCluster, worked: tuple[LeaseLogin, LeaseLogin]) -> None:
    with sealing_now.superuser() as conn:
        for statement in ("UPDATE jit_data.session_log SET message = ''", "DELETE FROM jit_data.session_log",
                          "TRUNCATE jit_data.session_log"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)


def test_no_requester_lease_or_collector_reads_the_log_or_the_table(sealing_now: LogsCluster) -> None:
    lc = sealing_now
    lease = request_lease(lc, "logs_read")
    try:
        with lease_conn(lc, lease) as as_lease, lc.login(REQUESTER) as as_requester, \
                lc.login(COLLECTOR) as as_collector:
            for conn in (as_lease, as_requester, as_collector):
                for statement in ("SELECT * FROM jit_data.session_log",
                                  "SELECT jit_data._read_log('x.json', 0, 10)",
                                  "SELECT * FROM pg_ls_logdir()",
                                  "SELECT pg_read_binary_file('global/1260', 0, 10, true)"):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(statement)
            for conn in (as_lease, as_requester):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT jit.collect_session_logs()")
    finally:
        end_lease(lc, lease)


def test_an_unreadable_log_or_a_line_that_is_not_json_is_said_not_dropped(sealing_now: LogsCluster) -> None:
    lc = sealing_now
    logdir = lc.cluster.datadir / "log"
    junk = logdir / "zz-not-a-log.json"
    junk.write_text('{"timestamp": "2026-01-01 00:00:00 UTC", "user": "x"}\nnot json at all\n')
    try:
        result = run(lc, COLLECTOR, "sessions", "collect")
        assert result.exit_code == 1, result.output
        assert "1 log line(s) did not parse as JSON" in result.output
        with lc.superuser() as conn:
            kept = conn.execute("SELECT unparsed FROM jit_data.session_log_files WHERE file = %s",
                                (junk.name,)).fetchone()
        assert kept == (1,)   # counted where an operator can see it, too
    finally:
        junk.unlink()
    with lc.superuser() as conn:
        conn.execute("UPDATE jit_data.session_log_config SET log_directory = 'no_such_dir'")
        conn.execute("SELECT 'new lines for the collector to read'")
    time.sleep(0.5)   # the logging collector writes them to the file
    try:
        result = run(lc, COLLECTOR, "sessions", "collect")
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert any(line.startswith("cannot read the server's log:") and "(retrying)" in line
                   for line in lines)
        assert "Traceback" not in result.output
    finally:
        with lc.superuser() as conn:
            conn.execute("UPDATE jit_data.session_log_config SET log_directory = 'log'")
    assert run(lc, COLLECTOR, "sessions", "collect").exit_code == 0


# -- the option through the operator's commands ----------------------------------------------


def test_profile_add_set_list_and_apply_carry_log_statements(sealing_now: LogsCluster,
                                                             tmp_path: Path) -> None:
    lc = sealing_now
    added = run(lc, OPERATOR, "profile", "add", "logs_cli", "--grant", "jit_read", "--log-statements", "ddl")
    assert added.exit_code == 0 and "ddl" in added.output, added.output
    changed = run(lc, OPERATOR, "profile", "set", "logs_cli", "--log-statements", "mod")
    assert changed.exit_code == 0 and "mod" in changed.output, changed.output
    kept = run(lc, OPERATOR, "profile", "set", "logs_cli", "--ttl", "10m")
    assert "mod" in kept.output
    bad = run(lc, OPERATOR, "profile", "set", "logs_cli", "--log-statements", "everything")
    assert bad.exit_code == 1 and "log_statements everything" in bad.output and "Traceback" not in bad.output
    listed = run(lc, OPERATOR, "profile", "list", "--json")
    doc = json.loads(listed.output)
    assert doc["profiles"]["logs_cli"]["log_statements"] == "mod"
    assert doc["profiles"]["logs_read"]["log_statements"] == "all"
    saved = tmp_path / "profiles.json"
    saved.write_text(listed.output)
    again = run(lc, OPERATOR, "apply", str(saved))
    assert again.exit_code == 0 and again.output.strip() == "no changes", again.output
    doc["profiles"]["logs_cli"]["log_statements"] = "all"
    saved.write_text(json.dumps(doc))
    applied = run(lc, OPERATOR, "apply", str(saved))
    assert applied.exit_code == 0 and "log_statements mod → all" in applied.output, applied.output
    assert run(lc, OPERATOR, "profile", "rm", "logs_cli").exit_code == 0


# -- a server restart in the middle of a lease ------------------------------------------------


def test_a_lease_across_a_server_restart_loses_and_repeats_nothing(sealing_now: LogsCluster) -> None:
    lc = sealing_now
    lease = request_lease(lc, "logs_read")
    with lease_conn(lc, lease) as conn:
        conn.execute("SELECT 'before the restart'")
    assert run(lc, COLLECTOR, "sessions", "collect").exit_code == 0
    pg_ctl = str(lc.cluster.bindir / "pg_ctl")
    command = [pg_ctl, "-D", str(lc.cluster.datadir), "-l", str(lc.cluster.logfile), "-w", "-t", "60",
               "restart"]
    restart = subprocess.run(_as_server_user(command), capture_output=True, text=True, check=False)
    assert restart.returncode == 0, restart.stderr
    with lease_conn(lc, lease) as conn:
        conn.execute("SELECT 'after the restart'")
    end_lease(lc, lease)
    collect_until_sealed(lc, lease)
    mine = lines_of(lc, lease)
    assert mine.count("statement: SELECT 'before the restart'") == 1
    assert mine.count("statement: SELECT 'after the restart'") == 1
    assert _verify(lc).exit_code == 0


# -- pgaudit instead of log_statement ---------------------------------------------------------


def test_pgaudit_lines_are_collected_where_pgaudit_is_loaded(sealing_now: LogsCluster) -> None:
    lc = sealing_now
    if not lc.pgaudit:
        pytest.skip("pgaudit is not installed for this PostgreSQL (the embedded 18 has none)")
    chosen = run(lc, OPERATOR, "profile", "set", "logs_write", "--log-statements", "pgaudit:read,write")
    assert chosen.exit_code == 0, chosen.output
    try:
        lease = request_lease(lc, "logs_write")
        with lease_conn(lc, lease) as conn:
            conn.execute("SELECT owner FROM accounts WHERE id = 2")
        end_lease(lc, lease)
        collect_until_sealed(lc, lease)
        audit = [m for m in lines_of(lc, lease) if m.startswith("AUDIT: ")]
        assert any("SELECT owner FROM accounts" in m for m in audit), lines_of(lc, lease)
        out = run(lc, OPERATOR, "session", lease.rolname).output
        assert "AUDIT: SESSION" in out and "pgaudit:read,write" in out
    finally:
        run(lc, OPERATOR, "profile", "set", "logs_write", "--log-statements", "all")
