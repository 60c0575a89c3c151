-- pgcli-jit server-side broker, the functions: What operators (jit_admin) and the reaper call: profiles, expiry, the audit chain.
-- Re-applied by every `setup --apply` (CREATE OR REPLACE), after the numbered schema files,
-- with the other files of this folder in name order.  Every function is SECURITY DEFINER with
-- a fixed search_path, builds every identifier with format('%I'), and takes the caller's
-- identity from session_user: what PostgreSQL authenticated, never a name the client
-- supplies.  Functions that refuse on purpose return {"status": "denied", ...} instead of
-- raising, so the refusal's audit row commits.

SET LOCAL ROLE jit_owner;

-- -- for operators (jit_admin) ---------------------------------------------------------

CREATE OR REPLACE FUNCTION jit._require_admin() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(session_user, 'jit_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied: % is not a member of jit_admin', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- Create or change a profile, without touching its approval policy (the version-1 signature).
CREATE OR REPLACE FUNCTION jit.profile_set(
    p_name text, p_grants text[], p_ttl interval, p_max_ttl interval, p_requesters text,
    p_reason_required boolean, p_owner text, p_description text
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN jit.profile_set(p_name, p_grants, p_ttl, p_max_ttl, p_requesters, p_reason_required,
                           p_owner, p_description, NULL::text, NULL::integer, NULL::interval,
                           NULL::integer);
END
$$;

-- The version-2 signature: the live-lease cap kept as it is.
CREATE OR REPLACE FUNCTION jit.profile_set(
    p_name text, p_grants text[], p_ttl interval, p_max_ttl interval, p_requesters text,
    p_reason_required boolean, p_owner text, p_description text,
    p_approvers text, p_approvals integer, p_approval_timeout interval
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN jit.profile_set(p_name, p_grants, p_ttl, p_max_ttl, p_requesters, p_reason_required,
                           p_owner, p_description, p_approvers, p_approvals, p_approval_timeout,
                           NULL::integer);
END
$$;

-- The version-4 signature: the session logging kept as it is.
CREATE OR REPLACE FUNCTION jit.profile_set(
    p_name text, p_grants text[], p_ttl interval, p_max_ttl interval, p_requesters text,
    p_reason_required boolean, p_owner text, p_description text,
    p_approvers text, p_approvals integer, p_approval_timeout interval, p_max_live integer
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN jit.profile_set(p_name, p_grants, p_ttl, p_max_ttl, p_requesters, p_reason_required,
                           p_owner, p_description, p_approvers, p_approvals, p_approval_timeout,
                           p_max_live, NULL::text);
END
$$;

-- Create or change a profile.  Every role is checked here, server-side, whoever calls.
-- A NULL keeps the current value; p_approvers '' means "no approval needed";
-- p_log_statements is what the server logs of each lease (60_session_logs.sql).
CREATE OR REPLACE FUNCTION jit.profile_set(
    p_name text, p_grants text[], p_ttl interval, p_max_ttl interval, p_requesters text,
    p_reason_required boolean, p_owner text, p_description text,
    p_approvers text, p_approvals integer, p_approval_timeout interval, p_max_live integer,
    p_log_statements text
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g text;
    problem text;
    old jit_data.profiles;
    saved jit_data.profiles;
    fn text;
BEGIN
    PERFORM jit._require_admin();
    SELECT * INTO old FROM jit_data.profiles WHERE name = p_name;
    p_grants := coalesce(p_grants, old.grants);
    p_ttl := coalesce(p_ttl, old.ttl, interval '15 minutes');
    p_max_ttl := coalesce(p_max_ttl, old.max_ttl, greatest(p_ttl, interval '1 hour'));
    p_requesters := coalesce(p_requesters, old.requesters, 'jit_requester');
    p_reason_required := coalesce(p_reason_required, old.reason_required, false);
    p_description := coalesce(p_description, old.description, '');
    IF p_owner = '' THEN
        p_owner := NULL;
    ELSIF p_owner IS NULL THEN
        p_owner := old.owner;
    END IF;
    IF p_approvers = '' THEN
        p_approvers := NULL;
    ELSIF p_approvers IS NULL THEN
        p_approvers := old.approvers;
    END IF;
    p_approvals := coalesce(p_approvals, old.approvals, 1);
    p_approval_timeout := coalesce(p_approval_timeout, old.approval_timeout, interval '1 hour');
    p_max_live := coalesce(p_max_live, old.max_live, 5);
    p_log_statements := coalesce(p_log_statements, old.log_statements, 'all');
    problem := jit._log_statements_problem(p_log_statements);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'profile %: %', p_name, problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- whole seconds, as every duration the broker compares or adds (jit._secs)
    p_ttl := jit._secs(p_ttl);
    p_max_ttl := jit._secs(p_max_ttl);
    p_approval_timeout := jit._secs(p_approval_timeout);
    IF p_max_live NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'profile %: max_live must be between 1 and 1000', p_name;
    END IF;
    IF p_approvals NOT BETWEEN 1 AND 10 THEN
        RAISE EXCEPTION 'profile %: approvals must be between 1 and 10', p_name;
    END IF;
    IF p_approval_timeout <= interval '0' THEN
        RAISE EXCEPTION 'profile %: the approval timeout must be positive', p_name;
    END IF;
    IF p_approvers IS NOT NULL THEN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p_approvers) THEN
            RAISE EXCEPTION 'profile %: approvers role % does not exist', p_name, p_approvers;
        END IF;
        IF p_approvers IN ('jit_owner', 'jit_lease') OR p_approvers = ANY (p_grants) THEN
            RAISE EXCEPTION 'profile %: % cannot be the approvers role', p_name, p_approvers
                USING HINT = 'a group role of the people who approve, e.g. jit_leads';
        END IF;
    END IF;
    IF p_grants IS NULL OR cardinality(p_grants) = 0 THEN
        RAISE EXCEPTION 'profile %: at least one grant role is needed', p_name
            USING HINT = '--grant ROLE (a NOLOGIN group role with the privileges to hand out)';
    END IF;
    FOREACH g IN ARRAY p_grants LOOP
        problem := jit._grant_problem(g);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'profile %: cannot grant %', p_name, g USING DETAIL = problem;
        END IF;
    END LOOP;
    IF p_max_ttl < p_ttl THEN
        RAISE EXCEPTION 'profile %: max_ttl (%) is shorter than ttl (%)', p_name, p_max_ttl, p_ttl;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p_requesters) THEN
        RAISE EXCEPTION 'profile %: requesters role % does not exist', p_name, p_requesters;
    END IF;
    IF p_owner IS NOT NULL THEN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p_owner) THEN
            RAISE EXCEPTION 'profile %: owner role % does not exist', p_name, p_owner;
        END IF;
        IF jit._owner_problem(p_owner) IS NOT NULL THEN
            RAISE EXCEPTION 'profile %: % may not own what a lease leaves: %', p_name, p_owner,
                            jit._owner_problem(p_owner)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'the owner is a NOLOGIN group of its own (CREATE ROLE ... NOLOGIN), in no broker role';
        END IF;
        IF NOT pg_has_role('jit_owner', p_owner, 'USAGE') THEN
            RAISE EXCEPTION 'profile %: jit_owner cannot hand objects to %', p_name, p_owner
                USING HINT = format('as a superuser run GRANT %I TO jit_owner', p_owner);
        END IF;
    END IF;
    INSERT INTO jit_data.profiles AS t (name, grants, ttl, max_ttl, requesters, reason_required, owner,
                                   description, updated_at, updated_by, approvers, approvals,
                                   approval_timeout, max_live, log_statements)
    VALUES (p_name, p_grants, p_ttl, p_max_ttl, p_requesters, p_reason_required, p_owner,
            p_description, jit._clock(), session_user, p_approvers, p_approvals, p_approval_timeout,
            p_max_live, p_log_statements)
    ON CONFLICT (name) DO UPDATE SET grants = excluded.grants, ttl = excluded.ttl,
        max_ttl = excluded.max_ttl, requesters = excluded.requesters,
        reason_required = excluded.reason_required, owner = excluded.owner,
        description = excluded.description, updated_at = jit._clock(), updated_by = session_user,
        approvers = excluded.approvers, approvals = excluded.approvals,
        approval_timeout = excluded.approval_timeout, max_live = excluded.max_live,
        log_statements = excluded.log_statements;
    -- an auto-approve rule stays fit for the roles the profile names now (its requesters
    -- role, approvers, grants): jit._auto_approve_problem judges it again
    SELECT * INTO saved FROM jit_data.profiles t WHERE t.name = p_name;
    problem := CASE WHEN saved.auto_approve IS NOT NULL
                    THEN jit._auto_approve_problem(saved, saved.auto_approve) END;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'profile %: % cannot be the auto-approve role: %', p_name, saved.auto_approve, problem
            USING HINT = 'clear it first: pgcli-jit-admin profile set NAME --auto-approve ""';
    END IF;
    -- the requesters role may call the requester functions (it can still ask only for
    -- the profiles whose requesters it is a member of)
    EXECUTE format('GRANT USAGE ON SCHEMA jit TO %I', p_requesters);
    FOREACH fn IN ARRAY ARRAY['jit.request(text, interval, text, text)', 'jit.renew(text, interval)',
                              'jit.revoke(text)', 'jit.finish(text)', 'jit.my_leases()',
                              'jit.my_profiles()', 'jit.my_profile_rules()', 'jit.my_profile_grants()',
                              'jit.request_status(bigint)',
                              'jit.cancel(bigint)',
                              'jit.my_requests()', 'jit.pending_for_me()', 'jit.approve(bigint, text)',
                              'jit.deny(bigint, text)', 'jit.approves_any()',
                              'jit.break_glass_for_me()',
                              'jit.request_break_glass(text, interval, text, text)',
                              'jit.profiles_granting(text, text, text, text)',
                              'jit.profiles_granting_resolved(text, text, oid, smallint)'] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, p_requesters);
    END LOOP;
    -- the approvers role may decide (the server still checks membership per request)
    IF p_approvers IS NOT NULL THEN
        EXECUTE format('GRANT USAGE ON SCHEMA jit TO %I', p_approvers);
        FOREACH fn IN ARRAY ARRAY['jit.approve(bigint, text)', 'jit.deny(bigint, text)',
                                  'jit.pending_for_me()', 'jit.approves_any()',
                                  'jit.break_glass_for_me()'] LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, p_approvers);
        END LOOP;
    END IF;
    PERFORM jit._audit('profile_set', p_name, NULL, NULL, NULL, NULL, jsonb_build_object(
        'grants', to_jsonb(p_grants), 'ttl', extract(epoch FROM p_ttl),
        'max_ttl', extract(epoch FROM p_max_ttl), 'requesters', p_requesters,
        'reason_required', p_reason_required, 'owner', p_owner, 'approvers', p_approvers,
        'approvals', p_approvals, 'approval_timeout', extract(epoch FROM p_approval_timeout),
        'max_live', p_max_live, 'log_statements', p_log_statements));
    RETURN (SELECT to_jsonb(t) FROM jit_data.profiles t WHERE name = p_name);
