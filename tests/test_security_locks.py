"""Security: no lock a requester or a lease holds stands between an operator and the end of
a lease.  Each attack runs from the requester's own login or the lease's, against a real
cluster; the operator's revoke and finish must end the lease whatever they hold.

The class: a lock the operator's path waits on and a requester or lease can take first.
The lease's mark (an advisory key a requester can compute from the verifier they made, or
read in pg_locks) is no longer taken on the operator's path; the lease's row, its role's
pg_authid row and what its role owns are taken only after the requester's and the lease's
transactions that may hold them are ended; every wait is bounded.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgcli_jit.admin import main
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from tests import test_redteam as rt
from tests.conftest import REQUESTER, make_login
from tests.test_redteam import DDL, LONG, Conn, alive, login

# the red team's world (profiles, logins, schema rt_work) and its per-test cleanup
world = rt.world
cleanup = rt.cleanup

pytestmark = pytest.mark.security

MARK_CLASS = 1785295872


def lease_with_key(cluster: Cluster, opened: list[Conn], profile: str) -> tuple[str, Conn, int]:
    """A lease of alice's, its session, and its mark key as alice computes it from her verifier."""
    alice = login(cluster, opened, REQUESTER)
    password = new_password()
    verifier = scram_verifier(alice, password)
    row = alice.execute("SELECT jit.request(%s, NULL, 'red team', %s)", (profile, verifier)).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    rolname = row[0]["rolname"]
    key = int.from_bytes(hashlib.sha256(verifier.encode()).digest()[:4], "big") & 0x7FFFFFFF
    return rolname, login(cluster, opened, rolname, password), key


def operator_revoke(cluster: Cluster, rolname: str) -> dict[str, Any]:
    """`pgcli-jit-admin revoke`'s two calls, as an operator; neither may hang."""
    with cluster.connect("app") as conn:
        conn.execute("SET statement_timeout = '20s'")
        row = conn.execute("SELECT jit.operator_revoke(%s, 'incident')", (rolname,)).fetchone()
        assert row is not None and row[0]["status"] == "revoked", row
        done = conn.execute("SELECT jit.finish(%s)", (rolname,)).fetchone()
    assert done is not None
    return dict(done[0])


def role_gone(cluster: Cluster, rolname: str) -> bool:
    with cluster.connect("app") as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (rolname,)).fetchone() is None


@pytest.mark.parametrize("how", ["pg_advisory_lock", "pg_advisory_lock_shared"])
def test_a_requester_squatting_the_leases_mark_cannot_stop_an_operators_revoke(
        cluster: Cluster, cleanup: list[Conn], how: str) -> None:
    rolname, lease, key = lease_with_key(cluster, cleanup, LONG)
    squatter = login(cluster, cleanup, REQUESTER)   # a second, idle session of alice's
    squatter.execute(f"SELECT {how}(%s, %s)", (MARK_CLASS, key))
    done = operator_revoke(cluster, rolname)
    assert done["outcome"] == "dropped", done
    assert not alive(lease)
    assert role_gone(cluster, rolname)


