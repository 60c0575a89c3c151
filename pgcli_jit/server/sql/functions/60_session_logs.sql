-- pgcli-jit server-side broker, the functions: Session logs: what the server logs of each lease, collected from its jsonlog and sealed into the audit chain.
-- Re-applied by every `setup --apply` (CREATE OR REPLACE), after the numbered schema files,
-- with the other files of this folder in name order.  Every function is SECURITY DEFINER with
-- a fixed search_path, builds every identifier with format('%I'), and takes the caller's
-- identity from session_user: what PostgreSQL authenticated, never a name the client
-- supplies.
--
-- Why a lease cannot stop its logging: log_statement, log_duration and pgaudit.log are
-- superuser settings.  The broker sets them on the lease's role (ALTER ROLE ... SET, allowed
-- by GRANT SET ON PARAMETER to jit_owner, below); the lease's own SET, RESET, set_config,
-- ALTER ROLE ... SET/RESET, a function's SET clause and ALTER SYSTEM all need that privilege,
-- which no lease and no grant role holds.  ALTER ROLE ... RESET ALL by the lease removes
-- only the settings it could set itself: these stay.

-- -- what the server is asked to log of a lease --------------------------------------------

-- GRANT SET ON PARAMETER (15+) and the log directory need a superuser, as setup is.
GRANT SET ON PARAMETER log_statement, log_duration TO jit_owner;
-- pgaudit's setting, whether or not pgaudit is loaded now: a profile may ask for it once it is
GRANT SET ON PARAMETER "pgaudit.log" TO jit_owner;

SET LOCAL ROLE jit_owner;

-- what the collector read chunks with before it parsed them in one linear pass
DROP FUNCTION IF EXISTS jit._collect_text(text, text);
DROP FUNCTION IF EXISTS jit._lines_text(bytea);

