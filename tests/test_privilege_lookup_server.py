"""``jit.profiles_granting``: which profiles the caller may request would allow a denied
statement, asked from a requester's login and from a lease's, with hostile names.

The object is resolved as the caller names it (their search_path, their schema privileges);
only profiles the caller (or a lease's requester) may request are ever named; a bad name
returns no row, never an error.

``alice`` is a ``jit_requester``; ``lk_team`` is the requesters role of ``lk-hidden``, which
alice is not in; ``nora`` is a login in no requesters role.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgcli_jit.backends.base import Privilege
from pgcli_jit.backends.login import Login
from pgcli_jit.backends.postgres.backend import PostgresBackend
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.server import statements
from pgcli_jit.session.catalog import LISTING
from pgcli_jit.session.config import server_side_profile
from pgcli_jit.session.denied import read_denial
from tests.conftest import REQUESTER, make_login

pytestmark = pytest.mark.security

Conn = psycopg.Connection[tuple[Any, ...]]
PROFILES = ("lk-write", "lk-wide", "lk-status", "lk-hidden", "lk-4eyes", "lk-seq", "lk-read")
#: dropped at the end (lk_team keeps the requester functions profile_set gave it)
ROLES = ("lk_write", "lk_other", "lk_status", "lk_seq")



def as_user(cluster: Cluster, user: str, password: str = "") -> Conn:
    return psycopg.connect(cluster.conninfo("app", user=user, password=password), autocommit=True)


def found(conn: Conn, privilege: str, kind: str, obj: str,
          column: str | None = None) -> list[tuple[Any, ...]]:
    return conn.execute(statements.PROFILES_GRANTING, (privilege, kind, obj, column)).fetchall()


def names(conn: Conn, privilege: str, kind: str, obj: str, column: str | None = None) -> list[str]:
    return [row[0] for row in found(conn, privilege, kind, obj, column)]


SETUP = """
CREATE SCHEMA lk;
CREATE TABLE lk.lk_orders (id int PRIMARY KEY, status text, secret text);
CREATE SEQUENCE lk.lk_seq;
CREATE FUNCTION lk.lk_fn() RETURNS int LANGUAGE sql AS 'SELECT 1';
REVOKE EXECUTE ON FUNCTION lk.lk_fn() FROM PUBLIC;
CREATE SCHEMA lk_private;
CREATE TABLE lk_private.lk_vault (id int);
CREATE TABLE lk."we ird ""t ä" (id int);
CREATE ROLE lk_write NOLOGIN; CREATE ROLE lk_other NOLOGIN; CREATE ROLE lk_status NOLOGIN;
CREATE ROLE lk_seq NOLOGIN; CREATE ROLE lk_team NOLOGIN;
GRANT USAGE ON SCHEMA lk TO jit_requester, jit_lease, lk_team;
GRANT USAGE ON SCHEMA lk, lk_private TO lk_write, lk_status, lk_seq;
GRANT SELECT, UPDATE ON lk.lk_orders, lk."we ird ""t ä", lk_private.lk_vault TO lk_write;
GRANT EXECUTE ON FUNCTION lk.lk_fn() TO lk_write;
GRANT UPDATE (status) ON lk.lk_orders TO lk_status;
GRANT USAGE, UPDATE ON SEQUENCE lk.lk_seq TO lk_seq;
GRANT lk_write, lk_other, lk_status, lk_seq, lk_team TO jit_owner WITH ADMIN OPTION;
"""


def profile_set(conn: Conn, name: str, grants: list[str], max_ttl: str = "1 hour",
                requesters: str = "jit_requester", reason: bool = False,
                approvers: str | None = None) -> None:
    conn.execute("SELECT jit.profile_set(%s, %s, interval '15 min', %s::interval, %s, %s, '',"
                 " 'lookup test', %s, 1, interval '30 min')",
                 (name, grants, max_ttl, requesters, reason, approvers))


@pytest.fixture(scope="module")
def declared(cluster: Cluster) -> Iterator[None]:
    with cluster.connect("app") as conn:
        conn.execute(SETUP.encode())
        profile_set(conn, "lk-write", ["lk_write"], reason=True)
        profile_set(conn, "lk-wide", ["lk_write", "lk_other"], max_ttl="2 hours")
        profile_set(conn, "lk-4eyes", ["lk_write"], max_ttl="8 hours", approvers="jit_admin")
        profile_set(conn, "lk-status", ["lk_status"])
        profile_set(conn, "lk-seq", ["lk_seq"])
        profile_set(conn, "lk-hidden", ["lk_write"], max_ttl="15 min", requesters="lk_team")
        profile_set(conn, "lk-read", ["jit_read"])
    make_login(cluster, "nora")
    make_login(cluster, "tess", member_of="lk_team")
    yield
    with cluster.connect("app") as conn:
        for (name,) in conn.execute("SELECT rolname FROM jit_data.leases WHERE dropped_at IS NULL"
                                    " AND profile = ANY(%s)", (list(PROFILES),)).fetchall():
            conn.execute("SELECT jit.revoke(%s)", (name,))
            conn.execute("SELECT jit.finish(%s)", (name,))
        for name in PROFILES:
            conn.execute("SELECT jit.profile_drop(%s)", (name,))
        conn.execute("DROP SCHEMA lk, lk_private CASCADE")
        conn.execute("DROP ROLE " + ", ".join(ROLES))


def test_a_requester_is_offered_what_it_may_request_smallest_first(cluster: Cluster, declared: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        rows = found(alice, "UPDATE", "table", "lk.lk_orders")
    assert [r[0] for r in rows] == ["lk-write", "lk-4eyes", "lk-wide"]
    assert rows[0] == ("lk-write", "lk.lk_orders", 900.0, 3600.0, True, False, 1)
    assert rows[1][5] is True and rows[2][6] == 2


def test_a_profile_the_caller_may_not_request_is_never_named(cluster: Cluster, declared: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        assert "lk-hidden" not in names(alice, "UPDATE", "table", "lk.lk_orders")
    with as_user(cluster, "tess") as tess:   # in lk_team only
        assert names(tess, "UPDATE", "table", "lk.lk_orders") == ["lk-hidden"]
    with as_user(cluster, "nora") as nora, pytest.raises(psycopg.errors.InsufficientPrivilege):
        found(nora, "UPDATE", "table", "lk.lk_orders")


def test_the_name_resolves_with_the_callers_search_path(cluster: Cluster, declared: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        assert names(alice, "UPDATE", "table", "lk_orders") == []   # lk is not on the path
        alice.execute("SET search_path = lk, public")
        rows = found(alice, "UPDATE", "table", "lk_orders")
        assert rows and {r[1] for r in rows} == {"lk.lk_orders"}
        assert names(alice, "SELECT", "table", "lk_orders") == names(alice, "SELECT", "table", "lk.lk_orders")


def test_a_schema_the_caller_may_not_use_resolves_to_nothing(cluster: Cluster, declared: None) -> None:
    """lk-write grants UPDATE on lk_private.lk_vault, but alice may not use the schema: she
    could not name the table, and the lookup does not name it either (nor raise)."""
    with as_user(cluster, REQUESTER) as alice:
        assert names(alice, "UPDATE", "table", "lk_private.lk_vault") == []
        alice.execute("SET search_path = lk_private, public")
        assert names(alice, "UPDATE", "table", "lk_vault") == []
        oid = alice.execute("SELECT oid FROM pg_class WHERE relname = 'lk_vault'").fetchone()
        assert oid is not None   # the catalog is readable, the resolved half still checks USAGE
        assert alice.execute("SELECT * FROM jit.profiles_granting_resolved('UPDATE', 'table', %s)",
                             (oid[0],)).fetchall() == []
    # the schema itself is named in the catalog: who grants USAGE on it is answered
    with as_user(cluster, REQUESTER) as alice:
        assert "lk-write" in names(alice, "USAGE", "schema", "lk_private")


def test_a_column_level_grant_counts_for_its_column_only(cluster: Cluster, declared: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        assert "lk-status" not in names(alice, "UPDATE", "table", "lk.lk_orders")
        rows = found(alice, "UPDATE", "table", "lk.lk_orders", "status")
        assert [r[0] for r in rows][:1] == ["lk-status"] and rows[0][1] == "lk.lk_orders.status"
        assert "lk-status" not in names(alice, "UPDATE", "table", "lk.lk_orders", "secret")
        assert "lk-write" in names(alice, "UPDATE", "table", "lk.lk_orders", "secret")   # table-wide
        assert names(alice, "UPDATE", "table", "lk.lk_orders", "nosuch") == []


def test_other_kinds_of_object(cluster: Cluster, declared: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        assert names(alice, "USAGE", "sequence", "lk.lk_seq") == ["lk-seq"]
        assert names(alice, "UPDATE", "table", "lk.lk_seq") == []     # a sequence is not a table
        assert names(alice, "EXECUTE", "function", "lk.lk_fn")[:1] == ["lk-write"]
        assert "lk-seq" not in names(alice, "EXECUTE", "function", "lk.lk_fn")
        assert names(alice, "CONNECT", "database", "app") != []       # every lease may connect
        assert names(alice, "CREATE", "database", "app") == []
        weird = 'lk."we ird ""t ä"'
        assert found(alice, "UPDATE", "table", weird)[0][:2] == ("lk-write", weird)


HOSTILE = [
    "lk.lk_orders'; DROP TABLE lk.lk_orders; --", 'lk."lk_orders', "a.b.c.d.e", "lk . lk_orders x",
    "x" * 10_000, "lk.lk_orders\x01", "lk.lk_\t orders", "ÄÖÜ.ß", "\u202elk.lk_orders", "", ".", '""',
    "lk.lk_orders(", "pg_catalog.pg_authid", "jit_data.profiles",
]


@pytest.mark.parametrize("obj", HOSTILE)
def test_hostile_names_return_nothing_and_raise_nothing(cluster: Cluster, declared: None, obj: str) -> None:
    with as_user(cluster, REQUESTER) as alice:
        for kind in ("table", "sequence", "schema", "function", "database", "view", "nonsense"):
            assert names(alice, "UPDATE", kind, obj) == []
            assert names(alice, "UPDATE", kind, "lk.lk_orders", obj) == []
        assert names(alice, obj, "table", "lk.lk_orders") == []
        assert alice.execute("SELECT 1").fetchone() == (1,)   # the session is fine


def test_an_unknown_privilege_or_a_column_of_a_non_table_returns_nothing(cluster: Cluster,
                                                                         declared: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        assert names(alice, "EXECUTE", "table", "lk.lk_orders") == []
        assert names(alice, "DELETE", "column", "lk.lk_orders") == []
        assert names(alice, "USAGE", "schema", "lk", "status") == []
        assert names(alice, "update", "table", "lk.lk_orders")[:1] == ["lk-write"]


def test_a_lease_is_answered_for_its_own_requester_and_not_after_it_ends(cluster: Cluster,
                                                                           declared: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        password = new_password()
        row = alice.execute("SELECT jit.request('lk-read', NULL, 'lookup', %s)",
                            (scram_verifier(alice, password),)).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    rolname = row[0]["rolname"]
    with as_user(cluster, rolname, password) as lease:
        assert names(lease, "UPDATE", "table", "lk.lk_orders") == ["lk-write", "lk-4eyes", "lk-wide"]
        for obj in HOSTILE:
            assert names(lease, "UPDATE", "table", obj) == []
        with cluster.connect("app") as su:
            su.execute("SELECT jit.revoke(%s)", (rolname,))
        assert names(lease, "UPDATE", "table", "lk.lk_orders") == []


# -- the client's half: the server's real words read, and asked through the backend -----------


def backend_as(cluster: Cluster, user: str) -> PostgresBackend:
    backend = PostgresBackend(server_side_profile(LISTING))
    backend.use_session(lambda: Login({"host": cluster.host, "port": str(cluster.port), "dbname": "app",
                                       "user": user}))
    return backend


REAL = [  # as the lease of lk-read runs them: the statement, what the offer names
    ("UPDATE lk.lk_orders SET status = 'x' WHERE id = 1", ["lk-write", "lk-4eyes", "lk-wide"]),
    ("UPDATE lk.lk_orders SET status = 'x'", ["lk-write", "lk-4eyes", "lk-wide"]),  # not lk-status
    ("SELECT nextval('lk.lk_seq')", ["lk-seq"]),
    ("SELECT lk.lk_fn()", ["lk-write", "lk-4eyes", "lk-wide"]),
    ("SELECT * FROM lk_private.lk_vault", None),   # USAGE on a schema: the table is not named
    ('UPDATE lk."we ird ""t ä" SET id = 2', ["lk-write", "lk-4eyes", "lk-wide"]),
]


def test_the_servers_own_words_are_read_and_answered(cluster: Cluster, declared: None) -> None:
    """Each statement fails with 42501 as a lease of lk-read; the message PostgreSQL sent is
    read by the shell's parser and asked of the server through the backend, as alice."""
    with as_user(cluster, REQUESTER) as alice:
        password = new_password()
        row = alice.execute("SELECT jit.request('lk-read', NULL, 'words', %s)",
                            (scram_verifier(alice, password),)).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    backend = backend_as(cluster, REQUESTER)
    try:
        with as_user(cluster, row[0]["rolname"], password) as lease:
            for statement, expected in REAL:
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
                    lease.execute(statement)
                denial = read_denial(caught.value.sqlstate, caught.value.diag.message_primary, statement)
                if expected is None:
                    assert denial is None, statement
                    continue
                assert denial is not None, (statement, caught.value.diag.message_primary)
                found = None
                for wanted in denial.needed:
                    names_now = [p.name for p in backend.profiles_granting(wanted)]
                    found = names_now if found is None else [n for n in found if n in names_now]
                assert found == expected, (statement, denial)
    finally:
        backend.close()
    assert backend.says_what_grants


