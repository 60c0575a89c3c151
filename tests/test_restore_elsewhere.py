"""A jit database restored onto ANOTHER cluster, by the operator guide's recipe: ``pg_dumpall
--roles-only`` into the new cluster, then ``pg_dump``/``pg_restore`` of the database.

The schema stores OIDs, which mean something else there: ``pg_dumpall`` does not keep role
OIDs, and the database's OID may be the same or not (both are run: ``CREATE DATABASE ... OID``).
Three live leases go over:

* ``kept``: its role restored by name with whatever OID the new cluster gave it;
* ``gone``: its role absent on the copy, and its old OID taken by an unrelated login with an
  open session (set as superuser: a new cluster hands OIDs out in its own order);
* ``odd``: a role of its name there that is not clearly the lease's (a superuser granted it
  another role after the restore).

The copy refuses requesters until its operator's reaper has taken the schema over; the
reaper then ends every lease it did not issue, drops the role that is clearly the lease's,
and touches neither the unrelated login nor the odd role.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster, start_cluster
from tests.conftest import _LOGINS
from tests.test_team_ops import dsn, prepare, run, tool

pytestmark = pytest.mark.security


@pytest.fixture(params=["same database OID", "another database OID"])
def target(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, str, bool]]:
    """A fresh cluster to restore onto, the database's name (one per case on the suite's
    cluster) and whether the copy takes the original's OID."""
    same = request.param == "same database OID"
    c = start_cluster()
    try:
        yield c, "rx_same" if same else "rx_other", same
    finally:
        c.stop()


def superuser_env(c: Cluster) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": c.superpassword, "PGHOST": c.host,
            "PGPORT": str(c.port), "PGUSER": c.superuser}


