"""The reaper without a daemon: ``pgcli-jit-admin cron install`` on a cluster of this module's
with pg_cron loaded (scram-sha-256, background workers, as the operator guide says), and the
job alone ending a killed client's session.

pg_cron starts a job at the turn of a minute, so the first run is up to a minute away; the
module's tests share the cluster and its job.  Skipped where pg_cron is not installed for the
server under test (the embedded PostgreSQL 18 has no extensions).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgcli_jit import server
from pgcli_jit.admin import cron, main
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster, find_bindir, start_cluster
from pgcli_jit.server import statements
from tests.conftest import make_login

ADMIN = Path(sys.executable).with_name("pgcli-jit-admin")
DB = "cron_app"
#: the operator guide's postgresql.conf lines for pg_cron
CRON_SETTINGS = {
    "shared_preload_libraries": "'pg_cron'",
    "cron.database_name": "'postgres'",
    "cron.use_background_workers": "on",
}


def pg_cron_library() -> Path | None:
    """pg_cron.so for the server under test, or None."""
    bindir = find_bindir()
    real = (bindir / "initdb").resolve().parent
    for pg_config in (bindir / "pg_config", real / "pg_config"):
        if pg_config.exists():
            out = subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True,
                                 check=False).stdout.strip()
            lib = Path(out) / "pg_cron.so"
            return lib if lib.exists() else None
    lib = real.parent / "lib" / "pg_cron.so"
    return lib if lib.exists() else None


@pytest.fixture(scope="module")
def crony(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with pg_cron, a jit database with a profile, the reaper's login
    ``cr_reaper`` (no password: the job never authenticates) and a requester ``cr_req``."""
    if pg_cron_library() is None:
        pytest.skip("pg_cron is not installed for this PostgreSQL (the embedded 18 has none; "
                    "Debian: apt-get install postgresql-15-cron)")
    c = start_cluster(settings=CRON_SETTINGS)
    try:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")   # the guide's words
        c.execute(f"CREATE DATABASE {DB}")
        c.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1);", dbname=DB)
        with c.connect(DB) as conn:
            server.apply(conn)
            conn.execute("CREATE ROLE cr_read NOLOGIN; GRANT SELECT ON t TO cr_read;"
                         "GRANT cr_read TO jit_owner WITH ADMIN OPTION;"
                         "CREATE ROLE cr_reaper LOGIN IN ROLE jit_admin")
        make_login(c, "cr_req", member_of="jit_requester")
        make_login(c, "cr_ops", member_of="jit_admin")
        added = CliRunner().invoke(main, ["profile", "add", "cr-read", "--grant", "cr_read",
                                          "--ttl", "1m", "--log-statements", "none",
                                          "--dsn", dsn(c, "cr_ops")])
        assert added.exit_code == 0, added.output
        yield c
    finally:
        c.stop()


def dsn(c: Cluster, user: str, dbname: str = DB) -> str:
    return f"host={c.host} port={c.port} dbname={dbname} user={user}"


