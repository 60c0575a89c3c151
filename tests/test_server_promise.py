"""The server's promise under attack: time, least privilege and availability, enforced by the
broker against what a requester holds (their own login and psql; here psycopg) and what a
lease holds (its own role), with the reaper running as an operator runs it.

A cluster of this module's own: ``max_prepared_transactions > 0`` (PostgreSQL's default is
0, which hides a whole class), a second database ``other``, and a reaper thread
(``pgcli-jit-admin reap --watch``'s loop) for the timing cases, which report how long a
session outlived its ``VALID UNTIL``.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from pgcli_jit import server
from pgcli_jit.admin import reaper
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster, find_bindir, start_cluster
from tests.conftest import GRANT_ROLES, make_login

pytestmark = pytest.mark.security

Conn = psycopg.Connection[tuple[Any, ...]]
SHORT, CAPPED, DDL, APPROVED = "sp_short", "sp_capped", "sp_ddl", "sp_approved"

SETUP = """
CREATE ROLE sp_owner NOLOGIN;
CREATE SCHEMA work AUTHORIZATION sp_owner;
GRANT USAGE ON SCHEMA work TO PUBLIC;
CREATE ROLE sp_ddl NOLOGIN;
GRANT CREATE, USAGE ON SCHEMA work TO sp_ddl;
GRANT sp_ddl TO jit_owner WITH ADMIN OPTION;
GRANT sp_owner TO jit_owner;
CREATE ROLE sp_leads NOLOGIN;
CREATE TABLE accounts (id int PRIMARY KEY, balance int);
INSERT INTO accounts VALUES (1, 100), (2, 250);
GRANT SELECT, UPDATE ON accounts TO jit_write;
"""


def profile(conn: Conn, name: str, grants: list[str], ttl: str, max_ttl: str, **more: Any) -> None:
    conn.execute("SELECT jit.profile_set(%s, %s, %s::interval, %s::interval, 'jit_requester', false,"
                 " %s, '', %s, 1, interval '10 min', %s)",
                 (name, grants, ttl, max_ttl, more.get("owner", ""), more.get("approvers", ""),
                  more.get("max_live", 5)))


def server_major() -> int:
    """The major version of the PostgreSQL server binaries the tests run."""
    out = subprocess.run([str(find_bindir() / "postgres"), "--version"], capture_output=True, text=True,
                         check=True).stdout
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    assert found is not None, out
    return int(found.group(1))


@pytest.fixture(scope="module")
def own(cluster: Cluster) -> Iterator[Cluster]:   # cluster: PGPASSFILE for make_login
    settings = {"max_prepared_transactions": "4"}
    if server_major() >= 17:   # a NOTIFY queue small enough for a test to fill
        settings["max_notify_queue_pages"] = "64"
    c = start_cluster(settings=settings)
    try:
        c.execute("CREATE DATABASE app")
        c.execute("CREATE DATABASE other")
        c.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42);", dbname="other")
        with c.connect("app") as conn:
            server.apply(conn)
            conn.execute(GRANT_ROLES.encode())
            conn.execute(SETUP.encode())
            profile(conn, SHORT, ["jit_write"], "3s", "2 min")
            profile(conn, CAPPED, ["jit_read"], "3s", "2 min", max_live=2)
            profile(conn, DDL, ["sp_ddl"], "1 min", "5 min", owner="sp_owner")
            profile(conn, APPROVED, ["jit_read"], "1 min", "2 min", approvers="sp_leads")
        for name in ("alice", "bob"):
            make_login(c, name, member_of="jit_requester")
        make_login(c, "carol", member_of="sp_leads")
        make_login(c, "ops", member_of="jit_admin")   # the reaper's login: an operator, no superuser
        yield c
    finally:
        c.stop()


@pytest.fixture
def opened(own: Cluster) -> Iterator[list[Conn]]:
    """Connections a test opens; closed afterwards, then every lease is ended and dropped."""
    conns: list[Conn] = []
    yield conns
    for conn in conns:
        conn.close()
    with own.connect("app") as su:
        su.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE datname IS NOT NULL AND pid <> pg_backend_pid() AND usename <> current_user")
        for (gid,) in su.execute("SELECT gid FROM pg_prepared_xacts").fetchall():
            own.execute(f"ROLLBACK PREPARED '{gid}'", dbname="app")
        for (name,) in su.execute("SELECT rolname FROM jit_data.leases WHERE dropped_at IS NULL").fetchall():
            su.execute("SELECT jit.revoke(%s)", (name,))
            su.execute("SELECT jit.finish(%s)", (name,))


@pytest.fixture
def reaping(own: Cluster) -> Iterator[None]:
    """The reaper's watch loop, as `pgcli-jit-admin reap --watch` runs it, as an operator login
    in jit_admin (a superuser could roll back any prepared transaction without the broker)."""
    stop = threading.Event()
    thread = threading.Thread(target=reaper.watch, args=(lambda: own.connect("app", user="ops"),
                                                         lambda o: print(f"{time.time():.2f} {o}"), stop,
                                                         lambda e: print(f"{time.time():.2f} ERR {e}")),
                              daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


def login(own: Cluster, opened: list[Conn], user: str, password: str = "", db: str = "app") -> Conn:
    conn = psycopg.connect(own.conninfo(db, user=user, password=password), autocommit=True)
    opened.append(conn)
    return conn


def ask(conn: Conn, profile_name: str, ttl: str | None = None) -> tuple[dict[str, Any], str]:
    password = new_password()
    row = conn.execute("SELECT jit.request(%s, %s::interval, 'INC-1', %s)",
                       (profile_name, ttl, scram_verifier(conn, password))).fetchone()
    assert row is not None
    return dict(row[0]), password


def lease(own: Cluster, opened: list[Conn], profile_name: str, requester: str = "alice",
          ttl: str | None = None) -> tuple[dict[str, Any], Conn]:
    granted, password = ask(login(own, opened, requester), profile_name, ttl)
    assert granted["status"] == "granted", granted
    return granted, login(own, opened, granted["rolname"], password)


def alive(conn: Conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def valid_until(own: Cluster, rolname: str) -> tuple[datetime, datetime]:
    """The role's VALID UNTIL and the lease's expires_at, as the server stores them."""
    return valid_until_in(own, "app", rolname)


def valid_until_in(own: Cluster, db: str, rolname: str) -> tuple[datetime, datetime]:
    with own.connect(db) as su:
        row = su.execute("SELECT r.rolvaliduntil, l.expires_at FROM pg_roles r"
                         " JOIN jit_data.leases l ON l.role_oid = r.oid WHERE r.rolname = %s",
                         (rolname,)).fetchone()
    assert row is not None
    return row[0], row[1]


def ended_within(conn: Conn, expires_at: float, limit: float = 15.0) -> float:
    """Seconds past the lease's expiry at which this session was found ended (polled)."""
    deadline = time.time() + limit + max(0.0, expires_at - time.time())
    while time.time() < deadline:
        if not alive(conn):
            return time.time() - expires_at
        time.sleep(0.1)
    raise AssertionError(f"the session outlived its expiry by over {limit}s")


