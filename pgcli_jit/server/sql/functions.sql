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
CREATE OR REPLACE FUNCTION jit._audit_digest(a jit_data.audit) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sha256(coalesce(a.prev_hash, '\x'::bytea) || convert_to(jsonb_build_array(
        a.id, jit._ts(a.at), a.event, a.profile, a.rolname, a.requester, a.actor,
        host(a.client_addr), a.reason, jit._ts(a.expires_at), a.detail)::text, 'UTF8'))
$$;

-- The clock every decision about time reads: the wall clock at the moment of the decision,
-- never now() (the start of a transaction a caller may have held open for minutes).
CREATE OR REPLACE FUNCTION jit._clock() RETURNS timestamptz
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT clock_timestamp()
$$;

-- A timestamp as ALTER ROLE ... VALID UNTIL reads it, whatever DateStyle or TimeZone say.
CREATE OR REPLACE FUNCTION jit._valid_until(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'
$$;

-- A duration as whole seconds.  An interval mixes months, days and microseconds, which
-- compare as 30-day months but add as calendar months: '1200 mon -36000 days +1 min' is
-- "1 minute" to < and 524 days to now() + it.  Every interval the broker is given is read
-- as its epoch seconds once, here, and only that is compared, stored and added.
CREATE OR REPLACE FUNCTION jit._secs(i interval) RETURNS interval
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s numeric;
BEGIN
    IF i IS NULL THEN
        RETURN NULL;
    END IF;
    IF NOT isfinite(i) THEN
        RAISE EXCEPTION 'a duration must be finite' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    s := extract(epoch FROM i);
    IF abs(s) > 3155760000 THEN  -- 100 years
        RAISE EXCEPTION 'a duration must be under 100 years' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN make_interval(secs => s);
END
$$;

-- The database this schema lives in: a lease belongs to the database whose broker issued it.
CREATE OR REPLACE FUNCTION jit._mydb() RETURNS oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT oid FROM pg_database WHERE datname = current_database()
$$;

-- The first statement of every function a requester, approver or lease may call.
-- * NOTIFY makes the caller's transaction impossible to PREPARE: nothing the broker locks
--   can be kept past the caller's session, where no one could end it.
-- * The broker's decisions read committed state statement by statement: under REPEATABLE
--   READ or SERIALIZABLE a held snapshot would hide the leases issued since.
CREATE OR REPLACE FUNCTION jit._guard() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the jit functions run in READ COMMITTED transactions (this one is %)',
                        upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'feature_not_supported', HINT = 'call them outside the transaction, or in autocommit';
    END IF;
    PERFORM pg_notify('jit_calls', '');
END
$$;

-- The lock key that marks a transaction working on one lease (shared advisory lock, taken
-- by every function that locks the lease's row).  pg_locks shows it to the reaper, which
-- ends a requester's or lease's transaction still holding it once the lease is due.
CREATE OR REPLACE FUNCTION jit._mark(l jit_data.leases) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_try_advisory_xact_lock_shared(1785295872, (l.id % 2147483647)::int);
END
$$;

-- One requester's calls, one at a time: the requester's own row, locked to commit.  Only
-- that requester's transactions take it, so an open one stalls no one else.
CREATE OR REPLACE FUNCTION jit._hold_requester(my_oid oid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO jit_data.requesters AS q (requester_oid, calls) VALUES (my_oid, 1)
        ON CONFLICT (requester_oid) DO UPDATE SET calls = q.calls + 1;
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION 'another request of yours is still open (a transaction of yours holds it)'
        USING ERRCODE = 'lock_not_available', HINT = 'commit or roll back that transaction, then ask again';
END
$$;

-- An audit row, written in the caller's transaction: it commits or rolls back with the change
-- it records.  It is chained later (jit.chain_audit), so writing it waits for no one.
CREATE OR REPLACE FUNCTION jit._audit(
    p_event text, p_profile text, p_rolname text, p_requester text, p_reason text,
    p_expires_at timestamptz, p_detail jsonb DEFAULT '{}'
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO jit_data.audit (id, at, event, profile, rolname, requester, actor, client_addr, reason,
                           expires_at, detail)
    VALUES (nextval('jit_data.audit_id_seq'), clock_timestamp(), p_event, p_profile, p_rolname,
            p_requester, session_user, inet_client_addr(), p_reason, p_expires_at,
            coalesce(p_detail, '{}'));
END
$$;

-- Link every committed, unchained audit row into the hash chain, in the order the chainer
-- finds them committed (by id within one pass).  One chainer at a time; a second one finds
-- the lock taken and returns at once.  Called by the reaper every pass and by audit_verify.
CREATE OR REPLACE FUNCTION jit._chain_audit() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a jit_data.audit;
    prev bytea;
    n integer := 0;
BEGIN
    BEGIN
        PERFORM FROM jit_data.chain_lock FOR UPDATE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 0;
    END;
    SELECT h.hash INTO prev FROM jit_data.audit_head h;
    FOR a IN SELECT * FROM jit_data.audit WHERE hash IS NULL ORDER BY id FOR UPDATE SKIP LOCKED LOOP
        a.seq := nextval('jit_data.audit_seq_seq');
        a.prev_hash := prev;
        a.hash := jit._audit_digest(a);
        UPDATE jit_data.audit SET seq = a.seq, prev_hash = a.prev_hash, hash = a.hash WHERE id = a.id;
        INSERT INTO jit_data.audit_head (last_id, hash) VALUES (a.id, a.hash)
            ON CONFLICT (one) DO UPDATE SET last_id = excluded.last_id, hash = excluded.hash;
        prev := a.hash;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION jit.chain_audit() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._require_admin();
    RETURN jit._chain_audit();
END
$$;

-- Append-only, but for the chainer's one change: hash, prev_hash and seq set once.
CREATE OR REPLACE FUNCTION jit._audit_is_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.hash IS NULL AND OLD.seq IS NULL AND NEW.hash IS NOT NULL
       AND NEW.seq IS NOT NULL
       AND (OLD.id, OLD.at, OLD.event, OLD.profile, OLD.rolname, OLD.requester, OLD.actor,
            OLD.client_addr, OLD.reason, OLD.expires_at, OLD.detail)
           IS NOT DISTINCT FROM
           (NEW.id, NEW.at, NEW.event, NEW.profile, NEW.rolname, NEW.requester, NEW.actor,
            NEW.client_addr, NEW.reason, NEW.expires_at, NEW.detail) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'jit_data.audit is append-only: % refused', TG_OP
        USING HINT = 'audit rows are never edited or deleted; pgcli-jit-admin audit --verify checks the chain';
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

CREATE OR REPLACE FUNCTION jit._lease_json(l jit_data.leases, p_status text) RETURNS jsonb
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
CREATE OR REPLACE FUNCTION jit._may_act(l jit_data.leases, admin_too boolean) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.requester_oid = jit._role_oid(session_user)
        OR l.role_oid = jit._role_oid(session_user)
        OR (admin_too AND pg_has_role(session_user, 'jit_admin', 'MEMBER'))
$$;

-- A role that may be handed out, judged by what it can do, not by its name: it is checked
-- when a profile is declared and again at every issue and renewal (a superuser may have
-- granted it more since).  NULL when it is fit; otherwise what makes it unfit.
CREATE OR REPLACE FUNCTION jit._grant_problem(r text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a pg_roles;
    bad text;
    mydb oid := jit._mydb();
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
    IF a.rolname LIKE 'pg\_%' THEN
        RETURN format('role %I is a predefined role (a member of %I acts cluster-wide)', r, r);
    END IF;
    -- every predefined role acts cluster-wide or beyond the database (pg_write_all_data,
    -- pg_read_all_stats, pg_checkpoint, pg_maintain, pg_database_owner, ...), and the broker's
    -- own roles hold its powers
    SELECT string_agg(pr.rolname, ', ' ORDER BY pr.rolname) INTO bad
      FROM pg_roles pr
     WHERE (pr.rolname LIKE 'pg\_%' OR pr.rolname LIKE 'jit\_in\_%'
            OR pr.rolname IN ('jit_owner', 'jit_admin', 'jit_lease', 'jit_requester'))
       AND pr.oid <> a.oid AND pg_has_role(a.oid, pr.oid, 'MEMBER');
    IF bad IS NOT NULL THEN
        RETURN format('role %I is a member of %s', r, bad);
    END IF;
    -- ADMIN OPTION on any role: a lease could GRANT it to its requester, for good
    SELECT string_agg(DISTINCT g.rolname, ', ') INTO bad
      FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
     WHERE m.admin_option AND pg_has_role(a.oid, m.member, 'MEMBER');
    IF bad IS NOT NULL THEN
        RETURN format('role %I can grant %s (ADMIN OPTION): a lease could hand it out for good', r, bad);
    END IF;
    -- anything in the broker's own schema beyond calling its public functions
    SELECT string_agg(c.oid::regclass::text, ', ') INTO bad
      FROM pg_class c
     WHERE c.relnamespace IN ('jit'::regnamespace, 'jit_data'::regnamespace)
       AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
       AND (has_table_privilege(a.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
            OR (c.relkind = 'S' AND has_sequence_privilege(a.oid, c.oid, 'USAGE, UPDATE')));
    IF bad IS NOT NULL OR has_schema_privilege(a.oid, 'jit', 'CREATE')
       OR has_schema_privilege(a.oid, 'jit_data', 'USAGE') THEN
        RETURN format('role %I may read or write the jit schema itself (%s)', r, coalesce(bad, 'CREATE'));
    END IF;
    SELECT string_agg(p.oid::regprocedure::text, ', ') INTO bad
      FROM pg_proc p
     WHERE p.pronamespace = 'jit'::regnamespace AND p.proname LIKE '\_%'
       AND has_function_privilege(a.oid, p.oid, 'EXECUTE');
    IF bad IS NOT NULL THEN
        RETURN format('role %I may call the broker''s internals (%s)', r, bad);
    END IF;
    -- privileges or objects in another database: a lease would carry them there, beyond the
    -- reach and the audit of this database's broker (pg_shdepend sees every database)
    SELECT string_agg(DISTINCT coalesce(d.datname, '?'), ', ') INTO bad
      FROM pg_shdepend s LEFT JOIN pg_database d
        ON d.oid = CASE WHEN s.dbid = 0 THEN s.objid ELSE s.dbid END
     WHERE s.refclassid = 'pg_authid'::regclass AND s.deptype IN ('a', 'o', 'r', 'i')
       AND pg_has_role(a.oid, s.refobjid, 'MEMBER')
       AND ((s.dbid <> 0 AND s.dbid <> mydb)
            OR (s.dbid = 0 AND s.classid = 'pg_database'::regclass AND s.objid <> mydb));
    IF bad IS NOT NULL THEN
        RETURN format('role %I holds privileges or objects in database %s: a lease issued here must not work there', r, bad);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_auth_members m
                   WHERE m.roleid = a.oid AND m.member = jit._role_oid('jit_owner') AND m.admin_option) THEN
        RETURN format('jit_owner does not hold ADMIN OPTION on %I: as a superuser run GRANT %I TO jit_owner WITH ADMIN OPTION', r, r);
    END IF;
    RETURN NULL;
END
$$;

-- The first problem of any of a profile's grant roles, or NULL.
CREATE OR REPLACE FUNCTION jit._grants_problem(p_grants text[]) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g text;
    problem text;
BEGIN
    FOREACH g IN ARRAY coalesce(p_grants, '{}') LOOP
        problem := jit._grant_problem(g);
        IF problem IS NOT NULL THEN
            RETURN problem;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Whether a role is a lease's (issued here): the event trigger's and the refusals' test.
CREATE OR REPLACE FUNCTION jit._lease_of(r name) RETURNS jit_data.leases
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.* FROM jit_data.leases l WHERE l.role_oid = jit._role_oid(r) AND l.dropped_at IS NULL
     ORDER BY l.id DESC LIMIT 1
$$;

-- End a lease: NOLOGIN now, so nobody logs in again once this commits.  Sessions are
-- terminated afterwards, in another transaction (jit._finish), when NOLOGIN is visible:
-- terminating first would let an auto-reconnect slip in before the commit.
CREATE OR REPLACE FUNCTION jit._end(l jit_data.leases, p_event text, p_detail jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE oid = l.role_oid) THEN
        EXECUTE format('ALTER ROLE %I NOLOGIN VALID UNTIL %L', l.rolname,
                       jit._valid_until(least(jit._clock(), l.expires_at)));
    END IF;
    UPDATE jit_data.leases SET ended_at = jit._clock(), end_event = p_event WHERE id = l.id;
    PERFORM jit._audit(p_event, l.profile, l.rolname, l.requester, l.reason, l.expires_at, p_detail);
    PERFORM jit._doorbell();
END
$$;

-- After jit._end has committed: take the role's grants away, end its sessions, drop it.
-- What the role owns goes to the profile's owner role, with nothing in it left to run with
-- the owner's privileges; without an owner role it is dropped with the role: nothing a lease
-- made outlives it unless an operator named who keeps it.  A prepared transaction of the
-- role's keeps it (the reaper rolls those back first, jit.prepared_to_end); so do objects in
-- another database, which only that database can drop.
-- Locks wait at most a second: a lock another login holds on something the role owns fails
-- this lease, recorded and retried, instead of stalling the reaper for everyone.
CREATE OR REPLACE FUNCTION jit._finish(l jit_data.leases) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    g text;
    obj text;
    rel text;
    owner text;
    owned int;
    elsewhere int;
    prepared text;
BEGIN
    IF l.dbid <> jit._mydb() THEN
        RETURN 'failed: lease of another database';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE oid = l.role_oid) THEN
        UPDATE jit_data.leases SET dropped_at = coalesce(dropped_at, jit._clock()), drop_error = NULL WHERE id = l.id;
        RETURN 'gone';
    END IF;
    UPDATE jit_data.leases SET drop_tried_at = jit._clock() WHERE id = l.id;
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
    SELECT string_agg(format('%s (database %s)', x.gid, x.database), ', ') INTO prepared
      FROM pg_prepared_xacts x WHERE x.owner = l.rolname;
    IF prepared IS NOT NULL THEN
        UPDATE jit_data.leases SET drop_error = format(
            'has prepared transaction(s) %s: the reaper rolls back those in this database; '
            'elsewhere a superuser runs ROLLBACK PREPARED', prepared) WHERE id = l.id;
        RETURN 'kept';
    END IF;
    SELECT count(*) FILTER (WHERE d.dbid = jit._mydb()),
           count(*) FILTER (WHERE d.dbid <> jit._mydb() AND d.dbid <> 0)
      INTO owned, elsewhere
      FROM pg_shdepend d
     WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = l.role_oid AND d.deptype = 'o';
    SELECT p.owner INTO owner FROM jit_data.profiles p WHERE p.name = l.profile;
    IF elsewhere > 0 THEN
        UPDATE jit_data.leases SET drop_error = format(
            'owns %s object(s) in other databases; it stays NOLOGIN with no grants: '
            'DROP OWNED BY %I in each of them', elsewhere, l.rolname) WHERE id = l.id;
        RETURN 'kept';
    END IF;
    -- REASSIGN and DROP OWNED need the role's privileges: jit_owner created it, so may take them
    EXECUTE format('GRANT %I TO %I', l.rolname, current_user);
    IF owned > 0 AND owner IS NOT NULL THEN
        -- nothing the lease wrote may run with the owner role's privileges once it is the
        -- owner's: SECURITY DEFINER routines become SECURITY INVOKER, views security_invoker,
        -- and rules, triggers and policies (which run as the table's owner or as whoever
        -- touches the table) are dropped
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
        FOR obj, rel IN SELECT t.tgname, c.oid::regclass::text FROM pg_trigger t
                          JOIN pg_class c ON c.oid = t.tgrelid
                         WHERE c.relowner = l.role_oid AND NOT t.tgisinternal LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', obj, rel);
        END LOOP;
        FOR obj, rel IN SELECT y.polname, c.oid::regclass::text FROM pg_policy y
                          JOIN pg_class c ON c.oid = y.polrelid
                         WHERE c.relowner = l.role_oid LOOP
            EXECUTE format('DROP POLICY %I ON %s', obj, rel);
        END LOOP;
        -- privileges the lease granted on what it made go with it: only the owner role's remain
        FOR obj IN SELECT c.oid::regclass::text FROM pg_class c
                    WHERE c.relowner = l.role_oid AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') LOOP
            EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', obj);
            FOR g IN SELECT DISTINCT x.grantee::regrole::text
                       FROM pg_class c2, aclexplode(c2.relacl) x
                      WHERE c2.oid = obj::regclass AND x.grantee <> 0 AND x.grantee <> l.role_oid LOOP
                EXECUTE format('REVOKE ALL ON %s FROM %s CASCADE', obj, g);
            END LOOP;
        END LOOP;
        EXECUTE format('REASSIGN OWNED BY %I TO %I', l.rolname, owner);
    END IF;
    EXECUTE format('DROP OWNED BY %I CASCADE', l.rolname);
    EXECUTE format('DROP ROLE %I', l.rolname);
    UPDATE jit_data.leases SET dropped_at = jit._clock(), drop_error = NULL WHERE id = l.id;
    IF owned > 0 THEN
        PERFORM jit._audit('drop_owned', l.profile, l.rolname, l.requester, NULL, NULL,
                           jsonb_build_object('objects', owned, 'owner', owner,
                                              'dropped', owner IS NULL));
    END IF;
    RETURN 'dropped';
END
$$;

-- jit._finish for one lease, with its failure recorded instead of raised: one odd role
-- never stops the reaper for everyone.
CREATE OR REPLACE FUNCTION jit._finish_safely(l jit_data.leases) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    msg text;
BEGIN
    RETURN jit._finish(l);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
    UPDATE jit_data.leases SET drop_error = msg, drop_tried_at = jit._clock() WHERE id = l.id;
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
      FROM jit_data.profiles p
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

-- Whether requester my_oid holds as many live leases of profile p as it allows (max_live).
-- Called with the requester's row held (jit._hold_requester), so that no other request of
-- theirs is counting at once.  A lease counts until the server has ended it if a transaction
-- still holds it (its advisory mark, jit._mark): a renewal held open across the expiry
-- could otherwise commit after the count let another lease through.
CREATE OR REPLACE FUNCTION jit._at_cap(p jit_data.profiles, my_oid oid) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) >= p.max_live FROM jit_data.leases l
     WHERE l.requester_oid = my_oid AND l.profile = p.name AND l.ended_at IS NULL
       AND (l.expires_at > jit._clock()
            OR EXISTS (SELECT FROM pg_locks k WHERE k.locktype = 'advisory' AND k.granted
                         AND k.classid = 1785295872 AND k.objsubid = 2
                         AND k.objid = (l.id % 2147483647)::oid))
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
    INSERT INTO jit_data.leases (rolname, role_oid, profile, requester, requester_oid, reason,
                            client_addr, issued_at, expires_at, max_expires_at, request_key, dbid)
    VALUES (name, jit._role_oid(name), p.name, me, my_oid, reason, inet_client_addr(),
            at, at + ttl, at + jit._secs(p.max_ttl), jit._request_key(p_verifier), jit._mydb())
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
CREATE OR REPLACE FUNCTION jit.request(p_profile text, p_ttl interval, p_reason text, p_verifier text)
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
    -- the requester's own row, held to commit, serializes their requests: two at once cannot
    -- both pass the count below, and the same call sent twice at once finds the first's lease
    PERFORM jit._hold_requester(my_oid);
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
    IF p.approvers IS NOT NULL THEN
        RETURN jit._ask_approval(p, me, my_oid, reason, jit._secs(p_ttl), p_verifier);
    END IF;
    RETURN jit._issue(p, me, my_oid, reason, ttl, p_verifier);
END
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
CREATE OR REPLACE FUNCTION jit.finish(p_rolname text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit_data.leases;
    outcome text;
BEGIN
    PERFORM jit._guard();
    l := jit._my_lease(p_rolname, true);
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

-- The caller's leases (as requester), or the caller's own lease (as a temporary role).
CREATE OR REPLACE FUNCTION jit.my_leases() RETURNS SETOF jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jit._lease_json(l, CASE WHEN l.ended_at IS NULL AND l.expires_at > clock_timestamp()
                                   THEN 'live' ELSE 'ended' END)
      FROM jit_data.leases l
     WHERE (l.requester_oid = jit._role_oid(session_user) OR l.role_oid = jit._role_oid(session_user))
       AND l.dropped_at IS NULL AND l.dbid = jit._mydb()
     ORDER BY l.id
$$;

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
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_notify('jit_requests', ''), pg_notify('jit_leases', '')
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

-- Time out what was not decided (or, once approved, not collected) in time.  Called at the
-- start of every request function and by the reaper; rows another transaction holds are
-- left for the next call.
CREATE OR REPLACE FUNCTION jit._expire_requests() RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r jit_data.requests;
BEGIN
    PERFORM jit._guard();
    FOR r IN SELECT * FROM jit_data.requests WHERE status IN ('pending', 'approved') AND expires_at <= jit._clock()
             ORDER BY id FOR UPDATE SKIP LOCKED LOOP
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
    PERFORM jit._expire_requests();
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
    PERFORM jit._expire_requests();
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
    r jit_data.requests;
    comment text := jit._check_note(p_comment, 'comment');
    got int;
BEGIN
    PERFORM jit._guard();
    PERFORM jit._expire_requests();
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
    PERFORM jit._expire_requests();
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
    PERFORM jit._expire_requests();
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

-- The caller's own requests: the open ones and those decided in the last day.
CREATE OR REPLACE FUNCTION jit.my_requests() RETURNS SETOF jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM jit._expire_requests();
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
    old jit_data.profiles;
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
        IF NOT pg_has_role('jit_owner', p_owner, 'USAGE') THEN
            RAISE EXCEPTION 'profile %: jit_owner cannot hand objects to %', p_name, p_owner
                USING HINT = format('as a superuser run GRANT %I TO jit_owner', p_owner);
        END IF;
    END IF;
    INSERT INTO jit_data.profiles AS t (name, grants, ttl, max_ttl, requesters, reason_required, owner,
                                   description, updated_at, updated_by, approvers, approvals,
                                   approval_timeout, max_live)
    VALUES (p_name, p_grants, p_ttl, p_max_ttl, p_requesters, p_reason_required, p_owner,
            p_description, jit._clock(), session_user, p_approvers, p_approvals, p_approval_timeout,
            p_max_live)
    ON CONFLICT (name) DO UPDATE SET grants = excluded.grants, ttl = excluded.ttl,
        max_ttl = excluded.max_ttl, requesters = excluded.requesters,
        reason_required = excluded.reason_required, owner = excluded.owner,
        description = excluded.description, updated_at = jit._clock(), updated_by = session_user,
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
-- 'unended' and 'ended' (after a pass): the leases whose rows are still held, which SKIP
-- LOCKED passed over while their sessions lived on.
CREATE OR REPLACE FUNCTION jit._end_overdue_sessions(p_which text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_terminate_backend(a.pid)
       FROM pg_stat_activity a JOIN jit_data.leases l ON l.role_oid = a.usesysid
      WHERE l.dropped_at IS NULL AND a.pid <> pg_backend_pid() AND l.dbid = jit._mydb()
        AND CASE p_which
            WHEN 'writing' THEN (l.ended_at IS NOT NULL OR l.expires_at <= jit._clock())
                                AND a.backend_xid IS NOT NULL
            WHEN 'unended' THEN l.ended_at IS NULL AND l.expires_at <= jit._clock()
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
          JOIN jit_data.leases l ON (l.id % 2147483647)::oid = k.objid
          JOIN pg_roles who ON who.oid = a.usesysid
         WHERE k.locktype = 'advisory' AND k.granted AND k.classid = 1785295872 AND k.objsubid = 2
           AND k.database = jit._mydb() AND a.pid <> pg_backend_pid() AND l.dbid = jit._mydb()
           AND l.dropped_at IS NULL AND (l.ended_at IS NOT NULL OR l.expires_at <= jit._clock())
           AND a.usesysid IN (l.requester_oid, l.role_oid) AND NOT who.rolsuper
           AND (a.state LIKE 'idle in transaction%' OR a.xact_start < jit._clock() - interval '1 second')
    LOOP
        IF pg_terminate_backend(holder, 1000) THEN
            RETURN NEXT holder;
        END IF;
    END LOOP;
END
$$;

-- Step one of the reaper: end (NOLOGIN, audited) every lease past its expiry, and every live
-- lease whose grant roles have become unfit (a superuser granted them more).  Nothing here
-- waits longer than a fifth of a second on a lock: what cannot be ended now is reported
-- ('skipped: ...') and tried again on the next pass, and its sessions are ended anyway.
CREATE OR REPLACE FUNCTION jit.expire_due() RETURNS TABLE (rolname text, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit_data.leases;
    problem text;
    unfit jsonb;
BEGIN
    PERFORM jit._require_admin();
    PERFORM jit._end_overdue_sessions('writing');
    PERFORM count(*) FROM jit._end_holders();
    PERFORM set_config('lock_timeout', '200ms', true);
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
        BEGIN
            SELECT * INTO l FROM jit_data.leases x WHERE x.id = l.id AND x.ended_at IS NULL
               FOR NO KEY UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
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
        END;
        RETURN NEXT;
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
    l jit_data.leases;
BEGIN
    PERFORM jit._require_admin();
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
    PERFORM jit._end_overdue_sessions('ended');
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
    g text;
    with_opts text := CASE WHEN current_setting('server_version_num')::int >= 160000
                           THEN ' WITH INHERIT FALSE, SET TRUE' ELSE '' END;
BEGIN
    PERFORM jit._require_admin();
    FOR l IN SELECT DISTINCT ON (x.id) x.* FROM jit_data.leases x JOIN pg_prepared_xacts p ON p.owner = x.rolname
              WHERE x.dropped_at IS NULL AND x.dbid = jit._mydb() AND p.database = current_database()
                AND (x.ended_at IS NOT NULL OR x.expires_at <= jit._clock()) LOOP
        FOR g IN SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                 WHERE m.member = l.role_oid LOOP
            EXECUTE format('REVOKE %I FROM %I', g, l.rolname);
        END LOOP;
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
    IF EXISTS (SELECT FROM pg_auth_members m WHERE m.roleid = l.role_oid
                AND m.member = jit._role_oid(session_user)) THEN
        EXECUTE format('REVOKE %I FROM %I', l.rolname, session_user);
    END IF;
    PERFORM jit._audit('rollback_prepared', l.profile, l.rolname, l.requester, l.reason, l.expires_at,
                       jsonb_build_object('gid', p_gid, 'error', p_error));
END
$$;

-- When the reaper must wake next (NULL: no live lease).
CREATE OR REPLACE FUNCTION jit.next_expiry() RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT least((SELECT min(expires_at) FROM jit_data.leases WHERE ended_at IS NULL),
                 (SELECT min(expires_at) FROM jit_data.requests WHERE status IN ('pending', 'approved')))
$$;

-- Chain what is committed, then walk the chain in its order: the first row whose link or
-- hash does not match, or a cut-off tail.  Rows not chained yet (their transaction had not
-- committed when the chainer ran) are counted in `problem` only if they are over a minute old.
CREATE OR REPLACE FUNCTION jit.audit_verify()
RETURNS TABLE (rows_checked bigint, bad_id bigint, problem text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a jit_data.audit;
    prev bytea;
    last_id bigint;
    head jit_data.audit_head;
    stale bigint;
BEGIN
    PERFORM jit._require_admin();
    PERFORM jit._chain_audit();
    rows_checked := 0;
    FOR a IN SELECT * FROM jit_data.audit WHERE seq IS NOT NULL ORDER BY seq LOOP
        rows_checked := rows_checked + 1;
        IF a.prev_hash IS DISTINCT FROM prev THEN
            bad_id := a.id;
            problem := CASE WHEN prev IS NULL THEN 'the first row links to a row that is not there'
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

-- -- what a lease may leave behind: the DDL guard (installed as event triggers below) -----

-- Commands a lease's session may not run, whatever its grant roles allow: each leaves
-- something that outlives the lease and runs as, or grants to, someone else (privileges and
-- default privileges, code that runs when others touch a table or a type, foreign servers,
-- extensions).  The grant role's own owners and operators run these, not a lease.
CREATE OR REPLACE FUNCTION jit._lease_ddl_refused() RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['GRANT', 'REVOKE', 'ALTER DEFAULT PRIVILEGES', 'CREATE RULE', 'CREATE TRIGGER',
                 'ALTER TRIGGER', 'CREATE EVENT TRIGGER', 'ALTER EVENT TRIGGER', 'CREATE POLICY',
                 'ALTER POLICY', 'CREATE CAST', 'CREATE OPERATOR', 'ALTER OPERATOR',
                 'CREATE OPERATOR CLASS', 'ALTER OPERATOR CLASS', 'CREATE OPERATOR FAMILY',
                 'ALTER OPERATOR FAMILY', 'CREATE CONVERSION', 'ALTER CONVERSION', 'CREATE TRANSFORM',
                 'CREATE LANGUAGE', 'ALTER LANGUAGE', 'CREATE EXTENSION', 'ALTER EXTENSION',
                 'CREATE FOREIGN DATA WRAPPER', 'ALTER FOREIGN DATA WRAPPER', 'CREATE SERVER',
                 'ALTER SERVER', 'CREATE USER MAPPING', 'ALTER USER MAPPING', 'IMPORT FOREIGN SCHEMA',
                 'CREATE PUBLICATION', 'ALTER PUBLICATION', 'CREATE SUBSCRIPTION',
                 'ALTER SUBSCRIPTION', 'SECURITY LABEL', 'CREATE ACCESS METHOD',
                 'CREATE TEXT SEARCH PARSER', 'CREATE TEXT SEARCH TEMPLATE']
$$;

CREATE OR REPLACE FUNCTION jit._lease_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tg_tag = ANY (jit._lease_ddl_refused()) AND (jit._lease_of(session_user)).id IS NOT NULL THEN
        RAISE EXCEPTION 'a temporary role may not run %', tg_tag
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'what a lease grants, triggers or hands over would outlive it; ask an operator';
    END IF;
END
$$;

-- After each DDL command of a lease: what it created or changed is recorded (the lease's own
-- record of its DDL), and refused when the command made a SECURITY DEFINER routine, gave
-- away an object the lease created, or handed one to the broker's roles.
CREATE OR REPLACE FUNCTION jit._lease_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l jit_data.leases := jit._lease_of(session_user);
    c record;
    owner oid;
BEGIN
    IF l.id IS NULL THEN
        RETURN;
    END IF;
    FOR c IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        IF c.classid = 'pg_proc'::regclass
           AND EXISTS (SELECT FROM pg_proc p WHERE p.oid = c.objid AND p.prosecdef) THEN
            RAISE EXCEPTION 'a temporary role may not make SECURITY DEFINER routines (%)', c.object_identity
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'it would run with its owner''s privileges after the lease ends';
        END IF;
        owner := NULL;
        SELECT d.refobjid INTO owner FROM pg_shdepend d
         WHERE d.dbid = jit._mydb() AND d.classid = c.classid AND d.objid = c.objid
           AND d.objsubid = 0 AND d.deptype = 'o';
        -- what a lease creates is its own: made as a grant role (SET ROLE, 15) it would belong
        -- to that role for good, beyond what the lease's end cleans up
        -- (objects with no owner of their own, such as indexes, have no owner entry: NULL)
        IF c.command_tag LIKE 'CREATE%' AND owner <> l.role_oid THEN
            RAISE EXCEPTION 'a temporary role may create objects only as itself (%)', c.object_identity
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'RESET ROLE first: what a lease creates is cleaned up when it ends';
        END IF;
        IF owner IN (SELECT oid FROM pg_roles
                      WHERE rolname IN ('jit_owner', 'jit_admin', 'jit_lease', 'jit_requester')) THEN
            RAISE EXCEPTION 'a temporary role may not give % to the broker''s roles', c.object_identity
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF owner <> l.role_oid AND EXISTS (
               SELECT FROM jit_data.lease_objects o WHERE o.lease_id = l.id AND o.classid = c.classid
                  AND o.objid = c.objid AND o.command LIKE 'CREATE%') THEN
            RAISE EXCEPTION 'a temporary role may not give away what it created (%)', c.object_identity
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'what a lease creates is its own until it ends; then it goes to the profile''s owner role';
        END IF;
        INSERT INTO jit_data.lease_objects (lease_id, command, object_type, identity, classid, objid)
        VALUES (l.id, c.command_tag, c.object_type, left(c.object_identity, 1000), c.classid, c.objid);
    END LOOP;
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
    jit.expire_requests(), jit.chain_audit(), jit.prepared_to_end(),
    jit.prepared_ended(text, text, text), jit.audit_verify() TO jit_admin;

-- -- settings every function depends on, pinned -------------------------------------
-- A caller's session settings reach into a SECURITY DEFINER function unless it sets them
-- itself: TimeZone and DateStyle moved VALID UNTIL by days, createrole_self_grant (16+) made
-- jit_owner a member of the roles it created, a session's lock_timeout 0 let a broker call
-- wait for ever.  Each function carries its own values for every setting that changes what
-- it reads, writes or waits for (search_path is set in each definition).
DO $pin$
DECLARE
    f regprocedure;
    conf text[];
    pins text := 'SET TimeZone = ''UTC'' SET DateStyle = ''ISO, YMD'' SET IntervalStyle = ''postgres'''
                 ' SET timezone_abbreviations = ''Default'' SET extra_float_digits = 1'
                 ' SET bytea_output = ''hex'' SET standard_conforming_strings = on'
                 ' SET transform_null_equals = off SET array_nulls = on SET exit_on_error = off'
                 ' SET default_transaction_read_only = off SET row_security = on';
BEGIN
    IF current_setting('server_version_num')::int >= 160000 THEN
        pins := pins || ' SET createrole_self_grant = ''''';
    END IF;
    -- Only entry points are pinned: what a session may call (EXECUTE is granted on no
    -- internal jit._ function, and a grant role that could call one is refused), and the
    -- trigger functions PostgreSQL calls itself.  Internals run inside an entry point and
    -- see its values; a SET clause on each of them would cost a save and restore per call.
    FOR f, conf IN SELECT p.oid::regprocedure, p.proconfig FROM pg_proc p
                    WHERE p.pronamespace = 'jit'::regnamespace
                      AND (p.proname NOT LIKE '\_%'
                           OR p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)) LOOP
        EXECUTE format('ALTER FUNCTION %s %s', f, pins);
        -- the entry points bound their waits; internals wait as long as their caller allows
        -- (the reaper sets a fifth of a second around each lease it ends)
        IF NOT EXISTS (SELECT FROM unnest(conf) c WHERE c LIKE 'lock\_timeout=%') THEN
            EXECUTE format('ALTER FUNCTION %s SET lock_timeout = ''2s''', f);
        END IF;
    END LOOP;
END
$pin$;

RESET ROLE;

-- The DDL guard: event triggers need a superuser, as setup is.  They fire for every DDL
-- command in this database and return at once unless the session is a lease's.
DO $guard$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'jit_lease_ddl_start') THEN
        CREATE EVENT TRIGGER jit_lease_ddl_start ON ddl_command_start
            EXECUTE FUNCTION jit._lease_ddl_start();
    END IF;
    IF NOT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'jit_lease_ddl_end') THEN
        CREATE EVENT TRIGGER jit_lease_ddl_end ON ddl_command_end
            EXECUTE FUNCTION jit._lease_ddl_end();
    END IF;
END
$guard$;