def test_the_backend_answers_nothing_for_a_login_in_no_requesters_role(cluster: Cluster,
                                                                       declared: None) -> None:
    backend = backend_as(cluster, "nora")
    try:
        assert backend.profiles_granting(Privilege("UPDATE", "table", "lk.lk_orders")) == []
    finally:
        backend.close()


# -- what each profile grants (\jit profiles, completion hints) --------------------------------


def described(conn: Conn) -> dict[str, dict[str, Any]]:
    return {row["profile"]: row for (row,) in conn.execute(statements.MY_PROFILE_GRANTS).fetchall()}


def test_what_each_profile_grants_is_described_compactly(cluster: Cluster, declared: None) -> None:
    """lk_write holds SELECT and UPDATE on both tables of lk: one wildcard item; lk_private is
    a schema alice may not use, so its table is not named; a column grant names its column."""
    with as_user(cluster, REQUESTER) as alice:
        mine = described(alice)
    assert {"lk-write", "lk-wide", "lk-4eyes", "lk-status", "lk-seq", "lk-read"} <= set(mine)
    assert mine["lk-write"]["grants"] == ["SELECT, UPDATE on lk.*"]
    assert mine["lk-write"]["listed"] is True and mine["lk-write"]["more"] == 0
    assert mine["lk-wide"]["grants"] == mine["lk-write"]["grants"]
    assert mine["lk-status"]["grants"] == ["UPDATE on lk.lk_orders (status)"]
    assert mine["lk-seq"]["grants"] == []      # sequences are not described
    assert not any("lk_private" in g for row in mine.values() for g in row["grants"])
    assert mine["lk-4eyes"]["break_glass"] is False and mine["lk-4eyes"]["auto_approved"] is False


