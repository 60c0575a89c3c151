-- The functions of schema version 4 as released (pgcli-jit at 0483833), for the upgrade tests.
-- pgcli-jit server-side broker: the functions.  Re-applied by every `setup --apply`
-- (CREATE OR REPLACE), after the numbered schema files, while SET ROLE jit_owner.
--
-- Every function is SECURITY DEFINER with a fixed search_path, builds every identifier
-- with format('%I'), and takes the caller's identity from session_user: what PostgreSQL
-- authenticated, never a name the client supplies.  Functions that refuse on purpose
-- return {"status": "denied", ...} instead of raising, so the refusal's audit row commits.

SET LOCAL ROLE jit_owner;

-- -- internals (no EXECUTE for anyone) -------------------------------------------------

CREATE OR REPLACE FUNCTION jit._ts(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The hashed form of an audit row: independent of TimeZone, DateStyle and column order.
CREATE OR REPLACE FUNCTION jit._audit_digest(a jit.audit) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sha256(coalesce(a.prev_hash, '\x'::bytea) || convert_to(jsonb_build_array(
        a.id, jit._ts(a.at), a.event, a.profile, a.rolname, a.requester, a.actor,
        host(a.client_addr), a.reason, jit._ts(a.expires_at), a.detail)::text, 'UTF8'))
$$;

-- The audit chain's writer lock, taken with a 2 s timeout.  A table lock, which only jit_owner
-- may take: the advisory lock it replaces could be taken and kept by any login.
CREATE OR REPLACE FUNCTION jit._try_lock_audit() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '2s' AS $$
BEGIN
    LOCK TABLE jit.audit_head IN EXCLUSIVE MODE;
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$$;

-- One writer at a time, until commit: ids follow the chain's order.  A broker call holds
-- the chain for milliseconds; a transaction that holds it for 2 s while someone waits was
-- left open after one (BEGIN; SELECT jit.renew(...); and no COMMIT), and would stall every
-- request and the reaper: it is ended, unless it is an operator's or a superuser's.
CREATE OR REPLACE FUNCTION jit._hold_audit_chain() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    WHILE NOT jit._try_lock_audit() LOOP
        PERFORM pg_terminate_backend(k.pid, 1000)
           FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
          WHERE k.locktype = 'relation' AND k.relation = 'jit.audit_head'::regclass AND k.granted
            AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND k.pid <> pg_backend_pid()
            AND NOT EXISTS (SELECT FROM pg_roles who WHERE who.oid = a.usesysid
                             AND (who.rolsuper OR pg_has_role(who.oid, 'jit_admin', 'MEMBER')));
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION jit._audit(
    p_event text, p_profile text, p_rolname text, p_requester text, p_reason text,
    p_expires_at timestamptz, p_detail jsonb DEFAULT '{}'
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit.audit;
BEGIN
    PERFORM jit._hold_audit_chain();
    r.id := nextval('jit.audit_id_seq');
    r.at := clock_timestamp();
    r.event := p_event;
    r.profile := p_profile;
    r.rolname := p_rolname;
    r.requester := p_requester;
    r.actor := session_user;
    r.client_addr := inet_client_addr();
    r.reason := p_reason;
    r.expires_at := p_expires_at;
    r.detail := coalesce(p_detail, '{}');
    SELECT h.hash INTO r.prev_hash FROM jit.audit_head h;
    r.hash := jit._audit_digest(r);
    INSERT INTO jit.audit SELECT r.*;
    INSERT INTO jit.audit_head (last_id, hash) VALUES (r.id, r.hash)
        ON CONFLICT (one) DO UPDATE SET last_id = excluded.last_id, hash = excluded.hash;
END
$$;

CREATE OR REPLACE FUNCTION jit._doorbell() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- a doorbell for the reaper: no payload, delivered at commit
    SELECT pg_notify('jit_leases', '')
$$;

CREATE OR REPLACE FUNCTION jit._role_oid(r text) RETURNS oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT oid FROM pg_roles WHERE rolname = r
$$;

CREATE OR REPLACE FUNCTION jit._denied(msg text, hint text DEFAULT '') RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('status', 'denied', 'error', msg, 'hint', hint)
$$;

CREATE OR REPLACE FUNCTION jit._lease_json(l jit.leases, p_status text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'status', p_status, 'rolname', l.rolname, 'lease_id', l.id, 'profile', l.profile,
        'requester', l.requester, 'reason', l.reason,
        'issued_at', extract(epoch FROM l.issued_at), 'expires_at', extract(epoch FROM l.expires_at),
        'max_expires_at', extract(epoch FROM l.max_expires_at), 'renewals', l.renewals,
        'ended_at', extract(epoch FROM l.ended_at), 'end_event', l.end_event,
        'server_now', extract(epoch FROM clock_timestamp()))
$$;

-- Who may act on a lease: its requester, the lease's own role, and (for revoke) jit_admin.
CREATE OR REPLACE FUNCTION jit._may_act(l jit.leases, admin_too boolean) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.requester_oid = jit._role_oid(session_user)
        OR l.role_oid = jit._role_oid(session_user)
        OR (admin_too AND pg_has_role(session_user, 'jit_admin', 'MEMBER'))
$$;

-- A role that may be handed out: no attribute or built-in membership that reaches the OS,
-- every password verifier, other sessions, or the broker itself.
CREATE OR REPLACE FUNCTION jit._grant_problem(r text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a pg_roles;
    bad text;
BEGIN
    SELECT * INTO a FROM pg_roles WHERE rolname = r;
    IF NOT FOUND THEN
        RETURN format('role %I does not exist', r);
    END IF;
    IF a.rolsuper OR a.rolcreaterole OR a.rolcreatedb OR a.rolreplication OR a.rolbypassrls THEN
        RETURN format('role %I has SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS', r);
    END IF;
    IF a.rolcanlogin THEN
        RETURN format('role %I can log in: grant roles are NOLOGIN groups', r);
    END IF;
    SELECT string_agg(d, ', ') INTO bad FROM unnest(ARRAY[
        'pg_read_all_data', 'pg_execute_server_program', 'pg_read_server_files',
        'pg_write_server_files', 'pg_signal_backend', 'pg_read_all_settings',
        'pg_create_subscription', 'jit_owner', 'jit_admin', 'jit_lease']) AS d
      JOIN pg_roles pr ON pr.rolname = d
     WHERE pg_has_role(r, pr.oid, 'MEMBER');
    IF bad IS NOT NULL THEN
        RETURN format('role %I is a member of %s', r, bad);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_auth_members m
                   WHERE m.roleid = a.oid AND m.member = jit._role_oid('jit_owner') AND m.admin_option) THEN
        RETURN format('jit_owner does not hold ADMIN OPTION on %I: as a superuser run GRANT %I TO jit_owner WITH ADMIN OPTION', r, r);
    END IF;
    RETURN NULL;
END
$$;

-- End a lease: NOLOGIN now, so nobody logs in again once this commits.  Sessions are
-- terminated afterwards, in another transaction (jit._finish), when NOLOGIN is visible:
-- terminating first would let an auto-reconnect slip in before the commit.
CREATE OR REPLACE FUNCTION jit._end(l jit.leases, p_event text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE oid = l.role_oid) THEN
        EXECUTE format('ALTER ROLE %I NOLOGIN VALID UNTIL %L', l.rolname,
                       least(now(), l.expires_at));
    END IF;
    UPDATE jit.leases SET ended_at = now(), end_event = p_event WHERE id = l.id;
    PERFORM jit._audit(p_event, l.profile, l.rolname, l.requester, l.reason, l.expires_at);
    PERFORM jit._doorbell();
END
$$;

-- After jit._end has committed: take the role's grants away, end its sessions, drop it.
-- What the role owns goes to the profile's owner role, never to jit_owner; without an
-- owner role the (powerless, NOLOGIN) role is kept and the reason recorded.
-- Locks wait at most a second: a lock another login holds on something the role owns (a
-- table the lease granted to PUBLIC, held in an open transaction) fails this lease, recorded
-- and retried, instead of stalling the reaper for everyone.
CREATE OR REPLACE FUNCTION jit._finish(l jit.leases) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    g text;
    obj text;
    rel text;
    owner text;
    owned int;
    elsewhere int;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE oid = l.role_oid) THEN
        UPDATE jit.leases SET dropped_at = coalesce(dropped_at, now()), drop_error = NULL WHERE id = l.id;
        RETURN 'gone';
    END IF;
    UPDATE jit.leases SET drop_tried_at = now() WHERE id = l.id;
    FOR g IN SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
             WHERE m.member = l.role_oid LOOP
        EXECUTE format('REVOKE %I FROM %I', g, l.rolname);
    END LOOP;
    -- by OID: a session that ran SET ROLE shows no usename, and keeps its privileges otherwise
    PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE usesysid = l.role_oid AND pid <> pg_backend_pid();
    IF l.role_oid = jit._role_oid(session_user) THEN
        PERFORM jit._doorbell();   -- a session cannot drop its own role: the reaper will
        RETURN 'deferred';
    END IF;
    SELECT count(*) FILTER (WHERE d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())),
           count(*) FILTER (WHERE d.dbid <> (SELECT oid FROM pg_database WHERE datname = current_database())
                              AND d.dbid <> 0)
      INTO owned, elsewhere
      FROM pg_shdepend d
     WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = l.role_oid AND d.deptype = 'o';
    SELECT p.owner INTO owner FROM jit.profiles p WHERE p.name = l.profile;
    IF elsewhere > 0 OR (owned > 0 AND owner IS NULL) THEN
        UPDATE jit.leases SET drop_error = format(
            'owns %s object(s)%s; it stays NOLOGIN with no grants: set an owner role on profile %s '
            '(pgcli-jit-admin profile set %s --owner ROLE) or REASSIGN OWNED BY %I by hand',
            owned + elsewhere, CASE WHEN elsewhere > 0 THEN ' (some in other databases)' ELSE '' END,
            l.profile, l.profile, l.rolname) WHERE id = l.id;
        RETURN 'kept';
    END IF;
    -- REASSIGN and DROP OWNED need the role's privileges: jit_owner created it, so may take them
    EXECUTE format('GRANT %I TO %I', l.rolname, current_user);
    IF owned > 0 THEN
        -- nothing the lease wrote may run with the owner role's privileges once it is the
        -- owner's: SECURITY DEFINER routines become SECURITY INVOKER, views security_invoker,
        -- and rules (which run as their table's owner) are dropped
        FOR obj IN SELECT p.oid::regprocedure::text FROM pg_proc p
                    WHERE p.proowner = l.role_oid AND p.prosecdef LOOP
            EXECUTE format('ALTER ROUTINE %s SECURITY INVOKER', obj);
        END LOOP;
        FOR obj IN SELECT c.oid::regclass::text FROM pg_class c
                    WHERE c.relowner = l.role_oid AND c.relkind = 'v' LOOP
            EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', obj);
        END LOOP;
        FOR obj, rel IN SELECT r.rulename, c.oid::regclass::text FROM pg_rewrite r
                          JOIN pg_class c ON c.oid = r.ev_class
                         WHERE c.relowner = l.role_oid AND r.rulename <> '_RETURN' LOOP
            EXECUTE format('DROP RULE %I ON %s', obj, rel);
        END LOOP;
        EXECUTE format('REASSIGN OWNED BY %I TO %I', l.rolname, owner);
    END IF;
    EXECUTE format('DROP OWNED BY %I', l.rolname);
    EXECUTE format('DROP ROLE %I', l.rolname);
    UPDATE jit.leases SET dropped_at = now(), drop_error = NULL WHERE id = l.id;
    RETURN 'dropped';
END
$$;

-- jit._finish for one lease, with its failure recorded instead of raised: one odd role
-- never stops the reaper for everyone.
CREATE OR REPLACE FUNCTION jit._finish_safely(l jit.leases) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    msg text;
BEGIN
    RETURN jit._finish(l);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
    UPDATE jit.leases SET drop_error = msg, drop_tried_at = now() WHERE id = l.id;
    RETURN 'failed: ' || msg;
END
$$;

-- -- for requesters ------------------------------------------------------------------

-- The profiles the caller may request.
CREATE OR REPLACE FUNCTION jit.my_profiles()
RETURNS TABLE (name text, ttl_seconds double precision, max_ttl_seconds double precision,
               reason_required boolean, description text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.name, extract(epoch FROM p.ttl)::float8, extract(epoch FROM p.max_ttl)::float8,
           p.reason_required, p.description
      FROM jit.profiles p
     WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = p.requesters)
       AND pg_has_role(session_user, p.requesters, 'MEMBER')
     ORDER BY p.name
$$;

-- What identifies one request: the verifier is new for every request (a fresh password and
-- salt), so a client sending the same call again sends the same key.
CREATE OR REPLACE FUNCTION jit._request_key(p_verifier text) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sha256(convert_to(p_verifier, 'UTF8'))
$$;

-- A request (or an approved request's collection) made again: the lease it issued, if that
-- can still log in; nothing new is created either way.
CREATE OR REPLACE FUNCTION jit._replayed(l jit.leases) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF l.ended_at IS NOT NULL OR l.expires_at <= now() THEN
        RETURN jit._denied(format('this request was answered already, and its role %s has ended',
                                  l.rolname), 'ask again');
    END IF;
    PERFORM jit._audit('replay', l.profile, l.rolname, l.requester, l.reason, l.expires_at,
                       jsonb_build_object('lease_id', l.id));
    RETURN jit._lease_json(l, 'granted') || jsonb_build_object('replayed', true);
END
$$;

-- Create the temporary role for requester `me` (jit.request, or jit.request_status once
-- a request was approved).  The server picks the role name, the grants and the expiry
-- (capped at the profile's max_ttl); the lease clock starts here, at issue.
CREATE OR REPLACE FUNCTION jit._issue(p jit.profiles, me text, my_oid oid, reason text,
                                      wanted interval, p_verifier text, extra jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ttl interval := least(wanted, p.max_ttl);
    name text;
    g text;
    l jit.leases;
    with_opts text := CASE WHEN current_setting('server_version_num')::int >= 160000
                           THEN ' WITH INHERIT TRUE, SET FALSE' ELSE '' END;
BEGIN
    -- the role's name is built here: <jit_><requester>_<random>, at most 63 bytes
    name := 'jit_' || left(regexp_replace(lower(me), '[^a-z0-9_]+', '_', 'g'), 24) || '_'
            || left(replace(gen_random_uuid()::text, '-', ''), 10);
    EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                   'NOBYPASSRLS INHERIT PASSWORD %L VALID UNTIL %L',
                   name, p_verifier, now() + ttl);
    FOREACH g IN ARRAY p.grants || ARRAY['jit_lease'] LOOP
        EXECUTE format('GRANT %I TO %I', g, name) || with_opts;
    END LOOP;
    INSERT INTO jit.leases (rolname, role_oid, profile, requester, requester_oid, reason,
                            client_addr, issued_at, expires_at, max_expires_at, request_key)
    VALUES (name, jit._role_oid(name), p.name, me, my_oid, reason, inet_client_addr(),
            now(), now() + ttl, now() + p.max_ttl, jit._request_key(p_verifier))
    RETURNING * INTO l;
    PERFORM jit._audit('request', p.name, name, me, reason, l.expires_at,
                       jsonb_build_object('grants', to_jsonb(p.grants), 'lease_id', l.id,
                                          'ttl_asked', extract(epoch FROM wanted),
                                          'capped', wanted > ttl) || extra);
    PERFORM jit._doorbell();
    RETURN jit._lease_json(l, 'granted') || jsonb_build_object('capped', wanted > ttl,
        'max_ttl_seconds', extract(epoch FROM p.max_ttl)) || extra;
END
$$;

-- Ask for a temporary role.  p_verifier is a SCRAM-SHA-256 verifier the client computed:
-- the password itself never reaches the server.  The server picks the role name, the grants,
-- the expiry (capped at the profile's max_ttl) and records who asked, from session_user.
-- On a profile with approvers nothing is created yet: the request waits in jit.requests.
CREATE OR REPLACE FUNCTION jit.request(p_profile text, p_ttl interval, p_reason text, p_verifier text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p jit.profiles;
    l jit.leases;
    r jit.requests;
    me text := session_user;
    my_oid oid := jit._role_oid(session_user);
    reason text := coalesce(p_reason, '');
BEGIN
    PERFORM jit._expire_requests();
    IF length(reason) > 1000 OR reason ~ '[[:cntrl:]]' THEN
        RETURN jit._denied('the reason must be at most 1000 characters with no control characters');
    END IF;
    IF p_profile IS NULL OR p_profile !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
        -- not a profile name: nothing of it is written to the audit trail
        PERFORM jit._audit('deny', NULL, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'not a profile name'));
        RETURN jit._denied(format('no profile of that name that %s may request', me),
                           '\jit profiles lists what you may request');
    END IF;
    SELECT * INTO p FROM jit.profiles WHERE jit.profiles.name = p_profile;
    IF NOT FOUND OR NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p.requesters)
       OR NOT pg_has_role(me, p.requesters, 'MEMBER') THEN
        PERFORM jit._audit('deny', p_profile, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'not a requester of this profile'));
        RETURN jit._denied(format('no profile %s that %s may request', p_profile, me),
                           '\jit profiles lists what you may request');
    END IF;
    IF EXISTS (SELECT FROM jit.leases WHERE role_oid = my_oid) THEN
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
    IF coalesce(p_ttl, p.ttl) <= interval '0' THEN
        RETURN jit._denied('the TTL must be positive');
    END IF;
    -- the same call again (its answer was lost on the way back): what it made, once
    SELECT * INTO l FROM jit.leases
     WHERE requester_oid = my_oid AND request_key = jit._request_key(p_verifier);
    IF FOUND THEN
        RETURN jit._replayed(l);
    END IF;
    SELECT * INTO r FROM jit.requests
     WHERE requester_oid = my_oid AND request_key = jit._request_key(p_verifier);
    IF FOUND THEN
        RETURN jit.request_status(r.id);
    END IF;
    -- the audit chain's lock, held to commit, serializes requests: two at once cannot both
    -- pass the count below
    PERFORM jit._hold_audit_chain();
    IF (SELECT count(*) FROM jit.leases WHERE requester_oid = my_oid AND profile = p.name
           AND ended_at IS NULL AND expires_at > now()) >= p.max_live THEN
        PERFORM jit._audit('deny', p.name, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'live lease limit', 'max_live', p.max_live));
        RETURN jit._denied(format('you hold %s live lease%s of profile %s, the most it allows at once',
                                  p.max_live, CASE WHEN p.max_live = 1 THEN '' ELSE 's' END, p.name),
                           'revoke one with \jit revoke in the session that holds it, or let it expire');
    END IF;
    IF p.approvers IS NOT NULL THEN
        RETURN jit._ask_approval(p, me, my_oid, reason, p_ttl, p_verifier);
    END IF;
    RETURN jit._issue(p, me, my_oid, reason, coalesce(p_ttl, p.ttl), p_verifier);
END
$$;

-- Extend a lease, never past its hard limit (issue time + the profile's max_ttl).
CREATE OR REPLACE FUNCTION jit.renew(p_rolname text, p_ttl interval) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit.leases;
    p jit.profiles;
    wanted timestamptz;
    new_exp timestamptz;
BEGIN
    SELECT * INTO l FROM jit.leases WHERE rolname = p_rolname FOR UPDATE;
    IF NOT FOUND OR NOT jit._may_act(l, false) THEN
        RETURN jit._denied(format('no lease %s of yours', p_rolname));
    END IF;
    IF l.ended_at IS NOT NULL OR l.expires_at <= now() THEN
        RETURN jit._denied(format('lease %s has ended', p_rolname)) || '{"status": "ended"}';
    END IF;
    SELECT * INTO p FROM jit.profiles WHERE name = l.profile;
    wanted := now() + least(coalesce(p_ttl, p.ttl, l.expires_at - l.issued_at),
                            coalesce(p.max_ttl, l.max_expires_at - l.issued_at));
    new_exp := least(wanted, l.max_expires_at);
    IF new_exp <= l.expires_at THEN
        IF l.expires_at >= l.max_expires_at THEN
            RETURN jit._lease_json(l, 'max_ttl');
        END IF;
        RETURN jit._lease_json(l, 'unchanged');
    END IF;
    EXECUTE format('ALTER ROLE %I VALID UNTIL %L', l.rolname, new_exp);
    UPDATE jit.leases SET expires_at = new_exp, renewals = renewals + 1 WHERE id = l.id
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
    l jit.leases;
BEGIN
    SELECT * INTO l FROM jit.leases WHERE rolname = p_rolname FOR UPDATE;
    IF NOT FOUND OR NOT jit._may_act(l, true) THEN
        RETURN jit._denied(format('no lease %s of yours', p_rolname));
    END IF;
    IF l.ended_at IS NULL THEN
        PERFORM jit._end(l, CASE WHEN l.expires_at <= now() THEN 'expire' ELSE 'revoke' END);
        SELECT * INTO l FROM jit.leases WHERE id = l.id;
    END IF;
    RETURN jit._lease_json(l, 'revoked');
END
$$;

-- Step two of revoke: end the role's sessions and drop it (or say why it was kept).
CREATE OR REPLACE FUNCTION jit.finish(p_rolname text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit.leases;
    outcome text;
BEGIN
    SELECT * INTO l FROM jit.leases WHERE rolname = p_rolname FOR UPDATE;
    IF NOT FOUND OR NOT jit._may_act(l, true) THEN
        RETURN jit._denied(format('no lease %s of yours', p_rolname));
    END IF;
    IF l.ended_at IS NULL THEN
        RETURN jit._denied(format('lease %s has not ended', p_rolname), 'call jit.revoke first');
    END IF;
    outcome := CASE WHEN l.dropped_at IS NOT NULL THEN 'gone' ELSE jit._finish_safely(l) END;
    SELECT * INTO l FROM jit.leases WHERE id = l.id;
    RETURN jit._lease_json(l, 'finished') || jsonb_build_object('outcome', outcome,
                                                                'drop_error', l.drop_error);
END
$$;

-- The caller's leases (as requester), or the caller's own lease (as a temporary role).
CREATE OR REPLACE FUNCTION jit.my_leases() RETURNS SETOF jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jit._lease_json(l, CASE WHEN l.ended_at IS NULL AND l.expires_at > now()
                                   THEN 'live' ELSE 'ended' END)
      FROM jit.leases l
     WHERE (l.requester_oid = jit._role_oid(session_user) OR l.role_oid = jit._role_oid(session_user))
       AND l.dropped_at IS NULL
     ORDER BY l.id
$$;

-- -- four eyes: requests that wait for approval (002_approvals.sql) ---------------------

CREATE OR REPLACE FUNCTION jit._request_json(r jit.requests, p_status text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'status', p_status, 'state', r.status, 'request_id', r.id, 'profile', r.profile,
        'requester', r.requester, 'reason', r.reason, 'ttl_seconds', extract(epoch FROM r.ttl_asked),
        'approvers', r.approvers, 'needed', r.approvals_needed,
        'approved_by', (SELECT coalesce(jsonb_agg(a.approver ORDER BY a.at), '[]')
                          FROM jit.approvals a WHERE a.request_id = r.id),
        'created_at', extract(epoch FROM r.created_at), 'expires_at', extract(epoch FROM r.expires_at),
        'decided_at', extract(epoch FROM r.decided_at), 'decided_by', r.decided_by,
        'note', r.decision_note, 'lease_id', r.lease_id, 'poll_after', 1,
        'server_now', extract(epoch FROM clock_timestamp()))
$$;

-- A doorbell for whoever waits on a request (the requester's shell, the approvers' toolbars)
-- and for the reaper (the schedule changed).  No payload: the state is in the tables.
CREATE OR REPLACE FUNCTION jit._request_doorbell() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_notify('jit_requests', ''), pg_notify('jit_leases', '')
$$;

-- Close a request: its verifier is forgotten, the step audited.
CREATE OR REPLACE FUNCTION jit._close_request(r jit.requests, p_status text, p_note text,
                                              p_detail jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE jit.requests SET status = p_status, verifier = NULL, decided_at = now(),
           decided_by = CASE WHEN p_status = 'timed_out' THEN NULL ELSE session_user END,
           decision_note = p_note
     WHERE id = r.id;
    PERFORM jit._audit(p_status, r.profile, NULL, r.requester, r.reason, r.expires_at,
                       jsonb_build_object('request_id', r.id, 'note', p_note) || p_detail);
    PERFORM jit._request_doorbell();
END
$$;

-- Time out what was not decided (or, once approved, not collected) in time.  Called at the
-- start of every request function and by the reaper; rows another transaction holds are
-- left for the next call.
CREATE OR REPLACE FUNCTION jit._expire_requests() RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit.requests;
BEGIN
    FOR r IN SELECT * FROM jit.requests WHERE status IN ('pending', 'approved') AND expires_at <= now()
             ORDER BY id FOR UPDATE SKIP LOCKED LOOP
        PERFORM jit._close_request(r, 'timed_out', CASE r.status
            WHEN 'pending' THEN 'not decided within the approval timeout'
            ELSE 'approved but not collected within the approval timeout' END);
        RETURN NEXT r.id;
    END LOOP;
END
$$;

-- jit.request on a profile with approvers: record the request, create nothing.
CREATE OR REPLACE FUNCTION jit._ask_approval(p jit.profiles, me text, my_oid oid, reason text,
                                             p_ttl interval, p_verifier text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit.requests;
BEGIN
    IF (SELECT count(*) FROM jit.requests
         WHERE requester_oid = my_oid AND status IN ('pending', 'approved')) >= 5 THEN
        RETURN jit._denied('you have 5 requests waiting already', 'cancel one first (\jit cancel)');
    END IF;
    INSERT INTO jit.requests (profile, requester, requester_oid, reason, ttl_asked, verifier,
                              approvers, approvals_needed, client_addr, expires_at, request_key)
    VALUES (p.name, me, my_oid, reason, p_ttl, p_verifier, p.approvers, p.approvals,
            inet_client_addr(), now() + p.approval_timeout, jit._request_key(p_verifier))
    RETURNING * INTO r;
    PERFORM jit._audit('pending', p.name, NULL, me, reason, r.expires_at, jsonb_build_object(
        'request_id', r.id, 'approvers', p.approvers, 'approvals', p.approvals,
        'ttl_asked', extract(epoch FROM p_ttl)));
    PERFORM jit._request_doorbell();
    RETURN jit._request_json(r, 'pending');
END
$$;

-- The requester's view of a request.  Once approved, the first call issues the role (from
-- the verifier the request carries) and returns the lease: the clock starts now.  The row
-- lock makes that happen once, however many calls race.
CREATE OR REPLACE FUNCTION jit.request_status(p_id bigint) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit.requests;
    p jit.profiles;
    l jit.leases;
    answer jsonb;
BEGIN
    PERFORM jit._expire_requests();
    SELECT * INTO r FROM jit.requests WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR r.requester_oid IS DISTINCT FROM jit._role_oid(session_user) THEN
        RETURN jit._denied(format('no request %s of yours', p_id));
    END IF;
    IF r.status IN ('pending', 'approved') AND r.expires_at <= now() THEN
        PERFORM jit._close_request(r, 'timed_out', 'not decided within the approval timeout');
        SELECT * INTO r FROM jit.requests WHERE id = p_id;
    END IF;
    IF r.status = 'pending' THEN
        RETURN jit._request_json(r, 'pending');
    ELSIF r.status = 'issued' THEN  -- asked again after the answer was lost: the same lease
        SELECT * INTO l FROM jit.leases WHERE id = r.lease_id;
        IF FOUND AND l.ended_at IS NULL AND l.expires_at > now() THEN
            RETURN jit._replayed(l) || jsonb_build_object('request_id', r.id,
                'approved_by', jit._request_json(r, '')->'approved_by');
        END IF;
        RETURN jit._request_json(r, 'closed');
    ELSIF r.status <> 'approved' THEN
        RETURN jit._request_json(r, 'closed');
    END IF;
    SELECT * INTO p FROM jit.profiles WHERE name = r.profile;
    IF NOT FOUND THEN
        PERFORM jit._close_request(r, 'cancelled', format('profile %s was removed', r.profile));
        SELECT * INTO r FROM jit.requests WHERE id = p_id;
        RETURN jit._request_json(r, 'closed');
    END IF;
    answer := jit._issue(p, r.requester, r.requester_oid, r.reason, coalesce(r.ttl_asked, p.ttl),
                         r.verifier, jsonb_build_object('request_id', r.id,
                             'approved_by', jit._request_json(r, '')->'approved_by'));
    UPDATE jit.requests SET status = 'issued', verifier = NULL, lease_id = (answer->>'lease_id')::bigint
     WHERE id = r.id;
    PERFORM jit._request_doorbell();
    RETURN answer;
END
$$;

-- Withdraw a request (the requester) before its role is issued.
CREATE OR REPLACE FUNCTION jit.cancel(p_id bigint) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit.requests;
BEGIN
    PERFORM jit._expire_requests();
    SELECT * INTO r FROM jit.requests WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR r.requester_oid IS DISTINCT FROM jit._role_oid(session_user) THEN
        RETURN jit._denied(format('no request %s of yours', p_id));
    END IF;
    IF r.status IN ('pending', 'approved') THEN
        PERFORM jit._close_request(r, 'cancelled', 'withdrawn by the requester');
        SELECT * INTO r FROM jit.requests WHERE id = p_id;
    END IF;
    RETURN jit._request_json(r, 'closed');
END
$$;

-- The request an approver may decide, locked; every refusal is one clear error that
-- changes nothing.  The requester never counts, even as a member of the approvers role.
CREATE OR REPLACE FUNCTION jit._decidable(p_id bigint) RETURNS jit.requests
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit.requests;
    my_oid oid := jit._role_oid(session_user);
BEGIN
    SELECT * INTO r FROM jit.requests WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no request %', p_id USING HINT = '\jit pending lists what you may decide';
    END IF;
    IF r.requester_oid = my_oid THEN
        RAISE EXCEPTION 'request % is your own: another member of % must decide it', p_id, r.approvers;
    END IF;
    IF EXISTS (SELECT FROM jit.leases WHERE role_oid = my_oid) THEN
        RAISE EXCEPTION 'a temporary role cannot decide requests' USING HINT = 'use your own login';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.approvers)
       OR NOT pg_has_role(session_user, r.approvers, 'MEMBER') THEN
        RAISE EXCEPTION 'you may not decide request %: you are not a member of %', p_id, r.approvers;
    END IF;
    IF r.status = 'pending' AND r.expires_at <= now() THEN
        RAISE EXCEPTION 'request % has timed out', p_id;
    END IF;
    IF r.status <> 'pending' THEN
        RAISE EXCEPTION 'request % is already %', p_id, replace(r.status, '_', ' ');
    END IF;
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION jit._check_note(note text, what text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF length(coalesce(note, '')) > 1000 OR note ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'the % must be at most 1000 characters with no control characters', what;
    END IF;
    RETURN coalesce(note, '');
END
$$;

-- One approval; the request becomes 'approved' when it has as many as its profile asked.
CREATE OR REPLACE FUNCTION jit.approve(p_id bigint, p_comment text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit.requests;
    comment text := jit._check_note(p_comment, 'comment');
    got int;
BEGIN
    PERFORM jit._expire_requests();
    r := jit._decidable(p_id);
    IF EXISTS (SELECT FROM jit.approvals WHERE request_id = r.id
                AND approver_oid = jit._role_oid(session_user)) THEN
        RAISE EXCEPTION 'you have already approved request %', p_id
            USING HINT = format('it needs %s approvals from distinct members of %s',
                                r.approvals_needed, r.approvers);
    END IF;
    INSERT INTO jit.approvals (request_id, approver, approver_oid, comment)
    VALUES (r.id, session_user, jit._role_oid(session_user), comment);
    got := (SELECT count(*) FROM jit.approvals WHERE request_id = r.id);
    PERFORM jit._audit('approve', r.profile, NULL, r.requester, r.reason, NULL, jsonb_build_object(
        'request_id', r.id, 'approver', session_user, 'comment', comment,
        'approvals', got, 'needed', r.approvals_needed));
    IF got >= r.approvals_needed THEN
        UPDATE jit.requests SET status = 'approved', decided_at = now(), decided_by = session_user,
               decision_note = comment,
               expires_at = now() + coalesce((SELECT approval_timeout FROM jit.profiles
                                              WHERE name = r.profile), interval '1 hour')
         WHERE id = r.id RETURNING * INTO r;
        PERFORM jit._audit('approved', r.profile, NULL, r.requester, r.reason, NULL,
            jsonb_build_object('request_id', r.id, 'approver', session_user, 'comment', comment,
                               'approved_by', jit._request_json(r, '')->'approved_by'));
    END IF;
    PERFORM jit._request_doorbell();
    SELECT * INTO r FROM jit.requests WHERE id = r.id;
    RETURN jit._request_json(r, r.status);
END
$$;

-- Refuse a request, with a reason the requester will read.
CREATE OR REPLACE FUNCTION jit.deny(p_id bigint, p_reason text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit.requests;
    why text := jit._check_note(p_reason, 'reason');
BEGIN
    IF btrim(why) = '' THEN
        RAISE EXCEPTION 'a denial needs a reason' USING HINT = '--reason "..."';
    END IF;
    PERFORM jit._expire_requests();
    r := jit._decidable(p_id);
    PERFORM jit._close_request(r, 'denied', why, jsonb_build_object('approver', session_user));
    SELECT * INTO r FROM jit.requests WHERE id = r.id;
    RETURN jit._request_json(r, 'closed');
END
$$;

-- What the caller may decide now: pending, not their own, not yet approved by them.
CREATE OR REPLACE FUNCTION jit.pending_for_me()
RETURNS TABLE (id bigint, requester text, profile text, ttl_seconds double precision, reason text,
               created_at timestamptz, expires_at timestamptz, approvals integer, needed integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    my_oid oid := jit._role_oid(session_user);
BEGIN
    PERFORM jit._expire_requests();
    IF EXISTS (SELECT FROM jit.leases l WHERE l.role_oid = my_oid) THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT r.id, r.requester, r.profile,
           extract(epoch FROM coalesce(r.ttl_asked, p.ttl))::float8, r.reason, r.created_at,
           r.expires_at, (SELECT count(*)::int FROM jit.approvals a WHERE a.request_id = r.id),
           r.approvals_needed
      FROM jit.requests r LEFT JOIN jit.profiles p ON p.name = r.profile
     WHERE r.status = 'pending' AND r.expires_at > now() AND r.requester_oid <> my_oid
       AND EXISTS (SELECT FROM pg_roles WHERE rolname = r.approvers)
       AND pg_has_role(session_user, r.approvers, 'MEMBER')
       AND NOT EXISTS (SELECT FROM jit.approvals a WHERE a.request_id = r.id AND a.approver_oid = my_oid)
     ORDER BY r.id;
END
$$;

-- The caller's own requests: the open ones and those decided in the last day.
CREATE OR REPLACE FUNCTION jit.my_requests() RETURNS SETOF jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._expire_requests();
    RETURN QUERY SELECT jit._request_json(r, CASE WHEN r.status = 'pending' THEN 'pending' ELSE 'closed' END)
      FROM jit.requests r
     WHERE r.requester_oid = jit._role_oid(session_user)
       AND (r.status IN ('pending', 'approved') OR r.decided_at > now() - interval '1 day')
     ORDER BY r.id;
END
$$;

-- For the reaper: time out undecided requests.
CREATE OR REPLACE FUNCTION jit.expire_requests() RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._require_admin();
    RETURN QUERY SELECT jit._expire_requests();
END
$$;

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

-- Create or change a profile.  Every role is checked here, server-side, whoever calls.
-- A NULL keeps the current value; p_approvers '' means "no approval needed".
CREATE OR REPLACE FUNCTION jit.profile_set(
    p_name text, p_grants text[], p_ttl interval, p_max_ttl interval, p_requesters text,
    p_reason_required boolean, p_owner text, p_description text,
    p_approvers text, p_approvals integer, p_approval_timeout interval, p_max_live integer
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g text;
    problem text;
    old jit.profiles;
    fn text;
BEGIN
    PERFORM jit._require_admin();
    SELECT * INTO old FROM jit.profiles WHERE name = p_name;
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
        IF NOT pg_has_role('jit_owner', p_owner, 'USAGE') THEN
            RAISE EXCEPTION 'profile %: jit_owner cannot hand objects to %', p_name, p_owner
                USING HINT = format('as a superuser run GRANT %I TO jit_owner', p_owner);
        END IF;
    END IF;
    INSERT INTO jit.profiles AS t (name, grants, ttl, max_ttl, requesters, reason_required, owner,
                                   description, updated_at, updated_by, approvers, approvals,
                                   approval_timeout, max_live)
    VALUES (p_name, p_grants, p_ttl, p_max_ttl, p_requesters, p_reason_required, p_owner,
            p_description, now(), session_user, p_approvers, p_approvals, p_approval_timeout,
            p_max_live)
    ON CONFLICT (name) DO UPDATE SET grants = excluded.grants, ttl = excluded.ttl,
        max_ttl = excluded.max_ttl, requesters = excluded.requesters,
        reason_required = excluded.reason_required, owner = excluded.owner,
        description = excluded.description, updated_at = now(), updated_by = session_user,
        approvers = excluded.approvers, approvals = excluded.approvals,
        approval_timeout = excluded.approval_timeout, max_live = excluded.max_live;
    -- the requesters role may call the requester functions (it can still ask only for
    -- the profiles whose requesters it is a member of)
    EXECUTE format('GRANT USAGE ON SCHEMA jit TO %I', p_requesters);
    FOREACH fn IN ARRAY ARRAY['jit.request(text, interval, text, text)', 'jit.renew(text, interval)',
                              'jit.revoke(text)', 'jit.finish(text)', 'jit.my_leases()',
                              'jit.my_profiles()', 'jit.request_status(bigint)', 'jit.cancel(bigint)',
                              'jit.my_requests()', 'jit.pending_for_me()', 'jit.approve(bigint, text)',
                              'jit.deny(bigint, text)'] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, p_requesters);
    END LOOP;
    -- the approvers role may decide (the server still checks membership per request)
    IF p_approvers IS NOT NULL THEN
        EXECUTE format('GRANT USAGE ON SCHEMA jit TO %I', p_approvers);
        FOREACH fn IN ARRAY ARRAY['jit.approve(bigint, text)', 'jit.deny(bigint, text)',
                                  'jit.pending_for_me()'] LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, p_approvers);
        END LOOP;
    END IF;
    PERFORM jit._audit('profile_set', p_name, NULL, NULL, NULL, NULL, jsonb_build_object(
        'grants', to_jsonb(p_grants), 'ttl', extract(epoch FROM p_ttl),
        'max_ttl', extract(epoch FROM p_max_ttl), 'requesters', p_requesters,
        'reason_required', p_reason_required, 'owner', p_owner, 'approvers', p_approvers,
        'approvals', p_approvals, 'approval_timeout', extract(epoch FROM p_approval_timeout),
        'max_live', p_max_live));
    RETURN (SELECT to_jsonb(t) FROM jit.profiles t WHERE name = p_name);
END
$$;

CREATE OR REPLACE FUNCTION jit.profile_drop(p_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._require_admin();
    DELETE FROM jit.profiles WHERE name = p_name;
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
-- a lease holding its own pg_authid row does (ALTER ROLE itself PASSWORD, left open), which
-- made ALTER ROLE NOLOGIN wait for ever.  'unended' and 'ended' (after a pass): the leases
-- whose rows a transaction left open holds (BEGIN; SELECT jit.renew(...), by the lease or its
-- requester), which SKIP LOCKED passed over while their sessions lived on.
CREATE OR REPLACE FUNCTION jit._end_overdue_sessions(p_which text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_terminate_backend(a.pid)
       FROM pg_stat_activity a JOIN jit.leases l ON l.role_oid = a.usesysid
      WHERE l.dropped_at IS NULL AND a.pid <> pg_backend_pid()
        AND CASE p_which
            WHEN 'writing' THEN (l.ended_at IS NOT NULL OR l.expires_at <= now())
                                AND a.backend_xid IS NOT NULL
            WHEN 'unended' THEN l.ended_at IS NULL AND l.expires_at <= now()
            WHEN 'ended' THEN l.ended_at IS NOT NULL
            END;
END
$$;

-- Step one of the reaper: end (NOLOGIN, audited) every lease past its expiry.
CREATE OR REPLACE FUNCTION jit.expire_due() RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit.leases;
BEGIN
    PERFORM jit._require_admin();
    PERFORM jit._end_overdue_sessions('writing');
    FOR l IN SELECT * FROM jit.leases WHERE ended_at IS NULL AND expires_at <= now()
             ORDER BY expires_at FOR UPDATE SKIP LOCKED LOOP
        PERFORM jit._end(l, 'expire');
        RETURN NEXT l.rolname;
    END LOOP;
    PERFORM jit._end_overdue_sessions('unended');
END
$$;

-- Step two of the reaper (its own transaction): end sessions and drop every ended role.
-- Roles kept because of what they own are retried at most once a minute.
CREATE OR REPLACE FUNCTION jit.finish_ended()
RETURNS TABLE (rolname text, outcome text, sessions integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit.leases;
BEGIN
    PERFORM jit._require_admin();
    FOR l IN SELECT * FROM jit.leases WHERE ended_at IS NOT NULL AND dropped_at IS NULL
               AND (drop_error IS NULL OR drop_tried_at < now() - interval '1 minute')
             ORDER BY id FOR UPDATE SKIP LOCKED LOOP
        rolname := l.rolname;
        sessions := (SELECT count(*) FROM pg_stat_activity WHERE usesysid = l.role_oid)::int;
        outcome := jit._finish_safely(l);
        RETURN NEXT;
    END LOOP;
    PERFORM jit._end_overdue_sessions('ended');
END
$$;

-- When the reaper must wake next (NULL: no live lease).
CREATE OR REPLACE FUNCTION jit.next_expiry() RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT least((SELECT min(expires_at) FROM jit.leases WHERE ended_at IS NULL),
                 (SELECT min(expires_at) FROM jit.requests WHERE status IN ('pending', 'approved')))
$$;

-- Walk the chain: the first row whose link or hash does not match, or a cut-off tail.
CREATE OR REPLACE FUNCTION jit.audit_verify()
RETURNS TABLE (rows_checked bigint, bad_id bigint, problem text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a jit.audit;
    prev bytea;
    last_id bigint;
    head jit.audit_head;
BEGIN
    PERFORM jit._require_admin();
    rows_checked := 0;
    FOR a IN SELECT * FROM jit.audit ORDER BY id LOOP
        rows_checked := rows_checked + 1;
        IF a.prev_hash IS DISTINCT FROM prev THEN
            bad_id := a.id;
            problem := CASE WHEN prev IS NULL THEN 'the first row links to a row that is not there'
                            ELSE 'links to a different previous row: a row before it was deleted or changed' END;
            RETURN NEXT;
            RETURN;
        END IF;
        IF jit._audit_digest(a) <> a.hash THEN
            bad_id := a.id;
            problem := 'its contents do not match its hash: the row was edited';
            RETURN NEXT;
            RETURN;
        END IF;
        prev := a.hash;
        last_id := a.id;
    END LOOP;
    SELECT * INTO head FROM jit.audit_head;
    IF FOUND AND (head.last_id IS DISTINCT FROM last_id OR head.hash IS DISTINCT FROM prev) THEN
        bad_id := head.last_id;
        problem := 'the newest rows are missing: the chain ends before the recorded head';
        RETURN NEXT;
        RETURN;
    END IF;
    bad_id := NULL;
    problem := NULL;
    RETURN NEXT;
END
$$;

-- -- who may call what -----------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA jit FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jit.request(text, interval, text, text), jit.my_profiles(),
    jit.request_status(bigint), jit.cancel(bigint), jit.my_requests() TO jit_requester;
-- pending_for_me lists only what the caller may decide, and approve/deny check membership of
-- each request's approvers role: callable by any requester, so a non-member gets a clear no
GRANT EXECUTE ON FUNCTION jit.pending_for_me(), jit.approve(bigint, text), jit.deny(bigint, text)
    TO jit_requester, jit_admin;
GRANT EXECUTE ON FUNCTION jit.renew(text, interval), jit.revoke(text), jit.finish(text),
    jit.my_leases() TO jit_requester, jit_lease;
GRANT EXECUTE ON FUNCTION jit.revoke(text), jit.finish(text), jit.my_leases(),
    jit.profile_set(text, text[], interval, interval, text, boolean, text, text),
    jit.profile_set(text, text[], interval, interval, text, boolean, text, text, text, integer, interval),
    jit.profile_set(text, text[], interval, interval, text, boolean, text, text, text, integer, interval,
                    integer),
    jit.profile_drop(text), jit.expire_due(), jit.finish_ended(), jit.next_expiry(),
    jit.expire_requests(),
    jit.audit_verify() TO jit_admin;

RESET ROLE;