# -- durations: one unit, every comparison and every sum ----------------------------------

@pytest.mark.parametrize("ttl", ["1200 mon -36000 days +1 min", "11 mon -330 days +1 min",
                                 "1 day -86340 seconds", "-1 mon +31 days"])
def test_a_mixed_unit_interval_is_its_seconds_everywhere(own: Cluster, opened: list[Conn], ttl: str) -> None:
    alice = login(own, opened, "alice")
    with own.connect("app") as su:
        seconds = float(su.execute("SELECT extract(epoch FROM %s::interval)", (ttl,)).fetchone()[0])  # type: ignore[index]
    granted, _ = ask(alice, SHORT, ttl)
    if seconds <= 0:
        assert granted["status"] == "denied"
        return
    assert granted["status"] == "granted", granted
    until, expires = valid_until(own, granted["rolname"])
    assert until == expires   # the role's VALID UNTIL is the lease's expiry, to the microsecond
    assert granted["expires_at"] - granted["issued_at"] == pytest.approx(min(seconds, 120), abs=0.01)
    assert granted["max_expires_at"] - granted["issued_at"] == pytest.approx(120, abs=0.01)
    renewed = alice.execute("SELECT jit.renew(%s, %s::interval)", (granted["rolname"], ttl)).fetchone()[0]  # type: ignore[index]
    assert renewed["expires_at"] <= granted["max_expires_at"]
    until, expires = valid_until(own, granted["rolname"])
    assert until == expires


def test_what_an_approver_sees_is_what_is_issued(own: Cluster, opened: list[Conn]) -> None:
    alice, carol = login(own, opened, "alice"), login(own, opened, "carol")
    pending, _ = ask(alice, APPROVED, "11 mon -330 days +1 min")
    assert pending["status"] == "pending"
    (seen,) = [r for r in carol.execute("SELECT id, ttl_seconds FROM jit.pending_for_me()").fetchall()
               if r[0] == pending["request_id"]]
    assert seen[1] == 60
    carol.execute("SELECT jit.approve(%s, 'ok')", (pending["request_id"],))
    granted = alice.execute("SELECT jit.request_status(%s)", (pending["request_id"],)).fetchone()[0]  # type: ignore[index]
    assert granted["status"] == "granted"
    assert granted["expires_at"] - granted["issued_at"] == pytest.approx(60, abs=0.01)
    until, expires = valid_until(own, granted["rolname"])
    assert until == expires


