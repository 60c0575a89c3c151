"""pgcli-jit-admin against a real scram-sha-256 cluster: setup, profiles, leases, reap, audit.

The operator is ``ops``, a login in ``jit_admin`` whose password libpq finds in the
pgpass file.  A fresh database per test module keeps the audit chain of these tests
apart from the rest of the suite (roles are cluster-wide, so names here are unique).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgcli_jit import server
from pgcli_jit.admin import main, reaper
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import make_login

ADMIN = Path(sys.executable).with_name("pgcli-jit-admin")
DB = "admin_db"
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture(scope="module")
def db(cluster: Cluster) -> str:
    """A database with the schema, the grant roles and an operator login."""
    cluster.execute(f"CREATE DATABASE {DB}")
    cluster.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1);", dbname=DB)
    with cluster.connect(DB) as conn:
        server.apply(conn)
        # grant roles of this database's own: a role with privileges in two databases is refused
        conn.execute("CREATE ROLE adm_read NOLOGIN; CREATE ROLE adm_write NOLOGIN IN ROLE adm_read;"
                     "GRANT SELECT ON ALL TABLES IN SCHEMA public TO adm_read;"
                     "GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO adm_write;"
                     "GRANT adm_read, adm_write TO jit_owner WITH ADMIN OPTION")
    make_login(cluster, "ops", member_of="jit_admin")
    make_login(cluster, "carol", member_of="jit_requester")
    return dsn(cluster, "ops")


def dsn(cluster: Cluster, user: str, dbname: str = DB) -> str:
    return f"host={cluster.host} port={cluster.port} dbname={dbname} user={user}"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ask(cluster: Cluster, profile: str, ttl: float | None = 60, reason: str = "INC-7 look",
        user: str = "carol") -> tuple[dict[str, object], str]:
    """What the postgres backend does, by hand: a verifier, and jit.request as the requester."""
    password = new_password()
    with psycopg.connect(dsn(cluster, user), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request(%s, make_interval(secs => %s), %s, %s)",
                           (profile, ttl, reason, scram_verifier(conn, password))).fetchone()
    assert row is not None
    return row[0], password


def connect_as(cluster: Cluster, name: str, password: str) -> Conn:
    return psycopg.connect(cluster.conninfo(DB, user=name, password=password), autocommit=True)


@pytest.fixture(scope="module")
def read_profile(db: str) -> str:
    result = run("profile", "add", "adm-read", "--grant", "adm_read", "--ttl", "1m", "--max-ttl", "5m",
                 "--dsn", db)
    assert result.exit_code == 0, result.output
    return "adm-read"


# -- setup ------------------------------------------------------------------------


def test_printed_setup_runs_in_psql_and_apply_is_idempotent(cluster: Cluster) -> None:
    """The real console script's output, piped into the real psql, installs the schema;
    --apply afterwards finds the version recorded and only refreshes the functions."""
    cluster.execute("CREATE DATABASE setup_db")
    script = subprocess.run([str(ADMIN), "setup"], capture_output=True, text=True, check=True).stdout
    assert "CREATE SCHEMA IF NOT EXISTS jit AUTHORIZATION jit_owner" in script
    psql = shutil.which("psql") or pytest.skip("psql not installed")
    env = {**os.environ, "PGPASSWORD": cluster.superpassword}
    subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn(cluster, cluster.superuser, "setup_db")],
                   input=script, text=True, env=env, check=True, capture_output=True)
    target = dsn(cluster, cluster.superuser, "setup_db")
    again = subprocess.run([str(ADMIN), "setup", "--apply", "--dsn", target],
                           capture_output=True, text=True, env=env, check=True).stdout
    assert "functions refreshed" in again and "001_schema" not in again
    with cluster.connect("setup_db") as conn:
        assert server.installed_version(conn) == server.latest_version()
        owner = conn.execute("select nspowner::regrole::text from pg_namespace where nspname = 'jit'"
                             ).fetchone()
        assert owner == ("jit_owner",)
        can_login = conn.execute("select rolcanlogin from pg_roles where rolname = 'jit_owner'").fetchone()
        assert can_login == (False,)
        public = conn.execute("select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
                              " where n.nspname = 'jit'"
                              " and has_function_privilege('public', p.oid, 'EXECUTE')"
                              ).fetchone()
        assert public == (0,)  # nothing callable by PUBLIC


def test_setup_without_superuser_is_one_line_and_changes_nothing(cluster: Cluster, db: str) -> None:
    cluster.execute("CREATE DATABASE setup_db2")
    result = CliRunner().invoke(main, ["setup", "--apply", "--dsn", dsn(cluster, "carol", "setup_db2")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    with cluster.connect("setup_db2") as conn:
        assert server.installed_version(conn) == 0


# -- profiles -----------------------------------------------------------------------


def test_profile_add_list_set_rm(db: str) -> None:
    added = run("profile", "add", "adm-tmp", "--grant", "adm_write", "--reason-required", "--dsn", db)
    assert added.exit_code == 0 and "adm-tmp" in added.output and "required" in added.output
    changed = run("profile", "set", "adm-tmp", "--max-ttl", "2h", "--dsn", db)
    assert changed.exit_code == 0 and "2h" in changed.output and "required" in changed.output
    listed = json.loads(run("profile", "list", "--json", "--dsn", db).output)["profiles"]
    assert listed["adm-tmp"]["max_ttl"] == "2h" and listed["adm-tmp"]["max_live"] == 5
    capped = run("profile", "set", "adm-tmp", "--max-live", "2", "--dsn", db)
    assert capped.exit_code == 0 and "2h" in capped.output  # the cap changed, nothing else
    listed = json.loads(run("profile", "list", "--json", "--dsn", db).output)["profiles"]
    assert listed["adm-tmp"]["max_live"] == 2
    assert run("profile", "set", "adm-tmp", "--max-live", "0", "--dsn", db).exit_code == 2
    assert run("profile", "add", "adm-tmp", "--grant", "adm_read", "--dsn", db).exit_code == 1
    assert run("profile", "rm", "adm-tmp", "--dsn", db).exit_code == 0
    gone = run("profile", "rm", "adm-tmp", "--dsn", db)
    assert gone.exit_code == 1 and "no profile adm-tmp" in gone.output


@pytest.mark.parametrize(("grant", "says"), [
    ("pg_read_all_data", "is a predefined role"),
    ("postgres", "SUPERUSER"),
    ("jit_admin", "may read or write the jit schema itself"),
    ("no_such_role", "does not exist"),
])
def test_dangerous_or_unknown_grant_roles_are_refused_by_the_server(db: str, grant: str, says: str) -> None:
    result = CliRunner().invoke(main, ["profile", "add", "adm-bad", "--grant", grant, "--dsn", db])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert __import__("re").search(says, result.output), result.output


def test_grant_role_without_admin_option_says_what_to_run(cluster: Cluster, db: str) -> None:
    cluster.execute("CREATE ROLE adm_plain NOLOGIN", dbname=DB)
    result = CliRunner().invoke(main, ["profile", "add", "adm-plain", "--grant", "adm_plain", "--dsn", db])
    assert result.exit_code == 1
    assert "GRANT adm_plain TO jit_owner WITH ADMIN OPTION" in result.output


def test_a_requester_cannot_change_profiles(cluster: Cluster, read_profile: str) -> None:
    result = CliRunner().invoke(main, ["profile", "set", read_profile, "--max-ttl", "100d",
                                       "--dsn", dsn(cluster, "carol")])
    assert result.exit_code == 1 and "permission denied" in result.output


# -- leases, reap ---------------------------------------------------------------------


def test_leases_shows_requester_reason_and_sessions(cluster: Cluster, db: str, read_profile: str) -> None:
    refused, _ = ask(cluster, read_profile, reason="INC-7 \x1b[2J look")
    assert refused["status"] == "denied"  # the server keeps escape sequences out of the trail
    answer, password = ask(cluster, read_profile, reason="INC-7 look")
    name = str(answer["rolname"])
    with connect_as(cluster, name, password):
        rows = json.loads(run("leases", "--json", "--dsn", db).output)
        mine = next(r for r in rows if r["rolname"] == name)
        assert mine["requester"] == "carol" and mine["sessions"] == 1 and mine["state"] == "live"
        table = run("leases", "--dsn", db).output
        assert name in table and "INC-7 look" in table
    with psycopg.connect(db, autocommit=True) as ops:
        ops.execute("SELECT jit.revoke(%s)", (name,))
        ops.execute("SELECT jit.finish(%s)", (name,))


def test_reap_ends_a_crashed_clients_sessions_and_drops_the_role(cluster: Cluster, db: str,
                                                                   read_profile: str) -> None:
    answer, password = ask(cluster, read_profile, ttl=1)
    name = str(answer["rolname"])
    session = connect_as(cluster, name, password)  # a client that never revokes
    time.sleep(1.2)
    result = run("reap", "--dsn", db)
    assert result.exit_code == 0, result.output
    # the sessions end with the expiry (VALID UNTIL already refuses the password), then the drop
    assert f"expired {name}: it can no longer log in; 1 session(s) ended" in result.output
    assert f"dropped {name}" in result.output
    with pytest.raises(psycopg.OperationalError):
        session.execute("select 1")
    with cluster.connect() as conn:
        assert conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone() is None
    assert run("reap", "-v", "--dsn", db).output.strip() == "nothing to reap"


def test_one_odd_row_never_stops_the_reaper_for_everyone(cluster: Cluster, db: str,
                                                         read_profile: str) -> None:
    odd, _ = ask(cluster, read_profile, ttl=1)
    fine, _ = ask(cluster, read_profile, ttl=1)
    # a superuser altered the role by hand: VALID UNTIL infinity, and it owns an object elsewhere
    cluster.execute(f"ALTER ROLE {odd['rolname']} VALID UNTIL 'infinity'")
    cluster.execute(f"CREATE SCHEMA odd_{odd['rolname']} AUTHORIZATION {odd['rolname']}", dbname="app")
    time.sleep(1.2)
    result = CliRunner().invoke(main, ["reap", "--dsn", db])
    assert result.exit_code == 1  # someone must look at it
    assert f"dropped {fine['rolname']}" in result.output
    assert f"{odd['rolname']}: kept" in result.output
    cluster.execute(f"DROP SCHEMA odd_{odd['rolname']}", dbname="app")


def test_reap_watch_ends_access_within_a_second_of_valid_until(cluster: Cluster, db: str,
                                                                 read_profile: str) -> None:
    """A client that was killed or hung: nothing on its side ends the session, the reaper must."""
    stop = threading.Event()
    seen: list[reaper.Outcome] = []
    watcher = threading.Thread(target=reaper.watch, args=(lambda: psycopg.connect(db, autocommit=True),
                                                          seen.append, stop), daemon=True)
    watcher.start()
    try:
        time.sleep(0.3)  # the reaper is asleep, waiting: the request's NOTIFY must wake it
        answer, password = ask(cluster, read_profile, ttl=3)
        name = str(answer["rolname"])
        with cluster.connect() as conn:
            valid_until = conn.execute("select rolvaliduntil from pg_roles where rolname = %s",
                                       (name,)).fetchone()[0].timestamp()  # type: ignore[index]
        session = connect_as(cluster, name, password)
        last_ok = None
        while time.time() < valid_until + 5:
            try:
                session.execute("select 1")
                last_ok = time.time()
            except psycopg.OperationalError:
                break
            time.sleep(0.02)
        assert last_ok is not None and last_ok - valid_until <= 1.0, last_ok - valid_until  # type: ignore[operator]
        assert any(o.rolname == name and o.action == "dropped" for o in seen) or _wait_dropped(seen, name)
    finally:
        stop.set()
        watcher.join(5)


def _wait_dropped(seen: list[reaper.Outcome], name: str) -> bool:
    deadline = time.time() + 3
    while time.time() < deadline:
        if any(o.rolname == name and o.action == "dropped" for o in seen):
            return True
        time.sleep(0.05)
    return False


# -- audit ---------------------------------------------------------------------------------


def test_audit_lists_events_and_verify_finds_an_edited_row(cluster: Cluster, db: str,
                                                            read_profile: str) -> None:
    answer, _ = ask(cluster, read_profile, reason="INC-8 audit me")
    with psycopg.connect(db, autocommit=True) as ops:
        ops.execute("SELECT jit.revoke(%s)", (answer["rolname"],))
    events = json.loads(run("audit", "--json", "--since", "1h", "--dsn", db).output)
    mine = [e for e in events if e["rolname"] == answer["rolname"]]
    assert {e["event"] for e in mine} == {"request", "revoke"}
    request = next(e for e in mine if e["event"] == "request")
    assert request["requester"] == "carol" and request["actor"] == "carol"
    assert request["reason"] == "INC-8 audit me" and request["client_addr"] == "127.0.0.1"
    assert next(e for e in mine if e["event"] == "revoke")["actor"] == "ops"
    ok = run("audit", "--verify", "--dsn", db)
    assert ok.exit_code == 0 and "intact" in ok.output
    # nobody but a superuser can touch it, and even then the chain shows it
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        psycopg.connect(db, autocommit=True).execute("DELETE FROM jit_data.audit")
    with cluster.connect(DB) as su:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            su.execute("UPDATE jit_data.audit SET reason = 'nothing to see' WHERE id = %s", (request["id"],))
        su.execute("SET session_replication_role = replica")  # a superuser bypasses the trigger
        su.execute("UPDATE jit_data.audit SET reason = 'nothing to see' WHERE id = %s", (request["id"],))
    broken = CliRunner().invoke(main, ["audit", "--verify", "--dsn", db])
    assert broken.exit_code == 1 and f"broken at row {request['id']}" in broken.output
    with cluster.connect(DB) as su:
        su.execute("SET session_replication_role = replica")
        su.execute("UPDATE jit_data.audit SET reason = 'INC-8 audit me' WHERE id = %s", (request["id"],))


def test_verify_finds_deleted_rows(cluster: Cluster, db: str, read_profile: str) -> None:
    ask(cluster, read_profile)
    ask(cluster, read_profile)
    with cluster.connect(DB) as su:
        su.execute("SELECT jit.chain_audit()")   # as the reaper does every pass
        su.execute("SET session_replication_role = replica")
        last = su.execute("SELECT max(id) FROM jit_data.audit").fetchone()[0]  # type: ignore[index]
        su.execute("CREATE TEMP TABLE keep AS SELECT * FROM jit_data.audit WHERE id >= %s - 1", (last,))
        su.execute("DELETE FROM jit_data.audit WHERE id = %s - 1", (last,))
        middle = CliRunner().invoke(main, ["audit", "--verify", "--dsn", db])
        assert middle.exit_code == 1 and f"broken at row {last}" in middle.output
        su.execute("DELETE FROM jit_data.audit WHERE id = %s", (last,))
        tail = CliRunner().invoke(main, ["audit", "--verify", "--dsn", db])
        assert tail.exit_code == 1 and "newest rows are missing" in tail.output
        su.execute("INSERT INTO jit_data.audit SELECT * FROM keep")
    assert run("audit", "--verify", "--dsn", db).exit_code == 0


# -- one line, never a traceback ------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["leases", "--dsn", "host=db password=hunter2"], "holds a password"),
    (["leases", "--dsn", "not a conninfo"], "is not a libpq conninfo"),
    (["profile", "add", "x", "--ttl", "soon", "--grant", "r", "--dsn", "host=x"], "--ttl"),
])
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2) and message in result.output
    assert "Traceback" not in result.output


def test_wrong_password_in_a_real_process_is_one_line(cluster: Cluster, db: str) -> None:
    env = {**os.environ, "PGPASSFILE": "/nonexistent", "PGPASSWORD": "wrong"}
    proc = subprocess.run([str(ADMIN), "leases", "--dsn", db], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: cannot connect") and proc.stderr.count("\n") == 1


def test_schema_not_installed_says_to_run_setup(cluster: Cluster, db: str) -> None:
    result = CliRunner().invoke(main, ["leases", "--dsn", dsn(cluster, "ops", "postgres")])
    assert result.exit_code == 1 and "setup --apply" in result.output
