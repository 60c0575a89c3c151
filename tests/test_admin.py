"""pgcli-jit-admin against the real scram-sha-256 cluster: setup, leases, reap.

Roles are cluster-wide and the cluster is shared by the whole session, so the
roles made here have their own names (``ops_*``, ``print_*``) and assertions
look for this file's roles rather than counting everything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgcli_jit.admin import main
from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.postgres import PostgresBackend
from pgcli_jit.cluster import Cluster
from pgcli_jit.config import parse_profile
from pgcli_jit.lease import Lease
from tests.conftest import postgres_profile_toml

ADMIN = Path(sys.executable).with_name("pgcli-jit-admin")
OPS_PW_ENV = "PGCLI_JIT_TEST_OPS_PW"
Session = psycopg.Connection[tuple[object, ...]]


def run(*args: str, password: str | None = None) -> Result:
    """Invoke the CLI in-process; the password reaches libpq as PGPASSWORD, as in cron."""
    env = {"PGPASSWORD": password} if password else {}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def superuser_dsn(cluster: Cluster, dbname: str = "postgres") -> str:
    return f"host={cluster.host} port={cluster.port} dbname={dbname} user={cluster.superuser}"


def make_backend(cluster: Cluster, admin_dsn: str, **extra: object) -> PostgresBackend:
    body = tomllib.loads(postgres_profile_toml("ops", admin_dsn, cluster, **extra))["profiles"]["ops"]
    return PostgresBackend(parse_profile("ops", body, Path("config.toml")))


def request(backend: PostgresBackend, ttl: float = 300, reason: str = "INC-42 look") -> Lease:
    return backend.request(LeaseRequest(ttl=ttl, reason=reason, requester="alice"))


def login(cluster: Cluster, lease: Lease) -> Session:
    return psycopg.connect(cluster.conninfo("app", user=lease.username,
                                            password=lease.credentials.password), autocommit=True)


def role_exists(cluster: Cluster, name: str) -> bool:
    with cluster.connect() as conn:
        return conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone() is not None


# -- setup -----------------------------------------------------------------------


def test_printed_setup_runs_in_psql(cluster: Cluster) -> None:
    """The real console script's output, piped into the real psql, creates what it says."""
    broker, grant = 'print "Broker"', "print_read"
    script = subprocess.run(
        [str(ADMIN), "setup", "--broker", broker, "--grant", f"{grant}=pg_read_all_data"],
        capture_output=True, text=True, check=True).stdout
    assert "\\password" in script and "PASSWORD" not in script  # no secret in the SQL
    psql = shutil.which("psql") or pytest.skip("psql not installed")
    env = {**os.environ, "PGPASSWORD": cluster.superpassword}
    subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", superuser_dsn(cluster)],
                   input=script, text=True, env=env, check=True, capture_output=True)
    with cluster.connect() as conn:
        row = conn.execute("select rolsuper, rolcreaterole, rolcanlogin from pg_roles"
                           " where rolname = %s", (broker,)).fetchone()
        admin = conn.execute("select admin_option from pg_auth_members m join pg_roles r"
                             " on r.oid = m.member where r.rolname = %s and m.roleid = %s::regrole",
                             (broker, grant)).fetchone()
    assert row == (False, True, True)
    assert admin == (True,)


@pytest.fixture(scope="module")
def ops_password(cluster: Cluster) -> Iterator[str]:
    """``setup --apply`` once, for a broker named apart from conftest's jit_broker."""
    password = "ops-" + os.urandom(12).hex()
    os.environ[OPS_PW_ENV] = password
    result = CliRunner().invoke(main, [
        "setup", "--apply", "--dsn", superuser_dsn(cluster), "--broker", "ops_broker",
        "--grant", "ops_read=pg_read_all_data", "--grant", "ops_write=ops_read,pg_write_all_data",
        "--password-env", OPS_PW_ENV], env={"PGPASSWORD": cluster.superpassword})
    assert result.exit_code == 0, result.output
    assert 'CREATE ROLE "ops_broker" LOGIN CREATEROLE;' in result.output
    assert "password of ops_broker set" in result.output
    yield password
    os.environ.pop(OPS_PW_ENV, None)


def test_applied_broker_is_not_superuser_and_can_mint(cluster: Cluster, ops_password: str) -> None:
    with cluster.connect() as conn:
        row = conn.execute("select rolsuper, rolcreaterole from pg_roles where rolname = 'ops_broker'")
        assert row.fetchone() == (False, True)
    dsn = f"host={cluster.host} port={cluster.port} dbname=app user=ops_broker"
    backend = make_backend(cluster, dsn, admin_password_env=OPS_PW_ENV, grant=["ops_read"])
    lease = request(backend)
    try:
        with login(cluster, lease) as conn:
            assert conn.execute("select count(*) from accounts").fetchone() == (2,)
    finally:
        backend.revoke(lease)
    assert not role_exists(cluster, lease.username)


