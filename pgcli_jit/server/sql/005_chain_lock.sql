-- pgcli-jit server-side broker, schema version 5: the audit chain's lock is a row lock.
-- It was LOCK TABLE jit.audit_head IN EXCLUSIVE MODE, and any login with USAGE on the schema
-- could hold a conflicting lock without a single privilege on the table: PostgreSQL takes a
-- statement's table locks when it is parsed and checks privileges only when it runs, so
-- BEGIN; PREPARE p AS SELECT * FROM jit.audit_head FOR UPDATE; kept ROW SHARE on it (and a
-- PREPARE TRANSACTION kept it past the session, where nothing could end it).  Such parse-time
-- locks go up to ROW EXCLUSIVE, which conflicts with no lock the broker now takes: it locks
-- the one row of jit.chain_lock FOR UPDATE, which no login but jit_owner may lock.
-- leases.replays: how often a request was sent again; only the first is audited.

SET LOCAL ROLE jit_owner;

CREATE TABLE jit.chain_lock (
    one boolean PRIMARY KEY DEFAULT true CHECK (one)
);
INSERT INTO jit.chain_lock VALUES (true);
ALTER TABLE jit.leases ADD COLUMN replays integer NOT NULL DEFAULT 0;

RESET ROLE;
