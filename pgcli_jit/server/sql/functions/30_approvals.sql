-- pgcli-jit server-side broker, the functions: Four eyes: requests that wait for approval, and deciding them.
-- Re-applied by every `setup --apply` (CREATE OR REPLACE), after the numbered schema files,
-- with the other files of this folder in name order.  Every function is SECURITY DEFINER with
-- a fixed search_path, builds every identifier with format('%I'), and takes the caller's
-- identity from session_user: what PostgreSQL authenticated, never a name the client
-- supplies.  Functions that refuse on purpose return {"status": "denied", ...} instead of
-- raising, so the refusal's audit row commits.

SET LOCAL ROLE jit_owner;

-- -- four eyes: requests that wait for approval (002_approvals.sql) ---------------------

CREATE OR REPLACE FUNCTION jit._request_json(r jit_data.requests, p_status text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'status', p_status, 'state', r.status, 'request_id', r.id, 'profile', r.profile,
        'requester', r.requester, 'reason', r.reason, 'ttl_seconds', extract(epoch FROM r.ttl_asked),
        'approvers', r.approvers, 'needed', r.approvals_needed,
        'approved_by', (SELECT coalesce(jsonb_agg(a.approver ORDER BY a.at), '[]')
                          FROM jit_data.approvals a WHERE a.request_id = r.id),
        'created_at', extract(epoch FROM r.created_at), 'expires_at', extract(epoch FROM r.expires_at),
        'decided_at', extract(epoch FROM r.decided_at), 'decided_by', r.decided_by,
        'note', r.decision_note, 'lease_id', r.lease_id, 'poll_after', 1,
        'server_now', extract(epoch FROM clock_timestamp()))
$$;

-- A doorbell for whoever waits on a request (the requester's shell, the approvers' toolbars)
-- and for the reaper (the schedule changed).  No payload: the state is in the tables.
CREATE OR REPLACE FUNCTION jit._request_doorbell() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF jit._may_ring() THEN
        PERFORM pg_notify('jit_requests', ''), pg_notify('jit_leases', '');
    END IF;
END
$$;

