"""Security: what a lease created leaves with the lease, wherever its ownership went.

The class: ownership leaving the lease's role by a path no event trigger sees.  REASSIGN
OWNED BY CURRENT_USER TO <grant role> needs only the grant role's privileges (INHERIT; a
grant made SET FALSE on 16+ does not stop it) and fires no event trigger, so the DDL guard
never saw it; what the lease made then outlived it as the grant role's.  The lease's end now
brings back to the lease's role every object the lease's own record says it created,
wherever its owner is now, before it hands them over disarmed or drops them.  Run on 15 and,
with PGCLI_JIT_PG_BINDIR, on 18.
"""

from __future__ import annotations

import secrets

import psycopg
import pytest

from pgcli_jit.devtools.cluster import Cluster
from tests import test_redteam as rt
from tests.conftest import declare_server_profile
from tests.test_redteam import DDL, Conn, lease_session, login

pytestmark = pytest.mark.security

# the red team's world (profiles, logins, schema rt_work) and its per-test cleanup
world = rt.world
cleanup = rt.cleanup

NO_OWNER = "rt_ddl_noowner"   # may create in rt_work; what it leaves is dropped with it


@pytest.fixture(scope="module")
def no_owner(cluster: Cluster, world: None) -> str:
    declare_server_profile(cluster, NO_OWNER, grant=["rt_ddl"], ttl="5m", max_ttl="10m")
    return NO_OWNER


def end(cluster: Cluster, rolname: str) -> str:
    """An operator's revoke and finish; the outcome the finish reports."""
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.operator_revoke(%s, 'incident')", (rolname,))
        row = conn.execute("SELECT jit.finish(%s)->>'outcome'", (rolname,)).fetchone()
    assert row is not None
    return str(row[0])


def owner_of(cluster: Cluster, relation: str) -> str | None:
    with cluster.connect("app") as conn:
        row = conn.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = to_regclass(%s)",
                           (relation,)).fetchone()
    return None if row is None else str(row[0])


def plant(lease: Conn, t: str) -> None:
    """What the red team left: a table with a row, a sequence a column owns, a view over what
    the lease may not read, and a type; then everything given to the grant role at once."""
    lease.execute(f"CREATE TABLE rt_work.{t} (id serial, x text)")
    lease.execute(f"INSERT INTO rt_work.{t} (x) VALUES ('planted')")
    lease.execute(f"CREATE VIEW rt_work.{t}_v AS SELECT x FROM rt_work.secret")
    lease.execute(f"CREATE TYPE rt_work.{t}_ty AS (a int)")
    lease.execute("REASSIGN OWNED BY CURRENT_USER TO rt_ddl")


def test_reassigned_to_a_grant_role_what_a_lease_made_is_dropped_with_it(
        cluster: Cluster, cleanup: list[Conn], no_owner: str) -> None:
    rolname, lease = lease_session(cluster, cleanup, no_owner)
    t = f"behind_{secrets.token_hex(4)}"
    plant(lease, t)
    assert owner_of(cluster, f"rt_work.{t}") == "rt_ddl"   # the attack itself still works
    lease.close()
    assert end(cluster, rolname) == "dropped"
    for relation in (f"rt_work.{t}", f"rt_work.{t}_v", f"rt_work.{t}_id_seq"):
        assert owner_of(cluster, relation) is None, relation
    with cluster.connect("app") as conn:
        assert conn.execute("SELECT to_regtype(%s)", (f"rt_work.{t}_ty",)).fetchone() == (None,)
        # nothing of the lease's stayed with the grant role
        assert conn.execute("SELECT count(*) FROM pg_class"
                            " WHERE relowner = 'rt_ddl'::regrole").fetchone() == (0,)
        # and jit_owner keeps no membership it borrowed to take it back (only its ADMIN OPTION)
        assert conn.execute("SELECT count(*) FROM pg_auth_members WHERE roleid = 'rt_ddl'::regrole"
                            " AND member = 'jit_owner'::regrole").fetchone() == (1,)


def test_reassigned_to_a_grant_role_what_a_lease_made_is_handed_over_disarmed(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease = lease_session(cluster, cleanup, DDL)
    t = f"behind_{secrets.token_hex(4)}"
    plant(lease, t)
    lease.close()
    assert end(cluster, rolname) == "dropped"
    assert owner_of(cluster, f"rt_work.{t}") == "rt_owner"
    with cluster.connect("app") as conn:
        assert conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
                            (f"rt_work.{t}_v",)).fetchone() == (["security_invoker=true"],)
        assert conn.execute("SELECT count(*) FROM pg_class"
                            " WHERE relowner = 'rt_ddl'::regrole").fetchone() == (0,)
    # a later lease of the same grant role reads nothing through what this one planted
    _, later = lease_session(cluster, cleanup, DDL)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        later.execute(f"SELECT * FROM rt_work.{t}_v")
    with cluster.connect("app") as conn:
        conn.execute(f"DROP VIEW rt_work.{t}_v; DROP TABLE rt_work.{t}; DROP TYPE rt_work.{t}_ty")


