-- pgcli-jit server-side broker, schema version 9: time-bound session logs.
--
-- * jit_data.profiles.log_statements: what the server logs of each lease's statements.  The
--   broker sets it on every temporary role it mints (ALTER ROLE ... SET log_statement, and
--   pgaudit.log for 'pgaudit:CLASSES'): both are superuser settings, so the lease cannot
--   change or reset them.  'none' sets nothing: postgresql.conf decides.
-- * jit_data.session_log: each lease's lines, as the server wrote them to its jsonlog,
--   collected by jit.collect_session_logs (functions/60_session_logs.sql).  Append-only; one
--   row per (session_id, line_num), so a file read twice adds nothing.  Operators read it;
--   no requester and no lease can.
-- * jit_data.session_log_files: how far each log file has been read, so a collector that was
--   down resumes where it stopped, and a rotated file is finished before the next one.
-- * jit_data.session_log_config: where the server writes its log (log_directory), recorded
--   by setup as a superuser: the collector's role cannot read that setting itself.
-- * jit_log_reader: owns the one function that reads log files; nothing else holds EXECUTE
--   on pg_read_binary_file through the broker.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jit_log_reader') THEN
        -- reads the server's log files through jit._read_log, for jit_owner: nothing more
        CREATE ROLE jit_log_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jit_collector') THEN
        -- may run jit.collect_session_logs: no table, no log file, no lease
        CREATE ROLE jit_collector NOLOGIN;
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA jit TO jit_log_reader, jit_collector;

SET LOCAL ROLE jit_owner;

ALTER TABLE jit_data.profiles ADD COLUMN log_statements text NOT NULL DEFAULT 'all'
    CHECK (log_statements IN ('all', 'mod', 'ddl', 'none')
           OR log_statements ~ '^pgaudit:(-?(read|write|function|role|ddl|misc|misc_set|all))(,-?(read|write|function|role|ddl|misc|misc_set|all))*$');
-- what the lease's role was given when it was minted (a later profile change keeps it)
ALTER TABLE jit_data.leases ADD COLUMN log_statements text;
-- when its collected lines were sealed into the audit chain (a 'session' row)
ALTER TABLE jit_data.leases ADD COLUMN log_sealed_at timestamptz;

CREATE TABLE jit_data.session_log (
    session_id  text NOT NULL,          -- the server's session id (start time and pid, in hex)
    line_num    bigint NOT NULL,        -- the line's number within that session
    lease_id    bigint NOT NULL,
    rolname     text NOT NULL,          -- the log's user field: who authenticated
    logged_at   timestamptz NOT NULL,
    dbname      text,
    pid         integer,
    remote      text,
    severity    text,
    ps          text,                   -- the command tag
    message     text NOT NULL,
    detail      text,
    file        text NOT NULL,          -- where it was read
    collected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (session_id, line_num)
);
CREATE INDEX session_log_lease ON jit_data.session_log (lease_id, logged_at);

CREATE TABLE jit_data.session_log_files (
    file       text PRIMARY KEY,        -- a name in the log directory
    read_to    bigint NOT NULL,         -- bytes read, up to the last whole line
    size_seen  bigint NOT NULL,
    unparsed   bigint NOT NULL DEFAULT 0,   -- lines that were not JSON: counted, never dropped silently
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE jit_data.session_log_config (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    log_directory text NOT NULL,
    seal_after    interval NOT NULL DEFAULT interval '10 seconds'   -- a dropped lease's last lines have reached the file by then
);

CREATE FUNCTION jit_data.session_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'jit_data.session_log is append-only: % refused', TG_OP
        USING HINT = 'collected lines are sealed into the audit chain; pgcli-jit-admin audit --verify checks them';
END
$$;
CREATE TRIGGER session_log_no_update BEFORE UPDATE OR DELETE ON jit_data.session_log
    FOR EACH ROW EXECUTE FUNCTION jit_data.session_log_is_append_only();
CREATE TRIGGER session_log_no_truncate BEFORE TRUNCATE ON jit_data.session_log
    FOR EACH STATEMENT EXECUTE FUNCTION jit_data.session_log_is_append_only();

GRANT SELECT ON jit_data.session_log, jit_data.session_log_files, jit_data.session_log_config TO jit_admin;

RESET ROLE;
