"""One ``pgcli-jit-admin reap --watch`` for several databases: two databases on the suite's
cluster and one on a second cluster of this module's, leases expiring on all three at once.

Each database has a grant role of its own (a role with privileges in two databases is
refused).  The operator ``rm_ops`` and the requester ``rm_req`` exist on both clusters, their
passwords in the pgpass file, as an operator's own would be.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgcli_jit import server
from pgcli_jit.admin import main, reap_many
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster, start_cluster
from tests.conftest import make_login

ADMIN = Path(sys.executable).with_name("pgcli-jit-admin")
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


@dataclass(frozen=True)
class Db:
    cluster: Cluster
    name: str

    def dsn(self, user: str = "rm_ops") -> str:
        return f"host={self.cluster.host} port={self.cluster.port} dbname={self.name} user={user}"

    @property
    def label(self) -> str:
        return f"{self.name}@{self.cluster.host}:{self.cluster.port}"


def prepare(cluster: Cluster, name: str) -> Db:
    """A database with the schema, a grant role of its own and a profile ``rm-read``."""
    cluster.execute(f"CREATE DATABASE {name}")
    cluster.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1);", dbname=name)
    role = f"{name}_read"
    with cluster.connect(name) as conn:
        server.apply(conn)
        conn.execute(f"CREATE ROLE {role} NOLOGIN; GRANT SELECT ON t TO {role};"
                     f"GRANT {role} TO jit_owner WITH ADMIN OPTION")
    make_login(cluster, "rm_ops", member_of="jit_admin")
    make_login(cluster, "rm_req", member_of="jit_requester")
    db = Db(cluster, name)
    added = CliRunner().invoke(main, ["profile", "add", "rm-read", "--grant", role, "--ttl", "1m",
                                      "--dsn", db.dsn()])
    assert added.exit_code == 0, added.output
    return db


@pytest.fixture(scope="module")
def other(cluster: Cluster) -> Iterator[Cluster]:
    """A second cluster (the suite's ``cluster`` first: it sets up the pgpass file)."""
    c = start_cluster()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def dbs(cluster: Cluster, other: Cluster) -> list[Db]:
    return [prepare(cluster, "rm_one"), prepare(cluster, "rm_two"), prepare(other, "rm_far")]


def lease(db: Db, ttl: float) -> tuple[str, psycopg.Connection[tuple[object, ...]], float]:
    """A lease of ``ttl`` seconds, a session of it (a client that was killed keeps it open), and
    its VALID UNTIL as a Unix time."""
    password = new_password()
    with psycopg.connect(db.dsn("rm_req"), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request('rm-read', make_interval(secs => %s), 'INC-9', %s)",
                           (ttl, scram_verifier(conn, password))).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    name = str(row[0]["rolname"])
    session = psycopg.connect(db.cluster.conninfo(db.name, user=name, password=password),
                              autocommit=True)
    with db.cluster.connect() as conn:
        until = conn.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s",
                             (name,)).fetchone()
    assert until is not None
    return name, session, until[0].timestamp()  # type: ignore[attr-defined]


def seconds_past(session: psycopg.Connection[tuple[object, ...]], valid_until: float,
                 limit: float = 10) -> float:
    """How long past VALID UNTIL the session last answered (inf: it never ended)."""
    last_ok = time.time()
    while time.time() < valid_until + limit:
        try:
            session.execute("SELECT 1")
            last_ok = time.time()
        except psycopg.OperationalError:
            return last_ok - valid_until
        time.sleep(0.02)
    return float("inf")