-- The one word a requester is shown for a profile's logging ('' when nothing is set).
CREATE OR REPLACE FUNCTION jit._logging_word(mode text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN mode IS NULL OR mode = 'none' THEN '' ELSE 'logged' END
$$;

-- Why a profile cannot ask for this logging here (NULL: it can).  pgaudit's classes mean
-- something only where pgaudit is loaded: its setting is then a superuser one.
CREATE OR REPLACE FUNCTION jit._log_statements_problem(mode text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN mode IS NULL THEN 'no value'
        WHEN mode IN ('all', 'mod', 'ddl', 'none') THEN NULL
        WHEN mode !~ '^pgaudit:(-?(read|write|function|role|ddl|misc|misc_set|all))(,-?(read|write|function|role|ddl|misc|misc_set|all))*$'
            THEN format('log_statements %s: use all, mod, ddl, none or pgaudit:CLASSES (e.g. pgaudit:read,write)',
                        jit._safe_text(mode))
        WHEN NOT EXISTS (SELECT FROM pg_settings WHERE name = 'pgaudit.log' AND context = 'superuser')
            THEN 'pgaudit is not loaded in this server: add it to shared_preload_libraries and restart, or use all, mod or ddl'
        ELSE NULL END
$$;

-- Set a new lease's role to be logged as its profile says.  Superuser settings, set by
-- jit_owner through its SET privilege: the lease cannot change them.
CREATE OR REPLACE FUNCTION jit._apply_session_logging(p_rolname text, mode text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF mode IS NULL OR mode = 'none' THEN
        RETURN;
    ELSIF mode LIKE 'pgaudit:%' THEN
        EXECUTE format('ALTER ROLE %I SET pgaudit.log = %L', p_rolname, substr(mode, 9));
    ELSE
        EXECUTE format('ALTER ROLE %I SET log_statement = %L', p_rolname, mode);
        IF mode = 'all' THEN
            -- each statement's duration, on a line of its own after it
            EXECUTE format('ALTER ROLE %I SET log_duration = on', p_rolname);
        END IF;
    END IF;
END
$$;

-- -- collecting: jit.collect_session_logs (jit_collector, jit_admin) --------------------------

-- One line of the log as JSON; NULL for a line that is not (counted as unparsed).
CREATE OR REPLACE FUNCTION jit._log_json(line text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN line::jsonb;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- One line of the log, as bytes, as JSON; NULL for a line that is not UTF-8 or not JSON.
CREATE OR REPLACE FUNCTION jit._log_json_bytes(line bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN convert_from(line, 'UTF8')::jsonb;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- Each line of b (whole lines) as JSON, NULL for a line that is not.  Linear in the size of
-- b whatever it holds: a line with a byte that is not UTF-8 (a pre-authentication client
-- can put one in its user name) must not make a pass slower than a clean one.  A clean chunk
-- is converted at once; otherwise encode(b, 'escape') writes every byte that is not ASCII as
-- \nnn and leaves each newline as it is, so the chunk splits into its lines in one scan and
-- each line is decoded back and checked on its own.
CREATE OR REPLACE FUNCTION jit._chunk_json(b bytea) RETURNS SETOF jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
BEGIN
    BEGIN
        t := convert_from(b, 'UTF8');
    EXCEPTION WHEN OTHERS THEN
        t := NULL;
    END;
    IF t IS NOT NULL THEN
        RETURN QUERY SELECT jit._log_json(x) FROM string_to_table(t, E'\n') x WHERE x <> '';
    ELSE
        RETURN QUERY SELECT jit._log_json_bytes(decode(x, 'escape'))
                       FROM string_to_table(encode(b, 'escape'), E'\n') x WHERE x <> '';
    END IF;
END
$$;

-- One collected line as it is hashed: independent of TimeZone and column order.  The
-- context joins the hashed text only when there is one, so seals made before it was
-- collected still verify.
CREATE OR REPLACE FUNCTION jit._session_line_text(s jit_data.session_log) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (jsonb_build_array(s.session_id, s.line_num, s.lease_id, s.rolname, jit._ts(s.logged_at),
                              s.dbname, s.pid, s.remote, s.severity, s.ps, s.message, s.detail)
            || CASE WHEN s.context IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(s.context) END)::text
$$;

-- A lease's collected lines: how many, and the SHA-256 of their texts in log order.
CREATE OR REPLACE FUNCTION jit._session_digest(p_lease_id bigint, OUT lines bigint, OUT digest text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*),
           encode(sha256(convert_to(coalesce(string_agg(jit._session_line_text(s), E'\n'
                                                        ORDER BY s.logged_at, s.session_id, s.line_num), ''),
                                    'UTF8')), 'hex')
      FROM jit_data.session_log s WHERE s.lease_id = p_lease_id
$$;

-- Whether a log line was written before its login was authenticated: the server's process
-- title is 'authentication' until it has said 'connection authenticated' and 'connection
-- authorized' (with log_connections), and a refused login's FATAL carries an SQLSTATE of
-- class 28 and no context.  No client chooses that title (a lease's own lines carry its
-- command tag), and a logged-in lease can raise no FATAL (only ERROR, with a context), so a
-- failed login that claims a lease's name is told apart from the lease, whatever database
-- name or text it sent, and a lease cannot move its own lines out of its record.
CREATE OR REPLACE FUNCTION jit._before_login(j jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (j->>'ps' = 'authentication'
            AND coalesce(j->>'message', '') NOT LIKE 'connection authorized:%'
            AND coalesce(j->>'message', '') NOT LIKE 'connection authenticated:%')
        OR (j->>'error_severity' = 'FATAL' AND coalesce(j->>'state_code', '') LIKE '28%'
            AND NOT j ? 'context')
$$;

-- Lines of one chunk of the log, parsed and kept when their user is a lease of this
-- database: a lease's own lines (once it has logged in) while it is not sealed yet, in
-- session_log; lines from before a login was authenticated apart, in login_attempts.  The
-- user field is what the server was told at login and, once logged in, authenticated:
-- nothing a lease sends (application_name, statement text; jsonlog escapes every newline)
-- can put a line under another name.  Returns (lines, unparsed, kept, late, attempts).
CREATE OR REPLACE FUNCTION jit._collect_chunk(p_file text, b bytea,
    OUT lines bigint, OUT unparsed bigint, OUT kept bigint, OUT late bigint, OUT attempts bigint)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH parsed AS MATERIALIZED (
        SELECT j FROM jit._chunk_json(b) j
    ), claimed AS MATERIALIZED (
        SELECT p.j, l.id, l.rolname, l.log_sealed_at, jit._before_login(p.j) AS before_login
          FROM parsed p JOIN jit_data.leases l ON l.rolname = p.j->>'user' AND l.dbid = jit._mydb()
         WHERE p.j ? 'session_id' AND p.j ? 'line_num' AND p.j ? 'timestamp'
    ), ins AS (
        INSERT INTO jit_data.session_log (session_id, line_num, lease_id, rolname, logged_at, dbname,
                                          pid, remote, severity, ps, message, detail, file, context)
        SELECT m.j->>'session_id', (m.j->>'line_num')::bigint, m.id, m.rolname,
               (m.j->>'timestamp')::timestamptz, m.j->>'dbname', (m.j->>'pid')::int,
               m.j->>'remote_host', m.j->>'error_severity', m.j->>'ps',
               coalesce(m.j->>'message', ''), m.j->>'detail', p_file, m.j->>'context'
          FROM claimed m WHERE m.log_sealed_at IS NULL AND NOT m.before_login
        ON CONFLICT (session_id, line_num) DO NOTHING
        RETURNING 1
    ), tried AS (
        INSERT INTO jit_data.login_attempts (session_id, line_num, lease_id, rolname, logged_at, dbname,
                                             pid, remote, severity, state_code, message, detail, file)
        SELECT m.j->>'session_id', (m.j->>'line_num')::bigint, m.id, m.rolname,
               (m.j->>'timestamp')::timestamptz, m.j->>'dbname', (m.j->>'pid')::int,
               m.j->>'remote_host', m.j->>'error_severity', m.j->>'state_code',
               coalesce(m.j->>'message', ''), m.j->>'detail', p_file
          FROM claimed m WHERE m.before_login
        ON CONFLICT (session_id, line_num) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM parsed), (SELECT count(*) FROM parsed WHERE j IS NULL),
           (SELECT count(*) FROM ins),
           (SELECT count(*) FROM claimed m WHERE m.log_sealed_at IS NOT NULL AND NOT m.before_login
               AND NOT EXISTS (SELECT FROM jit_data.session_log s
                                WHERE s.session_id = m.j->>'session_id'
                                  AND s.line_num = (m.j->>'line_num')::bigint)),
           (SELECT count(*) FROM tried)
$$;

-- The byte after the last newline of b (0: there is none).  position() scans in C; only
-- the last block that holds a newline is walked byte by byte.
CREATE OR REPLACE FUNCTION jit._whole_lines(b bytea) RETURNS integer
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    block constant integer := 65536;
    start integer := greatest(length(b) - block, 0);
    i integer;
BEGIN
    IF position('\x0a'::bytea IN b) = 0 THEN
        RETURN 0;
    END IF;
    WHILE position('\x0a'::bytea IN substr(b, start + 1, block)) = 0 LOOP
        start := greatest(start - block, 0);
    END LOOP;
    i := least(start + block, length(b)) - 1;
    WHILE i >= start LOOP
        IF get_byte(b, i) = 10 THEN
            RETURN i + 1;
        END IF;
        i := i - 1;
    END LOOP;
    RETURN 0;
END
$$;

-- A field of a jsonlog line read from its first bytes only (the line is too long to read
-- whole): the server writes timestamp, user, dbname, pid, remote_host, session_id and
-- line_num before any text a client chose, so the first match is the field.  NULL: absent.
CREATE OR REPLACE FUNCTION jit._head_field(head text, field text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(('"' || (regexp_match(head, '"' || field || '":"((?:[^"\\]|\\.)*)"'))[1] || '"')::jsonb #>> '{}',
                    (regexp_match(head, '"' || field || '":([0-9]+)[,}]'))[1])
$$;

-- A line of n bytes longer than one read of the log, starting at byte at_byte of p_file,
-- whose first bytes are head: when its user is a lease of this database not sealed yet, it
-- is recorded as a gap in that lease's log (sealed as incomplete).  Returns 1 when recorded,
-- 2 when the lease is sealed already (a late line), 0 when it is no lease's.
CREATE OR REPLACE FUNCTION jit._note_gap(p_file text, at_byte bigint, n bigint, head bytea) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h text := encode(head, 'escape');
    who text := jit._head_field(h, 'user');
    l jit_data.leases;
BEGIN
    SELECT * INTO l FROM jit_data.leases x WHERE x.rolname = who AND x.dbid = jit._mydb();
    IF NOT FOUND THEN
        RETURN 0;
    ELSIF l.log_sealed_at IS NOT NULL THEN
        RETURN 2;   -- late: counted as such
    END IF;
    INSERT INTO jit_data.session_log_gaps (file, at_byte, bytes, session_id, line_num, lease_id, rolname,
                                           logged_at)
    VALUES (p_file, at_byte, n, jit._head_field(h, 'session_id'),
            jit._head_field(h, 'line_num')::bigint, l.id, l.rolname,
            jit._head_field(h, 'timestamp')::timestamptz)
    ON CONFLICT DO NOTHING;
    RETURN 1;
END
$$;

-- Read the server's jsonlog files from where the last pass stopped, keep the lines of this
-- database's leases, and seal each lease that has ended (its role gone or its sessions over
-- for seal_after) into the audit chain: one 'session' row with the count and digest of its
-- lines, and how many of its lines were too long to read (gaps: 'complete' is false when
-- there is one).  A rotated file is read to its end before the next; a file that shrank (reused
-- after rotation) is read again from the start, and (session_id, line_num) keeps a line
-- from being stored twice.  One collector at a time: a second call waits for none and
-- returns {"busy": true}.
CREATE OR REPLACE FUNCTION jit.collect_session_logs(p_max_bytes bigint DEFAULT 67108864) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    started timestamptz := jit._clock();
    f record;
    pos bigint;
    chunk bytea;
    whole integer;
    got record;
    budget bigint := greatest(p_max_bytes, 1048576);
    step bigint;
    n_files integer := 0;
    n_lines bigint := 0;
    n_unparsed bigint := 0;
    n_kept bigint := 0;
    n_late bigint := 0;
    file_unparsed bigint;
    n_gaps bigint := 0;
    n_attempts bigint := 0;
    line_start bigint;
    head bytea;
    nl integer;
    -- a pass stops taking new chunks after this (each chunk's parsing is linear): the next
    -- pass goes on from there, and nothing is sealed before a pass has read to the end
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
    caught_up boolean := true;
    l jit_data.leases;
    d record;
    sealed integer := 0;
    gaps bigint;
    problem text;
BEGIN
    IF NOT (pg_has_role(session_user, 'jit_collector', 'MEMBER')
            OR pg_has_role(session_user, 'jit_admin', 'MEMBER')) THEN
        RAISE EXCEPTION 'permission denied: % is not a member of jit_collector or jit_admin', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- a row only jit_owner can lock: no login can hold collection up
    BEGIN
        PERFORM FROM jit_data.session_log_config FOR UPDATE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN jsonb_build_object('busy', true);
    END;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the session log is not set up here: run pgcli-jit-admin setup --apply'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    BEGIN
        FOR f IN SELECT * FROM jit_data._log_files() ORDER BY name LOOP
      BEGIN
            n_files := n_files + 1;
            SELECT CASE WHEN f.size < x.size_seen THEN 0 ELSE x.read_to END INTO pos
              FROM jit_data.session_log_files x WHERE x.file = f.name;
            pos := coalesce(pos, 0);
            file_unparsed := 0;
            WHILE pos < f.size LOOP
                IF budget <= 0 OR clock_timestamp() > deadline THEN
                    caught_up := false;
                    EXIT;
                END IF;
                step := least(f.size - pos, 16777216, budget);
                chunk := jit_data._read_log(f.name, pos, step);
                EXIT WHEN length(chunk) = 0;
                whole := jit._whole_lines(chunk);
                IF whole = 0 THEN
                    IF length(chunk) < 16777216 THEN
                        EXIT;   -- a line still being written: the next pass reads it whole
                    END IF;
                    -- a line longer than a chunk: found its end, and recorded as a gap in its
                    -- lease's log (never skipped silently); still being written: next pass
                    line_start := pos;
                    head := substr(chunk, 1, 65536);
                    pos := pos + length(chunk);
                    LOOP
                        chunk := jit_data._read_log(f.name, pos, 16777216);
                        nl := position('\x0a'::bytea IN chunk);
                        EXIT WHEN nl > 0 OR length(chunk) = 0;
                        pos := pos + length(chunk);
                    END LOOP;
                    IF nl = 0 THEN
                        pos := line_start;
                        EXIT;
                    END IF;
                    pos := pos + nl;
                    budget := budget - (pos - line_start);
                    CASE jit._note_gap(f.name, line_start, pos - line_start, head)
                        WHEN 1 THEN n_gaps := n_gaps + 1;
                        WHEN 2 THEN n_late := n_late + 1;
                        ELSE NULL;
                    END CASE;
                    n_lines := n_lines + 1;
                    CONTINUE;
                END IF;
                SELECT * INTO got FROM jit._collect_chunk(f.name, substr(chunk, 1, whole));
                n_attempts := n_attempts + got.attempts;
                n_lines := n_lines + got.lines;
                n_unparsed := n_unparsed + got.unparsed;
                file_unparsed := file_unparsed + got.unparsed;
                n_kept := n_kept + got.kept;
                n_late := n_late + got.late;
                pos := pos + whole;
                budget := budget - whole;
            END LOOP;
            INSERT INTO jit_data.session_log_files AS x (file, read_to, size_seen, unparsed, updated_at)
            VALUES (f.name, pos, f.size, file_unparsed, clock_timestamp())
            ON CONFLICT (file) DO UPDATE SET read_to = excluded.read_to, size_seen = excluded.size_seen,
                                             unparsed = x.unparsed + excluded.unparsed,
                                             updated_at = excluded.updated_at;
            IF pos < f.size THEN
                caught_up := false;
            END IF;
      EXCEPTION WHEN insufficient_privilege OR undefined_file OR invalid_parameter_value
                     OR io_error OR character_not_in_repertoire THEN
        -- this file's chunks since its last saved position are read again next pass
        GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
        problem := format('%s: %s', f.name, problem);
        caught_up := false;
      END;
        END LOOP;
        -- what the log directory no longer holds
        DELETE FROM jit_data.session_log_files x
         WHERE NOT EXISTS (SELECT FROM jit_data._log_files() g WHERE g.name = x.file);
    EXCEPTION WHEN insufficient_privilege OR undefined_file OR invalid_parameter_value
                   OR object_not_in_prerequisite_state THEN
        GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
        caught_up := false;
    END;
    -- seal: only after a pass that read every file to its end, and only leases whose last
    -- line had time to reach the file
    IF caught_up THEN
        FOR l IN SELECT * FROM jit_data.leases x
                  WHERE x.dbid = jit._mydb() AND x.log_statements IS NOT NULL AND x.log_sealed_at IS NULL
                    AND x.ended_at IS NOT NULL
                    AND coalesce(x.dropped_at, x.ended_at)
                        < started - (SELECT c.seal_after FROM jit_data.session_log_config c)
                    AND NOT EXISTS (SELECT FROM pg_stat_activity a WHERE a.usesysid = x.role_oid)
                  ORDER BY x.id FOR UPDATE SKIP LOCKED LOOP
            SELECT * INTO d FROM jit._session_digest(l.id);
            SELECT count(*) INTO gaps FROM jit_data.session_log_gaps g WHERE g.lease_id = l.id;
            PERFORM jit._audit('session', l.profile, l.rolname, l.requester, NULL, NULL,
                               jsonb_build_object('lease_id', l.id, 'lines', d.lines, 'digest', d.digest,
                                                  'log_statements', l.log_statements,
                                                  'gaps', gaps, 'complete', gaps = 0));
            UPDATE jit_data.leases SET log_sealed_at = jit._clock() WHERE id = l.id;
            sealed := sealed + 1;
        END LOOP;
    END IF;
    RETURN jsonb_build_object('files', n_files, 'lines', n_lines, 'unparsed', n_unparsed,
                              'kept', n_kept, 'late', n_late, 'sealed', sealed,
                              'gaps', n_gaps, 'login_attempts', n_attempts,
                              'caught_up', caught_up, 'problem', problem);
END
$$;

-- Every sealed lease whose collected lines no longer match its 'session' audit row: a line
-- edited, deleted or added since.  The audit row itself is proven by the chain
-- (jit.audit_verify).  Leases not sealed yet are not checked: the table refuses changes.
CREATE OR REPLACE FUNCTION jit.session_log_verify()
RETURNS TABLE (sessions_checked bigint, bad_lease bigint, problem text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
    d record;
    archived bigint[] := jit._session_archived();
BEGIN
    PERFORM jit._require_admin();
    sessions_checked := 0;
    FOR a IN SELECT (x.detail->>'lease_id')::bigint AS lease_id, (x.detail->>'lines')::bigint AS lines,
                    x.detail->>'digest' AS digest, x.id, coalesce((x.detail->>'gaps')::bigint, 0) AS gaps
               FROM jit_data.audit x WHERE x.event = 'session' ORDER BY x.id LOOP
        sessions_checked := sessions_checked + 1;
        SELECT * INTO d FROM jit._session_digest(a.lease_id);
        IF a.lease_id = ANY(archived) THEN
            -- its lines are in an archive file (which proves them against this row): none here
            IF d.lines <> 0 THEN
                bad_lease := a.lease_id;
                problem := format('lease %s: its lines were archived, yet %s are in the table (audit row %s)',
                                  a.lease_id, d.lines, a.id);
                RETURN NEXT;
                RETURN;
            END IF;
            CONTINUE;
        END IF;
        IF d.lines <> a.lines OR d.digest <> a.digest THEN
            bad_lease := a.lease_id;
            problem := format('lease %s: %s collected line(s) now, %s when sealed (audit row %s)%s',
                              a.lease_id, d.lines, a.lines, a.id,
                              CASE WHEN d.lines = a.lines THEN ': a line was edited'
                                   WHEN d.lines > a.lines THEN ': a line was added'
                                   ELSE ': a line was deleted' END);
            RETURN NEXT;
            RETURN;
        END IF;
        IF (SELECT count(*) FROM jit_data.session_log_gaps g WHERE g.lease_id = a.lease_id) <> a.gaps THEN
            bad_lease := a.lease_id;
            problem := format('lease %s: its record of lines too long to collect no longer matches its seal (audit row %s)',
                              a.lease_id, a.id);
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
    -- lines of a lease sealed in no audit row still there: the seal's row was deleted
    SELECT min(s.lease_id) INTO bad_lease FROM jit_data.session_log s JOIN jit_data.leases l ON l.id = s.lease_id
     WHERE l.log_sealed_at IS NOT NULL
       AND NOT EXISTS (SELECT FROM jit_data.audit x WHERE x.event = 'session'
                         AND (x.detail->>'lease_id')::bigint = s.lease_id);
    IF bad_lease IS NOT NULL THEN
        problem := format('lease %s is sealed but its session audit row is missing', bad_lease);
        RETURN NEXT;
        RETURN;
    END IF;
    bad_lease := NULL;
    problem := NULL;
    RETURN NEXT;
END
$$;

-- -- retention: jit.session_log_archive_rows / jit.session_log_archive (jit_archiver) --------

-- The leases whose lines an archive removed: named in the 'session_archive' audit rows.  An
-- audit archive removes the chain from its start, and a lease's 'session_archive' row always
-- comes after its 'session' seal: while the seal is in the table, so is the row naming it.
CREATE OR REPLACE FUNCTION jit._session_archived() RETURNS bigint[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(DISTINCT e::bigint), '{}')
      FROM jit_data.audit x, jsonb_array_elements_text(x.detail->'lease_ids') e
     WHERE x.event = 'session_archive'
$$;

-- The sealed leases an archive may take: ended before the cut-off, sealed by a 'session' row
-- still in the table (the file names it and carries its count and digest), not archived yet.
CREATE OR REPLACE FUNCTION jit._session_archivable(p_before timestamptz)
RETURNS TABLE (lease_id bigint, seal_id bigint, lines bigint, digest text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH done AS MATERIALIZED (SELECT jit._session_archived() AS ids)
    SELECT l.id, x.id, (x.detail->>'lines')::bigint, x.detail->>'digest'
      FROM done, jit_data.leases l
      JOIN jit_data.audit x ON x.event = 'session' AND (x.detail->>'lease_id')::bigint = l.id
     WHERE l.dbid = jit._mydb() AND l.log_sealed_at IS NOT NULL AND l.ended_at < p_before
       AND (x.detail->>'lines')::bigint > 0
       AND NOT l.id = ANY(done.ids)
$$;

-- What a session-log archive holds: each archivable lease's seal (audit row id, count,
-- digest) and its lines in the order the digest covers, each with the exact text hashed
-- (jit._session_line_text): the file verifies without the server.
CREATE OR REPLACE FUNCTION jit.session_log_archive_rows(p_before timestamptz)
RETURNS TABLE (lease_id bigint, rolname text, requester text, profile text, seal_id bigint,
               lines bigint, digest text, hashed text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM jit._require_archiver();
    PERFORM jit._archive_cutoff_check(p_before);
    RETURN QUERY
        SELECT l.id, l.rolname, l.requester, l.profile, a.seal_id, a.lines, a.digest,
               jit._session_line_text(s)
          FROM jit._session_archivable(p_before) a
          JOIN jit_data.leases l ON l.id = a.lease_id
          JOIN jit_data.session_log s ON s.lease_id = a.lease_id
         ORDER BY l.id, s.logged_at, s.session_id, s.line_num;
END
$$;

-- Remove the lines of the leases an archive file now holds.  The caller says what it wrote:
-- each lease and the digest of its lines in the file.  Nothing is removed unless, for every
-- lease, that digest is the one its 'session' seal records and the one its lines in the
-- table have now (a log that no longer matches its seal is evidence, never removed), and the
-- lease ended before the cut-off.  One transaction: the 'session_archive' audit row naming
-- the leases, and the DELETE that the append-only trigger allows for this alone.  A lease
-- archived already is skipped, so a run stopped before its removal can be run again.
CREATE OR REPLACE FUNCTION jit.session_log_archive(p_leases bigint[], p_digests text[],
                                                   p_before timestamptz) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
    d record;
    taken bigint[] := '{}';
    lines bigint := 0;
    removed bigint;
    done bigint[] := jit._session_archived();
BEGIN
    PERFORM jit._require_archiver();
    PERFORM jit._guard();
    PERFORM jit._archive_cutoff_check(p_before);
    IF coalesce(cardinality(p_leases), 0) = 0 OR cardinality(p_leases) <> cardinality(p_digests) THEN
        RAISE EXCEPTION 'nothing to archive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- one archive at a time, and no collector sealing meanwhile
    PERFORM FROM jit_data.session_log_config FOR UPDATE;
    FOR a IN SELECT t.asked, t.said, x.lease_id, x.seal_id, x.lines, x.digest
               FROM unnest(p_leases, p_digests) AS t(asked, said)
               LEFT JOIN jit._session_archivable(p_before) x ON x.lease_id = t.asked LOOP
        CONTINUE WHEN a.asked = ANY(done) OR a.asked = ANY(taken);
        IF a.lease_id IS NULL THEN
            RAISE EXCEPTION 'lease % is not a sealed lease that ended before %: nothing removed',
                            a.asked, jit._ts(p_before) USING ERRCODE = 'invalid_parameter_value';
        END IF;
        SELECT * INTO d FROM jit._session_digest(a.asked);
        IF d.digest <> a.digest OR d.lines <> a.lines THEN
            RAISE EXCEPTION 'lease %: its lines no longer match their seal (audit row %): nothing removed',
                            a.asked, a.seal_id USING ERRCODE = 'data_corrupted',
                HINT = 'pgcli-jit-admin audit --verify says what is wrong; a broken log stays as evidence';
        END IF;
        IF a.said IS DISTINCT FROM a.digest THEN
            RAISE EXCEPTION 'lease %: the archive''s lines are not the sealed ones: nothing removed', a.asked
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        taken := taken || a.asked;
        lines := lines + a.lines;
    END LOOP;
    IF cardinality(taken) = 0 THEN
        RETURN jsonb_build_object('status', 'done already', 'leases', 0, 'lines', 0);
    END IF;
    PERFORM jit._audit('session_archive', NULL, NULL, NULL, NULL, NULL, jsonb_build_object(
        'lease_ids', to_jsonb(taken), 'leases', cardinality(taken), 'lines', lines,
        'before', jit._ts(p_before)));
    PERFORM set_config('jit.session_archive', pg_current_xact_id()::text, true);
    DELETE FROM jit_data.session_log s WHERE s.lease_id = ANY(taken);
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('jit.session_archive', '', true);
    IF removed <> lines THEN
        RAISE EXCEPTION 'removed % lines, not %: nothing removed', removed, lines;
    END IF;
    RETURN jsonb_build_object('status', 'archived', 'leases', cardinality(taken), 'lines', lines);
END
$$;

-- Append-only, but for jit.session_log_archive's removal: only as jit_owner (inside the
-- broker's functions, where nothing else deletes these lines), only in the transaction that
-- marked itself archiving (a transaction-local setting, which it clears once done).
CREATE OR REPLACE FUNCTION jit_data.session_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_user = 'jit_owner'
       AND current_setting('jit.session_archive', true) = pg_current_xact_id()::text THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'jit_data.session_log is append-only: % refused', TG_OP
        USING HINT = 'collected lines are sealed into the audit chain; pgcli-jit-admin audit --verify checks them';
END
$$;

-- -- health: whether the collector keeps up (pgcli-jit-admin health) ----------------------

-- The collector's heartbeat is its per-file cursor: every pass that reads the log directory
-- stamps each file it reads (jit_data.session_log_files.updated_at), whether or not the file
-- grew.  A pass that cannot read the log stamps nothing, so a collector that runs but reads
-- nothing counts as not running, which is what matters: lines are not being collected.  Only
-- asked while some profile logs statements; otherwise there is nothing to collect.
CREATE OR REPLACE FUNCTION jit.session_log_health(p_max_age interval)
RETURNS TABLE (check_name text, ok boolean, message text, detail jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_age interval := jit._secs(p_max_age);
    max_s numeric;
    logging text[];
    last_read timestamptz;
    age numeric;
BEGIN
    PERFORM jit._require_admin();
    IF max_age IS NULL OR max_age <= interval '0' THEN
        RAISE EXCEPTION 'the collector''s age limit must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    max_s := trim_scale(extract(epoch FROM max_age));
    check_name := 'session logs';
    SELECT array_agg(p.name ORDER BY p.name) INTO logging FROM jit_data.profiles p
     WHERE p.log_statements <> 'none';
    SELECT max(f.updated_at) INTO last_read FROM jit_data.session_log_files f;
    age := trim_scale(round(extract(epoch FROM jit._clock() - last_read), 1));
    detail := jsonb_build_object('logging_profiles', to_jsonb(coalesce(logging, '{}')),
                                 'last_read_at', jit._ts(last_read), 'age_seconds', age,
                                 'max_age_seconds', max_s);
    IF logging IS NULL THEN
        ok := true;
        message := 'no profile logs statements: nothing to collect';
    ELSIF last_read IS NULL THEN
        ok := false;
        message := format('the session-log collector has never read the log here, and %s profile(s) '
                          'log statements (%s): run pgcli-jit-admin sessions collect --watch',
                          cardinality(logging), jit._safe_text(array_to_string(logging[1:5], ', ')));
    ELSE
        ok := age <= max_s;
        message := format('the session-log collector %s the log %ss ago%s',
                          CASE WHEN ok THEN 'read' ELSE 'last read' END, age,
                          CASE WHEN ok THEN ''
                               ELSE format(', more than %ss, and %s profile(s) log statements (%s)', max_s,
                                           cardinality(logging),
                                           jit._safe_text(array_to_string(logging[1:5], ', '))) END);
    END IF;
    RETURN NEXT;
END
$$;

GRANT EXECUTE ON FUNCTION jit.collect_session_logs(bigint) TO jit_collector, jit_admin;
GRANT EXECUTE ON FUNCTION jit.session_log_verify(), jit.session_log_health(interval) TO jit_admin;
REVOKE EXECUTE ON FUNCTION jit.session_log_archive_rows(timestamptz),
    jit.session_log_archive(bigint[], text[], timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jit.session_log_archive_rows(timestamptz),
    jit.session_log_archive(bigint[], text[], timestamptz) TO jit_archiver;

RESET ROLE;

-- -- reading the log: jit_log_reader's two functions ------------------------------------------
-- pg_read_binary_file reads any file of the data directory (global/1260 holds every
-- password verifier) to whoever may execute it.  Only jit_log_reader may, and only through
-- these, which read nothing but the files pg_ls_logdir lists, in the directory setup
-- recorded; only jit_owner may call them.

INSERT INTO jit_data.session_log_config AS c (log_directory) VALUES (current_setting('log_directory'))
ON CONFLICT (one) DO UPDATE SET log_directory = excluded.log_directory;

GRANT EXECUTE ON FUNCTION pg_ls_logdir() TO jit_log_reader;
GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO jit_log_reader;
GRANT USAGE ON SCHEMA jit_data TO jit_log_reader;
GRANT SELECT ON jit_data.session_log_config TO jit_log_reader;

CREATE OR REPLACE FUNCTION jit_data._log_files() RETURNS TABLE (name text, size bigint)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.name, d.size FROM pg_ls_logdir() d WHERE d.name ~ '^[A-Za-z0-9._-]+\.json$'
$$;

CREATE OR REPLACE FUNCTION jit_data._read_log(p_name text, p_offset bigint, p_length bigint) RETURNS bytea
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_name !~ '^[A-Za-z0-9._-]+\.json$'
       OR NOT EXISTS (SELECT FROM pg_ls_logdir() d WHERE d.name = p_name) THEN
        RAISE EXCEPTION 'not a log file: %', p_name USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN pg_read_binary_file((SELECT c.log_directory FROM jit_data.session_log_config c) || '/' || p_name,
                               p_offset, p_length, false);
END
$$;

ALTER FUNCTION jit_data._log_files() OWNER TO jit_log_reader;
ALTER FUNCTION jit_data._read_log(text, bigint, bigint) OWNER TO jit_log_reader;
REVOKE EXECUTE ON FUNCTION jit_data._log_files(), jit_data._read_log(text, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jit_data._log_files(), jit_data._read_log(text, bigint, bigint) TO jit_owner;
