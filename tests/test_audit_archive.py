"""Audit retention against a real cluster: ``audit archive`` moves old rows to a file that
verifies on its own, leaves a checkpoint ``audit --verify`` proves the rest of the chain
from, and only the server function removes rows; tampering with the file or with the table
after a checkpoint fails ``--verify`` in one line.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import Result

from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.server import statements
from tests.admin_db import admin_database, run

DB = "archive_db"


@pytest.fixture(scope="module")
def ops(cluster: Cluster) -> str:
    """A database of this module's own (its chain is this module's alone) and an operator."""
    return admin_database(
        cluster, DB, operator="arc_ops",
        roles_sql="DO $$ BEGIN IF to_regrole('arc_read') IS NULL THEN CREATE ROLE arc_read NOLOGIN;"
                  " END IF; END $$; GRANT arc_read TO jit_owner WITH ADMIN OPTION",
        logins=[("arc_ops", "jit_admin"),
                ("arc_ops", "jit_archiver"),     # setup grants it to no one
                ("arc_reaper", "jit_admin"),     # an operator that is no archiver
                ("arc_carol", "jit_requester")],
        profiles=[["arc", "--grant", "arc_read"]])


def events(dsn: str, n: int) -> None:
    """n audited changes, by the operator: profile_set rows."""
    for i in range(n):
        assert run("profile", "set", "arc", "--description", f"v{i}", "--dsn", dsn).exit_code == 0


#: every row written so far made older than the minimum retention, its chain hashed again from
#: the checkpoint, and the chain's head with it (as a superuser, the audit trigger off for this
#: transaction only)
AGE = """
DO $$
DECLARE
    a jit_data.audit;
    prev bytea := (SELECT hash FROM jit_data.audit_checkpoint);
BEGIN
    PERFORM jit.chain_audit();
    SET LOCAL session_replication_role = replica;
    UPDATE jit_data.audit SET at = at - jit._audit_min_retention() - interval '1 hour';
    FOR a IN SELECT * FROM jit_data.audit WHERE seq IS NOT NULL ORDER BY seq LOOP
        a.prev_hash := prev;
        UPDATE jit_data.audit SET prev_hash = prev, hash = jit._audit_digest(a) WHERE id = a.id
            RETURNING hash INTO prev;
    END LOOP;
    UPDATE jit_data.audit_head SET hash = prev WHERE prev IS NOT NULL;   -- the chainer's tip
