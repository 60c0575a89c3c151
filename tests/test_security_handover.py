"""Security: what a lease hands over to its profile's owner role runs no code of the lease's.

The class: expressions stored with an object that run as whoever touches it: column
defaults, CHECK constraints, generated columns, index expressions and predicates, exclusion
constraints, statistics on expressions, a domain's default and constraints (triggers, rules
and policies were dropped already).  After the handover a superuser writes into the table;
none of the lease's expressions may run in the superuser's session.  Here each expression
calls set_config('application_name', ...), so whether it ran shows in the writer's session.
"""

from __future__ import annotations

import secrets

import psycopg
import pytest

from pgcli_jit.devtools.cluster import Cluster
from tests import test_redteam as rt
from tests.test_redteam import DDL, Conn, lease_session

pytestmark = pytest.mark.security

# the red team's world (profile rt_ddl: what it leaves goes to rt_owner) and its cleanup
world = rt.world
cleanup = rt.cleanup

ARM = "pg_catalog.set_config('application_name', 'ran: {what}', false)"


def plant(lease: Conn, t: str) -> None:
    lease.execute(f"CREATE DOMAIN rt_work.{t}_d AS text DEFAULT {ARM.format(what='domain default')}"
                  f" CHECK ({ARM.format(what='domain check')} IS NOT NULL)")
    lease.execute(
        f"CREATE TABLE rt_work.{t} ("
        f" id serial PRIMARY KEY, note text,"
        f" info text DEFAULT {ARM.format(what='default')},"
        f" shaped rt_work.{t}_d,"
        " twice text GENERATED ALWAYS AS (note || note) STORED,"
        f" CHECK ({ARM.format(what='check')} IS NOT NULL))")
    lease.execute(f"CREATE INDEX {t}_expr ON rt_work.{t} ((lower(note)))")
    lease.execute(f"CREATE INDEX {t}_part ON rt_work.{t} (note) WHERE note <> 'x'")
    lease.execute(f"ALTER TABLE rt_work.{t} ADD CONSTRAINT {t}_ex EXCLUDE USING btree ((upper(note)) WITH =)")
    lease.execute(f"CREATE STATISTICS rt_work.{t}_st ON (lower(note)), (upper(note)) FROM rt_work.{t}")
    if lease.info.server_version >= 180000:   # computed on every read, as the reader
        lease.execute(f"ALTER TABLE rt_work.{t} ADD COLUMN seen text"
                      " GENERATED ALWAYS AS (upper(note)) VIRTUAL")
    lease.execute(f"INSERT INTO rt_work.{t} (note) VALUES ('made')")


def test_a_superuser_writing_into_a_handed_over_table_runs_nothing_of_the_lease(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    rolname, lease = lease_session(cluster, cleanup, DDL)
    t = f"inbox_{secrets.token_hex(4)}"
    plant(lease, t)
    lease.close()
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.revoke(%s)", (rolname,))
        assert conn.execute("SELECT jit.finish(%s)->>'outcome'", (rolname,)).fetchone() == ("dropped",)
    with cluster.connect("app") as conn:   # a superuser
        conn.execute("SET application_name = 'clean'")
        conn.execute(f"INSERT INTO rt_work.{t} (note) VALUES ('hello')")
        conn.execute(f"INSERT INTO rt_work.{t} (note, shaped) VALUES ('again', 'x')")
        conn.execute(f"UPDATE rt_work.{t} SET note = note || '!'")
        conn.execute(f"ANALYZE rt_work.{t}")
        assert conn.execute("SHOW application_name").fetchone() == ("clean",)
        rows = conn.execute(f"SELECT id, info, twice FROM rt_work.{t} ORDER BY id").fetchall()
        # the data and the shape stay: a serial id still counts, a stored generated column
        # keeps the values it had and is a plain column now; no default fills a new row
        assert rows == [(1, "ran: default", "mademade"), (2, None, None), (3, None, None)], rows
        owner = conn.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass",
                             (f"rt_work.{t}",)).fetchone()
        assert owner == ("rt_owner",)
        left = conn.execute(
            "SELECT (SELECT count(*) FROM pg_index WHERE indrelid = %(t)s::regclass"
            "          AND (indexprs IS NOT NULL OR indpred IS NOT NULL)),"
            "       (SELECT count(*) FROM pg_constraint WHERE conrelid = %(t)s::regclass"
            "          AND contype IN ('c', 'x')),"
            "       (SELECT count(*) FROM pg_statistic_ext WHERE stxrelid = %(t)s::regclass),"
            "       (SELECT count(*) FROM pg_constraint WHERE contypid = %(d)s::regtype),"
            "       (SELECT typdefaultbin IS NULL FROM pg_type WHERE oid = %(d)s::regtype)",
            {"t": f"rt_work.{t}", "d": f"rt_work.{t}_d"}).fetchone()
        assert left == (0, 0, 0, 0, True)
        assert conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass"
                            " AND attgenerated <> ''", (f"rt_work.{t}",)).fetchone() == (0,)
        conn.execute(f"DROP TABLE rt_work.{t}; DROP DOMAIN rt_work.{t}_d")