END
$$;

CREATE OR REPLACE FUNCTION jit.profile_drop(p_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._require_admin();
    DELETE FROM jit_data.profiles WHERE name = p_name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM jit._audit('profile_drop', p_name, NULL, NULL, NULL, NULL);
    RETURN true;
END
$$;

-- The reaper's safety net: end the sessions of leases past their expiry or ended, whoever
-- holds their rows.  VALID UNTIL (or NOLOGIN) already refuses their password, so nobody logs
-- back in.  'writing' (before anything is locked): sessions in a transaction that wrote, as
-- a lease holding its own pg_authid row does (ALTER ROLE itself PASSWORD, left open).
-- 'due' (at the end of expire_due): every lease past its expiry, ended in this pass or not
-- (VALID UNTIL already refuses its password, so nobody logs back in before the NOLOGIN
-- commits), and those it skipped.  'ended' (first thing in finish_ended): every ended lease,
-- before any role is dropped, so that a role that cannot be dropped now delays no session's
-- end.
CREATE OR REPLACE FUNCTION jit._end_overdue_sessions(p_which text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_terminate_backend(a.pid)
       FROM pg_stat_activity a JOIN jit_data.leases l ON l.role_oid = a.usesysid
      WHERE l.dropped_at IS NULL AND a.pid <> pg_backend_pid() AND l.dbid = jit._mydb()
        AND CASE p_which
            WHEN 'writing' THEN (l.ended_at IS NOT NULL OR l.expires_at <= jit._clock())
                                AND a.backend_xid IS NOT NULL
            WHEN 'due' THEN l.expires_at <= jit._clock()
            WHEN 'ended' THEN l.ended_at IS NOT NULL
            END;
END
$$;

-- The transactions still holding a lease that is due (its mark, jit._mark): a renewal or
-- revoke left open, by the lease's requester or the lease itself, past the expiry.  Only
-- those two logins' backends count (anyone may take the same advisory lock; that only
-- exposes their own session), and only once idle in the transaction or in it for over a
-- second: a call under way when the lease fell due finishes by itself.  Returns the pids
-- ended.
CREATE OR REPLACE FUNCTION jit._end_holders() RETURNS SETOF integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    holder integer;
BEGIN
    PERFORM pg_stat_clear_snapshot();
    FOR holder IN
        SELECT DISTINCT a.pid FROM pg_locks k
          JOIN pg_stat_activity a ON a.pid = k.pid
          JOIN jit_data.leases l ON jit._mark_key(l) = k.objid
          JOIN pg_roles who ON who.oid = a.usesysid
         WHERE k.locktype = 'advisory' AND k.granted AND k.classid = 1785295872 AND k.objsubid = 2
           AND k.database = jit._mydb() AND a.pid <> pg_backend_pid() AND l.dbid = jit._mydb()
           AND l.dropped_at IS NULL AND (l.ended_at IS NOT NULL OR l.expires_at <= jit._clock())
           AND a.usesysid IN (l.requester_oid, l.role_oid) AND NOT who.rolsuper
           AND (a.state LIKE 'idle in transaction%' OR a.xact_start < jit._clock() - interval '1 second')
    LOOP
        IF pg_terminate_backend(holder) THEN   -- signalled, not waited for
            RETURN NEXT holder;
        END IF;
    END LOOP;
END
$$;

-- Step one of the reaper: end (NOLOGIN, audited) every lease past its expiry, and every live
-- lease whose grant roles have become unfit (a superuser granted them more).  Nothing here
-- waits longer than a fifth of a second on a lock: what cannot be ended now is reported
-- ('skipped: ...') and tried again on the next pass, and its sessions are ended anyway.
CREATE OR REPLACE FUNCTION jit.expire_due() RETURNS TABLE (rolname text, outcome text, sessions integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit_data.leases;
    problem text;
    unfit jsonb;
BEGIN
    PERFORM jit._require_admin();
    -- a copy on another cluster: its OIDs bound again, and what it did not issue ended, first
    RETURN QUERY SELECT a.rolname, a.outcome, a.sessions FROM jit._adopt_restored() a;
    PERFORM jit._end_overdue_sessions('writing');
    PERFORM count(*) FROM jit._end_holders();
    PERFORM set_config('lock_timeout', '200ms', true);
    PERFORM jit._reaper_ran();
    -- each grant role of a live lease judged once a pass, not once per lease
    SELECT coalesce(jsonb_object_agg(d.roleid::text, d.problem), '{}') INTO unfit
      FROM (SELECT g.roleid, jit._grant_problem(g.rolname) AS problem
              FROM (SELECT DISTINCT m.roleid, r.rolname FROM jit_data.leases x
                      JOIN pg_auth_members m ON m.member = x.role_oid
                      JOIN pg_roles r ON r.oid = m.roleid
                     WHERE x.ended_at IS NULL AND x.dbid = jit._mydb() AND r.rolname <> 'jit_lease'
                       AND r.rolname <> (SELECT db_role FROM jit_data.install)) g) d
     WHERE d.problem IS NOT NULL;
    FOR l IN SELECT * FROM jit_data.leases x WHERE x.ended_at IS NULL AND x.dbid = jit._mydb()
               AND (x.expires_at <= jit._clock()
                    OR (unfit <> '{}' AND EXISTS (SELECT FROM pg_auth_members m
                                                  WHERE m.member = x.role_oid AND unfit ? m.roleid::text)))
             ORDER BY x.expires_at LOOP
        problem := NULL;
        IF l.expires_at > jit._clock() THEN
            SELECT unfit ->> m.roleid::text INTO problem FROM pg_auth_members m
             WHERE m.member = l.role_oid AND unfit ? m.roleid::text LIMIT 1;
        END IF;
        rolname := l.rolname;
        -- its sessions end at the end of this pass (their count is said now)
        sessions := (SELECT count(*) FROM pg_stat_activity a WHERE a.usesysid = l.role_oid)::int;
        BEGIN
            SELECT * INTO l FROM jit_data.leases x WHERE x.id = l.id AND x.ended_at IS NULL
               FOR NO KEY UPDATE SKIP LOCKED;
            IF NOT FOUND AND EXISTS (SELECT FROM jit_data.leases x WHERE x.id = l.id AND x.ended_at IS NOT NULL) THEN
                CONTINUE;   -- ended by another call meanwhile: nothing to do or say
            ELSIF NOT FOUND THEN
                outcome := 'skipped: its row is held by an open transaction';
            ELSIF problem IS NULL THEN
                PERFORM jit._end(l, 'expire');
                outcome := 'expired';
            ELSE
                PERFORM jit._end(l, 'revoke', jsonb_build_object('why', 'grant role unfit',
                                                                'problem', problem));
                outcome := 'revoked: ' || problem;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            outcome := 'skipped: its role is locked by another transaction (a prepared one?)';
        WHEN OTHERS THEN   -- e.g. the lease's own sessions altering its role at that moment
            outcome := 'skipped: ' || jit._safe_text(SQLERRM);
        END;
        RETURN NEXT;
    END LOOP;
    PERFORM jit._end_overdue_sessions('due');
END
$$;

-- Step two of the reaper (its own transaction): end sessions and drop every ended role.
-- Roles kept because of what they own are retried at most once a minute.
CREATE OR REPLACE FUNCTION jit.finish_ended()
RETURNS TABLE (rolname text, outcome text, sessions integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit_data.leases;
BEGIN
    PERFORM jit._require_admin();
    PERFORM count(*) FROM jit._adopt_restored();
    PERFORM jit._end_overdue_sessions('ended');
    FOR l IN SELECT * FROM jit_data.leases x WHERE x.ended_at IS NOT NULL AND x.dropped_at IS NULL
               AND x.dbid = jit._mydb()
               AND (x.drop_error IS NULL OR x.drop_tried_at < jit._clock() - interval '1 minute'
                    OR EXISTS (SELECT FROM pg_prepared_xacts p WHERE p.owner = x.rolname) IS FALSE
                       AND x.drop_error LIKE 'has prepared transaction%')
             ORDER BY x.id FOR NO KEY UPDATE SKIP LOCKED LOOP
        rolname := l.rolname;
        sessions := (SELECT count(*) FROM pg_stat_activity WHERE usesysid = l.role_oid)::int;
        outcome := jit._finish_safely(l);
        RETURN NEXT;
    END LOOP;
END
$$;

-- Prepared transactions of leases that are ended or due, in this database: PREPARE
-- TRANSACTION keeps a lease's locks (its own role's row, rows of the tables it wrote) with no
-- session to end.  Only the role that prepared one (or a superuser) may roll it back, and
-- ROLLBACK PREPARED cannot run in a function: so this grants the calling operator login
-- membership in each such role (SET, no INHERIT, after taking the role's grants away), and
-- the reaper runs SET ROLE, ROLLBACK PREPARED, RESET ROLE, then jit.prepared_ended.
CREATE OR REPLACE FUNCTION jit.prepared_to_end() RETURNS TABLE (gid text, rolname text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    l jit_data.leases;
    with_opts text := CASE WHEN current_setting('server_version_num')::int >= 160000
                           THEN ' WITH INHERIT FALSE, SET TRUE' ELSE '' END;
BEGIN
    PERFORM jit._require_admin();
    FOR l IN SELECT DISTINCT ON (x.id) x.* FROM jit_data.leases x JOIN pg_prepared_xacts p ON p.owner = x.rolname
              WHERE x.dropped_at IS NULL AND x.dbid = jit._mydb() AND p.database = current_database()
                AND (x.ended_at IS NOT NULL OR x.expires_at <= jit._clock()) LOOP
        PERFORM jit._disarm(l);
        IF NOT pg_has_role(session_user, l.role_oid,
                           CASE WHEN with_opts = '' THEN 'MEMBER' ELSE 'SET' END) THEN
            EXECUTE format('GRANT %I TO %I', l.rolname, session_user) || with_opts;
        END IF;
        RETURN QUERY SELECT p.gid, l.rolname FROM pg_prepared_xacts p
                      WHERE p.owner = l.rolname AND p.database = current_database();
    END LOOP;
END
$$;

-- After the reaper's ROLLBACK PREPARED: the operator's membership in the lease's role goes,
-- and the rollback is audited.
CREATE OR REPLACE FUNCTION jit.prepared_ended(p_gid text, p_rolname text, p_error text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit_data.leases;
BEGIN
    PERFORM jit._require_admin();
    SELECT * INTO l FROM jit_data.leases WHERE jit_data.leases.rolname = p_rolname AND dbid = jit._mydb();
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- the membership goes once the role has no prepared transaction left to roll back
    IF EXISTS (SELECT FROM pg_auth_members m WHERE m.roleid = l.role_oid
                AND m.member = jit._role_oid(session_user))
       AND NOT EXISTS (SELECT FROM pg_prepared_xacts x WHERE x.owner = l.rolname) THEN
        EXECUTE format('REVOKE %I FROM %I', l.rolname, session_user);
    END IF;
    PERFORM jit._audit('rollback_prepared', l.profile, l.rolname, l.requester, l.reason, l.expires_at,
                       jsonb_build_object('gid', jit._safe_text(p_gid), 'error', jit._safe_text(p_error)));
END
$$;

-- When the reaper must wake next (NULL: no live lease).
CREATE OR REPLACE FUNCTION jit.next_expiry() RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT least((SELECT min(expires_at) FROM jit_data.leases WHERE ended_at IS NULL AND dbid = jit._mydb()),
                 (SELECT min(expires_at) FROM jit_data.requests WHERE status IN ('pending', 'approved')))
$$;

-- Chain what is committed, then walk the chain in its order, from the archive checkpoint
-- (jit_data.audit_checkpoint: the last archived row's hash) when there is one: the first row
-- whose link or hash does not match, a row the checkpoint says was archived, or a cut-off
-- tail.  Rows not chained yet (their transaction had not committed when the chainer ran) are
-- counted in `problem` only if they are over a minute old.
CREATE OR REPLACE FUNCTION jit.audit_verify()
RETURNS TABLE (rows_checked bigint, bad_id bigint, problem text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a jit_data.audit;
    prev bytea;
    last_id bigint;
    head jit_data.audit_head;
    stale bigint;
    cp jit_data.audit_checkpoint;
BEGIN
    PERFORM jit._require_admin();
    PERFORM jit._chain_audit();
    rows_checked := 0;
    SELECT * INTO cp FROM jit_data.audit_checkpoint;
    prev := cp.hash;
    last_id := cp.id;
    IF cp.seq IS NOT NULL THEN
        SELECT min(x.id) INTO bad_id FROM jit_data.audit x WHERE x.seq <= cp.seq;
        IF bad_id IS NOT NULL THEN
            problem := format('its seq is at or before the archive checkpoint (seq %s), yet it is in the table: '
                              'a row was inserted', cp.seq);
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    FOR a IN SELECT * FROM jit_data.audit WHERE seq IS NOT NULL ORDER BY seq LOOP
        rows_checked := rows_checked + 1;
        IF a.prev_hash IS DISTINCT FROM prev THEN
            bad_id := a.id;
            problem := CASE WHEN rows_checked = 1 AND cp.seq IS NOT NULL
                                THEN format('does not link to the archive checkpoint (seq %s): a row after it '
                                            'was deleted, or a row inserted', cp.seq)
                            WHEN prev IS NULL THEN 'the first row links to a row that is not there'
                            ELSE 'links to a different previous row: a row before it was deleted or changed' END;
            RETURN NEXT;
            RETURN;
        END IF;
        IF a.hash IS NULL OR jit._audit_digest(a) <> a.hash THEN
            bad_id := a.id;
            problem := 'its contents do not match its hash: the row was edited';
            RETURN NEXT;
            RETURN;
        END IF;
        prev := a.hash;
        last_id := a.id;
    END LOOP;
    SELECT * INTO head FROM jit_data.audit_head;
    IF FOUND AND (head.last_id IS DISTINCT FROM last_id OR head.hash IS DISTINCT FROM prev) THEN
        bad_id := head.last_id;
        problem := 'the newest rows are missing: the chain ends before the recorded head';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT count(*) INTO stale FROM jit_data.audit WHERE hash IS NULL AND at < jit._clock() - interval '1 minute';
    IF stale > 0 THEN
        bad_id := (SELECT min(id) FROM jit_data.audit WHERE hash IS NULL);
        problem := format('%s row(s) over a minute old are not chained: is the chainer''s lock held?', stale);
        RETURN NEXT;
        RETURN;
    END IF;
    bad_id := NULL;
    problem := NULL;
    RETURN NEXT;
END
$$;

-- -- retention: pgcli-jit-admin audit archive (jit_archiver) ------------------------------

-- Archiving removes audit rows, so it is jit_archiver's alone (90_privileges.sql grants
-- EXECUTE to no one else): a jit_admin login (the reaper, monitoring) that is not also in
-- jit_archiver can hide nothing.  The login also needs jit_admin, for chain_audit and the
-- checkpoint the client reads first.
CREATE OR REPLACE FUNCTION jit._require_archiver() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(session_user, 'jit_archiver', 'MEMBER') THEN
        RAISE EXCEPTION 'only a login in jit_archiver may archive audit rows'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'as a superuser: GRANT jit_archiver TO the one login that ships archives';
    END IF;
    PERFORM jit._require_admin();
END
$$;

-- The least an archive leaves in the table: every row of the last day.  A cut-off must be a
-- finite time at least this long ago, so no archive covers fresh tracks (what was done
-- today, or in the archiving transaction itself, stays in the table for audit --verify and
-- for whoever reads it).
CREATE OR REPLACE FUNCTION jit._audit_min_retention() RETURNS interval
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT interval '1 day'
$$;

CREATE OR REPLACE FUNCTION jit._archive_cutoff_check(p_before timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    latest timestamptz := jit._clock() - jit._audit_min_retention();
BEGIN
    IF p_before IS NULL OR NOT isfinite(p_before) OR p_before > latest THEN
        RAISE EXCEPTION 'an archive''s cut-off must be a time at least % ago (at the latest %), not %',
                        jit._audit_min_retention(), jit._ts(latest), coalesce(p_before::text, 'none')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the last day''s audit rows always stay in the table: --before 1d or earlier';
    END IF;
END
$$;

-- The first seq an archive may not reach (rows before it may go): the first chained row that
-- is not older than the cut-off, or that this transaction wrote or chained (its xmin; a
-- subtransaction's rows have xmins of their own, so also any row written since this
-- transaction began).  So an archive's own 'archive' row always stays in the table with the
-- checkpoint it records, and a second archive in the same transaction cannot take the first
-- one's row; an earlier archive's row goes (into the new file) once it is past the minimum
-- retention, as every row does: the chain is removed from its start, so an 'archive' row that
-- always stayed would stop every later archive at it.
CREATE OR REPLACE FUNCTION jit._archive_limit(p_before timestamptz) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(min(x.seq), 9223372036854775807) FROM jit_data.audit x
     WHERE x.seq IS NOT NULL
       AND (x.at >= p_before OR x.at >= now() OR x.xmin = pg_current_xact_id_if_assigned()::xid)
$$;

-- What an archive holds: the chained rows after the checkpoint, in chain order, up to (not
-- including) the first one it may not reach (jit._archive_limit), so that what stays in the
-- table is the rest of the same chain.  Each row comes with the exact text its hash covers
-- (jit._audit_text): the archive file verifies without the server.
CREATE OR REPLACE FUNCTION jit.audit_archive_rows(p_before timestamptz)
RETURNS TABLE (seq bigint, prev_hash bytea, hash bytea, hashed text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM jit._require_archiver();
    PERFORM jit._archive_cutoff_check(p_before);
    RETURN QUERY
        SELECT a.seq, a.prev_hash, a.hash, jit._audit_text(a) FROM jit_data.audit a
         WHERE a.seq IS NOT NULL AND a.seq < jit._archive_limit(p_before)
         ORDER BY a.seq;
END
$$;

-- Remove the rows an archive file now holds, leaving the checkpoint the rest of the chain
-- verifies from.  The caller says what it wrote (the checkpoint it started after, the last
-- row's seq and hash, how many rows): nothing is removed unless that is exactly the chain in
-- the table, every row of it links and hashes true (a broken chain is evidence, never
-- removed), is chained, is older than p_before and comes before jit._archive_limit.  One transaction: the checkpoint, the
-- DELETE (which the append-only trigger allows for this alone) and the audit row commit
-- together or not at all, so a run that stops anywhere can be run again.
CREATE OR REPLACE FUNCTION jit.audit_archive(
    p_after_seq bigint, p_after_hash bytea, p_through_seq bigint, p_through_hash bytea,
    p_rows bigint, p_before timestamptz
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cp jit_data.audit_checkpoint;
    a jit_data.audit;
    tip jit_data.audit;
    prev bytea;
    n bigint := 0;
    removed bigint;
    lim bigint;
BEGIN
    PERFORM jit._require_archiver();
    PERFORM jit._guard();
    PERFORM jit._archive_cutoff_check(p_before);
    PERFORM FROM jit_data.chain_lock FOR UPDATE;   -- no chainer and no other archive meanwhile
    SELECT * INTO cp FROM jit_data.audit_checkpoint;
    IF cp.seq IS DISTINCT FROM p_after_seq OR cp.hash IS DISTINCT FROM p_after_hash THEN
        RAISE EXCEPTION 'the archive starts after seq %, but the table''s chain now starts after seq %: nothing removed',
                        coalesce(p_after_seq::text, '0'), coalesce(cp.seq::text, '0')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'another archive ran meanwhile: run audit archive again, to a new file';
    END IF;
    IF coalesce(p_rows, 0) < 1 OR p_through_seq IS NULL OR p_through_hash IS NULL OR p_before IS NULL THEN
        RAISE EXCEPTION 'nothing to archive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    lim := jit._archive_limit(p_before);
    IF p_through_seq >= lim THEN
        RAISE EXCEPTION 'the archive reaches seq %, and seq % on may not be archived now: nothing removed',
                        p_through_seq, lim
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the rows of the last day and of the archiving transaction stay';
    END IF;
    prev := cp.hash;
    FOR a IN SELECT * FROM jit_data.audit x WHERE x.seq IS NOT NULL AND x.seq <= p_through_seq
              ORDER BY x.seq FOR UPDATE LOOP
        n := n + 1;
        IF a.prev_hash IS DISTINCT FROM prev OR a.hash IS DISTINCT FROM jit._audit_digest(a) THEN
            RAISE EXCEPTION 'audit row % does not verify: nothing removed', a.id
                USING ERRCODE = 'data_corrupted',
                      HINT = 'pgcli-jit-admin audit --verify says what is wrong; a broken chain stays as evidence';
        END IF;
        IF a.at >= p_before THEN
            RAISE EXCEPTION 'audit row % is not older than %: nothing removed', a.id, jit._ts(p_before)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        prev := a.hash;
        tip := a;
    END LOOP;
    IF n <> p_rows OR tip.seq IS DISTINCT FROM p_through_seq OR prev IS DISTINCT FROM p_through_hash THEN
        RAISE EXCEPTION 'the archive does not hold the rows the table holds through seq % (% rows here, % in the archive): nothing removed',
                        p_through_seq, n, p_rows
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO jit_data.audit_checkpoint AS c (seq, id, hash, archived)
    VALUES (tip.seq, tip.id, tip.hash, n)
    ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, id = excluded.id, hash = excluded.hash,
        archived = c.archived + excluded.archived, xact = pg_current_xact_id(),
        at = clock_timestamp(), by_user = session_user;
    DELETE FROM jit_data.audit x WHERE x.seq IS NOT NULL AND x.seq <= tip.seq;
    GET DIAGNOSTICS removed = ROW_COUNT;
    IF removed <> n THEN
        RAISE EXCEPTION 'removed % audit rows, not %: nothing removed', removed, n;
    END IF;
    PERFORM jit._audit('archive', NULL, NULL, NULL, NULL, NULL, jsonb_build_object(
        'after_seq', p_after_seq, 'through_seq', tip.seq, 'through_hash', encode(tip.hash, 'hex'),
        'rows', n, 'before', jit._ts(p_before)));
    RETURN jsonb_build_object('status', 'archived', 'rows', n, 'after_seq', p_after_seq,
                              'through_seq', tip.seq);
END
$$;

-- -- an operator's revoke, every pending request, health ---------------------------------

-- The lease an operator names: its role's name, or its id (digits); this database's only.
CREATE OR REPLACE FUNCTION jit._named_lease(p_lease text) RETURNS jit_data.leases
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.* FROM jit_data.leases l
     WHERE l.dbid = jit._mydb()
       AND CASE WHEN p_lease ~ '^[0-9]{1,18}$' THEN l.id = p_lease::bigint ELSE l.rolname = p_lease END
$$;

-- The backends of a lease's requester and of the lease itself that may hold a lock an
-- operator's revoke or finish waits on: every one that holds the lease's mark (in any mode,
-- for its session or its transaction: a requester can compute a mark key, or read it in
-- pg_locks, and take it exclusively), or holds a lock on a relation the lease's role owns,
-- and, for the lease's own role, every one in a transaction that wrote (its own pg_authid
-- row, ALTER ROLE itself PASSWORD left open).
-- Superusers' backends never count.  Each is terminated and waited for (at most 2 s): what a
-- requester or a lease holds never stands between an operator and the end of a lease.
-- Returns the pids ended.
CREATE OR REPLACE FUNCTION jit._end_lease_lockers(l jit_data.leases) RETURNS SETOF integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    holder integer;
BEGIN
    PERFORM pg_stat_clear_snapshot();
    FOR holder IN
        SELECT a.pid FROM pg_stat_activity a JOIN pg_roles who ON who.oid = a.usesysid
         WHERE a.usesysid IN (l.requester_oid, l.role_oid) AND NOT who.rolsuper
           AND a.pid <> pg_backend_pid()
           AND ((a.usesysid = l.role_oid AND a.backend_xid IS NOT NULL)
                OR EXISTS (SELECT FROM pg_locks k
                            WHERE k.pid = a.pid AND k.granted AND k.locktype = 'advisory'
                              AND k.classid = 1785295872 AND k.objsubid = 2
                              AND k.objid = jit._mark_key(l) AND k.database = jit._mydb())
                OR EXISTS (SELECT FROM pg_locks k JOIN pg_class c ON c.oid = k.relation
                            WHERE k.pid = a.pid AND k.locktype = 'relation'
                              AND k.database = jit._mydb() AND c.relowner = l.role_oid))
    LOOP
        IF pg_terminate_backend(holder, 2000) THEN
            RETURN NEXT holder;
        END IF;
    END LOOP;
END
$$;

-- An operator ends a lease now, for a reason.  Step one, as jit.revoke: NOLOGIN, committed
-- before its sessions end (terminating first would let an automatic reconnect slip in before
-- the commit), audited as 'revoke' (or 'expire' for a lease already past its expiry) with the
-- operator as actor and the operator's reason; the requester's reason stays in the detail.
-- Step two is jit.finish, in a transaction of its own (pgcli-jit-admin revoke calls it, the
-- reaper does it otherwise).  A lease that has ended already is not audited again.
-- EXECUTE is granted to jit_admin only; anyone else given it is refused here, audited.
-- It takes no lock a requester or a lease can hold first: not the lease's mark (an advisory
-- key they can compute), and the lease's row and role only after their transactions that may
-- hold them are ended (jit._end_lease_lockers); every wait is bounded by lock_timeout.
CREATE OR REPLACE FUNCTION jit.operator_revoke(p_lease text, p_reason text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s' AS $$
DECLARE
    l jit_data.leases;
    why text := coalesce(p_reason, '');
    detail jsonb;
BEGIN
    PERFORM jit._guard();
    IF NOT pg_has_role(session_user, 'jit_admin', 'MEMBER')
       OR EXISTS (SELECT FROM jit_data.leases x WHERE x.role_oid = jit._role_oid(session_user)) THEN
        PERFORM jit._audit('deny', NULL, NULL, NULL, jit._safe_text(why), NULL, jsonb_build_object(
            'why', 'operator revoke by a login not in jit_admin', 'lease', jit._safe_text(left(p_lease, 100))));
        RETURN jit._denied('only an operator (a login in jit_admin) may revoke a lease with pgcli-jit-admin revoke',
                           'a requester ends their own lease with \jit revoke');
    END IF;
    IF btrim(why) = '' OR length(why) > 1000 OR jit._unsafe_text(why) THEN
        RETURN jit._denied('an operator''s revoke needs a reason of at most 1000 characters with no control characters',
                           '--reason "..."');
    END IF;
    l := jit._named_lease(p_lease);
    IF l.id IS NULL THEN
        RETURN jit._denied(format('no lease %s in this database', jit._safe_text(left(p_lease, 100))),
                           'pgcli-jit-admin leases lists them');
    END IF;
    IF l.dropped_at IS NOT NULL THEN
        RETURN jit._lease_json(l, 'ended') || jsonb_build_object('dropped', true);
    END IF;
    PERFORM count(*) FROM jit._end_lease_lockers(l);
    BEGIN
        SELECT * INTO l FROM jit_data.leases x WHERE x.id = l.id FOR NO KEY UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'lease % is held by another operator''s or the reaper''s transaction', l.rolname
            USING ERRCODE = 'lock_not_available', HINT = 'try again in a moment';
    END;
    IF l.ended_at IS NOT NULL THEN
        RETURN jit._lease_json(l, 'ended') || jsonb_build_object('dropped', false);
    END IF;
    detail := jsonb_build_object('by', 'operator', 'lease_id', l.id, 'requester_reason', l.reason);
    l.reason := why;   -- the audit row's reason is the operator's; the lease's row keeps the requester's
    PERFORM jit._end(l, CASE WHEN l.expires_at <= jit._clock() THEN 'expire' ELSE 'revoke' END, detail);
    SELECT * INTO l FROM jit_data.leases WHERE id = l.id;
    RETURN jit._lease_json(l, 'revoked') || jsonb_build_object('dropped', false, 'revoke_reason', why);
END
$$;

-- Every request waiting for a decision, whoever may decide it, with the role that decides:
-- for operators, who see what waits on whom (jit.pending_for_me lists only what the caller
-- may decide).  Approved requests not yet collected are not waiting for anyone's decision.
CREATE OR REPLACE FUNCTION jit.pending_all()
RETURNS TABLE (id bigint, requester text, profile text, ttl_seconds double precision, reason text,
               created_at timestamptz, expires_at timestamptz, approvals integer, needed integer,
               approvers text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._require_admin();
    RETURN QUERY
    SELECT r.id, r.requester, r.profile,
           extract(epoch FROM coalesce(r.ttl_asked, p.ttl))::float8, r.reason, r.created_at,
           r.expires_at, (SELECT count(*)::int FROM jit_data.approvals a WHERE a.request_id = r.id),
           r.approvals_needed, r.approvers
      FROM jit_data.requests r LEFT JOIN jit_data.profiles p ON p.name = r.profile
     WHERE r.status = 'pending' AND r.expires_at > jit._clock()
     ORDER BY r.id;
END
$$;

-- A reaper's pass, recorded for monitoring (jit.expire_due calls it): one row per login that
-- reaps.  Only a caller that says it is a reaper counts: application_name 'pgcli-jit reaper'
-- (reap, reap --watch) or 'pgcli-jit reaper (pg_cron)' (the pg_cron job).  An operator's
-- one-off SELECT jit.expire_due() from psql would otherwise turn health green for two
-- minutes while no reaper runs.  A jit_admin login can set any application_name; the check
-- is there to catch a reaper that stopped, not an operator who lies to it.  It never holds
-- a pass up: a row another pass of the same login holds past the caller's lock_timeout is
-- left as it is.
CREATE OR REPLACE FUNCTION jit._reaper_ran() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('application_name') NOT IN ('pgcli-jit reaper', 'pgcli-jit reaper (pg_cron)') THEN
        RETURN;
    END IF;
    INSERT INTO jit_data.reaper_runs AS r (reaper, last_at, application_name, pid)
    VALUES (session_user, jit._clock(), jit._safe_text(left(current_setting('application_name'), 64)),
            pg_backend_pid())
    ON CONFLICT (reaper) DO UPDATE SET last_at = excluded.last_at,
        application_name = excluded.application_name, pid = excluded.pid, passes = r.passes + 1;
EXCEPTION WHEN lock_not_available THEN
    NULL;
END
$$;

-- What a monitoring system asks: one row per check, ok or not, a line that says why, and the
-- facts as jsonb.  'reaper': some login ran a pass within p_max_reaper_age.  'leases': no
-- lease ended or expired longer ago than that still has its role.  'audit': the hash chain
-- verifies (jit.audit_verify, which chains what is committed first).  'grants': every grant
-- role of every profile is still fit (jit._grant_problem, as issue, renewal and the reaper
-- judge it), one row per role that is not.
CREATE OR REPLACE FUNCTION jit.health(p_max_reaper_age interval)
RETURNS TABLE (check_name text, ok boolean, message text, detail jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_age interval := jit._secs(p_max_reaper_age);
    at timestamptz := jit._clock();
    max_s numeric;   -- the limit and the reaper's age as seconds, written without trailing zeros
    run jit_data.reaper_runs;
    age numeric;
    n bigint;
    names text[];
    v record;
BEGIN
    PERFORM jit._require_admin();
    IF max_age IS NULL OR max_age <= interval '0' THEN
        RAISE EXCEPTION 'the reaper''s age limit must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    max_s := trim_scale(extract(epoch FROM max_age));

    check_name := 'reaper';
    SELECT * INTO run FROM jit_data.reaper_runs ORDER BY last_at DESC LIMIT 1;
    IF NOT FOUND THEN
        ok := false;
        message := 'the reaper has never run in this database';
        detail := jsonb_build_object('max_age_seconds', max_s);
    ELSE
        age := trim_scale(round(extract(epoch FROM at - run.last_at), 1));
        ok := run.last_at >= at - max_age;
        message := format('the reaper %s %ss ago (login %s, application_name %L)%s',
                          CASE WHEN ok THEN 'ran' ELSE 'last ran' END, age, jit._safe_text(run.reaper),
                          run.application_name,
                          CASE WHEN ok THEN '' ELSE format(', more than %ss', max_s) END);
        detail := jsonb_build_object('last_at', jit._ts(run.last_at), 'age_seconds', age,
                                     'reaper', run.reaper, 'application_name', run.application_name,
                                     'max_age_seconds', max_s, 'passes', run.passes);
    END IF;
    RETURN NEXT;

    check_name := 'leases';
    SELECT count(*), (array_agg(format('%s (%s)', l.rolname,
                          CASE WHEN l.drop_error IS NOT NULL THEN 'kept: ' || l.drop_error
                               WHEN l.ended_at IS NOT NULL THEN l.end_event || 'd, role not dropped'
                               ELSE 'expired, not ended' END) ORDER BY l.id))[1:5]
      INTO n, names
      FROM jit_data.leases l
     WHERE l.dbid = jit._mydb() AND l.dropped_at IS NULL
       AND least(l.expires_at, l.ended_at) < at - max_age;
    ok := n = 0;
    message := CASE WHEN ok THEN 'every lease that ended is reaped'
                    ELSE format('%s lease(s) ended more than %ss ago still have their role: %s%s', n,
                                max_s, array_to_string(names, ', '),
                                CASE WHEN n > 5 THEN format(' and %s more', n - 5) ELSE '' END) END;
    detail := jsonb_build_object('unreaped', n, 'roles', to_jsonb(coalesce(names, '{}')));
    RETURN NEXT;

    check_name := 'audit';
    SELECT * INTO v FROM jit.audit_verify() LIMIT 1;
    ok := v.problem IS NULL AND v.bad_id IS NULL;
    message := CASE WHEN ok THEN format('audit chain intact: %s rows', v.rows_checked)
                    ELSE format('audit chain broken at row %s: %s', coalesce(v.bad_id::text, '?'), v.problem) END;
    detail := jsonb_build_object('rows_checked', v.rows_checked, 'bad_id', v.bad_id, 'problem', v.problem);
    RETURN NEXT;

    check_name := 'grants';
    n := 0;
    FOR v IN SELECT p.name, g.role, jit._grant_problem(g.role) AS problem
               FROM jit_data.profiles p, unnest(p.grants) AS g(role)
              ORDER BY p.name, g.role LOOP
        CONTINUE WHEN v.problem IS NULL;
        n := n + 1;
        ok := false;
        message := format('profile %s: %s', v.name, v.problem);
        detail := jsonb_build_object('profile', v.name, 'role', v.role, 'problem', v.problem);
        RETURN NEXT;
    END LOOP;
    IF n = 0 THEN
        ok := true;
        message := format('the grant roles of %s profile(s) are fit',
                          (SELECT count(*) FROM jit_data.profiles));
        detail := '{}';
        RETURN NEXT;
    END IF;
END
$$;

RESET ROLE;
