"""An operator's revoke with a reason, ``pending --all``, ``health`` and the reaper's log lines,
against a real scram-sha-256 cluster.

The operator is ``opsy`` (a login in ``jit_admin``), the requester ``dave``, the approver
``lena`` (in ``opr_leads``).  A database of its own keeps this module's audit chain, reaper
passes and requests apart from the rest of the suite.
"""

from __future__ import annotations

import functools
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

import psycopg
import pytest
from click.testing import Result

from pgcli_jit.admin import reaper
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from tests import admin_db
from tests.admin_db import admin_database, run

ADMIN = Path(sys.executable).with_name("pgcli-jit-admin")
DB = "opr_db"
Conn = psycopg.Connection[tuple[object, ...]]
ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d reaper: ")


dsn = functools.partial(admin_db.dsn, db=DB)


@pytest.fixture(scope="module")
def ops(cluster: Cluster) -> str:
    """The database with the schema, a grant role, profiles (one with approvers) and logins."""
    return admin_database(
        cluster, DB, operator="opsy",
        roles_sql="CREATE TABLE t (x int); INSERT INTO t VALUES (1);"
                  "CREATE ROLE opr_read NOLOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO opr_read;"
                  "GRANT opr_read TO jit_owner WITH ADMIN OPTION; CREATE ROLE opr_leads NOLOGIN",
        logins=[("opsy", "jit_admin"), ("dave", "jit_requester"), ("lena", "opr_leads")],
        profiles=[["opr-read", "--grant", "opr_read", "--ttl", "5m"],
                  ["opr-4eyes", "--grant", "opr_read", "--approvers", "opr_leads"]])


def ask(cluster: Cluster, profile: str = "opr-read", ttl: float = 300,
        reason: str = "INC-9 look") -> tuple[dict[str, object], str]:
    """What the postgres backend does, by hand, as dave."""
    password = new_password()
    with psycopg.connect(dsn(cluster, "dave"), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request(%s, make_interval(secs => %s), %s, %s)",
                           (profile, ttl, reason, scram_verifier(conn, password))).fetchone()
    assert row is not None
    return row[0], password


def as_lease(cluster: Cluster, answer: dict[str, object], password: str) -> Conn:
    return psycopg.connect(cluster.conninfo(DB, user=str(answer["rolname"]), password=password),
                           autocommit=True)


def audit_rows(cluster: Cluster, rolname: str) -> list[tuple[object, ...]]:
    with cluster.connect(DB) as su:
        return su.execute("SELECT event, actor, reason, detail FROM jit_data.audit WHERE rolname = %s"
                          " ORDER BY id", (rolname,)).fetchall()


def role_exists(cluster: Cluster, rolname: str) -> bool:
    with cluster.connect() as su:
        return su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (rolname,)).fetchone() is not None


# -- revoke with a reason ------------------------------------------------------------------


def test_an_operator_revokes_a_live_lease_with_a_reason(cluster: Cluster, ops: str) -> None:
    answer, password = ask(cluster, reason="INC-9 look")
    name = str(answer["rolname"])
    session = as_lease(cluster, answer, password)   # a client that never revokes
    result = run("revoke", name, "--reason", "INC-9 credentials pasted in chat", "--dsn", ops)
    assert result.exit_code == 0, result.output
    assert result.output == (f"Revoked lease {answer['lease_id']} ({name}, dave's opr-read): it can no "
                             "longer log in, its sessions are ended and its role is dropped.\n")
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    assert not role_exists(cluster, name)
    revoked = [r for r in audit_rows(cluster, name) if r[0] == "revoke"]
    assert len(revoked) == 1
    _, actor, reason, detail = revoked[0]
    assert (actor, reason) == ("opsy", "INC-9 credentials pasted in chat")
    assert detail["by"] == "operator" and detail["requester_reason"] == "INC-9 look"  # type: ignore[index]
    again = run("revoke", name, "--reason", "twice", "--dsn", ops)
    assert again.exit_code == 0 and "had already ended (revoke); its role is gone" in again.output


