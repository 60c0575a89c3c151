"""Four eyes, server side: every refusal of jit.approve / jit.deny / jit.request_status, tried
with only what a user holds (their own login and psql), and the races the row lock settles.

``alice`` requests; ``bob`` and ``erin`` are members of ``jit_leads`` (the approvers);
``alice`` is a member of ``jit_leads`` too, and must still never count for her own request;
``dave`` is a requester but no approver.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import REQUESTER, make_login

Conn = psycopg.Connection[tuple[Any, ...]]
PROFILE = "fourEyes"


def as_user(cluster: Cluster, user: str) -> Conn:
    return psycopg.connect(cluster.conninfo("app", user=user, password=""), autocommit=True)


def set_profile(cluster: Cluster, approvals: int = 1, timeout: str = "1 hour",
                approvers: str = "jit_leads") -> None:
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.profile_set(%s, %s, interval '5 min', interval '10 min', 'jit_requester',"
                     " false, '', '', %s, %s, %s::interval)",
                     (PROFILE, ["jit_read"], approvers, approvals, timeout))


@pytest.fixture(scope="module")
def people(cluster: Cluster) -> None:
    with cluster.connect() as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'jit_leads'").fetchone() is None:
            conn.execute("CREATE ROLE jit_leads NOLOGIN")
    make_login(cluster, "bob", member_of="jit_leads")
    make_login(cluster, "erin", member_of="jit_leads")
    make_login(cluster, "dave", member_of="jit_requester")
    with cluster.connect() as conn:
        conn.execute("GRANT jit_leads TO alice")


@pytest.fixture
def profile(cluster: Cluster, people: None) -> Iterator[None]:
    set_profile(cluster)
    yield
    with cluster.connect("app") as conn:
        conn.execute("UPDATE jit_data.requests SET status = 'cancelled', verifier = NULL"
                     " WHERE status IN ('pending', 'approved')")
        for (name,) in conn.execute("SELECT rolname FROM jit_data.leases WHERE dropped_at IS NULL"
                                    " AND profile = %s", (PROFILE,)).fetchall():
            conn.execute("SELECT jit.revoke(%s)", (name,))
            conn.execute("SELECT jit.finish(%s)", (name,))


def ask(conn: Conn, reason: str = "INC-42 refund") -> dict[str, Any]:
    verifier = scram_verifier(conn, new_password())
    row = conn.execute("SELECT jit.request(%s, NULL, %s, %s)", (PROFILE, reason, verifier)).fetchone()
    assert row is not None
    return dict(row[0])


def call(conn: Conn, query: str, *params: object) -> dict[str, Any]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return dict(row[0])


def refused(conn: Conn, query: str, *params: object) -> str:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    return str(info.value.diag.message_primary)


def audit_events(cluster: Cluster, request_id: int) -> list[str]:
    with cluster.connect("app") as conn:
        rows = conn.execute("SELECT event FROM jit_data.audit WHERE detail->>'request_id' = %s ORDER BY id",
                            (str(request_id),)).fetchall()
    return [e for (e,) in rows]


def leases_of(cluster: Cluster) -> int:
    with cluster.connect("app") as conn:
        row = conn.execute("SELECT count(*) FROM jit_data.leases WHERE profile = %s AND dropped_at IS NULL",
                           (PROFILE,)).fetchone()
    return int(row[0]) if row else 0


def test_a_request_waits_and_no_role_exists_until_approved(cluster: Cluster, profile: None) -> None:
    with as_user(cluster, REQUESTER) as alice, as_user(cluster, "bob") as bob:
        answer = ask(alice)
        assert answer["status"] == "pending" and answer["approvers"] == "jit_leads"
        rid = answer["request_id"]
        assert leases_of(cluster) == 0
        assert call(alice, "SELECT jit.request_status(%s)", rid)["status"] == "pending"
        mine = [r for (r,) in bob.execute("SELECT id FROM jit.pending_for_me()").fetchall()]
        assert rid in mine
        assert call(bob, "SELECT jit.approve(%s, %s)", rid, "ok for INC-42")["status"] == "approved"
        assert leases_of(cluster) == 0  # issued when the requester collects it
        granted = call(alice, "SELECT jit.request_status(%s)", rid)
        assert granted["status"] == "granted" and granted["approved_by"] == ["bob"]
        assert granted["rolname"].startswith("jit_alice_")
        assert granted["expires_at"] - granted["issued_at"] == pytest.approx(300, abs=1)
        # the answer lost and the call made again: the same lease, not a second role
        again = call(alice, "SELECT jit.request_status(%s)", rid)
        assert again["status"] == "granted" and again["replayed"] is True
        assert (again["rolname"], again["approved_by"]) == (granted["rolname"], ["bob"])
        assert leases_of(cluster) == 1
        alice.execute("SELECT jit.revoke(%s)", (granted["rolname"],))
        closed = call(alice, "SELECT jit.request_status(%s)", rid)  # ended: nothing to give again
        assert closed["status"] == "closed" and closed["state"] == "issued"
    assert audit_events(cluster, rid) == ["pending", "approve", "approved", "request"]


def test_the_same_request_sent_twice_waits_once(cluster: Cluster, profile: None) -> None:
    """A client whose answer was lost sends the same call (the same verifier) again: it gets
    the request already waiting, not a second one for the approvers."""
    with as_user(cluster, REQUESTER) as alice:
        verifier = scram_verifier(alice, new_password())
        first, again = (call(alice, "SELECT jit.request(%s, NULL, 'INC-7', %s)", PROFILE, verifier)
                        for _ in range(2))
        assert first["status"] == again["status"] == "pending"
        assert again["request_id"] == first["request_id"]
        call(alice, "SELECT jit.cancel(%s)", first["request_id"])
    assert audit_events(cluster, first["request_id"]) == ["pending", "cancelled"]


def test_the_requester_never_counts_even_as_an_approver(cluster: Cluster, profile: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        rid = ask(alice)["request_id"]
        assert "is your own" in refused(alice, "SELECT jit.approve(%s, '')", rid)
        assert "is your own" in refused(alice, "SELECT jit.deny(%s, 'no')", rid)
        assert rid not in [r for (r,) in alice.execute("SELECT id FROM jit.pending_for_me()").fetchall()]
        assert call(alice, "SELECT jit.request_status(%s)", rid)["state"] == "pending"
    assert audit_events(cluster, rid) == ["pending"]


def test_refusals_change_nothing(cluster: Cluster, profile: None) -> None:
    set_profile(cluster, approvals=2)
    with as_user(cluster, REQUESTER) as alice, as_user(cluster, "bob") as bob, \
            as_user(cluster, "dave") as dave:
        rid = ask(alice)["request_id"]
        # a request the caller may not decide is as absent as one that does not exist
        assert f"no request {rid} that you may decide" in refused(dave, "SELECT jit.approve(%s, '')", rid)
        assert call(bob, "SELECT jit.approve(%s, '')", rid)["state"] == "pending"  # 1 of 2
        assert "already approved" in refused(bob, "SELECT jit.approve(%s, '')", rid)
        assert "no request" in refused(bob, "SELECT jit.approve(%s, '')", rid + 1000)
        assert "needs a reason" in refused(bob, "SELECT jit.deny(%s, '  ')", rid)
        assert "control characters" in refused(bob, "SELECT jit.approve(%s, %s)", rid, "a\x1b[2J")
        assert call(dave, "SELECT jit.request_status(%s)", rid)["status"] == "denied"  # not his
        assert call(dave, "SELECT jit.cancel(%s)", rid)["status"] == "denied"
        state = call(alice, "SELECT jit.request_status(%s)", rid)
        assert state["state"] == "pending" and state["approved_by"] == ["bob"]
    assert audit_events(cluster, rid) == ["pending", "approve"]


def test_second_distinct_approver_completes_and_decided_is_final(cluster: Cluster, profile: None) -> None:
    set_profile(cluster, approvals=2)
    with as_user(cluster, REQUESTER) as alice, as_user(cluster, "bob") as bob, \
            as_user(cluster, "erin") as erin:
        rid = ask(alice)["request_id"]
        call(bob, "SELECT jit.approve(%s, 'one')", rid)
        assert call(erin, "SELECT jit.approve(%s, 'two')", rid)["state"] == "approved"
        assert "already approved" in refused(erin, "SELECT jit.deny(%s, 'changed my mind')", rid)
        assert call(alice, "SELECT jit.request_status(%s)", rid)["approved_by"] == ["bob", "erin"]
        assert "already issued" in refused(bob, "SELECT jit.approve(%s, '')", rid)


def test_denial_and_cancel(cluster: Cluster, profile: None) -> None:
    with as_user(cluster, REQUESTER) as alice, as_user(cluster, "bob") as bob:
        rid = ask(alice)["request_id"]
        denied = call(bob, "SELECT jit.deny(%s, 'not during the freeze')", rid)
        assert denied["state"] == "denied" and denied["note"] == "not during the freeze"
        closed = call(alice, "SELECT jit.request_status(%s)", rid)
        assert (closed["state"], closed["decided_by"]) == ("denied", "bob")
        assert "already denied" in refused(bob, "SELECT jit.approve(%s, '')", rid)
        other = ask(alice)["request_id"]
        assert call(alice, "SELECT jit.cancel(%s)", other)["state"] == "cancelled"
        assert "already cancelled" in refused(bob, "SELECT jit.approve(%s, '')", other)
    assert leases_of(cluster) == 0
    assert audit_events(cluster, rid) == ["pending", "denied"]
    assert audit_events(cluster, other) == ["pending", "cancelled"]


def test_an_undecided_request_times_out(cluster: Cluster, profile: None) -> None:
    set_profile(cluster, timeout="1 second")
    with as_user(cluster, REQUESTER) as alice, as_user(cluster, "bob") as bob:
        rid = ask(alice)["request_id"]
        alice.execute("SELECT pg_sleep(1.1)")
        assert "timed out" in refused(bob, "SELECT jit.approve(%s, '')", rid)
        assert call(alice, "SELECT jit.request_status(%s)", rid)["state"] == "timed_out"
        assert "already timed out" in refused(bob, "SELECT jit.approve(%s, '')", rid)
    assert leases_of(cluster) == 0
    assert audit_events(cluster, rid) == ["pending", "timed_out"]


def test_verifier_is_unreadable_and_forgotten(cluster: Cluster, profile: None) -> None:
    with as_user(cluster, REQUESTER) as alice, as_user(cluster, "bob") as bob:
        rid = ask(alice)["request_id"]
        for conn in (alice, bob):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT verifier FROM jit_data.requests")
        call(alice, "SELECT jit.cancel(%s)", rid)
    with cluster.connect("app") as conn:
        row = conn.execute("SELECT verifier FROM jit_data.requests WHERE id = %s", (rid,)).fetchone()
    assert row == (None,)


def test_a_requester_cannot_approve_by_writing_tables(cluster: Cluster, profile: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        rid = ask(alice)["request_id"]
        for statement in ("UPDATE jit_data.requests SET status = 'approved'",
                          f"INSERT INTO jit_data.approvals VALUES ({rid}, 'bob', 0, '', now())",
                          "SELECT jit._issue(p, 'alice', 0, '', '1 min', 'x') FROM jit_data.profiles p",
                          "SELECT jit._close_request(r, 'approved', '') FROM jit_data.requests r"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                alice.execute(statement)
        assert call(alice, "SELECT jit.request_status(%s)", rid)["state"] == "pending"
    assert leases_of(cluster) == 0


def test_a_temporary_role_cannot_approve(cluster: Cluster, profile: None) -> None:
    set_profile(cluster, approvers="")
    with as_user(cluster, "bob") as bob:
        make_login(cluster, "bob", member_of="jit_requester")
        password = new_password()
        lease = call(bob, "SELECT jit.request(%s, NULL, '', %s)", PROFILE, scram_verifier(bob, password))
    set_profile(cluster)
    with as_user(cluster, REQUESTER) as alice:
        rid = ask(alice)["request_id"]
    with cluster.connect() as su:
        su.execute(f'GRANT jit_leads TO "{lease["rolname"]}"')  # even if an operator slips
    temp = psycopg.connect(cluster.conninfo("app", user=lease["rolname"], password=password),
                           autocommit=True)
    with temp:
        assert "temporary role" in refused(temp, "SELECT jit.approve(%s, '')", rid)
    with cluster.connect() as su:  # on 16+ jit_owner could not take it back when dropping the role
        su.execute(f'REVOKE jit_leads FROM "{lease["rolname"]}"')


def race(cluster: Cluster, calls: list[tuple[str, str]], rid: int) -> list[str]:
    """Run each (user, query) on its own connection at the same moment; each one's outcome:
    the answer's ``status``/``state``, or the server's refusal."""
    outcomes = [""] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int, user: str, query: str) -> None:
        with as_user(cluster, user) as conn:
            barrier.wait()
            try:
                answer = call(conn, query, rid)
                outcomes[i] = answer["status"] if answer["status"] in ("granted", "closed") \
                    else answer["state"]
            except psycopg.Error as exc:
                outcomes[i] = str(exc.diag.message_primary)

    threads = [threading.Thread(target=run, args=(i, u, q)) for i, (u, q) in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_two_approvers_at_once_make_exactly_one_grant(cluster: Cluster, profile: None) -> None:
    with as_user(cluster, REQUESTER) as alice:
        rid = ask(alice)["request_id"]
    approve = "SELECT jit.approve(%s, 'race')"
    assert sorted(race(cluster, [("bob", approve), ("erin", approve)], rid)) == [
        "approved", f"request {rid} is already approved"]
    poll = "SELECT jit.request_status(%s)"
    # one poll issues the role; the two it raced with get that same lease (replayed)
    assert race(cluster, [(REQUESTER, poll)] * 3, rid) == ["granted"] * 3
    assert leases_of(cluster) == 1
    assert audit_events(cluster, rid).count("request") == 1


def test_cancel_racing_approve_never_grants_after_a_cancel(cluster: Cluster, profile: None) -> None:
    for _ in range(5):
        with as_user(cluster, REQUESTER) as alice:
            rid = ask(alice)["request_id"]
        _, by_bob = race(cluster, [(REQUESTER, "SELECT jit.cancel(%s)"),
                                   ("bob", "SELECT jit.approve(%s, '')")], rid)
        with as_user(cluster, REQUESTER) as alice:
            final = call(alice, "SELECT jit.request_status(%s)", rid)
        assert final["status"] == "closed" and final["state"] == "cancelled"  # both orders end here
        assert by_bob in ("approved", f"request {rid} is already cancelled")
    assert leases_of(cluster) == 0


def test_collecting_an_approved_request_checks_the_cap_and_membership_again(
        cluster: Cluster, profile: None) -> None:
    """Approval takes time: at collection the server checks again what jit.request checked.
    Five approved requests against max_live 1 gave five roles; a requester removed from the
    profile's requesters role after approval still got one."""
    with cluster.connect() as su:
        if su.execute("SELECT 1 FROM pg_roles WHERE rolname = 'four_req'").fetchone() is None:
            su.execute("CREATE ROLE four_req NOLOGIN")
        su.execute("GRANT four_req TO alice, dave")
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.profile_set(%s, NULL, NULL, NULL, 'four_req', NULL, NULL, NULL, NULL,"
                     " NULL, NULL, 1)", (PROFILE,))
    try:
        with as_user(cluster, REQUESTER) as alice, as_user(cluster, "bob") as bob:
            first, second = ask(alice)["request_id"], ask(alice)["request_id"]
            for rid in (first, second):
                call(bob, "SELECT jit.approve(%s, 'ok')", rid)
            granted = call(alice, "SELECT jit.request_status(%s)", first)
            assert granted["status"] == "granted"
            refused = call(alice, "SELECT jit.request_status(%s)", second)
            assert refused["status"] == "denied" and "1 live lease of profile" in refused["error"]
            assert leases_of(cluster) == 1
            alice.execute("SELECT jit.revoke(%s)", (granted["rolname"],))  # one ends: the other may come
            assert call(alice, "SELECT jit.request_status(%s)", second)["status"] == "granted"
        with as_user(cluster, "dave") as dave, as_user(cluster, "bob") as bob:
            rid = ask(dave)["request_id"]
            call(bob, "SELECT jit.approve(%s, 'ok')", rid)
            with cluster.connect() as su:
                su.execute("REVOKE four_req FROM dave")
            closed = call(dave, "SELECT jit.request_status(%s)", rid)
            assert closed["status"] == "closed" and "no longer a requester" in closed["note"]
    finally:
        with cluster.connect("app") as conn:
            conn.execute("SELECT jit.profile_set(%s, NULL, NULL, NULL, 'jit_requester', NULL, NULL,"
                         " NULL, NULL, NULL, NULL, 5)", (PROFILE,))
