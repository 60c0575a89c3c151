"""Red team: what a requester, a temporary role or another login can do to the broker with
only what they hold (their own login and psql; here psycopg), against a real cluster.

Each test is an attack that worked before its fix: stalling every caller and the reaper
with a lock, keeping a session past its expiry, turning what a lease leaves behind into the
owner role's privileges, and writing megabytes or terminal escapes through the broker.

``alice`` requests (member of jit_requester, from conftest); ``mallory`` is another
requester who never gets a grant of her own.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgcli_jit.admin.reaper import one_pass
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import REQUESTER, declare_server_profile, make_login

pytestmark = pytest.mark.security

Conn = psycopg.Connection[tuple[Any, ...]]
SHORT = "rt_short"   # a lease that expires in 2 s
LONG = "rt_long"     # 5 minutes
DDL = "rt_ddl"       # may create objects in schema rt_work; what it leaves goes to rt_owner

SETUP = """
CREATE ROLE rt_owner NOLOGIN;
CREATE SCHEMA rt_work AUTHORIZATION rt_owner;
GRANT USAGE ON SCHEMA rt_work TO PUBLIC;
CREATE TABLE rt_work.secret (x text);
INSERT INTO rt_work.secret VALUES ('s3cr3t');
ALTER TABLE rt_work.secret OWNER TO rt_owner;
CREATE ROLE rt_ddl NOLOGIN;
GRANT CREATE ON SCHEMA rt_work TO rt_ddl;
GRANT rt_ddl TO jit_owner WITH ADMIN OPTION;
GRANT rt_owner TO jit_owner;
"""


@pytest.fixture(scope="module")
def world(cluster: Cluster) -> None:
    make_login(cluster, "mallory", member_of="jit_requester")
    with cluster.connect("app") as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'rt_owner'").fetchone() is None:
            conn.execute(SETUP.encode())
    declare_server_profile(cluster, SHORT, ttl="2s", max_ttl="1m")
    declare_server_profile(cluster, LONG, ttl="5m", max_ttl="10m")
    declare_server_profile(cluster, DDL, grant=["rt_ddl"], ttl="5m", max_ttl="10m", owner="rt_owner")


@pytest.fixture
def cleanup(cluster: Cluster, world: None) -> Iterator[list[Conn]]:
    """Connections a test opens go here, and are closed (before the leases end) afterwards."""
    opened: list[Conn] = []
    yield opened
    for conn in opened:
        conn.close()
    with cluster.connect("app") as conn:
        for (name,) in conn.execute("SELECT rolname FROM jit_data.leases WHERE dropped_at IS NULL"
                                    " AND profile LIKE 'rt\\_%'").fetchall():
            conn.execute("SELECT jit.revoke(%s)", (name,))
            conn.execute("SELECT jit.finish(%s)", (name,))


def login(cluster: Cluster, opened: list[Conn], user: str, password: str = "") -> Conn:
    conn = psycopg.connect(cluster.conninfo("app", user=user, password=password), autocommit=True)
    opened.append(conn)
    return conn


def request(conn: Conn, profile: str, verifier: str | None = None) -> tuple[dict[str, Any], str]:
    password = new_password()
    row = conn.execute("SELECT jit.request(%s, NULL, 'red team', %s)",
                       (profile, verifier or scram_verifier(conn, password))).fetchone()
    assert row is not None
    return dict(row[0]), password


def lease_session(cluster: Cluster, opened: list[Conn], profile: str) -> tuple[str, Conn]:
    granted, password = request(login(cluster, opened, REQUESTER), profile)
    assert granted["status"] == "granted", granted
    return granted["rolname"], login(cluster, opened, granted["rolname"], password)


def alive(conn: Conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def reap(cluster: Cluster, timeout: str = "10s") -> None:
    """One reaper pass, as `pgcli-jit-admin reap` runs it; it must not hang."""
    with cluster.connect("app") as conn:
        conn.execute(f"SET statement_timeout = '{timeout}'")
        one_pass(conn)


# -- locks: nobody may stall the broker or the reaper for everyone -------------------------

def test_an_advisory_lock_on_the_audit_chain_stalls_no_one(cluster: Cluster, cleanup: list[Conn]) -> None:
    # any login may take any advisory lock; the chain's lock was one, keyed by a public string
    mallory = login(cluster, cleanup, "mallory")
    mallory.execute("SELECT pg_advisory_lock(hashtext('pgcli-jit audit chain'))")
    alice = login(cluster, cleanup, REQUESTER)
    alice.execute("SET statement_timeout = '5s'")
    granted, _ = request(alice, LONG)
    assert granted["status"] == "granted"


#: a statement for every lock a parse or a DDL command takes before checking privileges
LOOKUPS = ["SELECT * FROM jit_data.audit_head FOR UPDATE", "UPDATE jit_data.audit_head SET last_id = 0",
           "SELECT * FROM jit_data.chain_lock FOR UPDATE",
           "INSERT INTO jit_data.audit SELECT * FROM jit_data.audit",
           "UPDATE jit_data.leases SET reason = ''", "SELECT nextval('jit_data.audit_id_seq')"]
QUEUERS = ["CREATE RULE r AS ON INSERT TO jit_data.leases DO INSTEAD NOTHING",
           "CREATE TRIGGER t BEFORE INSERT ON jit_data.leases FOR EACH ROW EXECUTE FUNCTION jit.request()",
           "LOCK TABLE jit_data.leases", "ALTER TABLE jit_data.requests ADD COLUMN x int",
           "CREATE INDEX ON jit_data.audit (id)", "CREATE TRIGGER t BEFORE INSERT ON jit_data.audit_id_seq"
           " FOR EACH ROW EXECUTE FUNCTION jit.request()"]


def test_a_requester_cannot_lock_or_queue_on_the_brokers_tables(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    """PostgreSQL takes a statement's table locks when it is parsed, and some DDL (CREATE RULE,
    CREATE TRIGGER) asks for ACCESS EXCLUSIVE before it checks ownership: a requester who could
    name the broker's tables held ROW EXCLUSIVE with a PREPAREd statement, then queued a
    CREATE RULE behind it, and every later lock, the broker's and the reaper's, queued behind
    that.  The tables live in jit_data, which requesters and leases may not even look up."""
    _, lease = lease_session(cluster, cleanup, LONG)
    watcher = cluster.connect("app")   # the superuser sees every backend's locks
    cleanup.append(watcher)
    for who in (login(cluster, cleanup, "mallory"), lease):
        pid = who.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        for statement in LOOKUPS + QUEUERS:
            who.execute("BEGIN")
            # (a lease's DDL is refused even before that, by the DDL guard at its start)
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match=r"permission denied for schema|temporary role may not"):
                who.execute(f"PREPARE p AS {statement}" if statement in LOOKUPS else statement)
            # the failed transaction is still open, and keeps any lock taken before the error
            held = watcher.execute("SELECT count(*) FROM pg_locks k JOIN pg_class c ON c.oid = k.relation"
                                   " WHERE k.pid = %s AND c.relnamespace = 'jit_data'::regnamespace",
                                   (pid,)).fetchone()
            assert held == (0,), statement
            who.execute("ROLLBACK")
    alice = login(cluster, cleanup, REQUESTER)
    alice.execute("SET statement_timeout = '5s'")
    granted, _ = request(alice, LONG)
    assert granted["status"] == "granted"
    reap(cluster, timeout="5s")


def test_a_transaction_left_open_after_a_broker_call_stalls_no_one(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, _ = lease_session(cluster, cleanup, LONG)
    # alice renews inside a transaction she never ends: it holds her lease's row, nothing shared
    holder = login(cluster, cleanup, REQUESTER)
    holder.execute("BEGIN")
    holder.execute("SELECT jit.renew(%s, interval '6 min')", (rolname,))
    mallory = login(cluster, cleanup, "mallory")
    mallory.execute("SET statement_timeout = '8s'")
    granted, _ = request(mallory, LONG)
    assert granted["status"] == "granted"   # answered, not stalled
    assert alive(holder)   # and nobody had to end her: she holds nothing anyone else waits on


def test_a_lease_holding_its_own_row_locked_does_not_outlive_its_expiry(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    _, lease = lease_session(cluster, cleanup, SHORT)
    lease.execute("BEGIN")
    lease.execute("SELECT jit.renew(current_user, NULL)")   # FOR UPDATE, held until commit
    time.sleep(2.5)
    reap(cluster)
    assert not alive(lease)


def test_a_lease_holding_its_role_row_locked_cannot_stall_the_reaper(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease = lease_session(cluster, cleanup, SHORT)
    lease.execute("BEGIN")
    lease.execute(f"ALTER ROLE \"{rolname}\" PASSWORD 'of my choosing'")   # allowed on oneself
    time.sleep(2.5)
    reap(cluster)   # ALTER ROLE NOLOGIN used to wait for that transaction forever
    assert not alive(lease)


def test_a_requester_holding_an_ended_lease_locked_cannot_keep_its_sessions(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease = lease_session(cluster, cleanup, SHORT)
    time.sleep(2.5)
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.expire_due()")
    holder = login(cluster, cleanup, REQUESTER)
    holder.execute("BEGIN")
    holder.execute("SELECT jit.renew(%s, NULL)", (rolname,))   # refused, but the row stays locked
    reap(cluster)
    assert not alive(lease)


def test_a_lock_on_what_a_lease_left_behind_cannot_stall_the_reaper(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease = lease_session(cluster, cleanup, DDL)
    lease.execute("CREATE TABLE rt_work.left_behind (x int)")
    lease.close()
    holder = login(cluster, cleanup, "mallory")
    holder.execute("BEGIN")
    # a statement's table locks are taken when it is parsed, before privileges are checked
    holder.execute("PREPARE peek AS SELECT * FROM rt_work.left_behind")   # ACCESS SHARE, held
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.revoke(%s)", (rolname,))
    reap(cluster)   # REASSIGN OWNED used to wait for mallory forever, and every role behind it
    with cluster.connect("app") as conn:
        row = conn.execute("SELECT dropped_at IS NULL, drop_error FROM jit_data.leases WHERE rolname = %s",
                           (rolname,)).fetchone()
    assert row is not None and row[0] and "lock" in str(row[1])
    holder.close()
    with cluster.connect("app") as conn:
        outcome = conn.execute("SELECT jit.finish(%s)->>'outcome'", (rolname,)).fetchone()
    assert outcome == ("dropped",)


# -- what a lease leaves behind --------------------------------------------------------------

@pytest.mark.parametrize("attack", [
    "CREATE FUNCTION rt_work.{t}_peek() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER"
    " AS 'SELECT x FROM rt_work.secret'",
    "CREATE PROCEDURE rt_work.{t}_poke() LANGUAGE sql SECURITY DEFINER AS 'DELETE FROM rt_work.secret'",
    "GRANT SELECT ON rt_work.{t} TO PUBLIC",
    "ALTER DEFAULT PRIVILEGES FOR ROLE rt_ddl GRANT SELECT ON TABLES TO PUBLIC",
    "CREATE RULE copy AS ON INSERT TO rt_work.{t} DO ALSO INSERT INTO rt_work.{t} VALUES ('x')",
    "CREATE TRIGGER t BEFORE UPDATE ON rt_work.{t} FOR EACH ROW"
    " EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    "CREATE FUNCTION rt_work.{t}_f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE FUNCTION rt_work.lower(varchar) RETURNS text LANGUAGE sql AS 'SELECT pg_catalog.lower($1)'",
    "CREATE AGGREGATE rt_work.{t}_agg(int) (SFUNC = int4pl, STYPE = int)",
    "ALTER FUNCTION pg_temp.{t}_tmp() SECURITY DEFINER",
    "CREATE POLICY p ON rt_work.{t} USING (true)",
    "ALTER TABLE rt_work.{t} OWNER TO jit_lease",
])
def test_what_would_outlive_a_lease_is_refused_when_it_is_made(
        cluster: Cluster, cleanup: list[Conn], attack: str) -> None:
    _, lease = lease_session(cluster, cleanup, DDL)
    t = f"mine_{secrets.token_hex(4)}"   # what this lease makes stays (its profile names an owner)
    lease.execute(f"CREATE TABLE rt_work.{t} (x text)")
    lease.execute(f"CREATE FUNCTION pg_temp.{t}_tmp() RETURNS int LANGUAGE sql AS 'SELECT 1'")  # allowed
    # (handing a table to jit_lease is refused by PostgreSQL itself too: on 15 where jit_lease
    # may not create in the schema, on 16+ because a lease may not SET ROLE to it)
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match=r"temporary role may|permission denied for schema|must be able to SET"):
        lease.execute(attack.format(t=t))


def test_what_a_lease_leaves_behind_never_runs_with_the_owner_roles_privileges(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease = lease_session(cluster, cleanup, DDL)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        lease.execute("SELECT * FROM rt_work.secret")   # the lease itself may not read it
    lease.execute("CREATE VIEW rt_work.window AS SELECT x FROM rt_work.secret")
    lease.close()
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.revoke(%s)", (rolname,))
        assert conn.execute("SELECT jit.finish(%s)->>'outcome'", (rolname,)).fetchone() == ("dropped",)
        # the view runs as whoever reads it now, not as its new owner
        assert conn.execute("SELECT relowner::regrole::text, reloptions FROM pg_class"
                            " WHERE oid = 'rt_work.window'::regclass").fetchone() == (
            "rt_owner", ["security_invoker=true"])
    mallory = login(cluster, cleanup, "mallory")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        mallory.execute("SELECT * FROM rt_work.window")
    with cluster.connect("app") as conn:
        conn.execute("DROP VIEW rt_work.window")


def test_a_materialized_view_a_lease_leaves_never_refreshes_as_the_owner_role(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    # a materialized view cannot be security_invoker: handed to rt_owner, its query would run
    # as rt_owner on every REFRESH, and fill it with what the lease could not read
    rolname, lease = lease_session(cluster, cleanup, DDL)
    mv = f"rt_work.mv_{secrets.token_hex(4)}"
    lease.execute(f"CREATE MATERIALIZED VIEW {mv} AS SELECT x FROM rt_work.secret WITH NO DATA")
    lease.close()
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.revoke(%s)", (rolname,))
        assert conn.execute("SELECT jit.finish(%s)->>'outcome'", (rolname,)).fetchone() == ("dropped",)
        assert conn.execute("SELECT to_regclass(%s)", (mv,)).fetchone() == (None,)


@pytest.mark.parametrize("owner", ["jit_owner", "jit_admin", "jit_lease", "jit_requester", "jit_archiver",
                                   "rt_in_admin", "rt_login", "rt_createdb", "rt_reads_all"])
def test_a_profile_owner_may_not_be_a_broker_role_or_hold_powers(cluster: Cluster, world: None,
                                                                 owner: str) -> None:
    # owner = jit_owner passed (jit_owner can always hand objects to itself): what a lease left
    # became jit_owner's, and a materialized view's query ran as jit_owner on REFRESH
    with cluster.connect("app") as conn:
        conn.execute("""DO $$ BEGIN
            IF to_regrole('rt_in_admin') IS NULL THEN
                CREATE ROLE rt_in_admin NOLOGIN IN ROLE jit_admin; END IF;
            IF to_regrole('rt_login') IS NULL THEN CREATE ROLE rt_login LOGIN; END IF;
            IF to_regrole('rt_createdb') IS NULL THEN CREATE ROLE rt_createdb NOLOGIN CREATEDB; END IF;
            IF to_regrole('rt_reads_all') IS NULL THEN
                CREATE ROLE rt_reads_all NOLOGIN IN ROLE pg_read_all_data; END IF;
            END $$""")
        for role in ("rt_in_admin", "rt_login", "rt_createdb", "rt_reads_all"):
            conn.execute(f"GRANT {role} TO jit_owner")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="may not own what a lease leaves"):
            conn.execute("SELECT jit.profile_set('rt_bad_owner', ARRAY['rt_ddl'], '5 min', '10 min',"
                         " 'jit_requester', false, %s, '')", (owner,))
        assert conn.execute("SELECT count(*) FROM jit_data.profiles WHERE name = 'rt_bad_owner'"
                            ).fetchone() == (0,)


# -- what the broker writes for a caller ------------------------------------------------------

def test_a_profile_name_writes_no_megabytes_or_escapes_into_the_audit(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    mallory = login(cluster, cleanup, "mallory")
    forged = "\x1b[2J\r2026-01-01 request granted to mallory\n" + "A" * 1_000_000
    row = mallory.execute("SELECT jit.request(%s, NULL, '', 'x')", (forged,)).fetchone()
    assert row is not None and row[0]["status"] == "denied"
    with cluster.connect("app") as conn:
        audited = conn.execute("SELECT profile FROM jit_data.audit WHERE actor = 'mallory'"
                               " ORDER BY id DESC LIMIT 1").fetchone()
    assert audited is not None
    assert audited[0] is None or (len(audited[0]) <= 63 and audited[0].isprintable())


def test_a_verifier_of_megabytes_is_refused(cluster: Cluster, cleanup: list[Conn]) -> None:
    # a well-formed SCRAM verifier with a 3 MB salt used to land in pg_authid as it was
    salt = base64.b64encode(b"s" * 3_000_000).decode()
    key = base64.b64encode(b"k" * 32).decode()
    alice = login(cluster, cleanup, REQUESTER)
    with pytest.raises(psycopg.errors.RaiseException, match="SCRAM-SHA-256 verifier"):
        request(alice, LONG, verifier=f"SCRAM-SHA-256$4096:{salt}${key}:{key}")
