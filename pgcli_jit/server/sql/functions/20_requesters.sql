-- pgcli-jit server-side broker, the functions: What requesters and leases call: request, renew, revoke, finish, my_leases, my_profiles, my_profile_rules.
-- Re-applied by every `setup --apply` (CREATE OR REPLACE), after the numbered schema files,
-- with the other files of this folder in name order.  Every function is SECURITY DEFINER with
-- a fixed search_path, builds every identifier with format('%I'), and takes the caller's
-- identity from session_user: what PostgreSQL authenticated, never a name the client
-- supplies.  Functions that refuse on purpose return {"status": "denied", ...} instead of
-- raising, so the refusal's audit row commits.

SET LOCAL ROLE jit_owner;

-- -- for requesters ------------------------------------------------------------------

-- The profiles the caller may request.
CREATE OR REPLACE FUNCTION jit.my_profiles()
RETURNS TABLE (name text, ttl_seconds double precision, max_ttl_seconds double precision,
               reason_required boolean, description text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.name, extract(epoch FROM p.ttl)::float8, extract(epoch FROM p.max_ttl)::float8,
           p.reason_required, p.description
      FROM jit_data.profiles p
     WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = p.requesters)
       AND pg_has_role(session_user, p.requesters, 'MEMBER')
     ORDER BY p.name
$$;

-- What a request for each profile the caller may request must pass before a role is issued,
-- one jsonb object a profile, in name order: whether a second person must approve it, which
-- role approves, how many approvals, how long a request waits for them.  A set of jsonb (not
-- a table) so that it can say more later without a DROP, which would lose the grants below.
-- The same profiles as jit.my_profiles(), less every one for a temporary role: jit.request
-- refuses a temporary role (a lease) whatever it is a member of, so a lease gets no row.
-- Nothing is ever said of a profile the caller may not request.
CREATE OR REPLACE FUNCTION jit.my_profile_rules() RETURNS SETOF jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
               'profile', p.name,
               'approval_required', p.approvers IS NOT NULL,
               'statements_logged', p.log_statements <> 'none',
               'approvers', p.approvers,
               'approvals', CASE WHEN p.approvers IS NULL THEN 0 ELSE p.approvals END,
               'approval_timeout_seconds',
                   CASE WHEN p.approvers IS NULL THEN NULL
                        ELSE extract(epoch FROM p.approval_timeout)::float8 END)
      FROM jit_data.profiles p
     WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = p.requesters)
       AND pg_has_role(session_user, p.requesters, 'MEMBER')
       AND NOT EXISTS (SELECT FROM jit_data.leases l WHERE l.role_oid = jit._role_oid(session_user))
     ORDER BY p.name
$$;

-- What identifies one request: the verifier is new for every request (a fresh password and
-- salt), so a client sending the same call again sends the same key.
CREATE OR REPLACE FUNCTION jit._request_key(p_verifier text) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sha256(convert_to(p_verifier, 'UTF8'))
$$;

-- Whether requester my_oid holds as many live leases of profile p as it allows (max_live).
-- Called with the requester's row held (jit._hold_requester), so that no other request of
-- theirs is counting at once.  A lease counts until the server has ended it if a transaction
-- still holds it (its advisory mark, jit._mark): a renewal held open across the expiry
-- could otherwise commit after the count let another lease through.
CREATE OR REPLACE FUNCTION jit._at_cap(p jit_data.profiles, my_oid oid) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) >= p.max_live FROM jit_data.leases l
     WHERE l.requester_oid = my_oid AND l.profile = p.name AND l.ended_at IS NULL
       AND (l.expires_at > jit._clock() OR jit._marked(l))
$$;

CREATE OR REPLACE FUNCTION jit._cap_message(p jit_data.profiles) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('you hold %s live lease%s of profile %s, the most it allows at once',
                  p.max_live, CASE WHEN p.max_live = 1 THEN '' ELSE 's' END, p.name)
$$;

CREATE OR REPLACE FUNCTION jit._cap_hint() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'revoke one with \jit revoke in the session that holds it, or let it expire'::text
$$;