def test_a_requester_squatting_the_mark_from_a_transaction_cannot_stop_an_operators_revoke(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease, key = lease_with_key(cluster, cleanup, LONG)
    squatter = login(cluster, cleanup, REQUESTER)
    squatter.execute("BEGIN")
    squatter.execute("SELECT pg_advisory_xact_lock(%s, %s)", (MARK_CLASS, key))
    assert operator_revoke(cluster, rolname)["outcome"] == "dropped"
    assert not alive(lease) and not alive(squatter)


def test_a_renewal_left_open_cannot_stop_an_operators_revoke(cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease, _ = lease_with_key(cluster, cleanup, LONG)
    holder = login(cluster, cleanup, REQUESTER)
    holder.execute("BEGIN")
    holder.execute("SELECT jit.renew(%s, interval '6 min')", (rolname,))   # the lease's row, locked
    assert operator_revoke(cluster, rolname)["outcome"] == "dropped"
    assert not alive(lease) and not alive(holder)   # the renewal never commits


def test_a_lease_renewing_itself_in_an_open_transaction_cannot_stop_an_operators_revoke(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease, _ = lease_with_key(cluster, cleanup, LONG)
    lease.execute("BEGIN")
    lease.execute("SELECT jit.renew(current_user, NULL)")
    assert operator_revoke(cluster, rolname)["outcome"] == "dropped"
    assert not alive(lease)


def test_a_lease_holding_its_role_row_cannot_stop_an_operators_revoke(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease, _ = lease_with_key(cluster, cleanup, LONG)
    lease.execute("BEGIN")
    lease.execute(f"ALTER ROLE \"{rolname}\" PASSWORD 'of my choosing'")   # its pg_authid row
    assert operator_revoke(cluster, rolname)["outcome"] == "dropped"
    assert not alive(lease)


def test_a_requester_locking_what_the_lease_made_cannot_stop_an_operators_finish(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease, _ = lease_with_key(cluster, cleanup, DDL)
    lease.execute("CREATE TABLE rt_work.held_open (x int)")
    lease.execute("BEGIN")
    lease.execute("LOCK TABLE rt_work.held_open IN ACCESS SHARE MODE")
    done = operator_revoke(cluster, rolname)
    assert done["outcome"] == "dropped", done
    with cluster.connect("app") as conn:
        conn.execute("DROP TABLE IF EXISTS rt_work.held_open")


def test_an_operators_revoke_still_ends_a_lease_only_once(cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, _, _ = lease_with_key(cluster, cleanup, LONG)
    operator_revoke(cluster, rolname)
    with cluster.connect("app") as conn:
        again = conn.execute("SELECT jit.operator_revoke(%s, 'again')", (rolname,)).fetchone()
        revokes = conn.execute("SELECT count(*) FROM jit_data.audit WHERE rolname = %s AND event = 'revoke'",
                               (rolname,)).fetchone()
    assert again is not None and again[0]["status"] == "ended"
    assert revokes == (1,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.conninfo("app", user=rolname, password="x"), connect_timeout=5).close()


def test_a_requester_locking_what_the_lease_made_cannot_keep_the_reaper_from_dropping_it(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease, _ = lease_with_key(cluster, cleanup, DDL)
    lease.execute("CREATE TABLE rt_work.peeked (x int)")
    lease.close()
    holder = login(cluster, cleanup, REQUESTER)
    holder.execute("BEGIN")
    # a statement's table locks are taken when it is parsed, before privileges are checked
    holder.execute("PREPARE peek AS SELECT * FROM rt_work.peeked")   # ACCESS SHARE, held
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.revoke(%s)", (rolname,))
    rt.reap(cluster)
    assert role_gone(cluster, rolname) and not alive(holder)
    with cluster.connect("app") as conn:
        conn.execute("DROP TABLE IF EXISTS rt_work.peeked")


def test_pgcli_jit_admin_revoke_by_an_operators_login_ends_a_squatted_lease(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    # the operator is a login in jit_admin, not a superuser: what is ended is ended by the
    # broker's own privileges
    make_login(cluster, "sec_ops", member_of="jit_admin")
    rolname, lease, key = lease_with_key(cluster, cleanup, LONG)
    squatter = login(cluster, cleanup, REQUESTER)
    squatter.execute("SELECT pg_advisory_lock_shared(%s, %s)", (MARK_CLASS, key))   # renewals still run
    holder = login(cluster, cleanup, REQUESTER)
    holder.execute("BEGIN")
    holder.execute("SELECT jit.renew(%s, interval '6 min')", (rolname,))
    operator = f"host={cluster.host} port={cluster.port} dbname=app user=sec_ops"
    result = CliRunner().invoke(main, ["revoke", rolname, "--reason", "INC-1 squatted", "--dsn", operator])
    assert result.exit_code == 0, result.output
    assert "its role is dropped" in result.output, result.output
    assert not alive(lease) and not alive(squatter) and not alive(holder)
    assert role_gone(cluster, rolname)
