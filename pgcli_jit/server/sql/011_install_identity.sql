-- pgcli-jit server-side broker, schema version 11: where this install lives.
--
-- * jit_data.install.sysid and .dbid: the cluster (its system identifier, pg_control_system())
--   and the database (its OID) the schema is set up in.  The schema stores OIDs, which are
--   numbers a cluster hands out: on a copy restored onto another cluster (pg_dumpall
--   --roles-only gives every role a new OID; the database's OID may be equal or not) a stored
--   OID may name nothing, or an unrelated role.  A copy sees it is one by comparing these
--   with where it runs: requesters are refused there until the reaper has taken the copy over
--   (jit._adopt_restored in functions/10_internals.sql: logins bound again by name, and every
--   lease the copy did not issue ended, touching only a role that is clearly the lease's).

SET LOCAL ROLE jit_owner;

ALTER TABLE jit_data.install ADD COLUMN sysid bigint, ADD COLUMN dbid oid;
UPDATE jit_data.install SET sysid = (pg_control_system()).system_identifier,
                            dbid = (SELECT oid FROM pg_database WHERE datname = current_database());
ALTER TABLE jit_data.install ALTER COLUMN sysid SET NOT NULL, ALTER COLUMN dbid SET NOT NULL;

RESET ROLE;