-- Close a request: its verifier is forgotten, the step audited.
CREATE OR REPLACE FUNCTION jit._close_request(r jit_data.requests, p_status text, p_note text,
                                              p_detail jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE jit_data.requests SET status = p_status, verifier = NULL, decided_at = jit._clock(),
           decided_by = CASE WHEN p_status = 'timed_out' THEN NULL ELSE session_user END,
           decision_note = p_note
     WHERE id = r.id;
    PERFORM jit._audit(p_status, r.profile, NULL, r.requester, r.reason, r.expires_at,
                       jsonb_build_object('request_id', r.id, 'note', p_note) || p_detail);
    PERFORM jit._request_doorbell();
END
$$;

-- A break-glass lease supersedes the requester's own request for the same profile that waits
-- (pending, or approved and not yet collected): in an emergency nobody wants the slow path to
-- land later as a second lease.  Each is closed as 'cancelled' (the audit row names the
-- break-glass lease), in the transaction that issues the lease: refused break-glass withdraws
-- nothing.  The requester's row is held already (jit._request), then each request's, in the
-- order request_status takes them.  Returns {"withdrawn": [ids]} for the answer.
-- Called by jit._break_glass (functions/80_notify.sql).
CREATE OR REPLACE FUNCTION jit._withdraw_for_break_glass(p_profile text, my_oid oid, p_lease_id bigint)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit_data.requests;
    ids bigint[] := '{}';
BEGIN
    FOR r IN SELECT * FROM jit_data.requests
              WHERE requester_oid = my_oid AND profile = p_profile AND status IN ('pending', 'approved')
             ORDER BY id FOR NO KEY UPDATE LOOP
        PERFORM jit._close_request(r, 'cancelled', 'withdrawn for break-glass',
                                   jsonb_build_object('break_glass_lease_id', p_lease_id));
        ids := ids || r.id;
    END LOOP;
    RETURN jsonb_build_object('withdrawn', to_jsonb(ids));
END
$$;

-- Time out what was not decided (or, once approved, not collected) in time: a requester's
-- own requests at the start of their calls (never another's: a transaction of theirs left
-- open would hold those rows), every request for the reaper (p_requester NULL).  Rows another
-- transaction holds are left for the next call.
CREATE OR REPLACE FUNCTION jit._expire_requests(p_requester oid) RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit_data.requests;
BEGIN
    FOR r IN SELECT * FROM jit_data.requests
              WHERE status IN ('pending', 'approved') AND expires_at <= jit._clock()
                AND (p_requester IS NULL OR requester_oid = p_requester)
             ORDER BY id FOR NO KEY UPDATE SKIP LOCKED LOOP
        PERFORM jit._close_request(r, 'timed_out', CASE r.status
            WHEN 'pending' THEN 'not decided within the approval timeout'
            ELSE 'approved but not collected within the approval timeout' END);
        RETURN NEXT r.id;
    END LOOP;
END
$$;

-- jit.request on a profile with approvers: record the request, create nothing.
CREATE OR REPLACE FUNCTION jit._ask_approval(p jit_data.profiles, me text, my_oid oid, reason text,
                                             p_ttl interval, p_verifier text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit_data.requests;
BEGIN
    IF (SELECT count(*) FROM jit_data.requests
         WHERE requester_oid = my_oid AND status IN ('pending', 'approved')) >= 5 THEN
        RETURN jit._denied('you have 5 requests waiting already', 'cancel one first (\jit cancel)');
    END IF;
    INSERT INTO jit_data.requests (profile, requester, requester_oid, reason, ttl_asked, verifier,
                              approvers, approvals_needed, client_addr, expires_at, request_key)
    VALUES (p.name, me, my_oid, reason, p_ttl, p_verifier, p.approvers, p.approvals,
            inet_client_addr(), jit._clock() + jit._secs(p.approval_timeout), jit._request_key(p_verifier))
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
    r jit_data.requests;
    p jit_data.profiles;
    l jit_data.leases;
    answer jsonb;
BEGIN
    PERFORM jit._guard();
    -- the requester's row first, as jit.request takes it (then this request's): never the
    -- other order
    PERFORM jit._hold_requester(jit._role_oid(session_user));
    PERFORM jit._expire_requests(jit._role_oid(session_user));
    -- the caller's own request or none: another's row is never locked (nor timed)
    SELECT * INTO r FROM jit_data.requests
     WHERE id = p_id AND requester_oid = jit._role_oid(session_user) FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN jit._denied(format('no request %s of yours', p_id));
    END IF;
    IF r.status IN ('pending', 'approved') AND r.expires_at <= jit._clock() THEN
        PERFORM jit._close_request(r, 'timed_out', 'not decided within the approval timeout');
        SELECT * INTO r FROM jit_data.requests WHERE id = p_id;
    END IF;
    IF r.status = 'pending' THEN
        RETURN jit._request_json(r, 'pending');
    ELSIF r.status = 'issued' THEN  -- asked again after the answer was lost: the same lease
        SELECT * INTO l FROM jit_data.leases WHERE id = r.lease_id;
        IF FOUND AND l.ended_at IS NULL AND l.expires_at > jit._clock() THEN
            RETURN jit._replayed(l) || jsonb_build_object('request_id', r.id,
                'approved_by', jit._request_json(r, '')->'approved_by');
        END IF;
        RETURN jit._request_json(r, 'closed');
    ELSIF r.status <> 'approved' THEN
        RETURN jit._request_json(r, 'closed');
    END IF;
    SELECT * INTO p FROM jit_data.profiles WHERE name = r.profile;
    IF NOT FOUND THEN
        PERFORM jit._close_request(r, 'cancelled', format('profile %s was removed', r.profile));
        SELECT * INTO r FROM jit_data.requests WHERE id = p_id;
        RETURN jit._request_json(r, 'closed');
    END IF;
    -- approval took time: what jit.request checked is checked again when the role is made
    -- (the requester may have left the requesters role; the cap counts leases issued since)
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p.requesters)
       OR NOT pg_has_role(r.requester_oid, p.requesters, 'MEMBER') THEN
        PERFORM jit._close_request(r, 'cancelled',
                                   format('%s is no longer a requester of profile %s', r.requester, p.name));
        SELECT * INTO r FROM jit_data.requests WHERE id = p_id;
        RETURN jit._request_json(r, 'closed');
    END IF;
    IF jit._at_cap(p, r.requester_oid) THEN  -- not closed: it may be collected once one ends
        RETURN jit._denied(jit._cap_message(p), jit._cap_hint());
    END IF;
    answer := jit._issue(p, r.requester, r.requester_oid, r.reason, coalesce(r.ttl_asked, p.ttl),
                         r.verifier, jsonb_build_object('request_id', r.id,
                             'approved_by', jit._request_json(r, '')->'approved_by'));
    UPDATE jit_data.requests SET status = 'issued', verifier = NULL, lease_id = (answer->>'lease_id')::bigint
     WHERE id = r.id;
    PERFORM jit._request_doorbell();
    RETURN answer;
END
$$;