# -- session settings: none reaches into a broker function ----------------------------------

@pytest.mark.parametrize("settings", [
    "SET TimeZone = 'HST-167'; SET DateStyle = 'Postgres, DMY'",
    "SET IntervalStyle = 'sql_standard'; SET TimeZone = 'Pacific/Kiritimati'",
    "SET DateStyle = 'SQL, MDY'; SET timezone_abbreviations = 'India'",
    "SET lock_timeout = 0; SET extra_float_digits = -15; SET bytea_output = 'escape'",
])
def test_session_settings_do_not_move_valid_until(own: Cluster, opened: list[Conn], settings: str) -> None:
    alice = login(own, opened, "alice")
    alice.execute(settings.encode())
    granted, _ = ask(alice, SHORT, "1 min")
    assert granted["status"] == "granted"
    until, expires = valid_until(own, granted["rolname"])
    assert until == expires
    alice.execute("SELECT jit.renew(%s, interval '90 s')", (granted["rolname"],))
    until, expires = valid_until(own, granted["rolname"])
    assert until == expires


def test_createrole_self_grant_makes_the_broker_no_member_of_a_lease(
        own: Cluster, opened: list[Conn]) -> None:
    alice = login(own, opened, "alice")
    if int(alice.execute("SHOW server_version_num").fetchone()[0]) < 160000:  # type: ignore[index]
        pytest.skip("createrole_self_grant exists from PostgreSQL 16 on")
    alice.execute("SET createrole_self_grant = 'set, inherit'")
    granted, _ = ask(alice, SHORT, "1 min")
    with own.connect("app") as su:
        inherits = su.execute("SELECT count(*) FROM pg_auth_members m WHERE m.roleid = %s::regrole"
                              " AND m.member = 'jit_owner'::regrole AND (m.inherit_option OR m.set_option)",
                              (granted["rolname"],)).fetchone()
    assert inherits == (0,)


def test_broker_calls_refuse_a_frozen_snapshot(own: Cluster, opened: list[Conn]) -> None:
    alice = login(own, opened, "alice")
    alice.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="READ COMMITTED"):
        ask(alice, SHORT)
    alice.execute("ROLLBACK")


# -- availability: what a requester holds open stalls nobody else ----------------------------

def test_an_open_transaction_after_any_broker_call_stalls_no_one(own: Cluster, opened: list[Conn]) -> None:
    alice = login(own, opened, "alice")
    alice.execute("BEGIN")
    alice.execute("SELECT jit.request('nope', NULL, '', NULL)")   # a refusal, audited, left open
    waiters = [login(own, opened, "bob") for _ in range(5)]
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda c=c: answers.append(ask(c, SHORT, "1 min")[0]))
               for c in waiters]
    for conn in waiters:
        conn.execute("SET statement_timeout = '5s'")
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a["status"] for a in answers] == ["granted"] * 5
    assert all(alive(c) for c in [alice, *waiters])   # nobody was terminated to get there
    with own.connect("app") as su:
        su.execute("SET statement_timeout = '10s'")
        reaper.one_pass(su)   # and the reaper's pass, chaining the audit included, is not stalled


def test_a_broker_call_cannot_be_prepared(own: Cluster, opened: list[Conn]) -> None:
    for call in ("SELECT jit.request('nope', NULL, '', NULL)", "SELECT jit.renew('x', NULL)",
                 "SELECT jit.cancel(1)"):
        alice = login(own, opened, "alice")
        alice.execute("BEGIN")
        alice.execute(call)
        alice.execute("SELECT pg_advisory_unlock_all()")   # nothing the session can undo helps
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="temporary objects"):
            alice.execute("PREPARE TRANSACTION 'held'")


# -- time: a lease ends at its expiry, whatever it or its requester holds -------------------

