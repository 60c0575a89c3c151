-- pgcli-jit server-side broker, the functions: Notifiers, on-call auto-approval and break-glass.
-- Re-applied by every `setup --apply` (CREATE OR REPLACE), after the numbered schema files,
-- with the other files of this folder in name order.  Every function is SECURITY DEFINER with
-- a fixed search_path and takes the caller's identity from session_user.
--
-- A notifier (`pgcli-jit-admin notify --watch`, an operator login) reads the chained audit rows
-- after its cursor (statements.NOTIFY_EVENTS: operators read jit_data.audit), posts the ones
-- about requests, and advances its cursor here after each delivery.  The chain's order is the
-- order the chainer found rows committed, so a row committed late is never behind the cursor.

SET LOCAL ROLE jit_owner;

-- Where notifier p_name stands: the seq of the last audit row it delivered; NULL if it never ran.
CREATE OR REPLACE FUNCTION jit.notify_cursor(p_name text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._require_admin();
    RETURN (SELECT c.last_seq FROM jit_data.notify_cursors c WHERE c.name = p_name);
END
$$;

-- Move notifier p_name's cursor to p_seq; never backwards (two notifiers of one name that race
-- post a row twice at worst, and never lose one).  Returns where the cursor stands.
CREATE OR REPLACE FUNCTION jit.notify_advance(p_name text, p_seq bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    got bigint;
BEGIN
    PERFORM jit._require_admin();
    IF p_name IS NULL OR p_name !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'a notifier name is 1-63 letters, digits, "_", "." or "-"';
    END IF;
    IF p_seq IS NULL OR p_seq < 0 THEN
        RAISE EXCEPTION 'a cursor is an audit chain position (0 or more)';
    END IF;
    INSERT INTO jit_data.notify_cursors AS c (name, last_seq) VALUES (p_name, p_seq)
        ON CONFLICT (name) DO UPDATE
           SET last_seq = greatest(c.last_seq, excluded.last_seq), updated_at = now(),
               updated_by = session_user
    RETURNING c.last_seq INTO got;
    RETURN got;
END
$$;

-- -- on-call auto-approval and break-glass (010_approval_rules.sql) -------------------------

-- Whether requester my_oid skips profile p's approval: a member of its auto_approve role now,
-- at request time (leaving the role ends the privilege).
CREATE OR REPLACE FUNCTION jit._auto_approves(p jit_data.profiles, my_oid oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.auto_approve IS NOT NULL
       AND EXISTS (SELECT FROM pg_roles WHERE rolname = p.auto_approve)
       AND pg_has_role(my_oid, p.auto_approve, 'MEMBER')
$$;

-- jit.request from a member of the profile's auto_approve role: issued at once, the rule
-- that allowed it audited, the approvers' doorbell rung (the notifier posts it).
CREATE OR REPLACE FUNCTION jit._auto_approve(p jit_data.profiles, me text, my_oid oid, reason text,
                                             p_ttl interval, p_verifier text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    answer jsonb;
BEGIN
    answer := jit._issue(p, me, my_oid, reason, p_ttl, p_verifier,
                         jsonb_build_object('auto_approved_by', p.auto_approve));
    IF answer->>'status' = 'granted' THEN
        PERFORM jit._audit('auto_approved', p.name, answer->>'rolname', me, reason,
                           to_timestamp((answer->>'expires_at')::float8),
                           jsonb_build_object('rule', p.auto_approve, 'approvers', p.approvers,
                                              'lease_id', answer->'lease_id'));
        PERFORM jit._request_doorbell();
    END IF;
    RETURN answer;
END
$$;

-- jit.request_break_glass: on a profile that allows it, with a reason, at most
-- break_glass_per_day times per requester in 24 hours, issued at once for at most
-- break_glass_max_ttl (renewals included), audited 'break_glass', the approvers' doorbell rung.
-- Every refusal is audited too: an attempt on a profile that does not allow it is news.
-- Granted, it withdraws the requester's own waiting request for the profile
-- (jit._withdraw_for_break_glass, functions/30_approvals.sql): the answer lists them.
CREATE OR REPLACE FUNCTION jit._break_glass(p jit_data.profiles, me text, my_oid oid, reason text,
                                            p_ttl interval, p_verifier text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    used integer;
    answer jsonb;
BEGIN
    IF NOT p.break_glass THEN
        PERFORM jit._audit('deny', p.name, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'break-glass not allowed', 'break_glass', true));
        RETURN jit._denied(format('profile %s does not allow break-glass', p.name),
                           format('ask for it the usual way: \jit request %s', p.name));
    END IF;
    IF btrim(reason) = '' THEN
        PERFORM jit._audit('deny', p.name, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'break-glass needs a reason', 'break_glass', true));
        RETURN jit._denied('break-glass needs a reason', 'add --reason "INC-... what is on fire"');
    END IF;
    used := (SELECT count(*) FROM jit_data.leases
              WHERE requester_oid = my_oid AND break_glass AND issued_at > jit._clock() - interval '1 day');
    IF used >= p.break_glass_per_day THEN
        PERFORM jit._audit('deny', p.name, NULL, me, reason, NULL,
                           jsonb_build_object('why', 'break-glass limit', 'break_glass', true,
                                              'used', used, 'per_day', p.break_glass_per_day));
        RETURN jit._denied(format('you have used break-glass %s time%s in the last 24 hours, the most '
                                  'profile %s allows', used, CASE WHEN used = 1 THEN '' ELSE 's' END,
                                  p.name),
                           format('ask for approval: \jit request %s', p.name));
    END IF;
    -- the lease's whole life, renewals included, is bounded by break_glass_max_ttl
    p.max_ttl := least(p.max_ttl, p.break_glass_max_ttl);
    p.ttl := least(p.ttl, p.max_ttl);
    answer := jit._issue(p, me, my_oid, reason, coalesce(p_ttl, p.ttl), p_verifier,
                         jsonb_build_object('break_glass', true));
    IF answer->>'status' = 'granted' THEN
        UPDATE jit_data.leases SET break_glass = true WHERE id = (answer->>'lease_id')::bigint;
        PERFORM jit._audit('break_glass', p.name, answer->>'rolname', me, reason,
                           to_timestamp((answer->>'expires_at')::float8),
                           jsonb_build_object('lease_id', answer->'lease_id', 'approvers', p.approvers,
                                              'used_today', used + 1, 'per_day', p.break_glass_per_day,
                                              'max_ttl', extract(epoch FROM p.max_ttl)));
        answer := answer || jit._withdraw_for_break_glass(p.name, my_oid, (answer->>'lease_id')::bigint);
        PERFORM jit._request_doorbell();
    END IF;
    RETURN answer;
END
$$;

-- Ask for a lease without approval: as jit.request, on a profile that allows break-glass.
CREATE OR REPLACE FUNCTION jit.request_break_glass(p_profile text, p_ttl interval, p_reason text,
                                                   p_verifier text)
RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jit._request(p_profile, p_ttl, p_reason, p_verifier, true)
$$;

-- Why role r cannot be profile p's auto-approve role (NULL: it can).  Auto-approval grants a
-- member of r at once: four eyes holds only while r is a group some requesters are not in
-- and no approver is in by virtue of being an approver.  Refused: PUBLIC, the profile's
-- requesters and approvers roles, a role that contains either of them (every requester or
-- approver would be in it), a role every current requester is in anyway, the profile's grant
-- roles, the broker's roles (jit_*) and the predefined ones (pg_*).
CREATE OR REPLACE FUNCTION jit._auto_approve_problem(p jit_data.profiles, r text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a oid;
BEGIN
    IF lower(r) = 'public' THEN
        RETURN 'PUBLIC is every login';
    END IF;
    a := jit._role_oid(r);
    IF a IS NULL THEN
        RETURN NULL;   -- "does not exist", said by the caller
    END IF;
    IF r = p.requesters THEN
        RETURN 'it is the profile''s requesters role: every requester would be approved at once';
    END IF;
    IF r = p.approvers THEN
        RETURN 'it is the profile''s approvers role: approvers would approve themselves';
    END IF;
    IF r = ANY (p.grants) THEN
        RETURN 'it is one of the profile''s grant roles: every lease would approve the next';
    END IF;
    IF r LIKE 'jit\_%' OR jit._is_broker_role(r) THEN
        RETURN 'it is one of the broker''s own roles';
    END IF;
    IF r LIKE 'pg\_%' THEN
        RETURN 'it is a predefined role';
    END IF;
    IF pg_has_role(jit._role_oid(p.requesters), a, 'MEMBER') THEN
        RETURN format('%s is a member of it: every requester would be approved at once', p.requesters);
    END IF;
    IF p.approvers IS NOT NULL AND pg_has_role(jit._role_oid(p.approvers), a, 'MEMBER') THEN
        RETURN format('%s is a member of it: approvers would approve themselves', p.approvers);
    END IF;
    -- every login that may ask (a member of the requesters role, however indirectly) is in
    -- it already: it includes every requester, whatever its name
    IF EXISTS (SELECT FROM pg_roles m WHERE m.rolcanlogin AND NOT m.rolsuper
                 AND pg_has_role(m.oid, jit._role_oid(p.requesters), 'MEMBER'))
       AND NOT EXISTS (SELECT FROM pg_roles m WHERE m.rolcanlogin AND NOT m.rolsuper
                         AND pg_has_role(m.oid, jit._role_oid(p.requesters), 'MEMBER')
                         AND NOT pg_has_role(m.oid, a, 'MEMBER')) THEN
        RETURN format('every login in %s is a member of it: every requester would be approved at once',
                      p.requesters);
    END IF;
    RETURN NULL;
END
$$;

-- Set a profile's auto-approval and break-glass options (NULL: unchanged; auto_approve '':
-- none).  Kept apart from jit.profile_set so that each keeps its own signature.
CREATE OR REPLACE FUNCTION jit.profile_approval_rules(
    p_name text, p_auto_approve text, p_break_glass boolean, p_break_glass_max_ttl interval,
    p_break_glass_per_day integer
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p jit_data.profiles;
BEGIN
    PERFORM jit._require_admin();
    SELECT * INTO p FROM jit_data.profiles WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no profile %', p_name USING HINT = 'pgcli-jit-admin profile list';
    END IF;
    IF p_auto_approve = '' THEN
        p.auto_approve := NULL;
    ELSIF p_auto_approve IS NOT NULL THEN
        IF jit._auto_approve_problem(p, p_auto_approve) IS NOT NULL THEN
            RAISE EXCEPTION 'profile %: % cannot be the auto-approve role: %', p_name, p_auto_approve,
                            jit._auto_approve_problem(p, p_auto_approve)
                USING HINT = 'a group role of the people on call, e.g. oncall';
        END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p_auto_approve) THEN
            RAISE EXCEPTION 'profile %: auto-approve role % does not exist', p_name, p_auto_approve;
        END IF;
        p.auto_approve := p_auto_approve;
    END IF;
    p.break_glass := coalesce(p_break_glass, p.break_glass);
    p.break_glass_max_ttl := jit._secs(coalesce(p_break_glass_max_ttl, p.break_glass_max_ttl));
    p.break_glass_per_day := coalesce(p_break_glass_per_day, p.break_glass_per_day);
    IF p.break_glass_max_ttl <= interval '0' THEN
        RAISE EXCEPTION 'profile %: the break-glass max TTL must be positive', p_name;
    END IF;
    IF p.break_glass_per_day NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'profile %: break-glass uses per day must be between 1 and 100', p_name;
    END IF;
    UPDATE jit_data.profiles SET auto_approve = p.auto_approve, break_glass = p.break_glass,
           break_glass_max_ttl = p.break_glass_max_ttl, break_glass_per_day = p.break_glass_per_day,
           updated_at = jit._clock(), updated_by = session_user
     WHERE name = p_name;
    -- the profile's requesters may call jit.request_break_glass
    EXECUTE format('GRANT EXECUTE ON FUNCTION jit.request_break_glass(text, interval, text, text) TO %I',
                   p.requesters);
    PERFORM jit._audit('profile_rules', p_name, NULL, NULL, NULL, NULL, jsonb_build_object(
        'auto_approve', p.auto_approve, 'break_glass', p.break_glass,
        'break_glass_max_ttl', extract(epoch FROM p.break_glass_max_ttl),
        'break_glass_per_day', p.break_glass_per_day));
    RETURN (SELECT to_jsonb(t) FROM jit_data.profiles t WHERE name = p_name);
END
$$;

REVOKE EXECUTE ON FUNCTION jit.notify_cursor(text), jit.notify_advance(text, bigint),
    jit.profile_approval_rules(text, text, boolean, interval, integer),
    jit.request_break_glass(text, interval, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jit.notify_cursor(text), jit.notify_advance(text, bigint),
    jit.profile_approval_rules(text, text, boolean, interval, integer) TO jit_admin;
-- jit.request_break_glass goes to exactly the roles that may send the usual one
-- (jit.profile_set grants that to each profile's requesters role)
DO $request5$
DECLARE
    r regrole;
BEGIN
    FOR r IN SELECT g.grantee FROM pg_proc f, aclexplode(f.proacl) g
              WHERE f.oid = 'jit.request(text, interval, text, text)'::regprocedure
                AND g.privilege_type = 'EXECUTE' AND g.grantee NOT IN (0, f.proowner) LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION jit.request_break_glass(text, interval, text, text) TO %s', r);
    END LOOP;
END
$request5$;

RESET ROLE;