-- Withdraw a request (the requester) before its role is issued.
CREATE OR REPLACE FUNCTION jit.cancel(p_id bigint) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit_data.requests;
BEGIN
    PERFORM jit._guard();
    PERFORM jit._expire_requests(jit._role_oid(session_user));
    -- the caller's own request or none: another's row is never locked (nor timed)
    SELECT * INTO r FROM jit_data.requests
     WHERE id = p_id AND requester_oid = jit._role_oid(session_user) FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN jit._denied(format('no request %s of yours', p_id));
    END IF;
    IF r.status IN ('pending', 'approved') THEN
        PERFORM jit._close_request(r, 'cancelled', 'withdrawn by the requester');
        SELECT * INTO r FROM jit_data.requests WHERE id = p_id;
    END IF;
    RETURN jit._request_json(r, 'closed');
END
$$;

-- The request an approver may decide, locked; every refusal is one clear error that
-- changes nothing.  The requester never counts, even as a member of the approvers role.
CREATE OR REPLACE FUNCTION jit._decidable(p_id bigint) RETURNS jit_data.requests
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit_data.requests;
    my_oid oid := jit._role_oid(session_user);
BEGIN
    IF EXISTS (SELECT FROM jit_data.leases WHERE role_oid = my_oid) THEN
        RAISE EXCEPTION 'a temporary role cannot decide requests' USING HINT = 'use your own login';
    END IF;
    -- a request the caller may not decide is not there, as one that does not exist: the
    -- answer tells nobody which ids exist or which role approves them
    SELECT * INTO r FROM jit_data.requests WHERE id = p_id;
    IF NOT FOUND OR (r.requester_oid <> my_oid
                     AND (NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.approvers)
                          OR NOT pg_has_role(session_user, r.approvers, 'MEMBER'))) THEN
        RAISE EXCEPTION 'no request % that you may decide', p_id
            USING HINT = '\jit pending lists what you may decide';
    END IF;
    IF r.requester_oid = my_oid THEN
        RAISE EXCEPTION 'request % is your own: another member of % must decide it', p_id, r.approvers;
    END IF;
    SELECT * INTO r FROM jit_data.requests WHERE id = p_id FOR UPDATE;
    IF r.status = 'pending' AND r.expires_at <= jit._clock() THEN
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
    IF length(coalesce(note, '')) > 1000 OR jit._unsafe_text(note) THEN
        RAISE EXCEPTION 'the % must be at most 1000 characters with no control characters', what;
    END IF;
    RETURN coalesce(note, '');
END
$$;