@pytest.mark.parametrize("ttl", ["1 microsecond", "1 min"])   # a renewal that changes nothing, or extends
def test_a_renewal_held_open_across_the_expiry_neither_renews_nor_beats_the_cap(
        own: Cluster, opened: list[Conn], reaping: None, ttl: str) -> None:
    first, session = lease(own, opened, CAPPED)
    lease(own, opened, CAPPED, ttl="1 min")   # the second lives on: the cap is reached
    forger = login(own, opened, "alice")   # any login may take any advisory lock: the lease id's
    forger.execute("SELECT pg_advisory_lock(1785295872, %s)", (first["lease_id"],))
    holder = login(own, opened, "alice")
    holder.execute("BEGIN")
    held = holder.execute("SELECT jit.renew(%s, %s::interval)", (first["rolname"], ttl)).fetchone()
    assert held is not None and held[0]["status"] in ("unchanged", "renewed")   # the row is now held
    alice = login(own, opened, "alice")
    # before the expiry the held lease counts; after it, it counts until its holder is ended
    # (then it can never be renewed): at no moment can more than two of her roles log in
    late: float | None = None
    while time.time() < first["expires_at"] + 3:
        if late is None and not alive(session):
            late = time.time() - first["expires_at"]
        answer, _ = ask(alice, CAPPED, "1 min")
        assert answer["status"] == "granted" or "most it allows" in answer["error"]
        with own.connect("app") as su:
            usable = su.execute("SELECT count(*) FROM jit_data.leases l JOIN pg_roles r ON r.oid = l.role_oid"
                                " WHERE l.profile = %s AND r.rolcanlogin"
                                " AND r.rolvaliduntil > clock_timestamp()", (CAPPED,)).fetchone()
        assert usable is not None and usable[0] <= 2, usable
        if answer["status"] == "granted":
            assert time.time() > first["expires_at"]   # never while the first could still renew
            alice.execute("SELECT jit.revoke(%s)", (answer["rolname"],))
        time.sleep(0.1)
    assert late is not None, "the lease's session outlived its expiry by 3 s"
    with pytest.raises(psycopg.OperationalError):   # the holder was ended: the renewal never commits
        holder.execute("SELECT jit.renew(%s, interval '1 min')", (first["rolname"],))
        holder.execute("COMMIT")
    with own.connect("app") as su:
        events = [e for (e,) in su.execute("SELECT event FROM jit_data.audit WHERE rolname = %s ORDER BY id",
                                           (first["rolname"],))]
    assert "renew" not in events and "expire" in events
    print(f"session ended {late:.2f}s past VALID UNTIL")


def test_a_renewal_decided_after_the_expiry_is_refused_however_old_the_transaction(
        own: Cluster, opened: list[Conn]) -> None:
    granted, _ = lease(own, opened, SHORT)
    alice = login(own, opened, "alice")
    alice.execute("BEGIN")
    alice.execute("SELECT 1")   # now() is frozen here, before the expiry
    time.sleep(max(0.0, granted["expires_at"] - time.time()) + 0.2)
    answer = alice.execute("SELECT jit.renew(%s, interval '1 min')", (granted["rolname"],)).fetchone()
    assert answer is not None and answer[0]["status"] == "ended"
    alice.execute("ROLLBACK")


def test_a_leases_prepared_transactions_end_with_it(own: Cluster, opened: list[Conn], reaping: None) -> None:
    granted, session = lease(own, opened, SHORT)
    session.execute("BEGIN")
    session.execute("UPDATE accounts SET balance = 0 WHERE id = 2")
    session.execute("PREPARE TRANSACTION 'sp_later'")
    session.execute("BEGIN")
    session.execute(f"ALTER ROLE \"{granted['rolname']}\" PASSWORD 'mine now'")
    session.execute("PREPARE TRANSACTION 'sp_own_row\u202e\x1b[2J'")   # a name chosen to mislead
    other, bob = lease(own, opened, SHORT, requester="bob")
    late = ended_within(bob, other["expires_at"])   # the reaper was not stalled by them
    deadline = time.time() + 20
    with own.connect("app") as su:
        while su.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone() != (0,):
            assert time.time() < deadline, "the lease's prepared transactions outlived it"
            time.sleep(0.2)
        su.execute("SET lock_timeout = '2s'")
        su.execute("UPDATE accounts SET balance = balance WHERE id = 2")   # the row is free again
        assert su.execute("SELECT balance FROM accounts WHERE id = 2").fetchone() == (250,)
        rolled = su.execute("SELECT detail->>'gid' FROM jit_data.audit WHERE event = 'rollback_prepared'"
                            " AND rolname = %s ORDER BY id", (granted["rolname"],)).fetchall()
        # the audit (and reap's output) shows it with every unsafe character a '?'
        assert sorted(g for (g,) in rolled) == ["sp_later", "sp_own_row??[2J"]
        while su.execute("SELECT dropped_at IS NULL FROM jit_data.leases WHERE rolname = %s",
                         (granted["rolname"],)).fetchone() == (True,):
            assert time.time() < deadline, "the lease's role was never dropped"
            time.sleep(0.2)
    print(f"another lease's session ended {late:.2f}s past VALID UNTIL")