def admin(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The real console script as the superuser (its password from PGPASSWORD, never --dsn)."""
    env = {**os.environ, "PGPASSWORD": c.superpassword}
    return subprocess.run([str(ADMIN), "cron", *args, "--dsn", dsn(c, c.superuser)],
                          capture_output=True, text=True, env=env, timeout=60)


def jobs(c: Cluster) -> list[tuple[object, ...]]:
    with c.connect() as conn:
        return conn.execute("SELECT jobname, database, username, active FROM cron.job").fetchall()


def job_running(c: Cluster) -> bool:
    with c.connect(DB) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (cron.APPLICATION_NAME,)).fetchone() == (1,)


def test_the_job_names_itself_as_the_docs_say() -> None:
    assert f"set_config('application_name', '{cron.APPLICATION_NAME}', false)" in statements.CRON_JOB


def test_install_is_idempotent_and_remove_takes_it_away(crony: Cluster) -> None:
    first = admin(crony, "install", "--login", "cr_reaper")
    assert first.returncode == 0, first.stderr
    assert "installed pg_cron job 'pgcli-jit reaper: cron_app'" in first.stdout
    assert first.stderr == ""   # background workers are on: no warning
    again = admin(crony, "install", "--login", "cr_reaper")
    assert again.returncode == 0 and "already installed" in again.stdout, again
    assert jobs(crony) == [("pgcli-jit reaper: cron_app", DB, "cr_reaper", True)]
    gone = admin(crony, "remove")
    assert gone.returncode == 0 and "removed pg_cron job" in gone.stdout, gone
    assert jobs(crony) == []
    assert "no pg_cron job 'pgcli-jit reaper: cron_app' to remove" in admin(crony, "remove").stdout


@pytest.mark.parametrize(("login", "says"), [
    ("cr_nobody", "cr_nobody is not a login role"),
    ("cr_req", "cr_req is not a member of jit_admin"),
])
def test_install_refuses_a_login_that_cannot_reap(crony: Cluster, login: str, says: str) -> None:
    result = admin(crony, "install", "--login", login)
    assert result.returncode == 1 and result.stderr.startswith(f"Error: {says}"), result.stderr
    assert jobs(crony) == []


def test_install_without_pg_cron_says_how_to_load_it(cluster: Cluster) -> None:
    """The suite's cluster has no pg_cron loaded: one line that says what to add."""
    env = {**os.environ, "PGPASSWORD": cluster.superpassword}
    result = subprocess.run([str(ADMIN), "cron", "install", "--login", "x", "--dsn",
                             dsn(cluster, cluster.superuser, "app")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: pg_cron is not loaded on this server"), result.stderr
    assert "shared_preload_libraries = 'pg_cron'" in result.stderr
    assert result.stderr.count("\n") == 1


def lease(c: Cluster, ttl: float) -> tuple[str, psycopg.Connection[tuple[object, ...]], float]:
    password = new_password()
    with psycopg.connect(dsn(c, "cr_req"), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request('cr-read', make_interval(secs => %s), 'INC-3', %s)",
                           (ttl, scram_verifier(conn, password))).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    name = str(row[0]["rolname"])
    session = psycopg.connect(c.conninfo(DB, user=name, password=password), autocommit=True)
    with c.connect() as conn:
        until = conn.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s",
                             (name,)).fetchone()
    assert until is not None
    return name, session, until[0].timestamp()  # type: ignore[attr-defined]


def seconds_past(session: psycopg.Connection[tuple[object, ...]], valid_until: float) -> float:
    """When the session first failed, as seconds past VALID UNTIL (polled every 20 ms)."""
    while time.time() < valid_until + 70:
        try:
            session.execute("SELECT 1")
        except psycopg.OperationalError:
            return time.time() - valid_until
        time.sleep(0.02)
    return float("inf")


def test_the_job_alone_ends_a_killed_clients_session(crony: Cluster) -> None:
    """No reaper process anywhere: the job ends the session and drops the role.  The figure
    printed (seconds past VALID UNTIL) is the one docs/performance.md gives."""
    assert admin(crony, "install", "--login", "cr_reaper").returncode == 0
    deadline = time.time() + 75
    while not job_running(crony):   # the first run starts at the next minute
        assert time.time() < deadline, "the pg_cron job never started"
        time.sleep(0.2)
    measured = []
    for ttl in (3, 3.4, 4.7, 2.2):   # expiries at different points of the job's naps
        name, session, until = lease(crony, ttl)
        past = seconds_past(session, until)
        measured.append(past)
        with crony.connect(DB) as conn:
            for _ in range(50):
                row = conn.execute("SELECT ended_at IS NOT NULL, dropped_at IS NOT NULL "
                                   "FROM jit_data.leases WHERE rolname = %s", (name,)).fetchone()
                if row == (True, True):
                    break
                time.sleep(0.1)
            assert row == (True, True), row
    print(f"pg_cron job: access ended {', '.join(f'{p:.2f}' for p in measured)} s past VALID UNTIL")
    # a nap is at most a second; the bound leaves room for a loaded machine, not for a minute
    assert all(p <= 2.0 for p in measured), measured
    health = CliRunner().invoke(main, ["health", "--json", "--dsn", dsn(crony, "cr_ops")])
    assert health.exit_code == 0, health.output
    assert cron.APPLICATION_NAME in health.output
    # a run ends with its minute and the next begins at once: no minute-long gap.  Watched in
    # pg_stat_activity (pg_cron's job_run_details marks a run that commits as it goes
    # "succeeded" a second after it starts, so its end_time says nothing here).
    gap = handover(crony)
    print(f"pg_cron job: the next minute's run took over {gap:.3f} s after the last one was seen")
    assert gap < 2.0, gap
    assert admin(crony, "remove").returncode == 0


def handover(c: Cluster) -> float:
    """Seconds between the last sight of one run's backend and the first of the next's."""
    deadline = time.time() + 75
    first_pid, last_seen = None, time.time()
    with c.connect(DB) as conn:
        while time.time() < deadline:
            pids = [p for (p,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (cron.APPLICATION_NAME,))]
            now = time.time()
            if first_pid is None and pids:
                first_pid = pids[0]
            if first_pid in pids:
                last_seen = now
            elif pids:
                return now - last_seen
            time.sleep(0.05)
    raise AssertionError("no second run of the pg_cron job within 75 s")