def test_a_profile_the_caller_may_not_request_is_never_described(cluster: Cluster, declared: None) -> None:
    """lk_team was made a requesters role by profile_set after setup: profile_set hands it
    the description with the other requester functions, no setup needed."""
    with as_user(cluster, REQUESTER) as alice:
        assert "lk-hidden" not in described(alice)
    with as_user(cluster, "tess") as tess:   # in lk_team only: its own profile, and the table
        tess_sees = described(tess)          # of lk_private that tess may not name stays out
    assert list(tess_sees) == ["lk-hidden"] and tess_sees["lk-hidden"]["grants"] == ["SELECT, UPDATE on lk.*"]
    with as_user(cluster, "nora") as nora, pytest.raises(psycopg.errors.InsufficientPrivilege):
        described(nora)


def test_break_glass_and_an_auto_approval_that_applies_are_said(cluster: Cluster, declared: None) -> None:
    make_login(cluster, "lk_offcall", member_of="jit_requester")  # a requester not on call
    with cluster.connect("app") as su:  # alice is on call: an auto-approve role of her own
        if su.execute("SELECT 1 FROM pg_roles WHERE rolname = 'lk_oncall'").fetchone() is None:
            su.execute("CREATE ROLE lk_oncall NOLOGIN")
        su.execute(f"GRANT lk_oncall TO {REQUESTER}")
        su.execute("SELECT jit.profile_approval_rules('lk-4eyes', 'lk_oncall', true, NULL, NULL)")
    try:
        with as_user(cluster, REQUESTER) as alice:
            row = described(alice)["lk-4eyes"]
        assert row["break_glass"] is True and row["auto_approved"] is True
        with as_user(cluster, REQUESTER) as alice:   # auto-approval of a profile without approvers
            assert described(alice)["lk-write"]["auto_approved"] is False
    finally:
        with cluster.connect("app") as su:
            su.execute("SELECT jit.profile_approval_rules('lk-4eyes', '', false, NULL, NULL)")