def test_the_reaper_does_not_spin_on_a_lease_it_cannot_end(
        own: Cluster, opened: list[Conn], reaping: None) -> None:
    granted, _ = lease(own, opened, SHORT)
    holder = psycopg.connect(own.conninfo("app"), autocommit=True)   # an operator's, never ended
    opened.append(holder)
    holder.execute("BEGIN")
    holder.execute("SELECT 1 FROM jit_data.leases WHERE rolname = %s FOR UPDATE", (granted["rolname"],))
    time.sleep(max(0.0, granted["expires_at"] - time.time()) + 0.5)
    with own.connect("app") as su:
        def commits() -> int:
            su.execute("SELECT pg_stat_clear_snapshot()")
            return int(su.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'")
                       .fetchone()[0])  # type: ignore[index]
        before = commits()
        time.sleep(2)
        rate = (commits() - before) / 2
    holder.execute("ROLLBACK")
    print(f"reaper: {rate:.0f} commits/s while one lease was held")
    assert rate < 200, f"{rate} commits/s while one lease was held"   # 5,000/s without the floor


# -- least privilege: what a grant role can do, judged every time ----------------------------

@pytest.mark.parametrize("power", ["GRANT pg_write_all_data TO {r}", "GRANT pg_read_all_stats TO {r}",
                                   "GRANT pg_checkpoint TO {r}", "GRANT pg_monitor TO {r}",
                                   "GRANT UPDATE ON jit_data.requests TO {r}",
                                   "GRANT jit_leads_x TO {r} WITH ADMIN OPTION",
                                   "GRANT SELECT ON t TO {r}"])
def test_a_grant_role_that_can_do_too_much_is_refused_now_and_later(
        own: Cluster, opened: list[Conn], reaping: None, power: str) -> None:
    role = f"sp_g{abs(hash(power)) % 10**6}"
    with own.connect("app") as su:
        su.execute(f"CREATE ROLE {role} NOLOGIN; GRANT {role} TO jit_owner WITH ADMIN OPTION;"
                   "DO $$ BEGIN IF to_regrole('jit_leads_x') IS NULL THEN CREATE ROLE jit_leads_x;"
                   " END IF; END $$")
        profile(su, "sp_grant", [role], "1 min", "2 min")
        granted, session = lease(own, opened, "sp_grant")
        where = "other" if "ON t " in power else "app"
        own.execute(power.format(r=role), dbname=where)
        with pytest.raises(psycopg.errors.RaiseException, match="cannot grant"):
            profile(su, "sp_grant2", [role], "1 min", "2 min")
    denied, _ = ask(login(own, opened, "alice"), "sp_grant")
    assert denied["status"] == "denied" and "cannot be issued now" in denied["error"]
    ended_within(session, time.time())   # the live lease is revoked by the reaper's next pass
    with own.connect("app") as su:
        why = su.execute("SELECT detail->>'why' FROM jit_data.audit WHERE rolname = %s AND event = 'revoke'",
                         (granted["rolname"],)).fetchone()
        assert why == ("grant role unfit",)
        su.execute("SELECT jit.profile_drop('sp_grant')")


def test_pg_hba_can_refuse_a_lease_every_database_but_its_own(own: Cluster, opened: list[Conn]) -> None:
    """The operator guide's two lines: leases of app's broker are members of jit_in_app."""
    hba = own.datadir / "pg_hba.conf"
    before = hba.read_text(encoding="utf-8")
    hba.write_text("host app +jit_in_app 127.0.0.1/32 scram-sha-256\n"
                   "host all +jit_lease 127.0.0.1/32 reject\n" + before, encoding="utf-8")
    own.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(0.5)
        granted, password = ask(login(own, opened, "alice"), SHORT, "1 min")
        assert alive(login(own, opened, granted["rolname"], password, db="app"))
        with pytest.raises(psycopg.OperationalError, match="rejects connection"):
            login(own, opened, granted["rolname"], password, db="other")
    finally:
        hba.write_text(before, encoding="utf-8")
        own.execute("SELECT pg_reload_conf()")


