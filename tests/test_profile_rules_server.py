"""``jit.my_profile_rules()``: what a request for each profile the caller may request must
pass (approval: by whom, how many), callable by exactly who may call ``jit.my_profiles()``,
and never a word about a profile the caller may not request.

``alice`` is a ``jit_requester``; ``rita`` is a member of ``rules_team`` only, the requesters
role of one profile; ``nora`` is a login in no requesters role.  A lease may request nothing
(``jit.request`` refuses a temporary role), so it gets no rule, even when its grant role is a
profile's requesters role.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgcli_jit import server
from pgcli_jit.backends.base import RoleInfo
from pgcli_jit.backends.login import Login
from pgcli_jit.backends.postgres.backend import PostgresBackend
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.session.config import server_side_profile
from pgcli_jit.session.report import approval_note
from tests.conftest import REQUESTER, make_login

Conn = psycopg.Connection[tuple[Any, ...]]
PROFILES = ("rules-open", "rules-4eyes", "rules-team", "rules-as-team")


def as_user(cluster: Cluster, user: str, password: str = "") -> Conn:
    return psycopg.connect(cluster.conninfo("app", user=user, password=password), autocommit=True)


def rules(conn: Conn) -> list[dict[str, Any]]:
    return [dict(row) for (row,) in conn.execute("SELECT jit.my_profile_rules()").fetchall()]


def listed(conn: Conn) -> list[str]:
    return [name for (name,) in conn.execute("SELECT name FROM jit.my_profiles()").fetchall()]


def ours(names: list[str]) -> list[str]:
    """Only this module's profiles: others' modules declare theirs in the same database."""
    return [n for n in names if n in PROFILES]


def profile_set(conn: Conn, name: str, grants: list[str], requesters: str = "jit_requester",
                approvers: str | None = None, approvals: int = 1) -> None:
    conn.execute("SELECT jit.profile_set(%s, %s, interval '5 min', interval '10 min', %s, false, '',"
                 " 'a test profile', %s, %s, interval '30 min')",
                 (name, grants, requesters, approvers, approvals))


@pytest.fixture(scope="module")
def declared(cluster: Cluster) -> Iterator[None]:
    with cluster.connect() as conn:
        for role in ("rules_team", "rules_leads"):
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(f"CREATE ROLE {role} NOLOGIN")
        conn.execute("GRANT rules_team TO jit_owner WITH ADMIN OPTION")
    make_login(cluster, "rita", member_of="rules_team")
    make_login(cluster, "nora")
    with cluster.connect("app") as conn:
        profile_set(conn, "rules-open", ["jit_read"])
        profile_set(conn, "rules-4eyes", ["jit_read"], approvers="rules_leads", approvals=2)
        profile_set(conn, "rules-team", ["jit_read"], requesters="rules_team", approvers="rules_leads")
        # a lease of this one holds rules_team: a member of another profile's requesters role
        profile_set(conn, "rules-as-team", ["rules_team"])
    yield
    with cluster.connect("app") as conn:
        for (name,) in conn.execute("SELECT rolname FROM jit_data.leases WHERE dropped_at IS NULL"
                                    " AND profile = ANY(%s)", (list(PROFILES),)).fetchall():
            conn.execute("SELECT jit.revoke(%s)", (name,))
            conn.execute("SELECT jit.finish(%s)", (name,))
        for name in PROFILES:
            conn.execute("SELECT jit.profile_drop(%s)", (name,))


def test_a_requester_sees_the_rules_of_exactly_the_profiles_it_may_request(cluster: Cluster,
                                                                            declared: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        found = [r for r in rules(alice) if r["profile"] in PROFILES]
        assert [r["profile"] for r in found] == ours(listed(alice)) == ["rules-4eyes", "rules-as-team",
                                                                        "rules-open"]
    assert found[0] == {"profile": "rules-4eyes", "approval_required": True, "approvers": "rules_leads",
                        "approvals": 2, "approval_timeout_seconds": 1800, "statements_logged": True}
    assert found[2] == {"profile": "rules-open", "approval_required": False, "approvers": None,
                        "approvals": 0, "approval_timeout_seconds": None, "statements_logged": True}
    with as_user(cluster, "rita") as rita:   # requesters role rules_team, granted by profile_set
        assert [r["profile"] for r in rules(rita)] == listed(rita) == ["rules-team"]
        assert rules(rita)[0]["approvers"] == "rules_leads"


def test_who_may_not_call_my_profiles_may_not_call_my_profile_rules(cluster: Cluster, declared: None) -> None:
    with as_user(cluster, "nora") as nora:
        for function in ("jit.my_profiles()", "jit.my_profile_rules()"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                nora.execute(f"SELECT {function}")
    with cluster.connect("app") as conn:
        callers = [
            set(conn.execute("SELECT g.grantee::regrole::text FROM pg_proc p, aclexplode(p.proacl) g"
                             " WHERE p.oid = %s::regprocedure AND g.privilege_type = 'EXECUTE'",
                             (function,)).fetchall())
            for function in ("jit.my_profiles()", "jit.my_profile_rules()")]
    assert callers[0] == callers[1] and ("rules_team",) in callers[0]


def test_a_lease_sees_no_rule_even_as_a_member_of_a_requesters_role(cluster: Cluster, declared: None) -> None:
    """It may call the function (its grant role is rules-team's requesters role, as it may
    call my_profiles), but it may request nothing: it is told nothing."""
    with as_user(cluster, REQUESTER) as alice:
        password = new_password()
        row = alice.execute("SELECT jit.request('rules-as-team', NULL, 'rules', %s)",
                            (scram_verifier(alice, password),)).fetchone()
    assert row is not None and row[0]["status"] == "granted", row
    with as_user(cluster, row[0]["rolname"], password) as lease:
        assert rules(lease) == []
        refused = lease.execute("SELECT jit.request('rules-team', NULL, 'x', %s)",
                                (scram_verifier(lease, new_password()),)).fetchone()
    assert refused is not None and refused[0]["status"] == "denied"


def test_setup_gives_the_function_to_the_roles_that_hold_my_profiles(cluster: Cluster,
                                                                     declared: None) -> None:
    """An install whose profiles were declared before the function existed: their requesters
    roles hold my_profiles only, and setup --apply brings them the rules too (and takes the
    rules from a role whose my_profiles an operator took away)."""
    with cluster.connect("app") as conn:
        conn.execute("REVOKE EXECUTE ON FUNCTION jit.my_profile_rules() FROM rules_team")
        conn.execute("GRANT EXECUTE ON FUNCTION jit.my_profile_rules() TO rules_leads")
    with as_user(cluster, "rita") as rita, pytest.raises(psycopg.errors.InsufficientPrivilege):
        rita.execute("SELECT jit.my_profile_rules()")
    with cluster.connect("app") as conn:
        server.apply(conn)
        held = conn.execute("SELECT has_function_privilege(r, 'jit.my_profile_rules()', 'EXECUTE')"
                            " FROM unnest(ARRAY['rules_team', 'rules_leads']) r").fetchall()
    assert held == [(True,), (False,)]
    with as_user(cluster, "rita") as rita:
        assert [r["profile"] for r in rules(rita)] == ["rules-team"]


def requestable(cluster: Cluster, dbname: str = "app") -> dict[str, RoleInfo]:
    backend = PostgresBackend(server_side_profile("(server)"))
    backend.use_session(lambda: Login({"host": cluster.host, "port": str(cluster.port), "dbname": dbname,
                                       "user": REQUESTER}))
    try:
        return {info.name: info for info in backend.requestable()}
    finally:
        backend.close()


def test_the_backend_reads_who_must_approve(cluster: Cluster, declared: None) -> None:
    infos = requestable(cluster)
    assert (infos["rules-4eyes"].approvers, infos["rules-4eyes"].approvals) == ("rules_leads", 2)
    assert (infos["rules-open"].approvers, infos["rules-open"].approvals) == ("", 0)
    assert "rules-team" not in infos


def test_a_schema_older_than_the_function_lists_its_profiles_with_approval_unknown(cluster: Cluster) -> None:
    """Schema version 5's functions have jit.my_profiles() and no jit.my_profile_rules():
    the listing still works, and says nothing it does not know."""
    from pathlib import Path

    cluster.execute("DROP DATABASE IF EXISTS rules_v5")
    cluster.execute("CREATE DATABASE rules_v5")
    try:
        with cluster.connect("rules_v5") as su:
            with su.transaction():
                for f in server.sql_files():
                    if f.version is not None and f.version <= 5:
                        su.execute(f.text.encode())
                su.execute((Path(__file__).parent / "data" / "functions_v5.sql").read_bytes())
            su.execute("SELECT jit.profile_set('old', ARRAY['jit_read'], interval '10 min',"
                       " interval '1 hour', 'jit_requester', false, '', '')")
        infos = requestable(cluster, "rules_v5")
        assert list(infos) == ["old"] and infos["old"].approvers is None
        assert approval_note(infos["old"]) == "approval unknown"
    finally:
        cluster.execute("DROP DATABASE IF EXISTS rules_v5 WITH (FORCE)")
