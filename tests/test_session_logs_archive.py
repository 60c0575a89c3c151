"""Retention of session logs: ``sessions archive`` moves the lines of sealed leases that ended
before a date to a file that verifies on its own, and the server removes them (jit_archiver
only), leaving ``audit --verify`` passing on what stays.  Against the session-log cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.session_logs import (
    OPERATOR,
    LeaseLogin,
    LogsCluster,
    _make_login,
    end_lease,
    lease_conn,
    request_lease,
)
from tests.test_session_logs_collect import collect_until_sealed, lines_of, run, sealing_now  # noqa: F401

ARCHIVER = "logs_archiver"


@pytest.fixture(scope="module")
def archiver(sealing_now: LogsCluster) -> str:  # noqa: F811
    with sealing_now.superuser() as conn:
        sealing_now.passwords[ARCHIVER] = _make_login(conn, ARCHIVER, "jit_admin")
        conn.execute(f"GRANT jit_archiver TO {ARCHIVER}")
    return ARCHIVER


def worked_lease(lc: LogsCluster, statement: str, days_ago: int) -> LeaseLogin:
    """A lease that ran ``statement``, ended, sealed, and (as if) ended ``days_ago`` days ago."""
    lease = request_lease(lc, "logs_read", reason=f"archive test {days_ago}")
    with lease_conn(lc, lease) as conn:
        conn.execute(statement.encode())
    end_lease(lc, lease)
    collect_until_sealed(lc, lease)
    with lc.superuser() as conn:
        conn.execute("UPDATE jit_data.leases SET ended_at = ended_at - make_interval(days => %s)"
                     " WHERE id = %s", (days_ago, lease.lease_id))
    return lease


@pytest.fixture(scope="module")
def leases(sealing_now: LogsCluster) -> Iterator[tuple[LeaseLogin, LeaseLogin]]:  # noqa: F811
    old = worked_lease(sealing_now, "SELECT 'old work' AS a, 'ünïcode \u202e' AS b", 40)
    recent = worked_lease(sealing_now, "SELECT 'recent work'", 0)
    yield old, recent


def seal_of(lc: LogsCluster, lease: LeaseLogin) -> dict[str, object]:
    with lc.superuser() as conn:
        row = conn.execute("SELECT id, detail FROM jit_data.audit WHERE event = 'session'"
                           " AND (detail->>'lease_id')::bigint = %s", (lease.lease_id,)).fetchone()
    assert row is not None
    return {"id": row[0], **dict(row[1])}  # type: ignore[arg-type]


def test_archive_moves_old_sealed_lines_to_a_file_and_verify_passes_on_what_stays(
        sealing_now: LogsCluster, archiver: str, leases: tuple[LeaseLogin, LeaseLogin],  # noqa: F811
        tmp_path: Path) -> None:
    lc = sealing_now
    old, recent = leases
    before = lines_of(lc, old)
    assert any("old work" in m for m in before)
    target = tmp_path / "sessions-2026.jsonl"
    done = run(lc, archiver, "sessions", "archive", "--before", "30d", "--to", str(target))
    assert done.exit_code == 0, done.output
    assert f"archived {len(before)} session-log line(s) of 1 lease(s)" in done.output
    assert lines_of(lc, old) == [] and lines_of(lc, recent) != []
    verified = run(lc, OPERATOR, "audit", "--verify")
    assert verified.exit_code == 0 and "session logs intact" in verified.output, verified.output
    # the file on its own: one lease, its seal's count and digest, its lines
    records = [json.loads(line) for line in target.read_text().splitlines()]
    seal = seal_of(lc, old)
    lease_rec = next(r for r in records if r.get("type") == "lease")
    assert (lease_rec["lease_id"], lease_rec["seal_audit_id"], lease_rec["lines"], lease_rec["digest"]) == \
        (old.lease_id, seal["id"], seal["lines"], seal["digest"])
    assert [r["message"] for r in records if r.get("type") == "line"] == before
    assert target.stat().st_mode & 0o077 == 0
    intact = run(lc, OPERATOR, "sessions", "archive", "--verify", str(target))
    assert intact.exit_code == 0 and f"1 lease(s), {len(before)} line(s)" in intact.output
    # run again with the same file: nothing more to remove
    again = run(lc, archiver, "sessions", "archive", "--before", "30d", "--to", str(target))
    assert again.exit_code == 0 and "archived already: nothing to do" in again.output, again.output
    # lines put back behind the archive's back are caught
    with lc.superuser() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("INSERT INTO jit_data.session_log (session_id, line_num, lease_id, rolname, logged_at,"
                     " message, file) VALUES ('back.1', 1, %s, 'x', now(), 'statement: SELECT 3', 'x')",
                     (old.lease_id,))
    broken = run(lc, OPERATOR, "audit", "--verify")
    assert broken.exit_code == 1 and "its lines were archived, yet 1 are in the table" in broken.output
    with lc.superuser() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("DELETE FROM jit_data.session_log WHERE session_id = 'back.1'")


def test_an_edited_archive_file_fails_its_verify_in_one_line(tmp_path: Path) -> None:
    from pgcli_jit.admin import session_archive as sa

    hashed = [json.dumps(["s.1", n, 7, "jit_x", "2026-01-01T00:00:00.000000Z", "app", 1, None, "LOG",
                          "idle", f"statement: SELECT {n}", None]) for n in (1, 2)]
    rows = [(7, "jit_x", "alice", "read", 99, 2, sa.digest_of(hashed), h) for h in hashed]
    path = tmp_path / "a.jsonl"
    found = sa.write(path, sa.header(database="app", before="x"), sa.records(rows))
    assert found is not None and found.leases == [(7, sa.digest_of(hashed))] and found.lines == 2
    text = path.read_text()
    for bad, says in ((text.replace("SELECT 2", "SELECT 9", 1), "the line was edited"),
                      ("\n".join(line for line in text.splitlines() if "SELECT 1" not in line) + "\n",
                       "lines were deleted or added")):
        broken = tmp_path / "b.jsonl"
        broken.write_text(bad)
        with pytest.raises(sa.SessionArchiveError, match=says):
            sa.verify(broken)


def test_lines_that_no_longer_match_their_seal_are_never_archived(
        sealing_now: LogsCluster, archiver: str, tmp_path: Path) -> None:  # noqa: F811
    lc = sealing_now
    lease = worked_lease(lc, "SELECT 'tampered later'", 50)
    statement = next(m for m in lines_of(lc, lease) if "tampered later" in m)
    edit = ("UPDATE jit_data.session_log SET message = %s WHERE lease_id = %s AND message = %s")
    with lc.superuser() as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(edit, ("statement: SELECT 1", lease.lease_id, statement))
    kept = lines_of(lc, lease)
    target = tmp_path / "t.jsonl"
    try:
        result = run(lc, archiver, "sessions", "archive", "--before", "30d", "--to", str(target))
        assert result.exit_code == 1, result.output
        assert "nothing written or removed" in result.output
        assert "do not match its digest: a line was edited" in result.output, result.output
        assert lines_of(lc, lease) == kept and not target.exists()
    finally:
        with lc.superuser() as conn, conn.transaction():   # as it was, for the other tests
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(edit, (statement, lease.lease_id, "statement: SELECT 1"))


def test_only_an_archiver_removes_lines_and_the_table_stays_append_only(
        sealing_now: LogsCluster, tmp_path: Path) -> None:  # noqa: F811
    lc = sealing_now
    result = run(lc, OPERATOR, "sessions", "archive", "--before", "30d", "--to", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 1 and "only a login in jit_archiver may" in result.output
    assert not (tmp_path / "o.jsonl").exists()
    with lc.superuser() as conn:
        conn.execute("SELECT set_config('jit.session_archive', pg_current_xact_id()::text, false)")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM jit_data.session_log")
    with lc.login(OPERATOR) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT jit.session_log_archive(ARRAY[1]::bigint[], ARRAY['x'],"
                     " now() - interval '30 days')")


RAISED = "PL/pgSQL function inline_code_block line 1 at RAISE"


def test_a_line_raised_inside_a_function_keeps_its_context_in_the_archive(tmp_path: Path) -> None:
    """The server hashes a line's context only when it has one (a message a lease raised
    inside a function): such lines are archived with it, verify, and an edit to it is caught."""
    from pgcli_jit.admin import session_archive as sa

    plain = json.dumps(["s.1", 1, 7, "jit_x", "2026-01-01T00:00:00.000000Z", "app", 1, None, "LOG",
                        "idle", "statement: DO $$ ... $$", None])
    raised = json.dumps(["s.1", 2, 7, "jit_x", "2026-01-01T00:00:00.000000Z", "app", 1, None, "LOG",
                         "DO", "statement: SELECT 1", None, RAISED])
    hashed = [plain, raised]
    rows = [(7, "jit_x", "alice", "read", 99, 2, sa.digest_of(hashed), h) for h in hashed]
    path = tmp_path / "a.jsonl"
    found = sa.write(path, sa.header(database="app", before="x"), sa.records(rows))
    assert found is not None and found.lines == 2
    assert sa.verify(path).lines == 2
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r.get("context") for r in records if r.get("type") == "line"] == [None, RAISED]
    broken = tmp_path / "b.jsonl"
    broken.write_text(path.read_text().replace('"context": "PL/pgSQL', '"context": "PL/pgSQL edited', 1))
    with pytest.raises(sa.SessionArchiveError, match="the line was edited"):
        sa.verify(broken)