def test_a_copy_of_the_schema_never_acts_on_the_originals_leases(own: Cluster, opened: list[Conn]) -> None:
    granted, _ = lease(own, opened, SHORT)
    time.sleep(max(0.0, granted["expires_at"] - time.time()) + 0.2)   # due, and no reaper here
    with own.connect() as su:
        su.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'app'"
                   " AND pid <> pg_backend_pid()")
        time.sleep(0.5)
        su.execute("DROP DATABASE IF EXISTS appcopy")
        su.execute("CREATE DATABASE appcopy TEMPLATE app")
    try:
        copy = login(own, opened, "alice", db="appcopy")
        answer = copy.execute("SELECT jit.revoke(%s)", (granted["rolname"],)).fetchone()
        assert answer is not None and answer[0]["status"] == "denied"
        with own.connect("appcopy") as su:
            assert su.execute("SELECT * FROM jit.expire_due()").fetchall() == []   # due, not its own
            su.execute("UPDATE jit_data.leases SET ended_at = now()")   # as if the copy had ended it
            assert su.execute("SELECT * FROM jit.finish_ended()").fetchall() == []
        with own.connect("app") as su:   # in its own database the lease is untouched by the copy
            row = su.execute("SELECT l.ended_at IS NULL, l.dropped_at IS NULL, r.rolcanlogin"
                             " FROM jit_data.leases l JOIN pg_roles r ON r.oid = l.role_oid"
                             " WHERE l.rolname = %s", (granted["rolname"],)).fetchone()
        assert row == (True, True, True)
    finally:
        own.execute("DROP DATABASE IF EXISTS appcopy WITH (FORCE)")


# -- what a lease leaves behind -------------------------------------------------------------

def test_a_ddl_lease_cannot_hand_its_code_to_its_grant_role(own: Cluster, opened: list[Conn]) -> None:
    _, session = lease(own, opened, DDL)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only in pg_temp"):
        session.execute("CREATE FUNCTION work.run(q text) RETURNS void LANGUAGE plpgsql"
                        " AS 'BEGIN EXECUTE q; END'")
    session.execute(f"CREATE TABLE work.t_{secrets.token_hex(4)} (x int)")
    table = session.execute("SELECT c.oid::regclass::text FROM pg_class c"
                            " WHERE c.relowner = current_user::regrole AND c.relkind = 'r'"
                            " ORDER BY c.oid DESC LIMIT 1").fetchone()
    assert table is not None
    with pytest.raises(psycopg.errors.InsufficientPrivilege):   # 15: the guard; 16+: PostgreSQL too
        session.execute(f"ALTER TABLE {table[0]} OWNER TO sp_ddl")


def test_a_large_object_does_not_keep_a_read_lease_alive(own: Cluster, opened: list[Conn]) -> None:
    granted, session = lease(own, opened, SHORT)
    session.execute("SELECT lo_from_bytea(0, 'x')")
    session.close()
    with own.connect("app") as su:
        su.execute("SELECT jit.revoke(%s)", (granted["rolname"],))
        finished = su.execute("SELECT jit.finish(%s)", (granted["rolname"],)).fetchone()
        assert finished is not None and finished[0]["outcome"] == "dropped", finished
        assert su.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s",
                          (granted["rolname"],)).fetchone() == (0,)


