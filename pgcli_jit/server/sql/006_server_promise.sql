-- pgcli-jit server-side broker, schema version 6: nothing a requester holds can stall others,
-- outlive its bounds, or reach past the database that issued it.
--
-- * The audit chain has no lock a requester's transaction takes.  Broker functions write
--   their audit row in the same transaction as the change, unchained (hash NULL); the
--   reaper (jit.chain_audit) links committed rows into the chain in the order it sees them
--   committed, numbering them in `seq`.  The append-only trigger lets exactly that one
--   change through: hash, prev_hash and seq set once, nothing else touched.
-- * One row per requester (jit_data.requesters) serializes a requester's own requests, so the
--   live-lease cap is counted by one call at a time; only that requester's calls lock it.
-- * Leases remember the database that issued them (dbid): a restored or cloned copy of this
--   schema in another database never acts on them; and each is a member of this
--   database's role jit_in_<database>, which pg_hba.conf can match.
-- * jit_data.lease_objects: what each lease created or changed with DDL (the event trigger in
--   functions/50_lease_ddl_guard.sql records it and refuses what would outlive the lease).
-- * Durations are whole seconds: every stored interval is normalised, so a mixed-unit
--   interval ('1200 mon -36000 days +1 min') means the same to every comparison and sum.
-- * The tables and sequences move to schema jit_data, which only jit_owner and operators
--   may use.  A login that can look a relation up can queue a lock on it before PostgreSQL
--   checks its privileges (CREATE RULE ... ON jit.leases waits for ACCESS EXCLUSIVE behind
--   any parse-time lock, and every later lock, the broker's and the reaper's, waits behind
--   it); a relation it cannot look up it cannot lock at all.  Schema jit keeps the functions.

-- A role per database that every lease issued here is a member of: pg_hba.conf can match
-- it (`host app +jit_in_app ...` before `host all +jit_lease ... reject`), so the server
-- refuses a lease's login to any other database.  NOLOGIN, no privileges, no other members.
DO $db$
DECLARE
    -- a name up to 56 bytes is kept whole; a longer one is cut and given 8 hex digits of its
    -- md5, so that two long names sharing a prefix never share the role
    r text := CASE WHEN octet_length(current_database()) <= 56 THEN 'jit_in_' || current_database()
                   ELSE 'jit_in_' || left(current_database(), 40) || '_' || left(md5(current_database()), 8) END;
    lease text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END IF;
    EXECUTE format('GRANT %I TO jit_owner WITH ADMIN OPTION', r);
    -- leases live across the upgrade are this database's too
    FOR lease IN SELECT l.rolname FROM jit.leases l JOIN pg_roles p ON p.oid = l.role_oid
                  WHERE l.ended_at IS NULL AND l.dropped_at IS NULL LOOP
        EXECUTE format('GRANT %I TO %I', r, lease)
                || CASE WHEN current_setting('server_version_num')::int >= 160000
                        THEN ' WITH INHERIT TRUE, SET FALSE' ELSE '' END;
    END LOOP;
END
$db$;

-- jit_owner makes one empty temporary table per session (jit._guard: a transaction that
-- touched it cannot be PREPAREd), so it needs TEMP here even where PUBLIC's was revoked.
DO $temp$
BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO jit_owner', current_database());
END
$temp$;

-- jit_owner reads pg_stat_activity in full (state, xact_start of every backend): the reaper
-- ends a transaction left open on a lease's row only once it has been idle in it.
GRANT pg_read_all_stats TO jit_owner;

CREATE SCHEMA jit_data AUTHORIZATION jit_owner;
REVOKE ALL ON SCHEMA jit_data FROM PUBLIC;
GRANT USAGE ON SCHEMA jit_data TO jit_admin;

SET LOCAL ROLE jit_owner;