-- A request (or an approved request's collection) made again: the lease it issued, if that
-- can still log in; nothing new is created either way.
CREATE OR REPLACE FUNCTION jit._replayed(l jit_data.leases) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF l.ended_at IS NOT NULL OR l.expires_at <= jit._clock() THEN
        RETURN jit._denied(format('this request was answered already, and its role %s has ended',
                                  l.rolname), 'ask again');
    END IF;
    PERFORM jit._mark(l);   -- its row is written below: the reaper must see who holds it
    IF l.replays = 0 THEN  -- audited once: a loop of replays must not fill the trail
        PERFORM jit._audit('replay', l.profile, l.rolname, l.requester, l.reason, l.expires_at,
                           jsonb_build_object('lease_id', l.id));
    END IF;
    UPDATE jit_data.leases SET replays = least(replays, 1000000) + 1 WHERE id = l.id;
    RETURN jit._lease_json(l, 'granted') || jsonb_build_object('replayed', true);
END
$$;

-- Create the temporary role for requester `me` (jit.request, or jit.request_status once
-- a request was approved).  The server picks the role name, the grants and the expiry
-- (capped at the profile's max_ttl, as an absolute time); the lease clock starts here.
-- `wanted` is whole seconds (jit._secs).  A grant role that has become unfit since the
-- profile was declared refuses the issue.
CREATE OR REPLACE FUNCTION jit._issue(p jit_data.profiles, me text, my_oid oid, reason text,
                                      wanted interval, p_verifier text, extra jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at timestamptz := jit._clock();
    ttl interval := least(jit._secs(wanted), jit._secs(p.max_ttl));
    name text;
    g text;
    l jit_data.leases;
    problem text := jit._grants_problem(p.grants);
    with_opts text := CASE WHEN current_setting('server_version_num')::int >= 160000
                           THEN ' WITH INHERIT TRUE, SET FALSE' ELSE '' END;
BEGIN
    IF problem IS NOT NULL THEN
        PERFORM jit._audit('deny', p.name, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'grant role unfit', 'problem', problem) || extra);
        RETURN jit._denied(format('profile %s cannot be issued now: %s', p.name, problem),
                           'an operator must fix the grant role (pgcli-jit-admin profile list shows it)');
    END IF;
    -- the role's name is built here: <jit_><requester>_<random>, at most 63 bytes
    name := 'jit_' || left(regexp_replace(lower(me), '[^a-z0-9_]+', '_', 'g'), 24) || '_'
            || left(replace(gen_random_uuid()::text, '-', ''), 10);
    EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                   'NOBYPASSRLS INHERIT PASSWORD %L VALID UNTIL %L',
                   name, p_verifier, jit._valid_until(at + ttl));
    FOREACH g IN ARRAY p.grants || ARRAY['jit_lease', (SELECT db_role FROM jit_data.install)] LOOP
        EXECUTE format('GRANT %I TO %I', g, name) || with_opts;
    END LOOP;
    -- logged as the profile says, before the role can log in (60_session_logs.sql)
    PERFORM jit._apply_session_logging(name, p.log_statements);
    INSERT INTO jit_data.leases (rolname, role_oid, profile, requester, requester_oid, reason,
                            client_addr, issued_at, expires_at, max_expires_at, request_key, dbid,
                            log_statements)
    VALUES (name, jit._role_oid(name), p.name, me, my_oid, reason, inet_client_addr(),
            at, at + ttl, at + jit._secs(p.max_ttl), jit._request_key(p_verifier), jit._mydb(),
            p.log_statements)
    RETURNING * INTO l;
    PERFORM jit._audit('request', p.name, name, me, reason, l.expires_at,
                       jsonb_build_object('grants', to_jsonb(p.grants), 'lease_id', l.id,
                                          'ttl_asked', extract(epoch FROM wanted),
                                          'capped', jit._secs(wanted) > ttl) || extra);
    PERFORM jit._doorbell();
    RETURN jit._lease_json(l, 'granted') || jsonb_build_object('capped', jit._secs(wanted) > ttl,
        'max_ttl_seconds', extract(epoch FROM p.max_ttl)) || extra;
END
$$;

-- Ask for a temporary role.  p_verifier is a SCRAM-SHA-256 verifier the client computed:
-- the password itself never reaches the server.  The server picks the role name, the grants,
-- the expiry (capped at the profile's max_ttl) and records who asked, from session_user.
-- On a profile with approvers nothing is created yet: the request waits in jit_data.requests.
-- jit.request, and jit.request_break_glass (functions/80_notify.sql) with p_break_glass: granted
-- at once without approval on a profile that allows it (jit._break_glass), refused on any other.
CREATE OR REPLACE FUNCTION jit._request(p_profile text, p_ttl interval, p_reason text, p_verifier text,
                                        p_break_glass boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p jit_data.profiles;
    l jit_data.leases;
    r jit_data.requests;
    me text := session_user;
    my_oid oid := jit._role_oid(session_user);
    reason text := coalesce(p_reason, '');
    ttl interval;
BEGIN
    PERFORM jit._guard();
    -- the requester's own row first, held to commit: it serializes their requests (two at once
    -- cannot both pass the cap's count, and the same call sent twice at once finds the first's
    -- lease), and it is always taken before any of their request rows, as request_status does
    PERFORM jit._hold_requester(my_oid);
    PERFORM jit._expire_requests(my_oid);
    IF length(reason) > 1000 OR jit._unsafe_text(reason) THEN
        RETURN jit._denied('the reason must be at most 1000 characters with no control characters');
    END IF;
    IF p_profile IS NULL OR p_profile !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
        -- not a profile name: nothing of it is written to the audit trail
        PERFORM jit._audit('deny', NULL, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'not a profile name'));
        RETURN jit._denied(format('no profile of that name that %s may request', me),
                           '\jit profiles lists what you may request');
    END IF;
    SELECT * INTO p FROM jit_data.profiles WHERE jit_data.profiles.name = p_profile;
    IF NOT FOUND OR NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p.requesters)
       OR NOT pg_has_role(me, p.requesters, 'MEMBER') THEN
        PERFORM jit._audit('deny', p_profile, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'not a requester of this profile'));
        RETURN jit._denied(format('no profile %s that %s may request', p_profile, me),
                           '\jit profiles lists what you may request');
    END IF;
    IF EXISTS (SELECT FROM jit_data.leases WHERE role_oid = my_oid) THEN
        PERFORM jit._audit('deny', p.name, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'requested by a temporary role'));
        RETURN jit._denied('a temporary role cannot request another one',
                           'request as your own login');
    END IF;
    IF p.reason_required AND btrim(reason) = '' THEN
        PERFORM jit._audit('deny', p.name, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'reason required'));
        RETURN jit._denied(format('profile %s requires a reason', p.name), 'add --reason "..."');
    END IF;
    IF p_verifier IS NULL OR p_verifier !~ '^SCRAM-SHA-256\$[0-9]{4,7}:[A-Za-z0-9+/=]{1,255}\$[A-Za-z0-9+/=]{1,255}:[A-Za-z0-9+/=]{1,255}$' THEN
        RAISE EXCEPTION 'the password must be sent as a SCRAM-SHA-256 verifier'
            USING HINT = 'compute it client-side (libpq PQencryptPasswordConn)';
    END IF;
    ttl := jit._secs(coalesce(p_ttl, p.ttl));
    IF ttl <= interval '0' THEN
        RETURN jit._denied('the TTL must be positive');
    END IF;
    -- the same call again (its answer was lost on the way back): what it made, once
    SELECT * INTO l FROM jit_data.leases
     WHERE requester_oid = my_oid AND request_key = jit._request_key(p_verifier);
    IF FOUND THEN
        RETURN jit._replayed(l);
    END IF;
    SELECT * INTO r FROM jit_data.requests
     WHERE requester_oid = my_oid AND request_key = jit._request_key(p_verifier);
    IF FOUND THEN
        RETURN jit.request_status(r.id);
    END IF;
    IF jit._at_cap(p, my_oid) THEN
        PERFORM jit._audit('deny', p.name, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'live lease limit', 'max_live', p.max_live));
        RETURN jit._denied(jit._cap_message(p), jit._cap_hint());
    END IF;
    IF coalesce(p_break_glass, false) THEN
        RETURN jit._break_glass(p, me, my_oid, reason, p_ttl, p_verifier);
    END IF;
    IF p.approvers IS NOT NULL AND jit._auto_approves(p, my_oid) THEN
        RETURN jit._auto_approve(p, me, my_oid, reason, ttl, p_verifier);
    END IF;
    IF p.approvers IS NOT NULL THEN
        RETURN jit._ask_approval(p, me, my_oid, reason, jit._secs(p_ttl), p_verifier);
    END IF;
    RETURN jit._issue(p, me, my_oid, reason, ttl, p_verifier);
