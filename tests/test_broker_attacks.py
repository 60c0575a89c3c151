"""The attacks that broke the old client-side broker, tried again with only what a requester holds:
their own login, psql (here: psycopg) and a text editor.  Each must now fail to get access.

Requesters ``alice`` (from conftest) and ``bob`` (made here) are members of jit_requester;
the profile ``atk`` grants jit_read.
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.postgres.backend import PostgresBackend
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.core.errors import ConfigError, PermissionDenied
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.session.config import parse_profile
from tests.conftest import declare_server_profile, end_jit_roles, make_login, postgres_profile_toml

pytestmark = pytest.mark.security

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture(scope="module")
def bob(cluster: Cluster) -> str:
    make_login(cluster, "bob", member_of="jit_requester")
    with cluster.connect() as conn:
        conn.execute("CREATE ROLE payroll_admin NOLOGIN")
    declare_server_profile(cluster, "atk", grant=["jit_read"], ttl="5m", max_ttl="10m")
    return "bob"


def as_user(cluster: Cluster, user: str) -> Conn:
    """A login by the pgpass file, as the user's own psql would."""
    return psycopg.connect(cluster.conninfo("app", user=user, password=""), autocommit=True)


def backend_for(cluster: Cluster, user: str) -> PostgresBackend:
    body = tomllib.loads(postgres_profile_toml("atk", None, cluster, user=user))["profiles"]["atk"]
    return PostgresBackend(parse_profile("atk", body, Path("config.toml")))


@pytest.fixture
def bobs_lease(cluster: Cluster, bob: str) -> Iterator[Lease]:
    backend = backend_for(cluster, bob)
    lease = backend.request(LeaseRequest(ttl=300, reason="bob's work", requester=bob))
    yield lease
    backend.revoke(lease)


def assert_denied(conn: Conn, statement: str, *params: object) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement, params or None)


# -- "with the broker password, CREATE ROLE x LOGIN IN ROLE payroll_admin ..." --------------


def test_the_requester_login_can_mint_nothing_itself(cluster: Cluster, bob: str) -> None:
    with as_user(cluster, "alice") as alice:
        assert_denied(alice, "CREATE ROLE x LOGIN IN ROLE payroll_admin")
        assert_denied(alice, "GRANT pg_execute_server_program TO alice")
        assert_denied(alice, "COPY (SELECT 1) TO PROGRAM 'id'")
        assert_denied(alice, "SELECT jit._finish(l) FROM jit_data.leases l")  # internals are not callable
        assert_denied(alice, "SELECT jit._audit('request', 'x', 'x', 'x', 'x', now())")
        assert_denied(alice, "SELECT jit.profile_set('atk', ARRAY['payroll_admin'], null, '100 years',"
                             " null, null, null, null)")
        assert_denied(alice, "SELECT * FROM jit.expire_due()")