END
$$
"""


def aged(cluster: Cluster) -> str:
    """A cut-off the server accepts (the minimum retention ago) after which every row written
    so far is older than it: what an archive of month-old rows sees, without the month."""
    with cluster.connect(DB) as su:
        su.execute(AGE)
        (cut,) = su.execute("SELECT clock_timestamp() - jit._audit_min_retention()"
                            " - interval '1 minute'").fetchone()  # type: ignore[misc]
    return str(cut.isoformat())


def now_iso() -> str:
    time.sleep(0.01)
    cut = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    return cut


def archive(dsn: str, before: str, to: Path) -> Result:
    return run("audit", "archive", "--before", before, "--to", str(to), "--dsn", dsn)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").splitlines(keepends=True)


def one_line_failure(result: Result, says: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and says in result.output, result.output


def test_archive_then_verify_the_file_and_the_table_from_the_checkpoint(
        cluster: Cluster, ops: str, tmp_path: Path) -> None:
    events(ops, 2)
    cut = aged(cluster)
    events(ops, 1)   # newer than the cut: stays
    first = tmp_path / "a1.jsonl"
    done = archive(ops, cut, first)
    assert done.exit_code == 0 and "archived" in done.output, done.output
    assert first.stat().st_mode & 0o077 == 0
    rows = [json.loads(x) for x in lines(first)[1:-1]]
    assert rows and all(r["at"] < cut for r in rows)
    assert {r["event"] for r in rows} == {"profile_set"}
    with cluster.connect(DB) as su:
        seq, digest = su.execute(statements.AUDIT_CHECKPOINT).fetchone()  # type: ignore[misc]
        assert (seq, bytes(digest).hex()) == (rows[-1]["seq"], rows[-1]["hash"])
        left = su.execute("SELECT min(at) FROM jit_data.audit WHERE seq IS NOT NULL").fetchone()
        assert left is not None and left[0].isoformat() >= cut
        logged = su.execute("SELECT detail FROM jit_data.audit WHERE event = 'archive'").fetchone()
        assert logged is not None and logged[0]["through_seq"] == seq
    intact = run("audit", "--verify", "--dsn", ops)
    assert intact.exit_code == 0, intact.output
    assert f"from the archive checkpoint at seq {seq} on" in intact.output
    alone = run("audit", "--verify", "--file", str(first))
    assert alone.exit_code == 0 and f"{len(rows)} rows" in alone.output
    # a second archive continues the first: both files verify together, in order only
    second = tmp_path / "a2.jsonl"
    assert archive(ops, aged(cluster), second).exit_code == 0
    # the first archive's row went into the second file; the second's own row stays in the table
    assert [json.loads(x)["event"] for x in lines(second)[1:-1]][-1] == "archive"
    with cluster.connect(DB) as su:
        kept = su.execute("SELECT detail->>'after_seq' FROM jit_data.audit WHERE event = 'archive'"
                          ).fetchall()
        assert kept == [(str(seq),)]
    assert run("audit", "--verify", "--file", str(first), "--file", str(second)).exit_code == 0
    one_line_failure(run("audit", "--verify", "--file", str(second), "--file", str(first)),
                     "does not continue")
    assert run("audit", "--verify", "--dsn", ops).exit_code == 0
    nothing = archive(ops, "2000-01-01", tmp_path / "none.jsonl")
    assert nothing.exit_code == 0 and "No audit rows older than" in nothing.output
    assert not (tmp_path / "none.jsonl").exists()


@pytest.mark.parametrize(("tamper", "says"), [
    ("edit a field", "fields other than the text its hash covers"),
    ("edit the hashed text", "does not match its hash"),
    ("delete the first row", "does not link to the line before"),
    ("delete a middle row", "does not link to the line before"),
    ("delete the last row", "the end line says"),
    ("insert a row", "does not link to the line before"),
    ("cut the end off", "stops before its end line"),
])
def test_a_tampered_archive_file_fails_verify_in_one_line(cluster: Cluster, ops: str, tmp_path: Path,
                                                          tamper: str, says: str) -> None:
    events(ops, 3)
    path = tmp_path / "a.jsonl"
    assert archive(ops, aged(cluster), path).exit_code == 0
    text = lines(path)
    assert len(text) >= 5   # header, three rows at least, end
    if tamper == "edit a field":
        row = json.loads(text[2])
        row["reason"] = "nothing to see"
        text[2] = json.dumps(row) + "\n"
    elif tamper == "edit the hashed text":
        row = json.loads(text[2])
        row["hashed"] = row["hashed"].replace("profile_set", "profile_drop")
        row["event"] = "profile_drop"
        text[2] = json.dumps(row) + "\n"
    elif tamper == "delete the first row":
        del text[1]
    elif tamper == "delete a middle row":
        del text[2]
    elif tamper == "delete the last row":
        del text[-2]
    elif tamper == "insert a row":
        text.insert(3, text[2])
    else:
        del text[-1]
    path.write_text("".join(text), encoding="ascii")
    one_line_failure(run("audit", "--verify", "--file", str(path)), says)


def test_tampering_with_the_table_after_a_checkpoint_fails_verify(
        cluster: Cluster, ops: str, tmp_path: Path) -> None:
    events(ops, 2)
    path = tmp_path / "a.jsonl"
    assert archive(ops, aged(cluster), path).exit_code == 0
    events(ops, 2)
    assert run("audit", "--verify", "--dsn", ops).exit_code == 0
    archived = json.loads(lines(path)[-2])
    with cluster.connect(DB) as su:
        su.execute("SELECT jit.chain_audit()")
        su.execute("SET session_replication_role = replica")   # a superuser bypasses the trigger
        first = su.execute("SELECT id FROM jit_data.audit WHERE seq IS NOT NULL ORDER BY seq LIMIT 1"
                           ).fetchone()[0]  # type: ignore[index]
        su.execute("CREATE TEMP TABLE keep AS SELECT * FROM jit_data.audit WHERE id = %s", (first,))
        su.execute("DELETE FROM jit_data.audit WHERE id = %s", (first,))
        one_line_failure(run("audit", "--verify", "--dsn", ops), "does not link to the archive checkpoint")
        su.execute("INSERT INTO jit_data.audit SELECT * FROM keep")
        su.execute("UPDATE jit_data.audit SET reason = 'nothing to see' WHERE id = %s", (first,))
        one_line_failure(run("audit", "--verify", "--dsn", ops), "the row was edited")
        su.execute("UPDATE jit_data.audit SET reason = NULL WHERE id = %s", (first,))
        assert run("audit", "--verify", "--dsn", ops).exit_code == 0
        # an archived row put back
        su.execute("INSERT INTO jit_data.audit (id, at, event, actor, detail, prev_hash, hash, seq)"
                   " VALUES (%s, now(), %s, 'x', '{}', %s, %s, %s)",
                   (archived["id"], archived["event"], bytes.fromhex(archived["prev_hash"]),
                    bytes.fromhex(archived["hash"]), archived["seq"]))
        one_line_failure(run("audit", "--verify", "--dsn", ops), "a row was inserted")
        su.execute("DELETE FROM jit_data.audit WHERE id = %s", (archived["id"],))
    assert run("audit", "--verify", "--dsn", ops).exit_code == 0


def test_only_the_archive_function_removes_rows_and_never_unchained_ones(cluster: Cluster, ops: str) -> None:
    events(ops, 1)
    with psycopg.connect(ops, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM jit_data.audit")
    carol = ops.replace("user=arc_ops", "user=arc_carol")
    with psycopg.connect(carol, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT jit.audit_archive(NULL, NULL, 1, '\\x00', 1, now())")
    refused = run("audit", "archive", "--before", "1s", "--to", "/nonexistent/x", "--dsn", carol)
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    with cluster.connect(DB) as su:
        su.execute("SELECT jit.chain_audit()")
        (seq, row_id, digest), (_, newer_id, _) = su.execute(
            "SELECT seq, id, hash FROM jit_data.audit WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 2"
        ).fetchall()[::-1]
        # a superuser who is not jit_owner: refused, checkpoint or not
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"), su.transaction():
            su.execute("DELETE FROM jit_data.audit WHERE id = %s", (row_id,))
        with su.transaction():   # as jit_owner, with a checkpoint of this transaction
            su.execute("SET LOCAL ROLE jit_owner")
            su.execute("INSERT INTO jit_data.audit_checkpoint AS c (seq, id, hash, archived)"
                       " VALUES (%s, %s, %s, 1) ON CONFLICT (one) DO UPDATE SET seq = excluded.seq,"
                       " id = excluded.id, hash = excluded.hash, xact = pg_current_xact_id()",
                       (seq, row_id, digest))
            su.execute("SELECT jit._audit('test', NULL, NULL, NULL, NULL, NULL)")   # unchained
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"), su.transaction():
                su.execute("DELETE FROM jit_data.audit WHERE hash IS NULL")
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"), su.transaction():
                su.execute("DELETE FROM jit_data.audit WHERE id = %s", (newer_id,))   # past the checkpoint
            with su.transaction():   # what jit.audit_archive does: let through
                su.execute("DELETE FROM jit_data.audit WHERE id = %s", (row_id,))
            raise psycopg.Rollback()
        # a checkpoint written by an earlier transaction lets nothing through
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"), su.transaction():
            su.execute("SET LOCAL ROLE jit_owner")
            su.execute("DELETE FROM jit_data.audit WHERE id = %s", (row_id,))
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"), su.transaction():
            su.execute("TRUNCATE jit_data.audit")


def test_a_broken_chain_is_never_archived(cluster: Cluster, ops: str, tmp_path: Path) -> None:
    events(ops, 2)
    cut = aged(cluster)
    with cluster.connect(DB) as su:
        su.execute("SELECT jit.chain_audit()")
        su.execute("SET session_replication_role = replica")
        victim = su.execute("SELECT id FROM jit_data.audit WHERE seq IS NOT NULL ORDER BY seq LIMIT 1"
                            ).fetchone()[0]  # type: ignore[index]
        su.execute("UPDATE jit_data.audit SET actor = 'someone else' WHERE id = %s", (victim,))
        try:
            path = tmp_path / "broken.jsonl"
            refused = archive(ops, cut, path)
            one_line_failure(refused, "nothing written or removed")
            assert not path.exists()
            kept = su.execute("SELECT count(*) FROM jit_data.audit WHERE id = %s", (victim,)).fetchone()
            assert kept == (1,)
        finally:
            su.execute("UPDATE jit_data.audit SET actor = 'arc_ops' WHERE id = %s", (victim,))
    assert run("audit", "--verify", "--dsn", ops).exit_code == 0


def test_a_run_stopped_between_the_file_and_the_removal_runs_again(
        cluster: Cluster, ops: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events(ops, 2)
    path = tmp_path / "a.jsonl"
    cut = aged(cluster)
    with monkeypatch.context() as m:   # the file is written, then the removal never happens
        m.setattr(statements, "AUDIT_ARCHIVE", "SELECT 1/0, %s, %s, %s, %s, %s, %s")
        assert archive(ops, cut, path).exit_code == 1
    assert run("audit", "--verify", "--file", str(path)).exit_code == 0
    events(ops, 1)
    again = archive(ops, cut, path)   # the rows are still in the table: written again, then removed
    assert again.exit_code == 0 and "archived" in again.output, again.output
    done = archive(ops, cut, path)    # the run that finished: said, not redone
    assert done.exit_code == 0 and "nothing to do" in done.output
    assert run("audit", "--verify", "--dsn", ops).exit_code == 0
    events(ops, 1)
    other = archive(ops, now_iso(), path)   # a finished archive's file is never overwritten
    assert other.exit_code == 0 and "nothing to do" in other.output
    (tmp_path / "notes.txt").write_text("mine\n", encoding="ascii")
    one_line_failure(archive(ops, now_iso(), tmp_path / "notes.txt"), "is not an intact archive")
    assert (tmp_path / "notes.txt").read_text(encoding="ascii") == "mine\n"


def test_an_operator_that_is_not_an_archiver_cannot_remove_audit_rows(
        cluster: Cluster, ops: str, tmp_path: Path) -> None:
    # the reaper and monitoring logins are in jit_admin: they could archive the trail away
    events(ops, 1)
    cut = aged(cluster)
    reaper = ops.replace("user=arc_ops", "user=arc_reaper")
    with psycopg.connect(reaper, autocommit=True) as conn:
        for call in ("SELECT * FROM jit.audit_archive_rows(%s)",
                     "SELECT jit.audit_archive(NULL, NULL, 1, '\\x00', 1, %s)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(call, (cut,))
    refused = archive(reaper, cut, tmp_path / "r.jsonl")
    one_line_failure(refused, "jit_archiver")
    assert "GRANT jit_archiver" in refused.output and not (tmp_path / "r.jsonl").exists()
    with cluster.connect(DB) as su:   # a NOLOGIN role of its own, granted by no setup
        login = su.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'jit_archiver'").fetchone()
        assert login == (False,)
        # the cluster's other tests may grant it to logins of their own: what matters here is
        # that this module's archiver holds it, its reaper does not, and no broker role does
        members = {str(m) for (m,) in su.execute(
            "SELECT member::regrole::text FROM pg_auth_members"
            " WHERE roleid = 'jit_archiver'::regrole").fetchall()}
        assert "arc_ops" in members and "arc_reaper" not in members, members
        assert not members & {"jit_owner", "jit_admin", "jit_requester", "jit_lease"}, members


@pytest.mark.parametrize("before", ["'infinity'", "now()", "now() + interval '1 year'",
                                    "now() - interval '23 hours'"])
def test_an_archive_never_covers_the_last_day(ops: str, before: str, tmp_path: Path) -> None:
    events(ops, 1)
    with psycopg.connect(ops, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="at least 1 day ago"):
            conn.execute(f"SELECT * FROM jit.audit_archive_rows({before})")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="at least 1 day ago"):
            conn.execute(f"SELECT jit.audit_archive(NULL, NULL, 1, '\\x00', 1, {before})")
    one_line_failure(archive(ops, "1h", tmp_path / "a.jsonl"), "at least 1 day ago")
    assert not list(tmp_path.iterdir())


def test_an_archive_in_the_transaction_of_the_acts_it_would_hide_leaves_them(
        cluster: Cluster, ops: str) -> None:
    # BEGIN; an audited act; chain_audit (it chains the caller's own rows); archive; COMMIT
    events(ops, 1)
    cut = aged(cluster)
    with psycopg.connect(ops) as conn:
        conn.execute("SELECT jit.profile_set('arc', ARRAY['arc_read'], '1 hour', '1 day', 'jit_requester',"
                     " false, NULL, 'hidden?')")
        conn.execute("SELECT jit.chain_audit()")
        (mine,) = conn.execute("SELECT max(seq) FROM jit_data.audit").fetchone()  # type: ignore[misc]
        rows = conn.execute("SELECT * FROM jit.audit_archive_rows(%s)", (cut,)).fetchall()
        assert rows and all(seq < mine for seq, *_ in rows)
        after, after_hash = conn.execute(statements.AUDIT_CHECKPOINT).fetchone() or (None, None)
        tip = conn.execute("SELECT hash FROM jit_data.audit WHERE seq = %s", (mine,)).fetchone()
        assert tip is not None
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="may not be archived now"):
            conn.execute("SELECT jit.audit_archive(%s, %s, %s, %s, %s, %s)",
                         (after, after_hash, mine, tip[0], len(rows) + 1, cut))
        conn.rollback()
    assert run("audit", "--verify", "--dsn", ops).exit_code == 0


def test_an_archive_never_writes_through_or_over_an_existing_file(tmp_path: Path) -> None:
    from pgcli_jit.admin import archive as archive_file
    from pgcli_jit.core.errors import JitError

    victim = tmp_path / "victim"
    victim.write_text("keep\n", encoding="ascii")
    hashed = '[1, "x", "e", null, null, null, "a", null, null, null, {}]'
    row = archive_file.row_line(1, None, hashlib.sha256(hashed.encode()).digest(), hashed)
    target = tmp_path / "a.jsonl"
    (tmp_path / ".a.jsonl.partial").symlink_to(victim)   # planted where the temporary file goes
    with pytest.raises(JitError, match="partial exists"):
        archive_file.write(target, archive_file.header(None, None), [row])
    assert victim.read_text(encoding="ascii") == "keep\n" and not target.exists()
    (tmp_path / ".a.jsonl.partial").unlink()
    target.symlink_to(victim)   # created after the command looked: linked, never replaced
    with pytest.raises(JitError, match="never overwrites"):
        archive_file.write(target, archive_file.header(None, None), [row])
    assert victim.read_text(encoding="ascii") == "keep\n" and target.is_symlink()
    assert not (tmp_path / ".a.jsonl.partial").exists()