def test_revoke_by_lease_id_and_the_requesters_view_says_revoked(cluster: Cluster, ops: str) -> None:
    answer, _ = ask(cluster)
    name, lease_id = str(answer["rolname"]), str(answer["lease_id"])
    with psycopg.connect(ops, autocommit=True) as operator:   # step one only, as the CLI's first call
        step = operator.execute("SELECT jit.operator_revoke(%s, %s)", (lease_id, "INC-10 offboarding")
                                ).fetchone()[0]  # type: ignore[index]
    assert step["status"] == "revoked" and step["rolname"] == name
    with psycopg.connect(dsn(cluster, "dave"), autocommit=True) as requester:
        mine = [row for (row,) in requester.execute("SELECT jit.my_leases()") if row["rolname"] == name]
    # what the requester's shell polls: ended, by a revoke, before its role is dropped
    assert mine and mine[0]["status"] == "ended" and mine[0]["end_event"] == "revoke"
    finished = run("revoke", lease_id, "--reason", "INC-10 offboarding", "--dsn", ops)
    assert finished.exit_code == 0, finished.output
    assert "Finished lease" in finished.output and "it had ended already: revoke" in finished.output
    assert not role_exists(cluster, name)
    assert [r[0] for r in audit_rows(cluster, name)].count("revoke") == 1   # audited once


def test_a_requester_or_a_lease_cannot_call_the_operator_revoke(cluster: Cluster, ops: str) -> None:
    answer, password = ask(cluster)
    name = str(answer["rolname"])
    refused = run("revoke", name, "--reason", "mine now", "--dsn", dsn(cluster, "dave"))
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert "needs a login in jit_admin" in refused.output
    with as_lease(cluster, answer, password) as lease, pytest.raises(psycopg.errors.InsufficientPrivilege):
        lease.execute("SELECT jit.operator_revoke(%s, %s)", (name, "by myself"))
    # EXECUTE given to a requester by mistake: the server still refuses, and the refusal is audited
    with cluster.connect(DB) as su:
        su.execute("GRANT EXECUTE ON FUNCTION jit.operator_revoke(text, text) TO dave")
    try:
        with psycopg.connect(dsn(cluster, "dave"), autocommit=True) as dave:
            said = dave.execute("SELECT jit.operator_revoke(%s, %s)", (name, "mine now")).fetchone()[0]  # type: ignore[index]
    finally:
        with cluster.connect(DB) as su:
            su.execute("REVOKE EXECUTE ON FUNCTION jit.operator_revoke(text, text) FROM dave")
    assert said["status"] == "denied" and "jit_admin" in said["error"]
    with cluster.connect(DB) as su:
        denied = su.execute("SELECT actor, detail->>'lease' FROM jit_data.audit WHERE event = 'deny'"
                            " AND detail->>'why' LIKE 'operator revoke%' ORDER BY id DESC LIMIT 1").fetchone()
    assert denied == ("dave", name)
    assert role_exists(cluster, name) and [r[0] for r in audit_rows(cluster, name)] == ["request"]
    assert run("revoke", name, "--reason", "cleanup", "--dsn", ops).exit_code == 0


@pytest.mark.parametrize(("lease", "reason", "says"), [
    ("jit_nobody_0000000000", "why not", "no lease jit_nobody_0000000000 in this database"),
    ("999999", "why not", "no lease 999999 in this database"),
    ("LIVE", " ", "needs a reason"),
    ("LIVE", "line\nbreak", "no control characters"),
])
def test_revoke_refusals_are_one_line(cluster: Cluster, ops: str, lease: str, reason: str, says: str) -> None:
    answer, _ = ask(cluster)
    target = str(answer["rolname"]) if lease == "LIVE" else lease
    result = run("revoke", target, "--reason", reason, "--dsn", ops)
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert says in result.output
    assert role_exists(cluster, str(answer["rolname"]))
    assert run("revoke", str(answer["rolname"]), "--reason", "cleanup", "--dsn", ops).exit_code == 0