def test_apply_again_keeps_existing_roles(cluster: Cluster, ops_password: str) -> None:
    result = run("setup", "--apply", "--dsn", superuser_dsn(cluster), "--broker", "ops_broker",
                 "--grant", "ops_read=pg_read_all_data", password=cluster.superpassword)
    assert result.exit_code == 0, result.output
    assert "skipped CREATE ROLE: ops_broker already exists" in result.output
    assert "skipped CREATE ROLE: ops_read already exists" in result.output
    assert "\\password" in result.output  # no new password given: says how to set one


def test_broker_password_never_reaches_the_server_log(cluster: Cluster, ops_password: str) -> None:
    log = cluster.server_log()
    assert "ops_broker" in log  # the setup statements really are logged
    assert ops_password not in log


def test_apply_without_privilege_is_one_line(cluster: Cluster, admin_dsn: str) -> None:
    """A JIT role (no CREATEROLE) cannot run setup: one line, and nothing half-done."""
    backend = make_backend(cluster, admin_dsn)
    lease = request(backend)
    dsn = f"host={cluster.host} port={cluster.port} dbname=app user={lease.username}"
    try:
        result = run("setup", "--apply", "--dsn", dsn, "--broker", "ops_nobody",
                     password=lease.credentials.password)
    finally:
        backend.revoke(lease)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "nothing was changed" in result.stderr
    assert "permission denied" in result.stderr and "as a superuser" in result.stderr
    assert not role_exists(cluster, "ops_nobody")


# -- leases ----------------------------------------------------------------------


def test_leases_shows_requester_and_reason(cluster: Cluster, admin_dsn: str,
                                           broker_password: str) -> None:
    backend = make_backend(cluster, admin_dsn)
    lease = request(backend, reason="INC-42 look")
    try:
        table = run("leases", "--dsn", admin_dsn, password=broker_password)
        [line] = [ln for ln in table.output.splitlines() if lease.username in ln]
        assert "alice" in line and "INC-42 look" in line and "yes" in line
        rows = json.loads(run("leases", "--json", "--dsn", admin_dsn, password=broker_password).output)
        [mine] = [r for r in rows if r["role"] == lease.username]
    finally:
        backend.revoke(lease)
    assert mine["requester"] == "alice" and mine["reason"] == "INC-42 look"
    assert mine["can_login"] and not mine["expired"] and 250 < mine["remaining_seconds"] <= 300


def test_profile_names_the_broker_connection(cluster: Cluster, admin_dsn: str, home: Path) -> None:
    config = home / "config" / "pgcli-jit" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(postgres_profile_toml("ops", admin_dsn, cluster))
    backend = make_backend(cluster, admin_dsn)
    lease = request(backend)
    try:
        result = run("leases", "--profile", "ops")
    finally:
        backend.revoke(lease)
    assert result.exit_code == 0, result.output
    assert lease.username in result.output
    unknown = run("leases", "--profile", "nope")
    assert unknown.exit_code == 1 and "no profile 'nope'" in unknown.stderr


# -- reap ------------------------------------------------------------------------


@pytest.fixture
def crashed(cluster: Cluster, admin_dsn: str) -> Iterator[tuple[Lease, Lease, Session]]:
    """A client that died holding a 1 s lease with a session open, and a live lease next to it."""
    backend = make_backend(cluster, admin_dsn)
    dead, live = request(backend, ttl=1), request(backend, ttl=300)
    session = login(cluster, dead)
    time.sleep(1.2)
    yield dead, live, session
    session.close()
    backend.revoke(dead)
    backend.revoke(live)


def test_reap_ends_a_crashed_clients_role_and_session(
        cluster: Cluster, admin_dsn: str, broker_password: str, crashed: tuple[Lease, Lease, Session]
) -> None:
    dead, live, session = crashed
    result = run("reap", "--dsn", admin_dsn, password=broker_password)
    assert result.exit_code == 0, result.output
    assert f"reaped {dead.username} (expired" in result.output
    assert "1 session terminated" in result.output
    assert not role_exists(cluster, dead.username)
    with pytest.raises(psycopg.OperationalError):
        session.execute("select 1")
    assert role_exists(cluster, live.username) and live.username not in result.output


