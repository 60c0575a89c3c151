-- pgcli-jit server-side broker, schema version 12: session logs that say what they lack,
-- and lines that are not the lease's own kept apart.
--
-- * jit_data.session_log.context: the jsonlog `context` of a line.  The server's own
--   statement lines (log_statement, fastpath calls, pgaudit) carry none; a line a lease raises
--   from PL/pgSQL (RAISE LOG 'statement: ...') always does, and the lease cannot hide it
--   (log_error_verbosity is a superuser setting).  `session` shows such a line as a message
--   from the lease, never as a statement.  Hashed into the seal only when set, so the digest
--   of every lease sealed before this version stays what it was.
-- * jit_data.session_log_gaps: a lease's line the collector could not read (longer than one
--   read of the log): where it is, and whose.  A lease with a gap is sealed as incomplete
--   ('complete': false, 'gaps': n in its 'session' audit row); `session` and
--   `audit --verify` say so.
-- * jit_data.login_attempts: lines written before a login was authenticated (a failed
--   password, no pg_hba.conf entry, ...) whose user field names a lease.  Anyone who can
--   reach the server can write one: they are failed logins claiming that name, kept for the
--   operator, never filed as the lease's activity nor hashed into its seal.

SET LOCAL ROLE jit_owner;

ALTER TABLE jit_data.session_log ADD COLUMN context text;

CREATE TABLE jit_data.session_log_gaps (
    file        text NOT NULL,          -- the log file that holds the line
    at_byte     bigint NOT NULL,        -- where the line starts in it
    bytes       bigint NOT NULL,        -- how long it is (at least)
    session_id  text,                   -- as far as the line's start says
    line_num    bigint,
    lease_id    bigint NOT NULL,
    rolname     text NOT NULL,
    logged_at   timestamptz,
    noted_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (file, at_byte),
    UNIQUE (session_id, line_num)
);
CREATE INDEX session_log_gaps_lease ON jit_data.session_log_gaps (lease_id);

CREATE TABLE jit_data.login_attempts (
    session_id  text NOT NULL,
    line_num    bigint NOT NULL,
    lease_id    bigint NOT NULL,        -- the lease whose name the login claimed
    rolname     text NOT NULL,
    logged_at   timestamptz NOT NULL,
    dbname      text,                   -- as the client sent it
    pid         integer,
    remote      text,
    severity    text,
    state_code  text,
    message     text NOT NULL,
    detail      text,
    file        text NOT NULL,
    collected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (session_id, line_num)
);
CREATE INDEX login_attempts_lease ON jit_data.login_attempts (lease_id, logged_at);

CREATE TRIGGER session_log_gaps_no_update BEFORE UPDATE OR DELETE ON jit_data.session_log_gaps
    FOR EACH ROW EXECUTE FUNCTION jit_data.session_log_is_append_only();
CREATE TRIGGER session_log_gaps_no_truncate BEFORE TRUNCATE ON jit_data.session_log_gaps
    FOR EACH STATEMENT EXECUTE FUNCTION jit_data.session_log_is_append_only();

GRANT SELECT ON jit_data.session_log_gaps, jit_data.login_attempts TO jit_admin;

RESET ROLE;