class Reaper:
    """The real console script, in the background; its stderr and stdout lines, as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([str(ADMIN), "reap", "--watch", *args], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ))
        self.lines: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(s,), daemon=True)
                        for s in (self.proc.stdout, self.proc.stderr)]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 15) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in {self.lines}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        finally:
            self.proc.kill()
        for reader in self.readers:
            reader.join(5)


def test_one_reaper_ends_leases_in_two_databases_and_two_clusters(dbs: list[Db]) -> None:
    reaper = Reaper(*(arg for db in dbs for arg in ("--dsn", db.dsn())))
    try:
        reaper.wait_for("watching for expiries")
        time.sleep(1.5)   # each database's thread is connected and asleep
        held = [(db, *lease(db, ttl=3)) for db in dbs]
        past = [seconds_past(session, until) for _db, _name, session, until in held]
        # the same bound as the single reaper's test: access ends within a second
        assert all(p <= 1.0 for p in past), past
        for db, name, _session, _until in held:
            line = reaper.wait_for(re.escape(f"[{db.label}] expired {name}"))
            assert re.match(STAMP + " ", line), line
            reaper.wait_for(re.escape(f"[{db.label}] dropped {name}"))
    finally:
        reaper.stop()
    first, last = reaper.lines[0], reaper.lines[-1]
    assert all(db.label in first for db in dbs), first
    assert last.endswith("reaper: stopped"), reaper.lines
    assert all(re.match(STAMP + " ", line) for line in reaper.lines), reaper.lines


def test_a_database_that_is_down_never_stops_the_others(dbs: list[Db]) -> None:
    down = f"host={dbs[0].cluster.host} port=1 dbname=gone user=rm_ops"
    reaper = Reaper("--dsn", down, "--dsn", dbs[2].dsn())
    try:
        said = reaper.wait_for(r"\[gone@[^]]*:1\] reaper: .*; reconnecting in \d+s")
        assert re.match(STAMP + " ", said), said
        name, session, until = lease(dbs[2], ttl=2)
        assert seconds_past(session, until) <= 1.0
        reaper.wait_for(re.escape(f"[{dbs[2].label}] dropped {name}"))
        # it keeps trying, with a growing pause
        reaper.wait_for(r"\[gone@[^]]*:1\] reaper: .*; reconnecting in 2s")
    finally:
        reaper.stop()


def test_all_databases_finds_every_database_with_the_schema(other: Cluster,
                                                            dbs: list[Db]) -> None:
    """``--all-databases`` on the second cluster (the suite's holds other modules' databases,
    whose leases this must not reap): rm_far and rm_near, never a database without the schema."""
    near = prepare(other, "rm_near")
    other.execute("CREATE DATABASE rm_plain")
    # a database's owner may make a schema named jit of her own: never the operator's to call
    other.execute("CREATE ROLE rm_tenant LOGIN")
    other.execute("CREATE DATABASE rm_rogue OWNER rm_tenant")
    other.execute("SET ROLE rm_tenant; CREATE SCHEMA jit;"
                  " CREATE FUNCTION jit.expire_due() RETURNS SETOF record LANGUAGE sql"
                  " AS 'SELECT NULL::record'",
                  dbname="rm_rogue")
    found = reap_many.databases_with_schema(dbs[2].dsn())
    assert found == ["rm_far", "rm_near"]
    reaper = Reaper("--all-databases", "--dsn", dbs[2].dsn())
    try:
        for db in (dbs[2], near):
            reaper.wait_for(re.escape(f"[{db.label}] reaper: watching this database"))
        held = [(db, *lease(db, ttl=2)) for db in (dbs[2], near)]
        for db, name, session, until in held:
            assert seconds_past(session, until) <= 1.0
            reaper.wait_for(re.escape(f"[{db.label}] dropped {name}"))
    finally:
        reaper.stop()
    assert not any("rm_plain" in line or "rm_rogue" in line for line in reaper.lines)


def test_one_pass_over_several_databases_names_each(dbs: list[Db]) -> None:
    down = f"host={dbs[0].cluster.host} port=1 dbname=gone user=rm_ops"
    result = subprocess.run([str(ADMIN), "reap", "-v", "--dsn", dbs[0].dsn(), "--dsn", down,
                             "--dsn", dbs[2].dsn()], capture_output=True, text=True,
                            env=dict(os.environ), timeout=60)
    assert result.returncode == 1   # the one that is down must be looked at
    assert f"[{dbs[0].label}] nothing to reap" in result.stdout
    assert f"[{dbs[2].label}] nothing to reap" in result.stdout
    assert re.search(r"^\[gone@[^]]*:1\] .*", result.stderr, re.M), result.stderr


@pytest.mark.parametrize(("dsn", "expected"), [
    ("host=db1 port=5433 dbname=app user=ops", "app@db1:5433"),
    ("service=prod", "service=prod"),
    ("service=prod dbname=billing", "billing@service=prod"),
    ("postgresql://ops@db2/app", "app@db2"),
])
def test_a_line_names_its_database(dsn: str, expected: str) -> None:
    assert reap_many.label(dsn) == expected


def test_all_databases_picks_up_a_new_database_and_lets_go_of_one_without_the_schema(
        other: Cluster, dbs: list[Db], monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster is searched again (every RESCAN seconds): a database set up later is
    watched, one whose schema is dropped is let go, and the others go on."""
    from pgcli_jit.admin.leases import _report

    monkeypatch.setattr(reap_many, "RESCAN", 0.5)
    said: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=reap_many.watch_many,
                               args=([dbs[2].dsn()], True, lambda text, _err: said.append(text),
                                     _report, stop), daemon=True)
    watcher.start()

    def wait_said(text: str) -> None:
        deadline = time.time() + 15
        while not any(text in line for line in said):
            assert time.time() < deadline, said
            time.sleep(0.05)

    try:
        wait_said(f"[{dbs[2].label}] reaper: watching this database")
        late = prepare(other, "rm_late")
        wait_said(f"[{late.label}] reaper: watching this database")
        name, session, until = lease(late, ttl=2)
        assert seconds_past(session, until) <= 1.0
        wait_said(f"[{late.label}] dropped {name}")
        with other.connect("rm_late") as conn:
            conn.execute("DROP SCHEMA jit CASCADE")
        wait_said(f"[{late.label}] reaper: this database no longer has the jit schema; not watched")
    finally:
        stop.set()
        watcher.join(20)
    assert not watcher.is_alive()
    assert not any(dbs[2].label in line and "no longer" in line for line in said)