-- One approval; the request becomes 'approved' when it has as many as its profile asked.
CREATE OR REPLACE FUNCTION jit.approve(p_id bigint, p_comment text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit_data.requests;
    comment text := jit._check_note(p_comment, 'comment');
    got int;
BEGIN
    PERFORM jit._guard();
    r := jit._decidable(p_id);
    IF EXISTS (SELECT FROM jit_data.approvals WHERE request_id = r.id
                AND approver_oid = jit._role_oid(session_user)) THEN
        RAISE EXCEPTION 'you have already approved request %', p_id
            USING HINT = format('it needs %s approvals from distinct members of %s',
                                r.approvals_needed, r.approvers);
    END IF;
    INSERT INTO jit_data.approvals (request_id, approver, approver_oid, comment)
    VALUES (r.id, session_user, jit._role_oid(session_user), comment);
    got := (SELECT count(*) FROM jit_data.approvals WHERE request_id = r.id);
    PERFORM jit._audit('approve', r.profile, NULL, r.requester, r.reason, NULL, jsonb_build_object(
        'request_id', r.id, 'approver', session_user, 'comment', comment,
        'approvals', got, 'needed', r.approvals_needed));
    IF got >= r.approvals_needed THEN
        UPDATE jit_data.requests SET status = 'approved', decided_at = jit._clock(), decided_by = session_user,
               decision_note = comment,
               expires_at = jit._clock() + coalesce((SELECT approval_timeout FROM jit_data.profiles
                                              WHERE name = r.profile), interval '1 hour')
         WHERE id = r.id RETURNING * INTO r;
        PERFORM jit._audit('approved', r.profile, NULL, r.requester, r.reason, NULL,
            jsonb_build_object('request_id', r.id, 'approver', session_user, 'comment', comment,
                               'approved_by', jit._request_json(r, '')->'approved_by'));
    END IF;
    PERFORM jit._request_doorbell();
    SELECT * INTO r FROM jit_data.requests WHERE id = r.id;
    RETURN jit._request_json(r, r.status);
END
$$;

-- Refuse a request, with a reason the requester will read.
CREATE OR REPLACE FUNCTION jit.deny(p_id bigint, p_reason text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit_data.requests;
    why text := jit._check_note(p_reason, 'reason');
BEGIN
    PERFORM jit._guard();
    IF btrim(why) = '' THEN
        RAISE EXCEPTION 'a denial needs a reason' USING HINT = '--reason "..."';
    END IF;
    r := jit._decidable(p_id);
    PERFORM jit._close_request(r, 'denied', why, jsonb_build_object('approver', session_user));
    SELECT * INTO r FROM jit_data.requests WHERE id = r.id;
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
    IF EXISTS (SELECT FROM jit_data.leases l WHERE l.role_oid = my_oid) THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT r.id, r.requester, r.profile,
           extract(epoch FROM coalesce(r.ttl_asked, p.ttl))::float8, r.reason, r.created_at,
           r.expires_at, (SELECT count(*)::int FROM jit_data.approvals a WHERE a.request_id = r.id),
           r.approvals_needed
      FROM jit_data.requests r LEFT JOIN jit_data.profiles p ON p.name = r.profile
     WHERE r.status = 'pending' AND r.expires_at > jit._clock() AND r.requester_oid <> my_oid
       AND EXISTS (SELECT FROM pg_roles WHERE rolname = r.approvers)
       AND pg_has_role(session_user, r.approvers, 'MEMBER')
       AND NOT EXISTS (SELECT FROM jit_data.approvals a WHERE a.request_id = r.id AND a.approver_oid = my_oid)
     ORDER BY r.id;
END
$$;

-- Whether the caller approves some profile's requests here (a member of its approvers role):
-- only then does the caller's shell keep a connection listening for new requests.  It says
-- nothing the caller cannot read in pg_auth_members already.
CREATE OR REPLACE FUNCTION jit.approves_any() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT EXISTS (SELECT FROM jit_data.leases l WHERE l.role_oid = jit._role_oid(session_user))
       AND EXISTS (SELECT FROM jit_data.profiles p
                    WHERE p.approvers IS NOT NULL
                      AND EXISTS (SELECT FROM pg_roles WHERE rolname = p.approvers)
                      AND pg_has_role(session_user, p.approvers, 'MEMBER'))
$$;

-- Break-glass uses the caller should hear of now: live leases taken with break-glass on a
-- profile whose approvers role the caller is a member of, never the caller's own.  The shell
-- of an approver reads it when the doorbell rings (jit._break_glass rings it) and says each
-- use once.  A temporary role, and a login that approves none of those profiles, learn
-- nothing: not that a use happened, nor on which profile.
CREATE OR REPLACE FUNCTION jit.break_glass_for_me()
RETURNS TABLE (lease_id bigint, requester text, profile text, reason text, issued_at timestamptz,
               expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    my_oid oid := jit._role_oid(session_user);
BEGIN
    IF my_oid IS NULL OR EXISTS (SELECT FROM jit_data.leases l WHERE l.role_oid = my_oid) THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT l.id, l.requester, l.profile, l.reason, l.issued_at, l.expires_at
      FROM jit_data.leases l JOIN jit_data.profiles p ON p.name = l.profile
     WHERE l.break_glass AND l.ended_at IS NULL AND l.expires_at > jit._clock()
       AND l.requester_oid <> my_oid AND l.dbid = jit._mydb()
       AND p.approvers IS NOT NULL AND EXISTS (SELECT FROM pg_roles WHERE rolname = p.approvers)
       AND pg_has_role(session_user, p.approvers, 'MEMBER')
     ORDER BY l.id
     LIMIT 100;
END
$$;

-- The caller's own requests: the open ones and those decided in the last day.
CREATE OR REPLACE FUNCTION jit.my_requests() RETURNS SETOF jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._guard();
    PERFORM jit._expire_requests(jit._role_oid(session_user));
    RETURN QUERY SELECT jit._request_json(r, CASE WHEN r.status = 'pending' THEN 'pending' ELSE 'closed' END)
      FROM jit_data.requests r
     WHERE r.requester_oid = jit._role_oid(session_user)
       AND (r.status IN ('pending', 'approved') OR r.decided_at > jit._clock() - interval '1 day')
     ORDER BY r.id;
END
$$;

-- For the reaper: time out undecided requests.
CREATE OR REPLACE FUNCTION jit.expire_requests() RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._require_admin();
    RETURN QUERY SELECT jit._expire_requests(NULL);
END
$$;

-- jit.break_glass_for_me() goes with jit.pending_for_me(): whoever may list what waits on them
-- may hear of a break-glass use on the same profiles (as 90_privileges.sql and profile_set grant
-- pending_for_me; this carries the grant to the roles given it before break_glass_for_me existed)
REVOKE EXECUTE ON FUNCTION jit.break_glass_for_me() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jit.break_glass_for_me() TO jit_requester, jit_admin;
DO $glass$
DECLARE
    r regrole;
BEGIN
    FOR r IN SELECT g.grantee FROM pg_proc f, aclexplode(f.proacl) g
              WHERE f.oid = 'jit.pending_for_me()'::regprocedure AND g.privilege_type = 'EXECUTE'
                AND g.grantee NOT IN (0, f.proowner) LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION jit.break_glass_for_me() TO %s', r);
    END LOOP;
END
$glass$;

RESET ROLE;