def test_reap_dry_run_changes_nothing(
        cluster: Cluster, admin_dsn: str, broker_password: str, crashed: tuple[Lease, Lease, Session]
) -> None:
    dead, live, session = crashed
    result = run("reap", "--dry-run", "--dsn", admin_dsn, password=broker_password)
    assert result.exit_code == 0, result.output
    assert f"would reap {dead.username}" in result.output and live.username not in result.output
    assert role_exists(cluster, dead.username)
    assert session.execute("select current_user").fetchone() == (dead.username,)


def test_reap_is_quiet_when_there_is_nothing_to_do(admin_dsn: str, broker_password: str) -> None:
    run("reap", "--dsn", admin_dsn, password=broker_password)
    again = run("reap", "--dsn", admin_dsn, password=broker_password)
    assert again.exit_code == 0 and again.output == ""
    verbose = run("reap", "-v", "--dsn", admin_dsn, password=broker_password)
    assert verbose.output == "nothing to reap\n"


def test_reap_finishes_a_half_done_revoke_and_names_failures(
        cluster: Cluster, admin_dsn: str, broker_password: str) -> None:
    """NOLOGIN + marker is a revoke that stopped half-way; an object in another database blocks DROP."""
    backend = make_backend(cluster, admin_dsn)
    stuck, blocked = request(backend), request(backend)
    with cluster.connect() as conn:
        conn.execute(f'ALTER ROLE "{stuck.username}" NOLOGIN')
        conn.execute(f'ALTER ROLE "{blocked.username}" NOLOGIN')
        conn.execute("CREATE TABLE ops_blocker (x int)")
        conn.execute(f'ALTER TABLE ops_blocker OWNER TO "{blocked.username}"')
    try:
        result = run("reap", "--dsn", admin_dsn, password=broker_password)
        assert result.exit_code == 1
        assert f"reaped {stuck.username} (NOLOGIN" in result.output
        assert f"cannot reap {blocked.username}: " in result.stderr
        assert "database postgres" in result.stderr and "1 failed" in result.stderr
        assert not role_exists(cluster, stuck.username) and role_exists(cluster, blocked.username)
    finally:
        cluster.execute("DROP TABLE ops_blocker")
        backend.revoke(blocked)


def test_reap_reassigns_what_the_role_owns(cluster: Cluster, admin_dsn: str,
                                           broker_password: str) -> None:
    """--reassign-to needs the broker to be a member of the target role; then objects survive."""
    backend = make_backend(cluster, admin_dsn)
    lease = request(backend)
    cluster.execute(f'CREATE ROLE ops_owner NOLOGIN; ALTER ROLE "{lease.username}" NOLOGIN;'
                    f'CREATE TABLE ops_made (x int); ALTER TABLE ops_made OWNER TO "{lease.username}"',
                    dbname="app")
    try:
        refused = run("reap", "--reassign-to", "ops_owner", "--dsn", admin_dsn, password=broker_password)
        assert refused.exit_code == 1 and "permission denied to reassign objects" in refused.stderr
        cluster.execute("GRANT ops_owner TO jit_broker")
        done = run("reap", "--reassign-to", "ops_owner", "--dsn", admin_dsn, password=broker_password)
        assert done.exit_code == 0, done.output
        with cluster.connect("app") as conn:
            owner = conn.execute("select tableowner from pg_tables where tablename = 'ops_made'")
            assert owner.fetchone() == ("ops_owner",)
    finally:
        cluster.execute("DROP TABLE ops_made; REVOKE ops_owner FROM jit_broker; DROP ROLE ops_owner",
                        dbname="app")
        backend.revoke(lease)


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("dsn, message", [
    ("host=127.0.0.1 port=1 connect_timeout=2", "cannot connect"),
    ("not a conninfo", "is not a libpq conninfo"),
    ("host=127.0.0.1 user=x password=hunter2", "holds a password"),
])
def test_bad_dsn_is_one_line(dsn: str, message: str) -> None:
    result = run("leases", "--dsn", dsn)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "hunter2" not in result.stderr


def test_wrong_password_in_a_real_process_is_one_line(cluster: Cluster, admin_dsn: str) -> None:
    env = {**os.environ, "PGPASSWORD": "wrong-password-123"}
    proc = subprocess.run([str(ADMIN), "reap", "--dsn", admin_dsn], capture_output=True,
                          text=True, env=env, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "password authentication failed" in proc.stderr
    assert "Traceback" not in proc.stderr and "wrong-password-123" not in proc.stderr


def test_usage_problems_are_one_line() -> None:
    for args in (["leases"], ["setup", "--apply"], ["setup", "--password-env", "X"],
                 ["setup", "--grant", "=x"]):
        result = run(*args)
        assert result.exit_code == 2, args
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
