-- pgcli-jit server-side broker, schema version 7: audit retention, and setups you can review.
--
-- * jit_data.audit_checkpoint: where the chain in jit_data.audit starts once older rows have
--   been archived (pgcli-jit-admin audit archive): the seq, id and hash of the last archived
--   row.  jit.audit_verify walks the chain from that hash; the archive file proves the rows
--   before it.  Only jit.audit_archive writes it, and the append-only trigger lets a DELETE
--   through only for chained rows up to the checkpoint written by the same transaction, as
--   jit_owner (functions/10_internals.sql).
-- * jit_archiver: archiving removes audit rows, so it is a privilege of its own, apart from
--   jit_admin (whose members include the reaper and monitoring logins).  Only its members may
--   call jit.audit_archive_rows and jit.audit_archive (functions/90_privileges.sql); setup
--   grants it to no one: an operator grants it to the one login that ships archives.
-- * jit_data.functions_applied: a digest of the functions/*.sql this database last ran, so
--   `pgcli-jit-admin setup --dsn ...` can say "nothing to do" only when that is true.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jit_archiver') THEN
        -- may archive (and so remove) chained audit rows older than a day: nothing more
        CREATE ROLE jit_archiver NOLOGIN;
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA jit TO jit_archiver;

SET LOCAL ROLE jit_owner;

CREATE TABLE jit_data.audit_checkpoint (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq         bigint NOT NULL,      -- the last archived row's seq
    id          bigint NOT NULL,      -- and its id (audit_head names rows by id)
    hash        bytea NOT NULL,       -- and its hash: the next row's prev_hash
    archived    bigint NOT NULL,      -- rows archived so far, every archive together
    xact        xid8 NOT NULL DEFAULT pg_current_xact_id(),   -- the transaction that wrote it
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    by_user     name NOT NULL DEFAULT session_user
);
GRANT SELECT ON jit_data.audit_checkpoint TO jit_admin, jit_archiver;

CREATE TABLE jit_data.functions_applied (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    digest     text NOT NULL,         -- sha256 of the functions' file names and texts, in order
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by name NOT NULL DEFAULT session_user
);
GRANT SELECT ON jit_data.functions_applied TO jit_admin;

RESET ROLE;