def test_no_broker_secret_exists_anywhere(cluster: Cluster) -> None:
    with cluster.connect() as conn:
        owner = conn.execute("SELECT rolcanlogin, rolpassword IS NULL FROM pg_authid"
                             " WHERE rolname = 'jit_owner'").fetchone()
        members = conn.execute("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                               " WHERE r.rolname = 'jit_owner'").fetchone()
    assert owner == (False, True)  # NOLOGIN, and no password to steal
    assert members == (0,)  # nobody can SET ROLE jit_owner


# -- "editing one's own config (grant, max_ttl) makes pgcli-jit mint a 100-year lease" ------------


def test_grants_in_the_client_config_are_refused(cluster: Cluster) -> None:
    body = {"backend": "postgres", "grant": ["payroll_admin"], "host": cluster.host}
    with pytest.raises(ConfigError, match="no longer used"):
        parse_profile("atk", body, Path("config.toml"))


def test_a_100_year_ttl_called_by_hand_is_capped_by_the_server(cluster: Cluster, bob: str) -> None:
    with as_user(cluster, "alice") as alice:
        verifier = scram_verifier(alice, new_password())
        row = alice.execute("SELECT jit.request('atk', '100 years', 'x', %s)", (verifier,)).fetchone()
        assert row is not None
        answer = row[0]
        assert answer["capped"] is True
        assert answer["expires_at"] - answer["issued_at"] <= 600 + 1
        grants = alice.execute("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                               " JOIN pg_roles g ON g.oid = m.member"
                               " WHERE g.rolname = %s AND r.rolname = 'payroll_admin'",
                               (answer["rolname"],)).fetchone()
        assert grants == (0,)  # grants come only from the server profile
        alice.execute("SELECT jit.revoke(%s)", (answer["rolname"],))
        alice.execute("SELECT jit.finish(%s)", (answer["rolname"],))


def test_a_plaintext_password_is_not_accepted_as_a_verifier(cluster: Cluster, bob: str) -> None:
    with as_user(cluster, "alice") as alice, pytest.raises(psycopg.errors.RaiseException,
                                                           match="SCRAM-SHA-256 verifier"):
        alice.execute("SELECT jit.request('atk', null, 'x', 'hunter2')")


def test_a_profile_one_is_not_a_requester_of_is_denied_and_audited(cluster: Cluster, bob: str) -> None:
    with cluster.connect() as conn:
        conn.execute("CREATE ROLE atk_leads NOLOGIN")
    declare_server_profile(cluster, "atk-leads", grant=["jit_write"], requesters="atk_leads")
    backend = backend_for(cluster, "alice")
    backend.profile = parse_profile("atk-leads", {**tomllib.loads(postgres_profile_toml(
        "atk-leads", None, cluster, requesters="atk_leads"))["profiles"]["atk-leads"]}, Path("c.toml"))
    with pytest.raises(PermissionDenied, match="no profile atk-leads that alice may request"):
        backend.request(LeaseRequest(ttl=60, reason="let me in", requester="alice"))
    with cluster.connect("app") as conn:
        row = conn.execute("SELECT event, requester, actor FROM jit_data.audit WHERE profile = 'atk-leads'"
                           " ORDER BY id DESC LIMIT 1").fetchone()
    assert row == ("deny", "alice", "alice")


# -- "the requester recorded is $LOGNAME; another user's live role can be hijacked ..." ---------


def test_someone_elses_lease_cannot_be_touched(cluster: Cluster, bobs_lease: Lease) -> None:
    name = bobs_lease.username
    with as_user(cluster, "alice") as alice:
        assert_denied(alice, f'ALTER ROLE "{name}" PASSWORD \'stolen\'')
        assert_denied(alice, f'ALTER ROLE "{name}" VALID UNTIL \'infinity\'')
        for call in ("SELECT jit.renew(%s, '1 hour')", "SELECT jit.revoke(%s)", "SELECT jit.finish(%s)"):
            row = alice.execute(call, (name,)).fetchone()
            assert row is not None and row[0]["status"] == "denied"
        assert not [r for (r,) in alice.execute("SELECT jit.my_leases()") if r["rolname"] == name]
        assert_denied(alice, "UPDATE jit_data.leases SET requester = 'mallory'")
        assert_denied(alice, "SELECT * FROM jit_data.audit")
        assert_denied(alice, "INSERT INTO jit_data.audit (id, at, event, actor, hash)"
                             " VALUES (0, now(), 'x', 'x', '')")
    with cluster.connect() as conn:
        row = conn.execute("SELECT rolvaliduntil < 'infinity' FROM pg_roles WHERE rolname = %s",
                           (name,)).fetchone()
    assert row == (True,)


def test_the_requester_is_who_the_server_authenticated(cluster: Cluster, bob: str) -> None:
    backend = backend_for(cluster, "bob")
    lease = backend.request(LeaseRequest(ttl=60, reason="x", requester="alice-says-the-client"))
    try:
        assert lease.requester == "bob" and lease.username.startswith("jit_bob_")
    finally:
        backend.revoke(lease)


# -- "the default jit_read reads pg_authid"; a lease can only use its functions ------------------------


def test_a_lease_reads_no_verifier_and_touches_the_schema_only_through_functions(
        cluster: Cluster, bobs_lease: Lease) -> None:
    with psycopg.connect(cluster.conninfo("app", user=bobs_lease.username,
                                          password=bobs_lease.credentials.password), autocommit=True) as jit:
        assert_denied(jit, "SELECT rolpassword FROM pg_authid")
        assert_denied(jit, "SELECT * FROM jit_data.leases")
        assert_denied(jit, "CREATE ROLE sneaky LOGIN")
        assert_denied(jit, "CREATE DATABASE sneaky")
        verifier = scram_verifier(jit, new_password())
        assert_denied(jit, "SELECT jit.request('atk', null, 'chain', %s)", verifier)  # no lease from a lease
        if jit.info.server_version >= 160000:  # INHERIT TRUE, SET FALSE: no SET ROLE to the grant
            assert_denied(jit, "SET ROLE jit_read")
        attrs = jit.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
                            " FROM pg_roles WHERE rolname = current_user").fetchone()
        assert attrs == (False, False, False, False, False)


# -- "send the same request again" (what a client does when the answer was lost) -----------


def _ask(conn: Conn, verifier: str) -> dict[str, object]:
    row = conn.execute("SELECT jit.request('atk', NULL, 'replay', %s)", (verifier,)).fetchone()
    assert row is not None
    return dict(row[0])