-- sequences owned by a table's column move with it
ALTER TABLE jit.schema_version SET SCHEMA jit_data;
ALTER TABLE jit.profiles SET SCHEMA jit_data;
ALTER TABLE jit.leases SET SCHEMA jit_data;
ALTER TABLE jit.audit SET SCHEMA jit_data;
ALTER TABLE jit.audit_head SET SCHEMA jit_data;
ALTER TABLE jit.requests SET SCHEMA jit_data;
ALTER TABLE jit.approvals SET SCHEMA jit_data;
ALTER TABLE jit.chain_lock SET SCHEMA jit_data;
ALTER DEFAULT PRIVILEGES FOR ROLE jit_owner IN SCHEMA jit_data REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- the version-5 chain lock is now taken by the reaper's chainer alone
ALTER TABLE jit_data.audit ALTER COLUMN hash DROP NOT NULL;
ALTER TABLE jit_data.audit ADD COLUMN seq bigint UNIQUE;
-- the rows chained so far, in the order they were chained (the append-only trigger of
-- version 1 knows no seq: it is off for this one statement, in setup's transaction)
ALTER TABLE jit_data.audit DISABLE TRIGGER audit_no_update;
UPDATE jit_data.audit SET seq = id;
ALTER TABLE jit_data.audit ENABLE TRIGGER audit_no_update;
CREATE SEQUENCE jit_data.audit_seq_seq OWNED BY jit_data.audit.seq;
SELECT setval('jit_data.audit_seq_seq', coalesce((SELECT max(id) FROM jit_data.audit), 0) + 1, false);
CREATE INDEX audit_unchained ON jit_data.audit (id) WHERE hash IS NULL;

-- What this install is: the database-role above, by name (a database renamed later keeps it).
CREATE TABLE jit_data.install (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    db_role text NOT NULL
);
INSERT INTO jit_data.install (db_role)
VALUES (CASE WHEN octet_length(current_database()) <= 56 THEN 'jit_in_' || current_database()
             ELSE 'jit_in_' || left(current_database(), 40) || '_' || left(md5(current_database()), 8) END);
GRANT SELECT ON jit_data.install TO jit_admin;

CREATE TABLE jit_data.requesters (
    requester_oid oid PRIMARY KEY,
    calls         bigint NOT NULL DEFAULT 0
);

ALTER TABLE jit_data.leases ADD COLUMN dbid oid;
UPDATE jit_data.leases SET dbid = (SELECT oid FROM pg_database WHERE datname = current_database());
ALTER TABLE jit_data.leases ALTER COLUMN dbid SET NOT NULL;
CREATE INDEX leases_role_oid ON jit_data.leases (role_oid);

CREATE TABLE jit_data.lease_objects (
    lease_id    bigint NOT NULL,   -- no foreign key: its check would lock the lease row
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    command     text NOT NULL,
    object_type text,
    identity    text,
    classid     oid,
    objid       oid
);
CREATE INDEX lease_objects_lease ON jit_data.lease_objects (lease_id);
GRANT SELECT ON jit_data.lease_objects TO jit_admin;

UPDATE jit_data.profiles SET ttl = make_interval(secs => extract(epoch FROM ttl)),
                        max_ttl = make_interval(secs => extract(epoch FROM max_ttl)),
                        approval_timeout = make_interval(secs => extract(epoch FROM approval_timeout));

-- expire_due reports what it could not end, and why
DROP FUNCTION IF EXISTS jit.expire_due();
-- the chain lock's holder-terminating guard is gone with the lock requesters took
DROP FUNCTION IF EXISTS jit._hold_audit_chain();
DROP FUNCTION IF EXISTS jit._try_lock_audit();
-- a requester's calls time out only that requester's own requests now
DROP FUNCTION IF EXISTS jit._expire_requests();
-- jit._end takes the audit detail now: the two-argument one would make every call ambiguous
DROP FUNCTION IF EXISTS jit._end(jit_data.leases, text);

RESET ROLE;