def call(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


def grant_lease(source: Cluster, db: str) -> tuple[str, str]:
    """A live lease of profile ``rx``: its role's name and password."""
    password = new_password()
    with psycopg.connect(dsn(source, db, "tm_req"), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request('rx', interval '10 minutes', 'INC-7', %s)",
                           (scram_verifier(conn, password),)).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    return str(row[0]["rolname"]), password


def restore_elsewhere(source: Cluster, target: Cluster, db: str, same_oid: bool, tmp: Path) -> int:
    """The guide's recipe onto ``target``: the roles (all but the target's own superuser, whose
    password stays the target's), then the database.  Returns the copy's database OID."""
    roles = call([tool(source, "pg_dumpall"), "--roles-only"], superuser_env(source))
    mine = f"CREATE ROLE {target.superuser};", f"ALTER ROLE {target.superuser} "
    (tmp / "roles.sql").write_text("".join(line for line in roles.splitlines(keepends=True)
                                           if not line.startswith(mine)))
    call([tool(target, "psql"), "-X", "-q", "-d", "postgres", "-f", str(tmp / "roles.sql")],
         superuser_env(target))
    call([tool(source, "pg_dump"), "-Fc", "-d", db, "-f", str(tmp / "rx.dump")],
         superuser_env(source))
    src_oid = db_oid(source, db)
    target.execute(f"CREATE DATABASE {db} OID = {src_oid}" if same_oid else f"CREATE DATABASE {db}")
    call([tool(target, "pg_restore"), "--exit-on-error", "-d", db, str(tmp / "rx.dump")],
         superuser_env(target))
    return db_oid(target, db)


def db_oid(c: Cluster, db: str) -> int:
    with c.connect(db) as conn:
        got = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    assert got is not None
    return int(got[0])


def lease_rows(c: Cluster, db: str) -> dict[str, tuple[object, ...]]:
    """rolname: (role_oid, end_event, dropped, drop_error) of every lease."""
    with c.connect(db) as conn:
        rows = conn.execute("SELECT rolname, role_oid, end_event, dropped_at IS NOT NULL, drop_error"
                            " FROM jit_data.leases").fetchall()
    return {str(r[0]): r[1:] for r in rows}


def role(c: Cluster, name: str) -> tuple[object, ...] | None:
    """(oid, rolcanlogin) of role ``name``, or None."""
    with c.connect() as conn:
        return conn.execute("SELECT oid, rolcanlogin FROM pg_roles WHERE rolname = %s", (name,)).fetchone()


def test_a_copy_on_another_cluster_ends_what_it_did_not_issue_and_touches_no_stranger(
        cluster: Cluster, target: tuple[Cluster, str, bool], tmp_path: Path) -> None:
    copy, db, same_oid = target
    source = prepare(cluster, db, f"{db}_read")
    assert run("profile", "add", "rx", "--grant", f"{db}_read", "--ttl", "10m", "--max-live", "10",
               "--dsn", source).exit_code == 0
    names, passwords = {}, {}
    for which in ("kept", "gone", "odd"):
        names[which], passwords[which] = grant_lease(cluster, db)
    original = psycopg.connect(cluster.conninfo(db, user=names["odd"], password=passwords["odd"]),
                               autocommit=True)
    with cluster.connect(db) as conn:
        before = {str(r[0]): int(r[1]) for r in conn.execute(
            "SELECT rolname, role_oid FROM jit_data.leases").fetchall()}
    src_oid = db_oid(cluster, db)
    copy_oid = restore_elsewhere(cluster, copy, db, same_oid, tmp_path)
    assert (copy_oid == src_oid) is same_oid
    # the operator's and the requester's own passwords came over with the roles' verifiers
    with open(os.environ["PGPASSFILE"], "a", encoding="utf-8") as fh:
        fh.write(f"{copy.host}:{copy.port}:*:tm_ops:{_LOGINS[cluster.port, 'tm_ops']}\n"
                 f"{copy.host}:{copy.port}:*:tm_req:{_LOGINS[cluster.port, 'tm_req']}\n")
    stranger_pw = new_password()
    with copy.connect(db) as conn:
        conn.execute(f"DROP ROLE {names['gone']}")
        conn.execute(sql.SQL("CREATE ROLE rx_stranger LOGIN PASSWORD {}").format(
            sql.Literal(scram_verifier(conn, stranger_pw))))
        conn.execute("UPDATE jit_data.leases SET role_oid = (SELECT oid FROM pg_roles"
                     " WHERE rolname = 'rx_stranger') WHERE rolname = %s", (names["gone"],))
        conn.execute(f"CREATE ROLE rx_other NOLOGIN; GRANT rx_other TO {names['odd']}")
    stranger = psycopg.connect(copy.conninfo(db, user="rx_stranger", password=stranger_pw),
                               autocommit=True)
    restored = {k: role(copy, n) for k, n in names.items()}
    stranger_role = role(copy, "rx_stranger")
    print({"source database OID": src_oid, "copy database OID": copy_oid,
           "rx_stranger's OID": stranger_role,
           **{f"{k}: lease role_oid / (OID, LOGIN) of its name on the copy": (before[n], restored[k])
              for k, n in names.items()}})
    # a requester on the copy is refused until its operator's reaper has taken it over
    with (psycopg.connect(dsn(copy, db, "tm_req"), autocommit=True) as conn,
          pytest.raises(psycopg.Error, match="restored onto another cluster")):
        conn.execute("SELECT jit.request('rx', interval '10 minutes', 'INC-8', %s)",
                     (scram_verifier(conn, new_password()),))
    reaped = run("reap", "-v", "--dsn", dsn(copy, db))
    print(reaped.output)
    # ended on the copy; the odd role's lease keeps it, which the exit status says
    assert reaped.exit_code == 1, reaped.output
    assert f"ended on this restored copy {names['kept']}" in reaped.output
    assert f"{names['odd']}: kept" in reaped.output
    after = lease_rows(copy, db)
    print(after)
    # the lease's own role, recognised by name: ended and dropped on the copy
    assert role(copy, names["kept"]) is None
    assert after[names["kept"]][1] == "restore" and after[names["kept"]][2] is True
    # the stranger that holds the old OID: untouched, its session alive
    assert role(copy, "rx_stranger") == stranger_role and stranger_role is not None
    assert stranger_role[1] is True
    assert stranger.execute("SELECT 1").fetchone() == (1,)
    assert after[names["gone"]][1] == "restore" and after[names["gone"]][2] is True
    # the odd role of the lease's name: left alone, and the lease says why
    assert role(copy, names["odd"]) == restored["odd"]
    assert after[names["odd"]][1] == "restore" and after[names["odd"]][2] is False
    assert "not clearly this lease's" in str(after[names["odd"]][3])
    # an operator reads why the odd role was left, and the take-over in the audit trail
    listed = run("leases", "--all", "--json", "--dsn", dsn(copy, db))
    assert listed.exit_code == 0 and "not clearly this lease's" in listed.output, listed.output
    audited = run("audit", "--json", "--dsn", dsn(copy, db))
    assert audited.exit_code == 0, audited.output
    assert audited.output.count('"event": "restore"') == 4, audited.output   # three leases, the copy
    assert "a member of rx_other, which its profile does not grant" in audited.output
    # the copy's audit trail still verifies, and requesters may ask again
    assert run("audit", "--verify", "--dsn", dsn(copy, db)).exit_code == 0
    with psycopg.connect(dsn(copy, db, "tm_req"), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request('rx', interval '10 minutes', 'INC-9', %s)",
                           (scram_verifier(conn, new_password()),)).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    # the original is untouched: its lease's session goes on there
    assert original.execute("SELECT x FROM t").fetchone() == (1,)
    stranger.close()
    original.close()
    for n in names.values():
        assert run("revoke", n, "--reason", "test done", "--dsn", source).exit_code == 0