# -- pending --all ---------------------------------------------------------------------------


def test_pending_all_shows_every_waiting_request_to_operators_only(cluster: Cluster, ops: str) -> None:
    waiting, _ = ask(cluster, "opr-4eyes", reason="INC-11 needs eyes")
    assert waiting["status"] == "pending"
    rid = waiting["request_id"]
    assert "No requests waiting for you." in run("pending", "--dsn", ops).output  # opsy decides none
    assert str(rid) in run("pending", "--dsn", dsn(cluster, "lena")).output
    table = run("pending", "--all", "--dsn", ops)
    assert table.exit_code == 0, table.output
    header, *lines = table.output.splitlines()
    assert header.split()[-1] == "APPROVERS"
    mine = next(line for line in lines if line.startswith(f"{rid} "))
    assert "dave" in mine and "INC-11 needs eyes" in mine and mine.endswith("opr_leads")
    rows = json.loads(run("pending", "--all", "--json", "--dsn", ops).output)
    assert any(r["id"] == rid and r["approvers"] == "opr_leads" and r["needed"] == 1 for r in rows)
    refused = run("pending", "--all", "--dsn", dsn(cluster, "dave"))
    assert refused.exit_code == 1 and "needs a login in jit_admin" in refused.output
    with psycopg.connect(dsn(cluster, "dave"), autocommit=True) as dave:
        dave.execute("SELECT jit.cancel(%s)", (rid,))
    assert str(rid) not in run("pending", "--all", "--dsn", ops).output


# -- health ----------------------------------------------------------------------------------


def health(ops: str, *args: str) -> Result:
    return run("health", "--dsn", ops, *args)


def failures(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("FAIL")]


def collector_read(su: Conn) -> None:
    """A session-log collector's pass, as its stamp on the files it read: this cluster writes
    no jsonlog, and its profiles log statements (test_session_logs_health.py runs a real one)."""
    su.execute("INSERT INTO jit_data.session_log_files (file, read_to, size_seen) VALUES ('t.json', 0, 0)"
               " ON CONFLICT (file) DO UPDATE SET updated_at = clock_timestamp()")


@pytest.fixture
def superuser(cluster: Cluster, ops: str) -> Iterator[Conn]:
    with cluster.connect(DB) as su:
        collector_read(su)
        yield su


def test_health_says_the_reaper_never_ran_then_all_is_well(cluster: Cluster, ops: str) -> None:
    with cluster.connect(DB) as su:
        su.execute("DELETE FROM jit_data.reaper_runs")
        collector_read(su)
    never = health(ops)
    assert never.exit_code == 1
    assert failures(never) == ["FAIL  reaper: the reaper has never run in this database"]
    assert run("reap", "--dsn", ops).exit_code == 0
    fine = health(ops)
    assert fine.exit_code == 0, fine.output
    assert [line.split()[:2] for line in fine.output.splitlines()] == [
        ["ok", "reaper:"], ["ok", "leases:"], ["ok", "audit:"], ["ok", "grants:"], ["ok", "session"]]
    facts = json.loads(health(ops, "--json").output)
    assert facts["ok"] is True
    ran = next(c for c in facts["checks"] if c["check"] == "reaper")
    assert ran["detail"]["reaper"] == "opsy" and ran["detail"]["application_name"] == "pgcli-jit reaper"


def test_health_finds_an_expired_lease_the_reaper_has_not_ended(cluster: Cluster, ops: str,
                                                                   superuser: Conn) -> None:
    assert run("reap", "--dsn", ops).exit_code == 0
    answer, _ = ask(cluster)
    superuser.execute("UPDATE jit_data.leases SET expires_at = now() - interval '10 minutes'"
                      " WHERE rolname = %s", (answer["rolname"],))
    found = health(ops, "--max-reaper-age", "60")
    assert found.exit_code == 1
    assert failures(found) == [f"FAIL  leases: 1 lease(s) ended more than 60s ago still have their role: "
                               f"{answer['rolname']} (expired, not ended)"]
    assert run("reap", "--dsn", ops).exit_code == 0
    assert health(ops).exit_code == 0