def test_a_lease_is_described_nothing(cluster: Cluster, declared: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        password = new_password()
        row = alice.execute("SELECT jit.request('lk-read', NULL, 'describe', %s)",
                            (scram_verifier(alice, password),)).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    with as_user(cluster, row[0]["rolname"], password) as lease, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        described(lease)


def test_the_backend_reads_the_descriptions(cluster: Cluster, declared: None) -> None:
    backend = backend_as(cluster, REQUESTER)
    try:
        assert backend.describes_grants
        mine = {g.name: g for g in backend.profile_grants()}
    finally:
        backend.close()
    assert mine["lk-write"].summary() == "SELECT, UPDATE on lk.*"
    assert mine["lk-seq"].grants == ()


def test_many_relations_share_one_item_and_a_full_set_reads_all(cluster: Cluster, declared: None) -> None:
    with cluster.connect("app") as su:
        su.execute("CREATE SCHEMA lkm; CREATE SCHEMA lka; GRANT USAGE ON SCHEMA lkm, lka TO jit_requester;"
                   + "".join(f"CREATE TABLE lkm.t{i} (id int);" for i in range(7))
                   + "".join(f"GRANT UPDATE ON lkm.t{i} TO lk_other;" for i in range(6))
                   + "CREATE TABLE lka.t (id int); GRANT ALL ON lka.t TO lk_other;")
    try:
        with as_user(cluster, REQUESTER) as alice:
            wide = described(alice)["lk-wide"]["grants"]
    finally:
        with cluster.connect("app") as su:
            su.execute("DROP SCHEMA lkm, lka CASCADE")
    assert wide == ["SELECT, UPDATE on lk.*", "ALL on lka.t",
                    "UPDATE on lkm.t0, lkm.t1, lkm.t2, lkm.t3, lkm.t4 and 1 more"]