def test_a_lease_leaves_a_bounded_record_of_its_ddl(cluster: Cluster, cleanup: list[Conn]) -> None:
    # repeated COMMENT ON its own table added a row a time to a table every operator reads
    rolname, lease = lease_session(cluster, cleanup, DDL)
    t = f"noisy_{secrets.token_hex(4)}"
    lease.execute(f"CREATE TABLE rt_work.{t} (x int)")
    with cluster.connect("app") as conn:
        cap = conn.execute("SELECT jit._lease_objects_cap()").fetchone()
    assert cap is not None
    lease.execute("DO $$BEGIN FOR i IN 2..%s LOOP"
                  f" EXECUTE 'COMMENT ON TABLE rt_work.{t} IS ''n'''; END LOOP; END$$" % int(cap[0]))
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match=r"at most \d+ DDL changes"):
        lease.execute(f"COMMENT ON TABLE rt_work.{t} IS 'one too many'")
    with cluster.connect("app") as conn:
        rows = conn.execute("SELECT count(*) FROM jit_data.lease_objects o JOIN jit_data.leases l"
                            " ON l.id = o.lease_id WHERE l.rolname = %s", (rolname,)).fetchone()
        assert rows == cap
        conn.execute("SELECT jit.revoke(%s)", (rolname,))
        lease.close()
        assert conn.execute("SELECT jit.finish(%s)->>'outcome'", (rolname,)).fetchone() == ("dropped",)
        conn.execute(f"DROP TABLE IF EXISTS rt_work.{t}")


def test_a_partitioned_table_is_handed_over_disarmed_with_its_partitions(
        cluster: Cluster, cleanup: list[Conn]) -> None:
    # what a partition inherits (a CHECK, a generated column, an index) goes with its parent's
    rolname, lease = lease_session(cluster, cleanup, DDL)
    t = f"parted_{secrets.token_hex(4)}"
    lease.execute(f"CREATE TABLE rt_work.{t} (k int, note text, twice text GENERATED ALWAYS AS (note || note)"
                  f" STORED, CHECK ({ARM.format(what='check')} IS NOT NULL)) PARTITION BY RANGE (k)")
    lease.execute(f"CREATE TABLE rt_work.{t}_1 PARTITION OF rt_work.{t} FOR VALUES FROM (0) TO (100)")
    lease.execute(f"CREATE INDEX {t}_expr ON rt_work.{t} ((lower(note)))")
    lease.close()
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.revoke(%s)", (rolname,))
        assert conn.execute("SELECT jit.finish(%s)->>'outcome'", (rolname,)).fetchone() == ("dropped",)
        conn.execute("SET application_name = 'clean'")
        conn.execute(f"INSERT INTO rt_work.{t} (k, note) VALUES (1, 'x')")
        assert conn.execute("SHOW application_name").fetchone() == ("clean",)
        assert conn.execute("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
                            " WHERE c.relname LIKE %s AND i.indexprs IS NOT NULL",
                            (f"{t}%",)).fetchone() == (0,)
        conn.execute(f"DROP TABLE rt_work.{t}")