def test_what_a_lease_made_and_gave_its_grant_role_before_ending_itself_still_goes(
        cluster: Cluster, cleanup: list[Conn], no_owner: str) -> None:
    # the lease reassigns, then revokes itself (its requester finishing it, not an operator)
    rolname, lease = lease_session(cluster, cleanup, no_owner)
    t = f"behind_{secrets.token_hex(4)}"
    plant(lease, t)
    lease.close()
    alice = login(cluster, cleanup, rt.REQUESTER)
    alice.execute("SELECT jit.revoke(%s)", (rolname,))
    row = alice.execute("SELECT jit.finish(%s)->>'outcome'", (rolname,)).fetchone()
    assert row == ("dropped",)
    assert owner_of(cluster, f"rt_work.{t}") is None


def test_an_object_given_to_a_role_the_broker_cannot_act_as_keeps_the_lease_and_says_which(
        cluster: Cluster, cleanup: list[Conn], no_owner: str) -> None:
    # a superuser moved it somewhere the broker has no say: the lease's role is kept,
    # powerless, and the error names the object, for an operator to decide
    rolname, lease = lease_session(cluster, cleanup, no_owner)
    t = f"behind_{secrets.token_hex(4)}"
    lease.execute(f"CREATE TABLE rt_work.{t} (x int)")
    lease.close()
    with cluster.connect("app") as conn:
        conn.execute("DO $$BEGIN IF to_regrole('rt_elsewhere') IS NULL THEN CREATE ROLE rt_elsewhere;"
                     " END IF; END$$")
        conn.execute(f"ALTER TABLE rt_work.{t} OWNER TO rt_elsewhere")
    outcome = end(cluster, rolname)
    assert outcome.startswith("failed: ") and f"rt_work.{t}" in outcome and "rt_elsewhere" in outcome
    with cluster.connect("app") as conn:
        row = conn.execute("SELECT rolcanlogin, (SELECT count(*) FROM pg_auth_members WHERE member = r.oid)"
                           " FROM pg_roles r WHERE rolname = %s", (rolname,)).fetchone()
        assert row == (False, 0)
        conn.execute(f"DROP TABLE rt_work.{t}")
        assert conn.execute("SELECT jit.finish(%s)->>'outcome'", (rolname,)).fetchone() == ("dropped",)


def give_large_objects_away(lease: Conn) -> bool:
    """REASSIGN OWNED to the grant role, with a large object among what the lease owns.  16+
    refuses it for a large object (it needs SET on the grant role, which a lease lacks):
    False then, and the large object is still the lease's."""
    try:
        lease.execute("REASSIGN OWNED BY CURRENT_USER TO rt_ddl")
    except psycopg.errors.InsufficientPrivilege as refused:
        assert lease.info.server_version >= 160000 and "SET ROLE" in str(refused)
        return False
    return True


def test_a_large_object_given_to_the_grant_role_goes_with_the_lease(
        cluster: Cluster, cleanup: list[Conn], no_owner: str) -> None:
    # a function makes it (no event trigger, no record); REASSIGN then gives it away
    rolname, lease = lease_session(cluster, cleanup, no_owner)
    row = lease.execute("SELECT lo_from_bytea(0, 'planted')").fetchone()
    assert row is not None
    give_large_objects_away(lease)
    lease.close()
    assert end(cluster, rolname) == "dropped"
    with cluster.connect("app") as conn:
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = %s",
                            (row[0],)).fetchone() == (0,)


@pytest.mark.parametrize("how", ["reassign", "set role"])
def test_a_grant_role_owning_a_large_object_is_unfit_and_the_reaper_ends_its_leases(
        cluster: Cluster, cleanup: list[Conn], no_owner: str, how: str) -> None:
    rolname, lease = lease_session(cluster, cleanup, no_owner)
    if how == "reassign":
        lease.execute("SELECT lo_from_bytea(0, 'planted')")
        if not give_large_objects_away(lease):
            pytest.skip("PostgreSQL 16+ refuses a lease's REASSIGN of a large object itself")
    else:   # 15 lets a lease act as its grant role; a function makes the object, unseen
        try:
            lease.execute("SET ROLE rt_ddl")
        except psycopg.errors.InsufficientPrivilege:
            assert lease.info.server_version >= 160000
            pytest.skip("PostgreSQL 16+ refuses a lease's SET ROLE to its grant role itself")
        lease.execute("SELECT lo_from_bytea(0, 'planted')")
        lease.execute("RESET ROLE")
    rt.reap(cluster)
    assert not rt.alive(lease)
    with cluster.connect("app") as conn:
        row = conn.execute("SELECT end_event, dropped_at IS NOT NULL FROM jit_data.leases WHERE rolname = %s",
                           (rolname,)).fetchone()
        assert row == ("revoke", True)
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata"
                            " WHERE lomowner = 'rt_ddl'::regrole").fetchone() == (0,)