def test_the_same_request_twice_issues_one_role_and_only_to_its_requester(cluster: Cluster, bob: str) -> None:
    """The verifier identifies a request, per requester: alice sending hers again gets her role
    back (no second one); bob sending alice's verifier gets a role of his own, never hers; once
    hers has ended, sending it again makes nothing."""
    with as_user(cluster, "alice") as alice, as_user(cluster, bob) as bobs:
        verifier = scram_verifier(alice, new_password())
        first = _ask(alice, verifier)
        again = _ask(alice, verifier)
        assert first["status"] == again["status"] == "granted"
        assert again["rolname"] == first["rolname"] and again["lease_id"] == first["lease_id"]
        assert again.get("replayed") is True and "replayed" not in first
        for _ in range(20):  # a loop of replays: the same lease each time, one audit row in all
            assert _ask(alice, verifier)["rolname"] == first["rolname"]
        his = _ask(bobs, verifier)
        assert his["status"] == "granted" and his["rolname"] != first["rolname"]
        assert his["requester"] == "bob"
        for conn, answer in ((alice, first), (bobs, his)):
            conn.execute("SELECT jit.revoke(%s)", (answer["rolname"],))
            conn.execute("SELECT jit.finish(%s)", (answer["rolname"],))
        ended = _ask(alice, verifier)
        assert ended["status"] == "denied" and "has ended" in str(ended["error"])
    with cluster.connect("app") as su:
        events = [e for (e,) in su.execute("SELECT event FROM jit_data.audit WHERE rolname = %s ORDER BY id",
                                          (first["rolname"],))]
        alices = su.execute("SELECT count(*), sum(replays) FROM jit_data.leases WHERE requester = 'alice'"
                            " AND reason = 'replay'").fetchone()
    assert events[:2] == ["request", "replay"] and events.count("request") == 1, events
    assert events.count("replay") == 1, events
    assert alices == (1, 21)


# -- "request in a loop until the cluster is full of roles" -----------------------------------


def _set_max_live(cluster: Cluster, n: int | None) -> None:
    with cluster.connect("app") as su:
        su.execute("SELECT jit.profile_set('atk', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                   " NULL, NULL, NULL, %s)", (n if n is not None else 5,))


def test_a_request_loop_stops_at_the_profiles_live_lease_cap(cluster: Cluster, bob: str) -> None:
    """Six requests at once against max_live 2: exactly two roles; the rest are refused with
    the reason, audited; once one ends, the next request is granted again."""
    _set_max_live(cluster, 2)
    answers: list[dict[str, object]] = []
    barrier = threading.Barrier(6)

    def one() -> None:
        with as_user(cluster, "alice") as alice:
            verifier = scram_verifier(alice, new_password())
            barrier.wait()
            answers.append(_ask(alice, verifier))

    threads = [threading.Thread(target=one) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        granted = [a for a in answers if a["status"] == "granted"]
        refused = [a for a in answers if a["status"] == "denied"]
        assert (len(granted), len(refused)) == (2, 4), answers
        assert all("you hold 2 live leases of profile atk" in str(a["error"]) for a in refused)
        with as_user(cluster, "alice") as alice:
            alice.execute("SELECT jit.revoke(%s)", (granted[0]["rolname"],))
            assert _ask(alice, scram_verifier(alice, new_password()))["status"] == "granted"
        with cluster.connect("app") as su:
            why = su.execute("SELECT count(*) FROM jit_data.audit WHERE event = 'deny'"
                             " AND detail->>'why' = 'live lease limit'").fetchone()
        assert why is not None and why[0] >= 4
    finally:
        _set_max_live(cluster, None)
        end_jit_roles(cluster, "atk")


def test_the_cap_message_at_one(cluster: Cluster, bob: str) -> None:
    """Said as a sentence (it read "1 live leases", its hint nested in parentheses)."""
    _set_max_live(cluster, 1)
    try:
        with as_user(cluster, "alice") as alice:
            assert _ask(alice, scram_verifier(alice, new_password()))["status"] == "granted"
            refused = _ask(alice, scram_verifier(alice, new_password()))
        assert refused["error"] == "you hold 1 live lease of profile atk, the most it allows at once"
        assert refused["hint"] == ("revoke one with \\jit revoke in the session that holds it,"
                                   " or let it expire")
    finally:
        _set_max_live(cluster, None)
        end_jit_roles(cluster, "atk")


def test_the_same_request_sent_twice_at_once_makes_one_role(cluster: Cluster, bob: str) -> None:
    """Both calls in flight together (the first not committed when the second arrives): the
    second waits for the first and gets its lease (it was a duplicate-key error)."""
    with as_user(cluster, "alice") as alice:
        verifier = scram_verifier(alice, new_password())
    answers: list[dict[str, object]] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        with as_user(cluster, "alice") as conn:
            barrier.wait()
            answers.append(_ask(conn, verifier))

    threads = [threading.Thread(target=one) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [a["status"] for a in answers] == ["granted", "granted"], answers
        assert answers[0]["rolname"] == answers[1]["rolname"]
    finally:
        end_jit_roles(cluster, "atk")
