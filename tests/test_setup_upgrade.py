"""Upgrades you can review: ``setup --dsn`` prints exactly what that database needs, the printed
script runs twice in psql, and every earlier schema version upgrades with a lease live across it.

An old version is installed as it shipped: the numbered files up to it, then the functions of
that release (``tests/data/functions_vN.sql``, from the repository's history).  Version 3 never
shipped alone (003 and 004 came in one release), so it runs version 2's functions, which 003's
new columns do not disturb.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from pgcli_jit import server
from pgcli_jit.admin import main
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import make_login
from tests.test_audit_archive import AGE

DATA = Path(__file__).parent / "data"
#: the functions each earlier schema version ran
RELEASED_FUNCTIONS = {1: "functions_v1.sql", 2: "functions_v2.sql", 3: "functions_v2.sql",
                      4: "functions_v4.sql", 5: "functions_v5.sql"}
REQUESTER = "upg_carol"
#: reviewing needs no superuser: an operator reads the version and the functions' digest
OPERATOR = "upg_ops"
Conn = psycopg.Connection[tuple[Any, ...]]


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def dsn(cluster: Cluster, db: str, user: str = "") -> str:
    return f"host={cluster.host} port={cluster.port} dbname={db} user={user or cluster.superuser}"


def psql(cluster: Cluster, db: str, script: str) -> subprocess.CompletedProcess[str]:
    """The printed script as an operator runs it, with the real psql."""
    binary = shutil.which("psql") or pytest.skip("psql not installed")
    env = {**os.environ, "PGPASSWORD": cluster.superpassword}
    return subprocess.run([binary, "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn(cluster, db)],
                          input=script, text=True, env=env, capture_output=True)


def fresh_database(cluster: Cluster, db: str) -> None:
    cluster.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)).as_string())
    cluster.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)).as_string())


def install_old(cluster: Cluster, db: str, version: int) -> None:
    """Schema ``version`` as it shipped, with a profile 'old' granting a role of its own."""
    fresh_database(cluster, db)
    table = "jit.schema_version"
    with cluster.connect(db) as su:
        with su.transaction():
            for f in server.sql_files():
                if f.version is not None and f.version <= version:
                    su.execute(f.text.encode())
                    su.execute(f"INSERT INTO {table} (version) VALUES (%s)", (f.version,))
            su.execute((DATA / RELEASED_FUNCTIONS[version]).read_bytes())
        role = f"upg_read_{db}"
        su.execute(f"DO $$ BEGIN IF to_regrole('{role}') IS NULL THEN CREATE ROLE {role} NOLOGIN;"
                   f" END IF; END $$; GRANT {role} TO jit_owner WITH ADMIN OPTION")
        su.execute("SELECT jit.profile_set('old', ARRAY[%s], interval '10 min', interval '1 hour',"
                   " 'jit_requester', false, '', '')", (role,))
        assert server.installed_version(su) == version


def request(cluster: Cluster, db: str) -> tuple[dict[str, Any], Conn]:
    """A lease of profile 'old', asked as the requester, and a session open as it."""
    password = new_password()
    with psycopg.connect(dsn(cluster, db, REQUESTER), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request('old', NULL, 'INC-9 upgrade', %s)",
                           (scram_verifier(conn, password),)).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    lease = dict(row[0])
    session = psycopg.connect(cluster.conninfo(db, user=lease["rolname"], password=password), autocommit=True)
    return lease, session


@pytest.fixture(scope="module")
def requester(cluster: Cluster) -> str:
    make_login(cluster, REQUESTER, member_of="jit_requester")
    make_login(cluster, OPERATOR, member_of="jit_admin")
    return REQUESTER


def printed_for(cluster: Cluster, db: str) -> str:
    result = run("setup", "--dsn", dsn(cluster, db, OPERATOR))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_every_earlier_version_upgrades_through_the_printed_script_with_a_live_lease(
        cluster: Cluster, requester: str, version: int) -> None:
    db = f"upg_v{version}"
    install_old(cluster, db, version)
    lease, session = request(cluster, db)
    try:
        script = printed_for(cluster, db)
        numbered = [f.name for f in server.sql_files() if f.version is not None]
        for name in numbered:   # only the migrations this database lacks, then every function file
            assert (f"-- ==== {name} ====" in script) == (int(name[:3]) > version), name
        assert all(f"-- ==== {f.name} ====" in script for f in server.sql_files() if f.version is None)
        first, second = psql(cluster, db, script), psql(cluster, db, script)
        assert first.returncode == 0, first.stderr
        assert second.returncode == 0, second.stderr   # the same file again changes nothing twice
        with cluster.connect(db) as su:
            assert server.installed_version(su) == server.latest_version()
            versions = su.execute("SELECT version FROM jit_data.schema_version ORDER BY 1").fetchall()
        assert [v for (v,) in versions] == list(range(1, server.latest_version() + 1))
        nothing = run("setup", "--dsn", dsn(cluster, db, OPERATOR))
        assert nothing.exit_code == 0 and nothing.output.count("\n") == 1
        assert "nothing to do" in nothing.output
        assert_lease_carries_on(cluster, db, lease, session)
    finally:
        session.close()


@pytest.mark.parametrize("version", [1, 5])
def test_the_oldest_and_the_newest_earlier_version_upgrade_with_apply(
        cluster: Cluster, requester: str, version: int, tmp_path: Path) -> None:
    """--apply, then the rows chained before the upgrade (by that version's functions) archive
    to a file that verifies, and what stays in the table verifies from the checkpoint."""
    db = f"upg_apply_v{version}"
    install_old(cluster, db, version)
    lease, session = request(cluster, db)
    try:
        applied = run("setup", "--apply", "--dsn", dsn(cluster, db),
                      env={"PGPASSWORD": cluster.superpassword})
        assert applied.exit_code == 0, applied.output
        assert f"schema jit: version {version} -> {server.latest_version()}" in applied.output
        assert_lease_carries_on(cluster, db, lease, session)
    finally:
        session.close()
    target = tmp_path / "old.jsonl"
    # archiving is jit_archiver's (a cluster role: taken back after, so no other test finds
    # this login in it), and only of rows a day old
    grant = sql.SQL("GRANT jit_archiver TO {}").format(sql.Identifier(OPERATOR))
    with cluster.connect(db) as su:
        su.execute(grant)
    try:
        with cluster.connect(db) as su:
            su.execute(AGE)
            (cut,) = su.execute("SELECT clock_timestamp() - jit._audit_min_retention()"
                                " - interval '1 minute'").fetchone()  # type: ignore[misc]
        archived = run("audit", "archive", "--before", cut.isoformat(), "--to", str(target),
                       "--dsn", dsn(cluster, db, OPERATOR))
        assert archived.exit_code == 0 and "archived" in archived.output, archived.output
        assert run("audit", "--verify", "--file", str(target)).exit_code == 0
        assert run("audit", "--verify", "--dsn", dsn(cluster, db, OPERATOR)).exit_code == 0
    finally:
        with cluster.connect(db) as su:
            su.execute(sql.SQL("REVOKE jit_archiver FROM {}").format(sql.Identifier(OPERATOR)))


def assert_lease_carries_on(cluster: Cluster, db: str, lease: dict[str, Any], session: Conn) -> None:
    """The session opened before the upgrade still works; the new functions renew and revoke
    the lease; the audit chain, old rows and new, verifies."""
    assert session.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(dsn(cluster, db, REQUESTER), autocommit=True) as mine:
        renewed = mine.execute("SELECT jit.renew(%s, interval '20 min')", (lease["rolname"],)).fetchone()
        assert renewed is not None and renewed[0]["status"] == "renewed", renewed
        with cluster.connect(db) as su:
            until = su.execute("SELECT r.rolvaliduntil = l.expires_at FROM pg_roles r JOIN jit_data.leases l"
                               " ON l.role_oid = r.oid WHERE r.rolname = %s", (lease["rolname"],)).fetchone()
        assert until == (True,)
        revoked = mine.execute("SELECT jit.revoke(%s)", (lease["rolname"],)).fetchone()
        assert revoked is not None and revoked[0]["status"] == "revoked"
        mine.execute("SELECT jit.finish(%s)", (lease["rolname"],))
    with cluster.connect(db) as su:
        assert su.execute("SELECT bad_id, problem FROM jit.audit_verify()").fetchone() == (None, None)


def test_an_empty_database_gets_everything_and_an_installed_one_nothing(
        cluster: Cluster, requester: str) -> None:
    db = "upg_empty"
    fresh_database(cluster, db)
    script = printed_for(cluster, db)
    assert all(f"-- ==== {f.name} ====" in script for f in server.sql_files())
    assert "GRANT app_read TO jit_owner WITH ADMIN OPTION" in script   # the next steps, as comments
    assert psql(cluster, db, script).returncode == 0
    again = psql(cluster, db, server.script())   # the whole install, over itself
    assert again.returncode == 0, again.stderr
    assert printed_for(cluster, db).startswith("-- schema jit: version ")
    with cluster.connect(db) as su:   # functions the database did not run: only they are printed
        su.execute("UPDATE jit_data.functions_applied SET digest = 'older'")
    refresh = printed_for(cluster, db)
    assert "-- ==== functions/10_internals.sql ====" in refresh and "_schema.sql" not in refresh
    assert not any(f"-- ==== {f.name} ====" in refresh for f in server.sql_files() if f.version is not None)
    assert psql(cluster, db, refresh).returncode == 0
    assert "nothing to do" in printed_for(cluster, db)


def test_a_script_printed_for_a_newer_database_refuses_an_older_one(cluster: Cluster, requester: str) -> None:
    install_old(cluster, "upg_mismatch", 1)
    ran = psql(cluster, "upg_mismatch", server.script(5))
    assert ran.returncode != 0
    assert "upgrades a jit schema at version 5 or later; this database is at version 1" in ran.stderr
    with cluster.connect("upg_mismatch") as su:
        assert server.installed_version(su) == 1


def test_a_schema_newer_than_the_package_is_left_alone(cluster: Cluster, requester: str) -> None:
    db = "upg_newer"
    fresh_database(cluster, db)
    with cluster.connect(db) as su:
        server.apply(su)
        su.execute("INSERT INTO jit_data.schema_version (version) VALUES (%s)",
                   (server.latest_version() + 1,))
    superuser = {"PGPASSWORD": cluster.superpassword}
    for refused in (run("setup", "--dsn", dsn(cluster, db, OPERATOR)),
                    run("setup", "--apply", "--dsn", dsn(cluster, db), env=superuser)):
        assert refused.exit_code == 1 and refused.output.count("\n") == 1
        assert "newer than this pgcli-jit-admin knows" in refused.output