@pytest.fixture(scope="module")
def third(cluster: Cluster) -> Iterator[Cluster]:
    """A third cluster: with ``other``, two clusters that hold only this module's databases."""
    c = start_cluster()
    try:
        yield c
    finally:
        c.stop()


def test_all_databases_with_two_service_names_watches_both_clusters(
        other: Cluster, third: Cluster, dbs: list[Db], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator guide's line ``reap --watch --all-databases --dsn service=db1 --dsn
    service=db2``: each service (host, port, login and a database to search from, in
    pg_service.conf) names a cluster; every database with the schema on either is watched,
    each line names it by its service, and a lease on each cluster ends and is dropped."""
    near = prepare(third, "rm_svc")
    third.execute("CREATE DATABASE rm_svc_plain")
    services = tmp_path / "pg_service.conf"
    services.write_text("".join(f"[{name}]\nhost={c.host}\nport={c.port}\nuser=rm_ops\ndbname=postgres\n\n"
                                for name, c in (("rm-c2", other), ("rm-c3", third))))
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    labels = {dbs[2].name: "[rm_far@service=rm-c2]", near.name: "[rm_svc@service=rm-c3]"}
    reaper = Reaper("--all-databases", "--dsn", "service=rm-c2", "--dsn", "service=rm-c3")
    try:
        reaper.wait_for(re.escape("watching for expiries in every database with the jit schema of "
                                  "service=rm-c2, service=rm-c3"))
        for db in (dbs[2], near):
            reaper.wait_for(re.escape(f"{labels[db.name]} reaper: watching this database"))
        held = [(db, *lease(db, ttl=2)) for db in (dbs[2], near)]
        for db, name, session, until in held:
            assert seconds_past(session, until) != float("inf"), f"{name}'s session outlived its lease"
            line = reaper.wait_for(re.escape(f"{labels[db.name]} expired {name}"))
            assert re.match(STAMP + " ", line), line
            reaper.wait_for(re.escape(f"{labels[db.name]} dropped {name}"))
    finally:
        reaper.stop()
    assert not any("rm_svc_plain" in line or "postgres@" in line for line in reaper.lines), reaper.lines
    assert reaper.lines[-1].endswith("reaper: stopped"), reaper.lines
