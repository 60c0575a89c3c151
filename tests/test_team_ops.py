"""The operator guide's "Running it for a team", run as written: ``apply`` to two clusters in
one call, and a backup of a jit database restored beside it with ``pg_dump``/``pg_restore``.

The operator ``tm_ops`` and the requester ``tm_req`` exist on both clusters (passwords in the
pgpass file); the backup is taken and restored by the superuser, as a site's backup job runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgcli_jit import server
from pgcli_jit.admin import main
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster, start_cluster
from tests.conftest import make_login

ADMIN = Path(sys.executable).with_name("pgcli-jit-admin")
PROFILES = """
[profiles.tm-read]
grants = ["{role}"]
ttl = "15m"
max_ttl = "1h"
description = "read the app's tables"
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def dsn(c: Cluster, dbname: str, user: str = "tm_ops") -> str:
    return f"host={c.host} port={c.port} dbname={dbname} user={user}"


def prepare(c: Cluster, dbname: str, role: str) -> str:
    c.execute(f"CREATE DATABASE {dbname}")
    c.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1);", dbname=dbname)
    with c.connect(dbname) as conn:
        server.apply(conn)
        conn.execute(f"CREATE ROLE {role} NOLOGIN; GRANT SELECT ON t TO {role};"
                     f"GRANT {role} TO jit_owner WITH ADMIN OPTION")
    make_login(c, "tm_ops", member_of="jit_admin")
    make_login(c, "tm_req", member_of="jit_requester")
    return dsn(c, dbname)


@pytest.fixture(scope="module")
def other(cluster: Cluster) -> Iterator[Cluster]:
    c = start_cluster()
    try:
        yield c
    finally:
        c.stop()


def test_apply_and_reap_two_clusters_by_service_name(cluster: Cluster, other: Cluster,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A libpq service per cluster, as the guide says: one ``apply`` call makes both equal to
    one file (the same grant role name on both: roles are per cluster), and one ``reap`` names
    each database on its lines."""
    prepare(cluster, "tm_apply", "tm_read")
    prepare(other, "tm_apply", "tm_read")
    services = tmp_path / "pg_service.conf"
    services.write_text("".join(f"[{name}]\nhost={c.host}\nport={c.port}\nuser=tm_ops\n\n"
                                for name, c in (("tm-db1", cluster), ("tm-db2", other))))
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    first, second = "service=tm-db1 dbname=tm_apply", "service=tm-db2 dbname=tm_apply"
    spec = tmp_path / "profiles.toml"
    spec.write_text(PROFILES.format(role="tm_read"))
    out = run("apply", str(spec), "--dsn", first, "--dsn", second)
    assert out.exit_code == 0, out.output
    assert out.output.count("1 added, 0 changed, 0 removed") == 2, out.output
    for target in (first, second):
        listed = run("profile", "list", "--json", "--dsn", target)
        assert '"tm-read"' in listed.output and '"tm_read"' in listed.output
    again = run("apply", str(spec), "--dsn", first, "--dsn", second)
    assert again.exit_code == 0 and again.output.count("no changes") == 2, again.output
    reaped = subprocess.run([str(ADMIN), "reap", "-v", "--dsn", first, "--dsn", second],
                            capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert reaped.returncode == 0, reaped.stderr
    assert reaped.stdout.splitlines() == ["[tm_apply@service=tm-db1] nothing to reap",
                                          "[tm_apply@service=tm-db2] nothing to reap"]


def tool(c: Cluster, name: str) -> str:
    path = c.bindir / name
    return str(path) if path.exists() else (shutil.which(name) or pytest.skip(f"{name} not found"))


def test_a_restored_copy_sees_the_originals_leases_as_history(cluster: Cluster, tmp_path: Path) -> None:
    """pg_dump carries the jit and jit_data schemas with their rows (and the DDL guard's event
    triggers); restored beside the original, the copy never acts on the original's live lease."""
    source = prepare(cluster, "tm_src", "tm_src_read")
    assert run("profile", "add", "tm-src", "--grant", "tm_src_read", "--ttl", "10m",
               "--dsn", source).exit_code == 0
    password = new_password()
    with psycopg.connect(dsn(cluster, "tm_src", "tm_req"), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request('tm-src', interval '10 minutes', 'INC-5', %s)",
                           (scram_verifier(conn, password),)).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    name = str(row[0]["rolname"])
    live = psycopg.connect(cluster.conninfo("tm_src", user=name, password=password),
                           autocommit=True)
    # the guide's backup and restore, as the superuser
    env = {**os.environ, "PGPASSWORD": cluster.superpassword, "PGHOST": cluster.host,
           "PGPORT": str(cluster.port), "PGUSER": cluster.superuser}
    dump = tmp_path / "tm_src.dump"
    for argv in ([tool(cluster, "pg_dump"), "-Fc", "-d", "tm_src", "-f", str(dump)],
                 [tool(cluster, "createdb"), "tm_copy"],
                 [tool(cluster, "pg_restore"), "--exit-on-error", "-d", "tm_copy", str(dump)]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, (argv, done.stderr)
    copy = dsn(cluster, "tm_copy")
    with cluster.connect("tm_copy") as conn:
        counts = conn.execute("SELECT (SELECT count(*) FROM jit_data.profiles),"
                              " (SELECT count(*) FROM jit_data.leases),"
                              " (SELECT count(*) FROM jit_data.audit),"
                              " (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'jit_%')"
                              ).fetchone()
    assert counts is not None and counts[0] == 1 and counts[1] == 1 and counts[2] > 0
    assert counts[3] == 2   # the DDL guard came along
    listed = run("leases", "--all", "--json", "--dsn", copy)
    assert "of another database: this schema is a copy" in listed.output, listed.output
    reaped = run("reap", "-v", "--dsn", copy)
    assert reaped.exit_code == 0 and reaped.output.strip() == "nothing to reap", reaped.output
    assert run("audit", "--verify", "--dsn", copy).exit_code == 0
    assert live.execute("SELECT x FROM t").fetchone() == (1,)   # the original's lease lives on
    live.close()
    assert run("revoke", name, "--reason", "test done", "--dsn", source).exit_code == 0