def test_a_lease_cannot_create_objects_as_its_grant_role(own: Cluster, opened: list[Conn]) -> None:
    """On 15 a lease may SET ROLE to a grant role (16+: the grant is SET FALSE); what it then
    created would belong to the grant role for good, beyond its own end's clean-up."""
    _, session = lease(own, opened, DDL)
    try:
        session.execute("SET ROLE sp_ddl")
    except psycopg.errors.InsufficientPrivilege:
        return   # 16+: refused by PostgreSQL
    for statement in ("CREATE TABLE work.left_behind (x int)", "CREATE VIEW work.v AS SELECT 1 AS x",
                      "CREATE FUNCTION work.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"only as itself|only in pg_temp"):
            session.execute(statement)
    session.execute("RESET ROLE")
    session.execute("CREATE TABLE work.mine (x int PRIMARY KEY)")   # as itself, with its index


def test_holding_anothers_request_is_impossible(own: Cluster, opened: list[Conn]) -> None:
    """cancel and request_status locked any request row before checking whose it was: an open
    transaction of alice's stalled bob's collection and carol's approval, and its timing told
    which ids exist."""
    bob, carol, alice = login(own, opened, "bob"), login(own, opened, "carol"), login(own, opened, "alice")
    pending, _ = ask(bob, APPROVED)
    rid = pending["request_id"]
    alice.execute("BEGIN")
    for call in ("SELECT jit.cancel(%s)", "SELECT jit.request_status(%s)"):
        answer = alice.execute(call, (rid,)).fetchone()
        assert answer is not None and answer[0]["status"] == "denied"
    carol.execute("SET statement_timeout = '3s'")
    carol.execute("SELECT jit.approve(%s, 'ok')", (rid,))   # not stalled by alice's transaction
    bob.execute("SET statement_timeout = '3s'")
    granted = bob.execute("SELECT jit.request_status(%s)", (rid,)).fetchone()
    assert granted is not None and granted[0]["status"] == "granted"
    alice.execute("ROLLBACK")


def test_a_replayed_request_held_open_does_not_keep_its_lease(
        own: Cluster, opened: list[Conn], reaping: None) -> None:
    alice = login(own, opened, "alice")
    password = new_password()
    verifier = scram_verifier(alice, password)
    first = alice.execute("SELECT jit.request(%s, NULL, 'INC-1', %s)", (SHORT, verifier)).fetchone()[0]  # type: ignore[index]
    holder = login(own, opened, "alice")
    holder.execute("BEGIN")
    again = holder.execute("SELECT jit.request(%s, NULL, 'INC-1', %s)", (SHORT, verifier)).fetchone()
    assert again is not None and again[0].get("replayed") is True   # its row is now held
    deadline = first["expires_at"] + 10
    with own.connect("app") as su:
        while su.execute("SELECT ended_at IS NULL FROM jit_data.leases WHERE rolname = %s",
                         (first["rolname"],)).fetchone() == (True,):
            assert time.time() < deadline, "a held replay kept the lease from being ended"
            time.sleep(0.2)
    assert not alive(holder)


def test_a_version_5_install_upgrades_with_a_live_lease(own: Cluster, opened: list[Conn]) -> None:
    """Schema version 5 (the tables in jit, the audit chain's lock) with a live lease, then
    setup: the lease keeps working, is renewed and revoked by the new functions, and the audit
    chain verifies across the upgrade."""
    from pathlib import Path

    own.execute("DROP DATABASE IF EXISTS v5")
    own.execute("CREATE DATABASE v5")
    with own.connect("v5") as su:
        with su.transaction():
            for f in server.sql_files():
                if f.version is not None and f.version <= 5:
                    su.execute(f.text.encode())
                    su.execute("INSERT INTO jit.schema_version (version) VALUES (%s)", (f.version,))
            su.execute((Path(__file__).parent / "data" / "functions_v5.sql").read_bytes())
        su.execute("DO $$ BEGIN IF to_regrole('v5_read') IS NULL THEN CREATE ROLE v5_read NOLOGIN;"
                   " END IF; END $$; GRANT v5_read TO jit_owner WITH ADMIN OPTION")
        su.execute("SELECT jit.profile_set('old', ARRAY['v5_read'], interval '10 min', interval '1 hour',"
                   " 'jit_requester', false, '', '')")
        assert server.installed_version(su) == 5
    alice = login(own, opened, "alice", db="v5")
    granted, password = ask(alice, "old")
    assert granted["status"] == "granted"
    session = login(own, opened, granted["rolname"], password, db="v5")
    with own.connect("v5") as su:
        assert server.apply(su)[0] == "applied 006_server_promise.sql"
        assert server.installed_version(su) == server.latest_version()
    assert alive(session)
    with own.connect("v5") as su:   # a lease live across the upgrade is this database's too
        assert su.execute("SELECT pg_has_role(%s, 'jit_in_v5', 'MEMBER')", (granted["rolname"],)
                          ).fetchone() == (True,)
    renewed = alice.execute("SELECT jit.renew(%s, interval '20 min')", (granted["rolname"],)).fetchone()
    assert renewed is not None and renewed[0]["status"] == "renewed"
    until, expires = valid_until_in(own, "v5", granted["rolname"])
    assert until == expires
    revoked = alice.execute("SELECT jit.revoke(%s)", (granted["rolname"],)).fetchone()
    assert revoked is not None and revoked[0]["status"] == "revoked"
    with own.connect("v5") as su:
        verified = su.execute("SELECT rows_checked > 0, bad_id, problem FROM jit.audit_verify()").fetchone()
    assert verified == (True, None, None)
    with own.connect("v5") as su:   # no function left behind with a signature of version 5
        overloads = su.execute(
            "SELECT proname, count(*) FROM pg_proc WHERE pronamespace = 'jit'::regnamespace"
            " AND proname <> 'profile_set' GROUP BY proname HAVING count(*) > 1").fetchall()
    assert overloads == []


def test_a_reason_with_bidi_or_line_separators_is_refused(own: Cluster, opened: list[Conn]) -> None:
    alice = login(own, opened, "alice")
    for reason in ("approved by CISO \u202etxt.exe\u2066", "ticket\u2028event: revoke", "a\u200fb"):
        answer = alice.execute("SELECT jit.request(%s, NULL, %s, %s)",
                               (SHORT, reason, scram_verifier(alice, new_password()))).fetchone()
        assert answer is not None and answer[0]["status"] == "denied", reason


def test_a_lock_on_a_lease_role_delays_no_other_lease_s_end(
        own: Cluster, opened: list[Conn], reaping: None) -> None:
    """Any login may GRANT a lease's role a privilege on a large object it makes: in an open (or
    prepared) transaction that holds a lock on the role, and DROP ROLE waits for it."""
    victims = [lease(own, opened, SHORT, requester="bob") for _ in range(4)]
    mallory = login(own, opened, "alice")
    mallory.execute("BEGIN")
    (lo,) = mallory.execute("SELECT lo_create(0)").fetchone()  # type: ignore[misc]
    for granted, _ in victims:
        mallory.execute(f"GRANT SELECT ON LARGE OBJECT {lo} TO \"{granted['rolname']}\"")
    mallory.execute("PREPARE TRANSACTION 'sp_pin'")
    other, session = lease(own, opened, SHORT)
    late = ended_within(session, other["expires_at"])
    print(f"a lease's session ended {late:.2f}s past VALID UNTIL with 4 roles pinned")
    time.sleep(1)
    with own.connect("app") as su:
        for granted, _ in victims:   # pinned, but powerless: NOLOGIN, no grants, no sessions
            row = su.execute("SELECT r.rolcanlogin, (SELECT count(*) FROM pg_auth_members m"
                             " WHERE m.member = r.oid) FROM pg_roles r WHERE r.rolname = %s",
                             (granted["rolname"],)).fetchone()
            assert row == (False, 0), row


def test_a_full_notify_queue_stops_no_broker_call(own: Cluster, opened: list[Conn], reaping: None) -> None:
    """The NOTIFY queue is the cluster's: a listener that never reads holds its tail, and any
    login can fill it.  A call that notified then failed at commit; the broker's calls and the
    reaper no longer depend on it (the doorbells stay quiet above half full)."""
    if server_major() < 17:
        pytest.skip("only PostgreSQL 17+ lets a test shrink the NOTIFY queue (max_notify_queue_pages)")
    listener, filler = login(own, opened, "alice"), login(own, opened, "alice")
    listener.execute("LISTEN sp_noise")
    listener.execute("BEGIN")
    listener.execute("SELECT 1")
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        for _ in range(1000):
            filler.execute("SELECT pg_notify('sp_noise', repeat('x', 7900))")
    usage = filler.execute("SELECT pg_notification_queue_usage()").fetchone()
    assert usage is not None and usage[0] > 0.9
    granted, session = lease(own, opened, SHORT, requester="bob")
    renewed = login(own, opened, "bob").execute("SELECT jit.renew(%s, interval '4 s')",
                                                 (granted["rolname"],)).fetchone()
    assert renewed is not None and renewed[0]["status"] in ("renewed", "unchanged")
    ended_within(session, renewed[0]["expires_at"])   # and the reaper still ends it
    listener.execute("ROLLBACK")
    listener.execute("UNLISTEN *")
    deadline = time.time() + 20   # the queue drains as listeners read on: leave it as found
    while (filler.execute("SELECT pg_notification_queue_usage()").fetchone() or (1.0,))[0] > 0.1:
        assert time.time() < deadline, "the NOTIFY queue did not drain"
        with contextlib.suppress(psycopg.errors.ProgramLimitExceeded):
            filler.execute("NOTIFY sp_poke")   # a notifier moves the queue's tail on
        time.sleep(0.2)


def test_doorbells_do_not_drive_the_reaper(own: Cluster, opened: list[Conn], reaping: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY needs no privilege: anyone may ring the reaper's doorbell in a loop."""
    passes: list[float] = []
    real = reaper.one_pass

    def counted(conn: Any) -> list[reaper.Outcome]:
        passes.append(time.monotonic())
        return real(conn)

    monkeypatch.setattr(reaper, "one_pass", counted)
    alice = login(own, opened, "alice")
    started = time.monotonic()
    while time.monotonic() < started + 2:   # 200 a second: far above 4, within a small queue
        alice.execute("NOTIFY jit_leases")
        time.sleep(0.005)
    during = [t for t in passes if t >= started]
    print(f"reaper: {len(during)} passes in 2 s of a doorbell rung in a loop")
    assert len(during) <= 2 / reaper.MIN_SLEEP + 2