END
$$;

CREATE OR REPLACE FUNCTION jit.request(p_profile text, p_ttl interval, p_reason text, p_verifier text)
RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jit._request(p_profile, p_ttl, p_reason, p_verifier, false)
$$;

-- A lease the caller may act on, locked and marked (jit._mark) for the rest of the
-- transaction; NULL if there is none of theirs in this database.  The lock waits at most
-- lock_timeout (set on every function).
CREATE OR REPLACE FUNCTION jit._my_lease(p_rolname text, admin_too boolean) RETURNS jit_data.leases
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit_data.leases;
BEGIN
    SELECT * INTO l FROM jit_data.leases WHERE rolname = p_rolname;
    IF NOT FOUND OR l.dbid <> jit._mydb() OR NOT jit._may_act(l, admin_too) THEN
        RETURN NULL;
    END IF;
    PERFORM jit._mark(l);
    BEGIN
        SELECT * INTO l FROM jit_data.leases WHERE id = l.id FOR NO KEY UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'lease % is busy: another transaction holds it', p_rolname
            USING ERRCODE = 'lock_not_available', HINT = 'try again in a moment';
    END;
    RETURN l;
END
$$;

-- Extend a lease, never past its hard limit (issue time + the profile's max_ttl).  Decided on
-- the wall clock: a lease that has expired by now is never renewed, whenever the caller's
-- transaction began.
CREATE OR REPLACE FUNCTION jit.renew(p_rolname text, p_ttl interval) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit_data.leases;
    p jit_data.profiles;
    ttl interval;
    wanted timestamptz;
    new_exp timestamptz;
    problem text;
BEGIN
    PERFORM jit._guard();
    l := jit._my_lease(p_rolname, false);
    IF l.id IS NULL THEN
        RETURN jit._denied(format('no lease %s of yours', p_rolname));
    END IF;
    IF l.ended_at IS NOT NULL OR l.expires_at <= jit._clock() THEN
        RETURN jit._denied(format('lease %s has ended', p_rolname)) || '{"status": "ended"}';
    END IF;
    SELECT * INTO p FROM jit_data.profiles WHERE name = l.profile;
    problem := jit._grants_problem((SELECT array_agg(r.rolname) FROM pg_auth_members m
                                      JOIN pg_roles r ON r.oid = m.roleid
                                     WHERE m.member = l.role_oid AND r.rolname <> 'jit_lease'
                                       AND r.rolname <> (SELECT db_role FROM jit_data.install)));
    IF problem IS NOT NULL THEN
        PERFORM jit._audit('deny', l.profile, l.rolname, l.requester, l.reason, l.expires_at,
                           jsonb_build_object('why', 'grant role unfit', 'problem', problem));
        RETURN jit._denied(format('lease %s cannot be renewed: %s', p_rolname, problem));
    END IF;
    ttl := jit._secs(coalesce(p_ttl, p.ttl, l.expires_at - l.issued_at));
    IF ttl <= interval '0' THEN
        RETURN jit._denied('the TTL must be positive');
    END IF;
    wanted := jit._clock() + least(ttl, jit._secs(coalesce(p.max_ttl, l.max_expires_at - l.issued_at)));
    new_exp := least(wanted, l.max_expires_at);
    IF new_exp <= l.expires_at THEN
        IF l.expires_at >= l.max_expires_at THEN
            RETURN jit._lease_json(l, 'max_ttl');
        END IF;
        RETURN jit._lease_json(l, 'unchanged');
    END IF;
    EXECUTE format('ALTER ROLE %I VALID UNTIL %L', l.rolname, jit._valid_until(new_exp));
    UPDATE jit_data.leases SET expires_at = new_exp, renewals = renewals + 1 WHERE id = l.id
        RETURNING * INTO l;
    PERFORM jit._audit('renew', l.profile, l.rolname, l.requester, l.reason, new_exp,
                       jsonb_build_object('renewals', l.renewals, 'capped', new_exp < wanted));
    PERFORM jit._doorbell();
    RETURN jit._lease_json(l, 'renewed') || jsonb_build_object('capped', new_exp < wanted);
END
$$;

-- End a lease now (step one: NOLOGIN, audited).  Call jit.finish afterwards, in its own
-- transaction, to end its sessions and drop the role; the reaper does it otherwise.
CREATE OR REPLACE FUNCTION jit.revoke(p_rolname text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit_data.leases;
BEGIN
    PERFORM jit._guard();
    l := jit._my_lease(p_rolname, true);
    IF l.id IS NULL THEN
        RETURN jit._denied(format('no lease %s of yours', p_rolname));
    END IF;
    IF l.ended_at IS NULL THEN
        PERFORM jit._end(l, CASE WHEN l.expires_at <= jit._clock() THEN 'expire' ELSE 'revoke' END);
        SELECT * INTO l FROM jit_data.leases WHERE id = l.id;
    END IF;
    RETURN jit._lease_json(l, 'revoked');
END
$$;

-- Step two of revoke: end the role's sessions and drop it (or say why it was kept).
-- An ended lease needs no mark (nothing renews it): an operator's finish takes none, ends
-- the requester's and the lease's transactions that may hold the lease's row or what its
-- role owns (jit._end_lease_lockers), and waits at most lock_timeout for the rest.
CREATE OR REPLACE FUNCTION jit.finish(p_rolname text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s' AS $$
DECLARE
    l jit_data.leases;
    outcome text;
BEGIN
    PERFORM jit._guard();
    SELECT * INTO l FROM jit_data.leases x WHERE x.rolname = p_rolname;
    IF FOUND AND l.dbid = jit._mydb() AND l.ended_at IS NOT NULL AND jit._may_act(l, true)
       AND pg_has_role(session_user, 'jit_admin', 'MEMBER') THEN
        PERFORM count(*) FROM jit._end_lease_lockers(l);
        BEGIN
            SELECT * INTO l FROM jit_data.leases x WHERE x.id = l.id FOR NO KEY UPDATE;
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION 'lease % is held by another operator''s or the reaper''s transaction', p_rolname
                USING ERRCODE = 'lock_not_available', HINT = 'try again in a moment';
        END;
    ELSE
        l := jit._my_lease(p_rolname, true);
    END IF;
    IF l.id IS NULL THEN
        RETURN jit._denied(format('no lease %s of yours', p_rolname));
    END IF;
    IF l.ended_at IS NULL THEN
        RETURN jit._denied(format('lease %s has not ended', p_rolname), 'call jit.revoke first');
    END IF;
    outcome := CASE WHEN l.dropped_at IS NOT NULL THEN 'gone' ELSE jit._finish_safely(l) END;
    SELECT * INTO l FROM jit_data.leases WHERE id = l.id;
    RETURN jit._lease_json(l, 'finished') || jsonb_build_object('outcome', outcome,
                                                                'drop_error', l.drop_error);
END
$$;

-- The caller's leases (as requester), or the caller's own lease (as a temporary role): every
-- one whose role is not dropped yet, and those among the newest 1000 that ended in the last
-- 15 minutes (an operator's revoke drops the role at once; the requester's shell asks a few
-- seconds later how its lease ended).  A lease an operator revoked carries the operator's reason
-- (revoke_reason, from the audit row of the revoke: among the newest 1000 rows, so a lookup
-- never walks a long trail; older than that, the lease says only that it was revoked).
CREATE OR REPLACE FUNCTION jit.my_leases() RETURNS SETOF jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jit._lease_json(l, CASE WHEN l.ended_at IS NULL AND l.expires_at > clock_timestamp()
                                   THEN 'live' ELSE 'ended' END)
           || CASE WHEN l.end_event = 'revoke' THEN coalesce((
                  SELECT jsonb_build_object('revoked_by', 'operator', 'revoke_reason', a.reason)
                    FROM (SELECT x.event, x.rolname, x.reason, x.detail FROM jit_data.audit x
                           ORDER BY x.id DESC LIMIT 1000) a
                   WHERE a.event = 'revoke' AND a.rolname = l.rolname AND a.detail ->> 'by' = 'operator'
                   LIMIT 1), '{}'::jsonb)
              ELSE '{}'::jsonb END
      FROM jit_data.leases l
     WHERE (l.requester_oid = jit._role_oid(session_user) OR l.role_oid = jit._role_oid(session_user))
       AND l.id IN (SELECT u.id FROM jit_data.leases u WHERE u.dropped_at IS NULL
                    UNION ALL   -- dropped: only among the newest leases, found by the primary key
                    SELECT d.id FROM jit_data.leases d
                     WHERE d.id > (SELECT max(n.id) FROM jit_data.leases n) - 1000
                       AND d.dropped_at IS NOT NULL
                       AND d.ended_at > clock_timestamp() - interval '15 minutes')
       AND l.dbid = jit._mydb()
     ORDER BY l.id
$$;

RESET ROLE;
