"""On-call auto-approval and break-glass, server side, from a requester's own login: what a
user with ``psql`` and their password can do, and what the server refuses whatever they send.

``rul_alice`` is a requester and on call (``rul_oncall``); ``rul_bob`` is a requester only;
``rul_lena`` approves (``rul_leads``); ``rul_ops`` is an operator.  A database of its own keeps
the leases, the audit chain and the daily break-glass counts apart from the rest of the suite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgcli_jit import server
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from tests.admin_db import end_all
from tests.conftest import make_login
from tests.test_notify import Receiver, notify_once

DB = "rul_db"
Conn = psycopg.Connection[tuple[Any, ...]]


def dsn(cluster: Cluster, user: str) -> str:
    return f"host={cluster.host} port={cluster.port} dbname={DB} user={user}"


def as_user(cluster: Cluster, user: str) -> Conn:
    return psycopg.connect(dsn(cluster, user), autocommit=True)


def request(cluster: Cluster, user: str, profile: str, reason: str = "INC-7 db on fire",
            break_glass: bool | None = None, ttl: float | None = None) -> dict[str, Any]:
    """jit.request as the user sends it by hand, or jit.request_break_glass."""
    with as_user(cluster, user) as conn:
        verifier = scram_verifier(conn, new_password())
        function = "jit.request_break_glass" if break_glass else "jit.request"
        row = conn.execute(f"SELECT {function}(%s, make_interval(secs => %s), %s, %s)",
                           (profile, ttl, reason, verifier)).fetchone()
    assert row is not None
    return dict(row[0])


def rules(cluster: Cluster, profile: str, auto_approve: str | None = None,
          break_glass: bool | None = None, max_ttl: str | None = None,
          per_day: int | None = None) -> None:
    with as_user(cluster, "rul_ops") as conn:
        conn.execute("SELECT jit.profile_approval_rules(%s, %s, %s, %s::interval, %s)",
                     (profile, auto_approve, break_glass, max_ttl, per_day))


def audit(cluster: Cluster, event: str, requester: str = "rul_alice") -> list[tuple[Any, ...]]:
    with cluster.connect(DB) as conn:
        return conn.execute("SELECT profile, rolname, reason, detail FROM jit_data.audit"
                            " WHERE event = %s AND requester = %s ORDER BY id",
                            (event, requester)).fetchall()


@pytest.fixture(scope="module")
def db(cluster: Cluster) -> str:
    cluster.execute(f"CREATE DATABASE {DB}")
    with cluster.connect(DB) as conn:
        server.apply(conn)
        conn.execute("CREATE ROLE rul_read NOLOGIN; GRANT rul_read TO jit_owner WITH ADMIN OPTION;"
                     "CREATE ROLE rul_leads NOLOGIN; CREATE ROLE rul_oncall NOLOGIN")
    make_login(cluster, "rul_ops", member_of="jit_admin")
    make_login(cluster, "rul_alice", member_of="jit_requester")
    make_login(cluster, "rul_bob", member_of="jit_requester")
    make_login(cluster, "rul_lena", member_of="rul_leads")
    with as_user(cluster, "rul_ops") as conn:
        for name in ("rul-oncall", "rul-glass", "rul-plain"):
            conn.execute("SELECT jit.profile_set(%s, %s, interval '5 min', interval '30 min',"
                         " 'jit_requester', false, '', '', 'rul_leads', 1, interval '1 hour', 5)",
                         (name, ["rul_read"]))
    rules(cluster, "rul-oncall", auto_approve="rul_oncall")
    rules(cluster, "rul-glass", break_glass=True, max_ttl="10 min", per_day=2)
    return DB


@pytest.fixture
def fresh(cluster: Cluster, db: str) -> Iterator[None]:
    with cluster.connect() as conn:
        conn.execute("GRANT rul_oncall TO rul_alice")
    end_all(cluster, DB)
    yield
    end_all(cluster, DB)
    with as_user(cluster, "rul_ops") as conn:
        conn.execute("SELECT jit.profile_set('rul-oncall', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                     " NULL, NULL, NULL, 5)")
        conn.execute("SELECT jit.profile_set('rul-glass', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                     " NULL, NULL, NULL, 5)")


# -- on-call auto-approval -------------------------------------------------------------------------

def test_a_member_of_the_auto_approve_role_is_granted_at_once_and_audited_with_the_rule(
        cluster: Cluster, fresh: None) -> None:
    answer = request(cluster, "rul_alice", "rul-oncall")
    assert answer["status"] == "granted" and answer["auto_approved_by"] == "rul_oncall"
    rows = audit(cluster, "auto_approved")
    assert rows[-1][0] == "rul-oncall" and rows[-1][1] == answer["rolname"]
    assert rows[-1][3]["rule"] == "rul_oncall" and rows[-1][3]["lease_id"] == answer["lease_id"]
    with cluster.connect(DB) as conn:
        assert conn.execute("SELECT pg_has_role(%s, 'rul_read', 'MEMBER')",
                            (answer["rolname"],)).fetchone() == (True,)


def test_a_requester_outside_the_role_waits_for_approval(cluster: Cluster, fresh: None) -> None:
    answer = request(cluster, "rul_bob", "rul-oncall")
    assert answer["status"] == "pending" and "rolname" not in answer


def test_leaving_the_role_before_the_request_ends_the_privilege(cluster: Cluster, fresh: None) -> None:
    with cluster.connect() as conn:
        conn.execute("REVOKE rul_oncall FROM rul_alice")
    answer = request(cluster, "rul_alice", "rul-oncall")
    assert answer["status"] == "pending"


def test_auto_approval_respects_the_live_lease_cap(cluster: Cluster, fresh: None) -> None:
    with as_user(cluster, "rul_ops") as conn:
        conn.execute("SELECT jit.profile_set('rul-oncall', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                     " NULL, NULL, NULL, 1)")
    assert request(cluster, "rul_alice", "rul-oncall")["status"] == "granted"
    second = request(cluster, "rul_alice", "rul-oncall")
    assert second["status"] == "denied" and "live lease" in second["error"], second


def test_a_requester_cannot_set_the_rules(cluster: Cluster, db: str) -> None:
    with as_user(cluster, "rul_alice") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT jit.profile_approval_rules('rul-plain', 'jit_requester', true, NULL, 100)")


def test_the_rules_refuse_a_role_that_does_not_fit(cluster: Cluster, db: str) -> None:
    with as_user(cluster, "rul_ops") as conn:
        for role, says in (("no_such_role", "does not exist"), ("rul_read", "cannot be the auto-approve"),
                           ("jit_admin", "cannot be the auto-approve")):
            with pytest.raises(psycopg.errors.RaiseException, match=says):
                conn.execute("SELECT jit.profile_approval_rules('rul-plain', %s, NULL, NULL, NULL)",
                             (role,))
        with pytest.raises(psycopg.errors.RaiseException, match="between 1 and 100"):
            conn.execute("SELECT jit.profile_approval_rules('rul-plain', NULL, NULL, NULL, 0)")


# -- break-glass -----------------------------------------------------------------------------------

def test_break_glass_is_granted_at_once_bounded_by_its_max_ttl_and_audited(
        cluster: Cluster, fresh: None) -> None:
    answer = request(cluster, "rul_bob", "rul-glass", break_glass=True, ttl=3600)
    assert answer["status"] == "granted" and answer["break_glass"] is True
    # asked for an hour: the lease and every renewal of it end within break_glass_max_ttl (10m)
    assert answer["expires_at"] - answer["issued_at"] == pytest.approx(600, abs=1)
    assert answer["max_expires_at"] - answer["issued_at"] == pytest.approx(600, abs=1)
    rows = audit(cluster, "break_glass", "rul_bob")
    assert rows[-1][1] == answer["rolname"] and rows[-1][2] == "INC-7 db on fire"
    assert rows[-1][3]["used_today"] == 1 and rows[-1][3]["per_day"] == 2
    with cluster.connect(DB) as conn:
        assert conn.execute("SELECT break_glass FROM jit_data.leases WHERE id = %s",
                            (answer["lease_id"],)).fetchone() == (True,)
    # a renewal cannot carry it past that
    with as_user(cluster, "rul_bob") as conn:
        renewed = conn.execute("SELECT jit.renew(%s, interval '1 hour')", (answer["rolname"],)).fetchone()
    assert renewed is not None
    assert renewed[0]["expires_at"] <= answer["issued_at"] + 601


def test_break_glass_needs_a_reason(cluster: Cluster, fresh: None) -> None:
    answer = request(cluster, "rul_bob", "rul-glass", reason="  ", break_glass=True)
    assert answer["status"] == "denied" and "needs a reason" in answer["error"]


def test_break_glass_is_refused_on_a_profile_that_does_not_allow_it(cluster: Cluster, fresh: None) -> None:
    answer = request(cluster, "rul_bob", "rul-plain", break_glass=True)
    assert answer["status"] == "denied"
    assert answer["error"] == "profile rul-plain does not allow break-glass"
    with cluster.connect(DB) as conn:
        assert conn.execute("SELECT count(*) FROM jit_data.leases WHERE profile = 'rul-plain'"
                            " AND dropped_at IS NULL").fetchone() == (0,)
    assert audit(cluster, "deny", "rul_bob")[-1][3]["why"] == "break-glass not allowed"
    # the usual request waits
    assert request(cluster, "rul_bob", "rul-plain")["status"] == "pending"


def test_break_glass_is_rate_limited_per_requester_per_day(cluster: Cluster, fresh: None) -> None:
    for _ in range(2):
        granted = request(cluster, "rul_bob", "rul-glass", break_glass=True)
        assert granted["status"] == "granted"
        with as_user(cluster, "rul_bob") as conn:   # revoked: the limit is uses, not live leases
            conn.execute("SELECT jit.revoke(%s)", (granted["rolname"],))
    third = request(cluster, "rul_bob", "rul-glass", break_glass=True)
    assert third["status"] == "denied"
    assert "used break-glass 2 times in the last 24 hours" in third["error"]
    assert audit(cluster, "deny", "rul_bob")[-1][3]["why"] == "break-glass limit"
    # another requester has their own count
    assert request(cluster, "rul_alice", "rul-glass", break_glass=True)["status"] == "granted"


def test_break_glass_respects_the_live_lease_cap(cluster: Cluster, fresh: None) -> None:
    with as_user(cluster, "rul_ops") as conn:
        conn.execute("SELECT jit.profile_set('rul-glass', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                     " NULL, NULL, NULL, 1)")
    assert request(cluster, "rul_bob", "rul-glass", break_glass=True)["status"] == "granted"
    second = request(cluster, "rul_bob", "rul-glass", break_glass=True)
    assert second["status"] == "denied" and "live lease" in second["error"], second


def test_a_requester_cannot_switch_break_glass_on_or_write_the_tables(cluster: Cluster, db: str) -> None:
    with as_user(cluster, "rul_bob") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # internal: EXECUTE to nobody
            conn.execute("SELECT jit._request('rul-plain', NULL, 'x', 'y', true)")
        for statement in ("UPDATE jit_data.profiles SET break_glass = true",
                          "UPDATE jit_data.leases SET break_glass = false"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_break_glass_and_auto_approval_are_posted_to_the_webhook(cluster: Cluster, fresh: None) -> None:
    receiver = Receiver()
    ops = dsn(cluster, "rul_ops")
    try:
        assert notify_once(ops, receiver.url, "t-rules").exit_code == 0
        request(cluster, "rul_bob", "rul-glass", break_glass=True)
        request(cluster, "rul_alice", "rul-oncall")
        result = notify_once(ops, receiver.url, "t-rules")
        assert result.exit_code == 0, result.output
        bodies = receiver.bodies()
        assert [b["event"] for b in bodies] == ["break_glass", "auto_approved"], bodies
        assert bodies[0]["text"].startswith("BREAK-GLASS: rul_bob took rul-glass")
        assert "INC-7 db on fire" in bodies[0]["text"] and bodies[1]["rule"] == "rul_oncall"
        assert "SCRAM" not in json.dumps(bodies)
    finally:
        receiver.close()


# -- the admin CLI ---------------------------------------------------------------------------------

def test_profile_set_takes_the_rules_and_audit_lists_break_glass_uses(cluster: Cluster, fresh: None) -> None:
    from click.testing import CliRunner

    from pgcli_jit.admin import main

    ops = dsn(cluster, "rul_ops")

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, [*args, "--dsn", ops])

    said = run("profile", "set", "rul-plain", "--break-glass", "--break-glass-max-ttl", "20m",
               "--break-glass-per-day", "3", "--auto-approve", "rul_oncall")
    assert said.exit_code == 0, said.output
    assert ("auto-approve: members of rul_oncall; break-glass: allowed, at most 20m, "
            "3 per requester per day") in said.output
    try:
        granted = request(cluster, "rul_bob", "rul-plain", reason="INC-9 restore", break_glass=True)
        assert granted["status"] == "granted"
        uses = run("audit", "--break-glass", "--since", "1h", "--json")
        assert uses.exit_code == 0, uses.output
        rows = json.loads(uses.output)
        assert [r["rolname"] for r in rows if r["profile"] == "rul-plain"] == [granted["rolname"]]
        assert all(r["event"] == "break_glass" for r in rows)
        bad = run("profile", "set", "rul-plain", "--break-glass-max-ttl", "soon")
        assert bad.exit_code == 2 and "--break-glass-max-ttl" in bad.output
        mixed = run("audit", "--break-glass", "--verify")
        assert mixed.exit_code == 2
    finally:
        off = run("profile", "set", "rul-plain", "--no-break-glass", "--auto-approve", "")
        assert off.exit_code == 0, off.output
        assert "auto-approve:" not in off.output and "break-glass:" not in off.output
    assert request(cluster, "rul_bob", "rul-plain", break_glass=True)["status"] == "denied"


# -- the postgres backend sends it -----------------------------------------------------------------

def test_the_postgres_backend_sends_break_glass_and_the_server_decides(cluster: Cluster) -> None:
    from pgcli_jit.backends.base import LeaseRequest
    from pgcli_jit.core.errors import PermissionDenied
    from tests.conftest import can_login
    from tests.test_postgres_backend import lease_row, make_backend

    allowed, plain = make_backend(cluster, "rul-bg-pg", max_ttl="1h"), make_backend(cluster, "rul-plain-pg")
    with cluster.connect("app") as conn:  # a superuser is an operator
        conn.execute("SELECT jit.profile_approval_rules('rul-bg-pg', NULL, true, interval '5 min', 100)")
    ask = LeaseRequest(ttl=3600, reason="INC-8 restore", requester="alice", break_glass=True)
    lease = allowed.request(ask)
    try:
        assert can_login(cluster, lease)
        row = lease_row(cluster, lease.username)
        assert row["break_glass"] is True
        assert (row["max_expires_at"] - row["issued_at"]).total_seconds() == 300
        with pytest.raises(PermissionDenied, match="profile rul-plain-pg does not allow break-glass"):
            plain.request(ask)
    finally:
        allowed.revoke(lease)
