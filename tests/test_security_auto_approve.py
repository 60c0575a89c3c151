"""Security: an auto-approve role never defeats four eyes.

The class: a profile's auto-approve role that effectively includes every requester (or
every approver), so that "approved by a second person" becomes "approved by being asked".
jit.profile_approval_rules refuses PUBLIC, the profile's requesters and approvers roles,
any role either of them is a member of, any role every requester's login is in anyway, the
profile's grant roles, the broker's jit_* roles and the predefined pg_* roles: one line each,
naming why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgcli_jit import server
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import make_login

pytestmark = pytest.mark.security

DB = "saa_db"   # a database of its own: its own jit_in_saa_db, audit and profiles
Conn = psycopg.Connection[tuple[Any, ...]]


def as_ops(cluster: Cluster) -> Conn:
    return psycopg.connect(f"host={cluster.host} port={cluster.port} dbname={DB} user=saa_ops",
                           autocommit=True)


@pytest.fixture(scope="module")
def db(cluster: Cluster) -> str:
    """Profile saa-plain: requesters jit_requester, approvers saa_leads, grant saa_read;
    saa_oncall is an on-call group one requester is in."""
    cluster.execute(f"CREATE DATABASE {DB}")
    with cluster.connect(DB) as conn:
        server.apply(conn)
        conn.execute("CREATE ROLE saa_read NOLOGIN; GRANT saa_read TO jit_owner WITH ADMIN OPTION;"
                     "CREATE ROLE saa_leads NOLOGIN; CREATE ROLE saa_oncall NOLOGIN")
    make_login(cluster, "saa_ops", member_of="jit_admin")
    make_login(cluster, "saa_alice", member_of="jit_requester")
    make_login(cluster, "saa_bob", member_of="jit_requester")
    with cluster.connect(DB) as conn:
        conn.execute("GRANT saa_oncall TO saa_alice")
    with as_ops(cluster) as conn:
        conn.execute("SELECT jit.profile_set('saa-plain', %s, interval '5 min', interval '30 min',"
                     " 'jit_requester', false, '', '', 'saa_leads', 1, interval '1 hour', 5)",
                     (["saa_read"],))
    return DB


@pytest.fixture(scope="module")
def wide(cluster: Cluster, db: str) -> Iterator[None]:
    """Roles that take in every requester or approver by another name."""
    with cluster.connect(db) as conn:
        conn.execute("CREATE ROLE saa_above_requesters NOLOGIN; GRANT saa_above_requesters TO jit_requester;"
                     "CREATE ROLE saa_above_leads NOLOGIN; GRANT saa_above_leads TO saa_leads;"
                     "CREATE ROLE saa_every_login NOLOGIN")
        for (login,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper"
                                     " AND pg_has_role(oid, 'jit_requester', 'MEMBER')").fetchall():
            conn.execute(f'GRANT saa_every_login TO "{login}"')
    yield
    with cluster.connect(db) as conn:
        conn.execute("DROP ROLE saa_above_requesters, saa_above_leads, saa_every_login")


@pytest.mark.parametrize(("role", "says"), [
    ("jit_requester", "the profile's requesters role"),
    ("saa_leads", "the profile's approvers role"),
    ("saa_read", "grant roles"),
    ("jit_collector", "broker's own roles"),
    ("jit_in_saa_db", "broker's own roles"),
    ("jit_admin", "broker's own roles"),
    ("pg_monitor", "predefined role"),
    ("public", "PUBLIC is every login"),
    ("PUBLIC", "PUBLIC is every login"),
    ("saa_above_requesters", "jit_requester is a member of it"),
    ("saa_above_leads", "saa_leads is a member of it"),
    ("saa_every_login", "every login in jit_requester is a member of it"),
])
def test_an_auto_approve_role_that_includes_every_requester_or_approver_is_refused(
        cluster: Cluster, wide: None, role: str, says: str) -> None:
    with as_ops(cluster) as conn:
        with pytest.raises(psycopg.errors.RaiseException) as refused:
            conn.execute("SELECT jit.profile_approval_rules('saa-plain', %s, NULL, NULL, NULL)", (role,))
        message = refused.value.diag.message_primary or ""
        assert "cannot be the auto-approve role" in message and says in message, message
        assert "\n" not in message


def test_an_on_call_group_some_requesters_are_not_in_is_accepted(cluster: Cluster, wide: None) -> None:
    with as_ops(cluster) as conn:
        conn.execute("SELECT jit.profile_approval_rules('saa-plain', 'saa_oncall', NULL, NULL, NULL)")
        conn.execute("SELECT jit.profile_approval_rules('saa-plain', '', NULL, NULL, NULL)")


def test_a_profile_change_that_makes_the_rule_unfit_is_refused(cluster: Cluster, db: str) -> None:
    # the rule was fit; naming its role as the approvers afterwards would make it unfit
    with as_ops(cluster) as conn:
        conn.execute("SELECT jit.profile_approval_rules('saa-plain', 'saa_oncall', NULL, NULL, NULL)")
        with pytest.raises(psycopg.errors.RaiseException, match="the profile's approvers role") as refused:
            conn.execute("SELECT jit.profile_set('saa-plain', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                         " 'saa_oncall', NULL, NULL, NULL)")
        assert "\n" not in (refused.value.diag.message_primary or "")
        row = conn.execute("SELECT jit.profile_approval_rules('saa-plain', '', NULL, NULL, NULL)"
                           "->>'approvers'").fetchone()
        assert row == ("saa_leads",)


def test_profile_set_with_an_unfit_rule_changes_nothing(cluster: Cluster, db: str) -> None:
    """``profile set --ttl 9m --auto-approve saa_leads``: the rule is refused in one line, and
    the TTL given with it is not applied either (one transaction), nor audited."""
    from click.testing import CliRunner

    from pgcli_jit.admin import main

    def state() -> tuple[Any, ...]:
        with cluster.connect(DB) as conn:
            row = conn.execute("SELECT (SELECT ttl FROM jit_data.profiles WHERE name = 'saa-plain'),"
                               " (SELECT count(*) FROM jit_data.audit)").fetchone()
        assert row is not None
        return tuple(row)

    before = state()
    dsn = f"host={cluster.host} port={cluster.port} dbname={DB} user=saa_ops"
    done = CliRunner().invoke(main, ["profile", "set", "saa-plain", "--ttl", "9m", "--auto-approve",
                                     "saa_leads", "--dsn", dsn])
    assert done.exit_code == 1 and "cannot be the auto-approve role" in done.output, done.output
    assert len(done.output.strip().splitlines()) == 1, done.output
    assert state() == before