def test_health_one_line_for_each_failure(cluster: Cluster, ops: str, superuser: Conn) -> None:
    """A stopped reaper, an edited audit row and a grant role made dangerous: three lines."""
    assert run("reap", "--dsn", ops).exit_code == 0
    time.sleep(1.2)
    first = superuser.execute("SELECT min(id) FROM jit_data.audit").fetchone()[0]  # type: ignore[index]
    superuser.execute("SET session_replication_role = replica")
    superuser.execute("UPDATE jit_data.audit SET reason = 'nothing to see' WHERE id = %s", (first,))
    superuser.execute("ALTER ROLE opr_read CREATEDB")
    try:
        broken = health(ops, "--max-reaper-age", "1")
        as_json = json.loads(health(ops, "--max-reaper-age", "1", "--json").output)
    finally:
        superuser.execute("ALTER ROLE opr_read NOCREATEDB")
        superuser.execute("UPDATE jit_data.audit SET reason = NULL WHERE id = %s", (first,))
    assert broken.exit_code == 1
    lines = failures(broken)
    assert len(lines) == 4, broken.output   # both profiles grant the role: one line each
    assert re.fullmatch(r"FAIL  reaper: the reaper last ran [\d.]+s ago \(login opsy, application_name "
                        r"'pgcli-jit reaper'\), more than 1s", lines[0]), lines[0]
    assert lines[1] == (f"FAIL  audit: audit chain broken at row {first}: its contents do not match its "
                        "hash: the row was edited")
    assert lines[2:] == [f"FAIL  grants: profile {p}: role opr_read has SUPERUSER, CREATEROLE, CREATEDB, "
                         "REPLICATION or BYPASSRLS" for p in ("opr-4eyes", "opr-read")]
    assert as_json["ok"] is False
    assert sorted({c["check"] for c in as_json["checks"] if not c["ok"]}) == ["audit", "grants", "reaper"]
    assert run("reap", "--dsn", ops).exit_code == 0
    assert health(ops).exit_code == 0, health(ops).output


def test_health_needs_an_operator(cluster: Cluster, ops: str) -> None:
    refused = run("health", "--dsn", dsn(cluster, "dave"))
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert "health needs a login in jit_admin" in refused.output


# -- the reaper's lines -------------------------------------------------------------------


def test_the_reaper_says_when_it_reconnects(cluster: Cluster, ops: str) -> None:
    stop = threading.Event()
    said: list[str] = []
    attempts = [0]

    def flaky() -> Conn:
        attempts[0] += 1
        if attempts[0] == 1:   # the server is away at first
            return psycopg.connect(ops.replace(f"port={cluster.port}", "port=1"), autocommit=True,
                                   connect_timeout=2)
        return psycopg.connect(ops, autocommit=True)

    def on_info(text: str) -> None:
        said.append(text)
        stop.set()

    watcher = threading.Thread(target=reaper.watch, args=(flaky, lambda _o: None, stop),
                               kwargs={"on_error": said.append, "on_info": on_info}, daemon=True)
    watcher.start()
    watcher.join(15)
    stop.set()
    assert said[0].startswith("reaper: ") and said[0].endswith("reconnecting in 1s")
    assert re.fullmatch(r"reaper: reconnected after \d+s", said[1]), said


def test_reap_watch_lines_start_with_an_iso_time(cluster: Cluster, ops: str) -> None:
    proc = subprocess.Popen([str(ADMIN), "reap", "--watch", "--dsn", ops], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    lines = err.splitlines()
    assert len(lines) == 2 and all(ISO_LINE.match(line) for line in lines), err
    assert lines[0].endswith("watching for expiries (Ctrl-C or SIGTERM to stop)")
    assert lines[1].endswith("reaper: stopped") and out == ""
