"""Break-glass seen from the server, from each person's own login: who hears of a use
(``jit.break_glass_for_me``), and what it does to a request of the same person that waits.

``bgn_alice`` and ``bgn_bob`` are requesters; ``bgn_lena`` approves ``bgn-glass`` (``bgn_leads``,
not a requester: her grant comes from the profile); ``bgn_omar`` approves only ``bgn-other``.
A database of its own keeps the leases, the audit chain and the daily counts apart.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgcli_jit import server
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from tests.admin_db import end_all
from tests.conftest import make_login

DB = "bgn_db"
Conn = psycopg.Connection[tuple[Any, ...]]


def as_user(cluster: Cluster, user: str, password: str | None = None) -> Conn:
    return psycopg.connect(f"host={cluster.host} port={cluster.port} dbname={DB} user={user}",
                           password=password, autocommit=True)


def ask(cluster: Cluster, user: str, profile: str, *, break_glass: bool = False,
        reason: str = "INC-7 db down") -> tuple[dict[str, Any], str]:
    """jit.request (or jit.request_break_glass) as the user sends it by hand; the password too."""
    with as_user(cluster, user) as conn:
        password = new_password()
        function = "jit.request_break_glass" if break_glass else "jit.request"
        row = conn.execute(f"SELECT {function}(%s, NULL, %s, %s)",
                           (profile, reason, scram_verifier(conn, password))).fetchone()
    assert row is not None
    return dict(row[0]), password


def uses(cluster: Cluster, user: str) -> list[tuple[Any, ...]]:
    with as_user(cluster, user) as conn:
        return conn.execute("SELECT lease_id, requester, profile, reason FROM jit.break_glass_for_me()"
                            ).fetchall()


@pytest.fixture(scope="module")
def db(cluster: Cluster) -> str:
    cluster.execute(f"CREATE DATABASE {DB}")
    with cluster.connect(DB) as conn:
        server.apply(conn)
        conn.execute("CREATE ROLE bgn_read NOLOGIN; GRANT bgn_read TO jit_owner WITH ADMIN OPTION;"
                     "CREATE ROLE bgn_leads NOLOGIN; CREATE ROLE bgn_other NOLOGIN")
    make_login(cluster, "bgn_ops", member_of="jit_admin")
    make_login(cluster, "bgn_alice", member_of="jit_requester")
    make_login(cluster, "bgn_bob", member_of="jit_requester")
    make_login(cluster, "bgn_lena", member_of="bgn_leads")
    make_login(cluster, "bgn_omar", member_of="bgn_other")
    with as_user(cluster, "bgn_ops") as conn:
        for name, approvers in (("bgn-glass", "bgn_leads"), ("bgn-other", "bgn_other"),
                                ("bgn-plain", "bgn_leads")):
            conn.execute("SELECT jit.profile_set(%s, %s, interval '5 min', interval '30 min',"
                         " 'jit_requester', false, '', '', %s, 1, interval '1 hour', 5)",
                         (name, ["bgn_read"], approvers))
            conn.execute("SELECT jit.profile_approval_rules(%s, NULL, %s, interval '10 min', 100)",
                         (name, name != "bgn-plain"))
    return DB


@pytest.fixture
def fresh(cluster: Cluster, db: str) -> Iterator[None]:
    end_all(cluster, DB)
    yield
    end_all(cluster, DB)


# -- who hears of a break-glass use ----------------------------------------------------------

def test_an_approver_of_the_profile_hears_of_the_use(cluster: Cluster, fresh: None) -> None:
    answer, _ = ask(cluster, "bgn_alice", "bgn-glass", break_glass=True)
    assert answer["status"] == "granted", answer
    assert uses(cluster, "bgn_lena") == [(answer["lease_id"], "bgn_alice", "bgn-glass", "INC-7 db down")]


def test_a_non_approver_learns_nothing(cluster: Cluster, fresh: None) -> None:
    """Another requester, an approver of another profile, the user herself: no row at all."""
    answer, password = ask(cluster, "bgn_alice", "bgn-glass", break_glass=True)
    assert answer["status"] == "granted", answer
    assert uses(cluster, "bgn_bob") == []
    assert uses(cluster, "bgn_omar") == []
    assert uses(cluster, "bgn_alice") == []
    # the lease's own role: refused, or nothing
    with as_user(cluster, answer["rolname"], password) as conn:
        try:
            rows = conn.execute("SELECT * FROM jit.break_glass_for_me()").fetchall()
        except psycopg.errors.InsufficientPrivilege:
            rows = []
    assert rows == []
    # a login that approves nothing here cannot call it at all
    make_login(cluster, "bgn_nobody")
    with as_user(cluster, "bgn_nobody") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM jit.break_glass_for_me()")


def test_a_use_that_ended_is_no_longer_news(cluster: Cluster, fresh: None) -> None:
    answer, _ = ask(cluster, "bgn_alice", "bgn-glass", break_glass=True)
    with as_user(cluster, "bgn_alice") as conn:
        conn.execute("SELECT jit.revoke(%s)", (answer["rolname"],))
    assert uses(cluster, "bgn_lena") == []


def test_a_use_rings_the_approvers_doorbell(cluster: Cluster, fresh: None) -> None:
    with as_user(cluster, "bgn_lena") as listener:
        listener.execute("LISTEN jit_requests")
        answer, _ = ask(cluster, "bgn_alice", "bgn-glass", break_glass=True)
        assert answer["status"] == "granted"
        ready, _, _ = select.select([listener.fileno()], [], [], 5.0)
        assert ready, "no ring within 5 s"
        assert any(n.channel == "jit_requests" for n in listener.notifies(timeout=1.0, stop_after=1))


# -- break-glass while a request of the same person waits ------------------------------------

def status(cluster: Cluster, request_id: int) -> tuple[Any, ...]:
    with cluster.connect(DB) as conn:
        row = conn.execute("SELECT status, decision_note, decided_by FROM jit_data.requests WHERE id = %s",
                           (request_id,)).fetchone()
    assert row is not None
    return tuple(row)


def test_break_glass_withdraws_the_requesters_own_waiting_request_for_that_profile(
        cluster: Cluster, fresh: None) -> None:
    waiting, _ = ask(cluster, "bgn_alice", "bgn-glass", reason="INC-7 slow path")
    other, _ = ask(cluster, "bgn_alice", "bgn-other")
    bobs, _ = ask(cluster, "bgn_bob", "bgn-glass")
    assert {waiting["status"], other["status"], bobs["status"]} == {"pending"}
    answer, _ = ask(cluster, "bgn_alice", "bgn-glass", break_glass=True)
    assert answer["status"] == "granted" and answer["withdrawn"] == [waiting["request_id"]], answer
    assert status(cluster, waiting["request_id"]) == ("cancelled", "withdrawn for break-glass", "bgn_alice")
    # her request for another profile, and bob's for this one, wait as before
    assert status(cluster, other["request_id"])[0] == "pending"
    assert status(cluster, bobs["request_id"])[0] == "pending"
    with cluster.connect(DB) as conn:
        rows = conn.execute("SELECT event, detail FROM jit_data.audit WHERE requester = 'bgn_alice'"
                            " ORDER BY id DESC LIMIT 2").fetchall()
    assert [e for e, _ in rows] == ["cancelled", "break_glass"]
    detail = rows[0][1]
    assert detail["request_id"] == waiting["request_id"] and detail["note"] == "withdrawn for break-glass"
    assert detail["break_glass_lease_id"] == answer["lease_id"]
    # the approver comes too late: nothing to approve, no second lease
    with as_user(cluster, "bgn_lena") as conn, pytest.raises(psycopg.errors.RaiseException,
                                                             match="already cancelled"):
        conn.execute("SELECT jit.approve(%s, '')", (waiting["request_id"],))


def test_an_approved_request_not_yet_collected_is_withdrawn_too(cluster: Cluster, fresh: None) -> None:
    waiting, _ = ask(cluster, "bgn_alice", "bgn-glass")
    with as_user(cluster, "bgn_lena") as conn:
        conn.execute("SELECT jit.approve(%s, '')", (waiting["request_id"],))
    answer, _ = ask(cluster, "bgn_alice", "bgn-glass", break_glass=True)
    assert answer["withdrawn"] == [waiting["request_id"]]
    with as_user(cluster, "bgn_alice") as conn:
        row = conn.execute("SELECT jit.request_status(%s)", (waiting["request_id"],)).fetchone()
    assert row is not None and row[0]["status"] == "closed" and row[0]["state"] == "cancelled"
    with cluster.connect(DB) as conn:
        live = conn.execute("SELECT count(*) FROM jit_data.leases WHERE requester = 'bgn_alice'"
                            " AND ended_at IS NULL").fetchone()
    assert live == (1,)  # the break-glass lease only


def test_refused_break_glass_withdraws_nothing(cluster: Cluster, fresh: None) -> None:
    waiting, _ = ask(cluster, "bgn_alice", "bgn-plain")
    answer, _ = ask(cluster, "bgn_alice", "bgn-plain", break_glass=True)
    assert answer["status"] == "denied" and "does not allow break-glass" in answer["error"]
    assert status(cluster, waiting["request_id"])[0] == "pending"
