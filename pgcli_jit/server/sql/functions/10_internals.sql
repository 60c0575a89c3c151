-- pgcli-jit server-side broker, the functions: Internal functions: no EXECUTE for anyone; they run inside an entry point.
-- Re-applied by every `setup --apply` (CREATE OR REPLACE), after the numbered schema files,
-- with the other files of this folder in name order.  Every function is SECURITY DEFINER with
-- a fixed search_path, builds every identifier with format('%I'), and takes the caller's
-- identity from session_user: what PostgreSQL authenticated, never a name the client
-- supplies.  Functions that refuse on purpose return {"status": "denied", ...} instead of
-- raising, so the refusal's audit row commits.

SET LOCAL ROLE jit_owner;

-- -- internals (no EXECUTE for anyone) -------------------------------------------------

CREATE OR REPLACE FUNCTION jit._ts(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The hashed form of an audit row: independent of TimeZone, DateStyle and column order.
-- An archive file carries this text for each row, so it verifies without the server.
CREATE OR REPLACE FUNCTION jit._audit_text(a jit_data.audit) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_array(
        a.id, jit._ts(a.at), a.event, a.profile, a.rolname, a.requester, a.actor,
        host(a.client_addr), a.reason, jit._ts(a.expires_at), a.detail)::text
$$;

CREATE OR REPLACE FUNCTION jit._audit_digest(a jit_data.audit) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sha256(coalesce(a.prev_hash, '\x'::bytea) || convert_to(jit._audit_text(a), 'UTF8'))
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
-- as its epoch seconds once, here (extract counts whole years of months as 365.25 days: that
-- one is 525 days), and only that is compared, stored, shown and added.
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

-- Whether this schema runs on another cluster than the one it was set up on (a restore
-- there): its stored OIDs are then another cluster's numbers (011_install_identity.sql).
CREATE OR REPLACE FUNCTION jit._restored_elsewhere() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT EXISTS (SELECT FROM jit_data.install i WHERE i.sysid = (pg_control_system()).system_identifier)
$$;

-- The first statement of every function a requester, approver or lease may call.
-- * Nothing runs on a copy restored onto another cluster until the reaper has taken it over
--   (jit._adopt_restored): until then its stored OIDs may name other logins.
-- * The caller's transaction cannot be PREPAREd, so nothing the broker locks can be kept past
--   the caller's session, where no one could end it: PostgreSQL refuses to prepare a
--   transaction that has operated on temporary objects, and this opens the session's own
--   pg_temp.jit_guard (an empty table jit_owner makes once per session; the session cannot
--   drop it, and one of its own by that name is refused).  Nothing the caller does afterwards
--   undoes that.  (NOTIFY refused PREPARE too, but the NOTIFY queue is shared by the cluster
--   and any login can fill it: every call would then fail at commit.  A session-level
--   advisory lock also refuses PREPARE, but the session can unlock it.)
-- * The broker's decisions read committed state statement by statement: under REPEATABLE
--   READ or SERIALIZABLE a held snapshot would hide the leases issued since.
CREATE OR REPLACE FUNCTION jit._guard() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    guard regclass := to_regclass('pg_temp.jit_guard');
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the jit functions run in READ COMMITTED transactions (this one is %)',
                        upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'feature_not_supported', HINT = 'call them outside the transaction, or in autocommit';
    END IF;
    IF jit._restored_elsewhere() THEN
        RAISE EXCEPTION 'this jit schema was restored onto another cluster: nothing is issued or renewed here until its operator''s reaper has taken it over'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ask an operator to run pgcli-jit-admin reap on this database';
    END IF;
    IF guard IS NULL THEN
        CREATE TEMP TABLE jit_guard ();
        guard := to_regclass('pg_temp.jit_guard');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = guard AND c.relkind = 'r'
                     AND c.relowner = jit._role_oid(current_user)) THEN
        RAISE EXCEPTION 'pg_temp.jit_guard is not the broker''s: drop your own table of that name'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM FROM pg_temp.jit_guard LIMIT 0;
END
$$;

-- Whether a doorbell (NOTIFY) may ring: not while the cluster's NOTIFY queue is half full.
-- A NOTIFY that does not fit fails its transaction at commit; a missed doorbell only means
-- the reaper or a waiting shell looks a little later (the reaper wakes at least every 5 s).
CREATE OR REPLACE FUNCTION jit._may_ring() RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_notification_queue_usage() < 0.5
$$;

-- Text a person reads (reasons, comments): no control characters, line or paragraph
-- separators, or bidirectional overrides ("Trojan Source").  The client refuses the same
-- set (pgcli_jit/core/sanitize.py); a test checks they are equal.
CREATE OR REPLACE FUNCTION jit._unsafe_class() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT '[\u0001-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]'::text
$$;

CREATE OR REPLACE FUNCTION jit._unsafe_text(t text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t ~ jit._unsafe_class()
$$;

-- Text a lease or a requester chose (a prepared transaction's name, an error quoting it) as
-- it may be written where people read: every unsafe character (jit._unsafe_text) a '?'.
CREATE OR REPLACE FUNCTION jit._safe_text(t text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT regexp_replace(left(t, 1000), jit._unsafe_class(), '?', 'g')
$$;

-- The lock that marks a transaction working on one lease: a shared advisory lock, taken by
-- every function that locks or writes the lease's row.  pg_locks shows it to the reaper,
-- which ends a requester's or lease's transaction still holding it once the lease is due,
-- and to the cap, which counts a marked lease until the server has ended it.  Its key comes
-- from the lease's request key (a hash of a verifier only its requester saw, in a table only
-- jit_owner reads): any login may take any advisory lock, and one that could take a lease's
-- key first, exclusively, would keep the mark from being taken.
CREATE OR REPLACE FUNCTION jit._mark_key(l jit_data.leases) RETURNS oid
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ((CASE WHEN l.request_key IS NULL THEN l.id
                  ELSE ('x' || encode(substr(l.request_key, 1, 4), 'hex'))::bit(32)::int::bigint END)
            & 2147483647)::oid
$$;

-- Whether a transaction holds the mark of lease l (see jit._mark_key).
CREATE OR REPLACE FUNCTION jit._marked(l jit_data.leases) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_locks k WHERE k.locktype = 'advisory' AND k.granted
                     AND k.classid = 1785295872 AND k.objsubid = 2 AND k.objid = jit._mark_key(l)
                     AND k.database = jit._mydb())
$$;

CREATE OR REPLACE FUNCTION jit._mark(l jit_data.leases) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(1785295872, jit._mark_key(l)::bigint::int) THEN
        RAISE EXCEPTION 'lease % is busy', l.rolname USING ERRCODE = 'lock_not_available',
            HINT = 'try again in a moment';
    END IF;
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
-- it records.  It is chained later (jit.chain_audit), so writing it waits for no one.  It
-- rings the audit doorbell (no payload, delivered at commit, one per transaction) for
-- `audit --follow`, which also looks every 30 s: a ring not rung while the NOTIFY queue is
-- half full (jit._may_ring) delays a line, never loses it.
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
    IF jit._may_ring() THEN
        PERFORM pg_notify('jit_audit', '');
    END IF;
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

-- Append-only, but for the chainer's one change (hash, prev_hash and seq set once) and the
-- archive's removal of chained rows it has just checkpointed.
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
    -- jit.audit_archive's removal of the rows it archived: only as jit_owner (inside the
    -- broker's functions), only chained rows, only up to the checkpoint this very
    -- transaction wrote
    IF TG_OP = 'DELETE' AND current_user = 'jit_owner' AND OLD.hash IS NOT NULL
       AND OLD.seq IS NOT NULL
       AND EXISTS (SELECT FROM jit_data.audit_checkpoint c
                    WHERE OLD.seq <= c.seq AND c.xact = pg_current_xact_id()) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'jit_data.audit is append-only: % refused', TG_OP
        USING HINT = 'audit rows are never edited or deleted; pgcli-jit-admin audit --verify checks the chain';
END
$$;

CREATE OR REPLACE FUNCTION jit._doorbell() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- a doorbell for the reaper: no payload, delivered at commit
    IF jit._may_ring() THEN
        PERFORM pg_notify('jit_leases', '');
    END IF;
END
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
        'log_statements', l.log_statements, 'server_now', extract(epoch FROM clock_timestamp()))
$$;

-- Who may act on a lease: its requester, the lease's own role, and (for revoke) jit_admin.
-- A login is known by its OID and its name together (jit._lease_role says why).
CREATE OR REPLACE FUNCTION jit._may_act(l jit_data.leases, admin_too boolean) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (l.requester_oid = jit._role_oid(session_user) AND l.requester = session_user)
        OR (l.role_oid = jit._role_oid(session_user) AND l.rolname = session_user)
        OR (admin_too AND pg_has_role(session_user, 'jit_admin', 'MEMBER'))
$$;

-- The broker's own roles: each holds a power of the broker (jit_in_* are profiles' approver
-- groups).  No grant role and no profile owner may be one or be in one.
CREATE OR REPLACE FUNCTION jit._is_broker_role(r name) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r LIKE 'jit\_in\_%'
        OR r IN ('jit_owner', 'jit_admin', 'jit_lease', 'jit_requester', 'jit_archiver',
                 'jit_collector', 'jit_log_reader')
$$;

-- An attribute that acts beyond the role's own objects and grants.
CREATE OR REPLACE FUNCTION jit._powerful_attributes(a pg_roles) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.rolsuper OR a.rolcreaterole OR a.rolcreatedb OR a.rolreplication OR a.rolbypassrls
$$;

-- The predefined and broker roles r is a member of (NULL: none): every predefined role acts
-- cluster-wide or beyond the database (pg_write_all_data, pg_read_all_stats, pg_checkpoint,
-- pg_maintain, pg_database_owner, ...), and the broker's own roles hold its powers.
CREATE OR REPLACE FUNCTION jit._powerful_memberships(r oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(pr.rolname, ', ' ORDER BY pr.rolname)
      FROM pg_roles pr
     WHERE (pr.rolname LIKE 'pg\_%' OR jit._is_broker_role(pr.rolname))
       AND pr.oid <> r AND pg_has_role(r, pr.oid, 'MEMBER')
$$;

-- What makes a role unfit to own what a lease leaves (NULL: fit).  Its objects' code runs
-- with its privileges (a materialized view's query on REFRESH, a table's defaults and
-- checks): it is a plain NOLOGIN group, never a broker role or a member of one, and has no
-- attribute beyond INHERIT and no predefined role.
CREATE OR REPLACE FUNCTION jit._owner_problem(r text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a pg_roles;
    bad text;
BEGIN
    SELECT * INTO a FROM pg_roles WHERE rolname = r;
    IF NOT FOUND THEN
        RETURN format('role %I does not exist', r);
    END IF;
    IF jit._is_broker_role(a.rolname) OR a.rolname LIKE 'pg\_%' THEN
        RETURN format('role %I is the broker''s own or a predefined role', r);
    END IF;
    IF jit._powerful_attributes(a) OR a.rolcanlogin THEN
        RETURN format('role %I has LOGIN, SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS: '
                      'an owner role is a NOLOGIN group with INHERIT alone', r);
    END IF;
    bad := jit._powerful_memberships(a.oid);
    IF bad IS NOT NULL THEN
        RETURN format('role %I is a member of %s', r, bad);
    END IF;
    RETURN NULL;
END
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
    IF jit._powerful_attributes(a) THEN
        RETURN format('role %I has SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS', r);
    END IF;
    IF a.rolcanlogin THEN
        RETURN format('role %I can log in: grant roles are NOLOGIN groups', r);
    END IF;
    IF a.rolname LIKE 'pg\_%' THEN
        RETURN format('role %I is a predefined role (a member of %I acts cluster-wide)', r, r);
    END IF;
    -- a predefined or broker role's powers (jit._powerful_memberships)
    bad := jit._powerful_memberships(a.oid);
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
    -- large objects: a lease that gives one to its grant role (REASSIGN OWNED, which no
    -- event trigger sees) leaves it for the next lease; owning none, every one a grant role
    -- owns came from a lease, and the lease's end takes it back (jit._reclaim_created)
    IF EXISTS (SELECT FROM pg_largeobject_metadata m WHERE m.lomowner = a.oid) THEN
        RETURN format('role %I owns large objects: a grant role owns none (ALTER LARGE OBJECT ... OWNER TO another role)', r);
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
    SELECT l.* FROM jit_data.leases l WHERE l.role_oid = jit._role_oid(r) AND l.rolname = r
       AND l.dropped_at IS NULL
     ORDER BY l.id DESC LIMIT 1
$$;

-- The lease's role here: the role at the lease's OID, only while it has the lease's name.  An
-- OID alone is a number the cluster hands out: on a copy restored onto another cluster
-- (pg_dumpall does not keep role OIDs) the lease's OID may be an unrelated role's, and the
-- lease's restored role has another.  NULL: no role here is certainly the lease's, and
-- nothing is done to any role for it.
CREATE OR REPLACE FUNCTION jit._lease_role(l jit_data.leases) RETURNS oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.oid FROM pg_roles r WHERE r.oid = l.role_oid AND r.rolname = l.rolname
$$;

-- End a lease: NOLOGIN now, so nobody logs in again once this commits.  Sessions are
-- terminated afterwards, in another transaction (jit._finish), when NOLOGIN is visible:
-- terminating first would let an auto-reconnect slip in before the commit.
CREATE OR REPLACE FUNCTION jit._end(l jit_data.leases, p_event text, p_detail jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF jit._lease_role(l) IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I NOLOGIN VALID UNTIL %L', l.rolname,
                       jit._valid_until(least(jit._clock(), l.expires_at)));
    END IF;
    UPDATE jit_data.leases SET ended_at = jit._clock(), end_event = p_event WHERE id = l.id;
    PERFORM jit._audit(p_event, l.profile, l.rolname, l.requester, l.reason, l.expires_at, p_detail);
    PERFORM jit._doorbell();
END
$$;

-- A lease's role, powerless: every membership it holds (its grant roles, jit_lease, the
-- database's) taken away, and its sessions ended, by OID (a session that ran SET ROLE shows
-- no usename, and would keep its privileges otherwise).
CREATE OR REPLACE FUNCTION jit._disarm(l jit_data.leases) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g text;
BEGIN
    IF jit._lease_role(l) IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE usesysid = l.role_oid AND pid <> pg_backend_pid();
    FOR g IN SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
             WHERE m.member = l.role_oid LOOP
        BEGIN   -- one that cannot be revoked (granted by someone jit_owner cannot act for) stops none
            EXECUTE format('REVOKE %I FROM %I', g, l.rolname);
        EXCEPTION WHEN OTHERS THEN
            NULL;   -- the drop then fails, and says why
        END;
    END LOOP;
END
$$;

-- After jit._end has committed: take the role's grants away, end its sessions, drop it.
-- What the role owns goes to the profile's owner role, with nothing in it left to run with
-- the owner's privileges; without an owner role it is dropped with the role: nothing a lease
-- made outlives it unless an operator named who keeps it.  A prepared transaction of the
-- role's keeps it (the reaper rolls those back first, jit.prepared_to_end); so do objects in
-- another database, which only that database can drop.
-- Locks wait at most a fifth of a second: a lock another login holds on something the role
-- owns, or on the role itself (any login may GRANT it a privilege on a large object, in a
-- transaction left open or prepared), fails this lease, recorded and retried, instead of
-- stalling the reaper for everyone.
CREATE OR REPLACE FUNCTION jit._finish(l jit_data.leases) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '200ms' AS $$
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
    IF jit._lease_role(l) IS NULL AND jit._role_oid(l.rolname) IS NOT NULL THEN
        UPDATE jit_data.leases SET drop_tried_at = jit._clock(), drop_error = format(
            'role %I here is not clearly this lease''s (it is not the role the lease was bound to): '
            'left alone; an operator decides whether to drop it', l.rolname) WHERE id = l.id;
        RETURN 'kept';
    ELSIF jit._lease_role(l) IS NULL THEN
        UPDATE jit_data.leases SET dropped_at = coalesce(dropped_at, jit._clock()), drop_error = NULL WHERE id = l.id;
        RETURN 'gone';
    END IF;
    UPDATE jit_data.leases SET drop_tried_at = jit._clock() WHERE id = l.id;
    PERFORM jit._disarm(l);
    IF l.role_oid = jit._role_oid(session_user) THEN
        PERFORM jit._doorbell();   -- a session cannot drop its own role: the reaper will
        RETURN 'deferred';
    END IF;
    SELECT string_agg(format('%s (database %s)', jit._safe_text(x.gid), x.database), ', ') INTO prepared
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
        -- a materialized view's query runs as its owner on every REFRESH, and cannot be made
        -- security_invoker: it goes with the lease (its rows are a query's copy); one another
        -- role's object depends on keeps the role, and the error says which
        FOR obj IN SELECT c.oid::regclass::text FROM pg_class c
                    WHERE c.relowner = l.role_oid AND c.relkind = 'm' LOOP
            EXECUTE format('DROP MATERIALIZED VIEW %s', obj);
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
        PERFORM jit._disarm_expressions(l);   -- defaults, checks, generated columns, ...
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
    -- no CASCADE: another role's object that depends on what the lease made (a view on its
    -- table) is never dropped with it; the role is then kept, powerless, and the error says
    -- which object, for an operator to decide
    EXECUTE format('DROP OWNED BY %I', l.rolname);
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '200ms' AS $$
DECLARE
    msg text;
BEGIN
    -- the requester's and the lease's transactions that hold what the drop needs end first
    -- (another login's lock only delays the drop, recorded and retried)
    PERFORM count(*) FROM jit._end_lease_lockers(l);
    -- what the lease created comes back to its role first, wherever REASSIGN OWNED or
    -- ALTER ... OWNER put it (while the role still holds its grants: the owner it goes
    -- back to must be allowed in the schema); one that cannot keeps the role, powerless
    BEGIN
        PERFORM jit._reclaim_created(l);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
    END;
    -- first, on its own: the role's grants go and its sessions end, even if dropping it
    -- then fails (a failure rolls back only what came after)
    BEGIN
        PERFORM jit._disarm(l);
    EXCEPTION WHEN OTHERS THEN
        NULL;   -- _finish tries again, and says why
    END;
    IF msg IS NOT NULL THEN
        UPDATE jit_data.leases SET drop_error = msg, drop_tried_at = jit._clock() WHERE id = l.id;
        RETURN 'failed: ' || msg;
    END IF;
    BEGIN
        RETURN jit._finish(l);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
        UPDATE jit_data.leases SET drop_error = msg, drop_tried_at = jit._clock() WHERE id = l.id;
        RETURN 'failed: ' || msg;
    END;
END
$$;

-- Why role r (the one of lease l's name here, NULL if none) is not clearly l's, or NULL when
-- it is: named as the broker names leases, no powerful attribute, a member of nothing but its
-- profile's grant roles, jit_lease and the install's database role, and no one but jit_owner
-- a member of it.  LOGIN is not asked: a lease ended before the copy was taken is NOLOGIN.
-- Which login created a role PostgreSQL does not record before 16; these are what a restored
-- lease's role looks like, and what a role made for another purpose seldom does.
CREATE OR REPLACE FUNCTION jit._not_the_leases(l jit_data.leases, r oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a pg_roles;
    bad text;
BEGIN
    SELECT * INTO a FROM pg_roles WHERE oid = r;
    IF NOT FOUND THEN
        RETURN 'no role of its name here';
    END IF;
    IF a.rolname NOT LIKE 'jit\_%' OR jit._powerful_attributes(a) THEN
        RETURN 'not named as a lease, or SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS';
    END IF;
    SELECT string_agg(g.rolname, ', ') INTO bad
      FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
     WHERE m.member = r AND g.rolname <> 'jit_lease'
       AND g.rolname <> (SELECT i.db_role FROM jit_data.install i)
       AND g.rolname <> ALL (coalesce((SELECT p.grants FROM jit_data.profiles p WHERE p.name = l.profile), '{}'));
    IF bad IS NOT NULL THEN
        RETURN format('a member of %s, which its profile does not grant', bad);
    END IF;
    SELECT string_agg(w.rolname, ', ') INTO bad
      FROM pg_auth_members m JOIN pg_roles w ON w.oid = m.member
     WHERE m.roleid = r AND w.rolname <> 'jit_owner';
    IF bad IS NOT NULL THEN
        RETURN format('%s a member of it', bad);
    END IF;
    RETURN NULL;
END
$$;

-- A copy restored onto another cluster takes itself over, once, before the reaper does
-- anything else there (jit.expire_due and jit.finish_ended call this first; until then
-- jit._guard refuses requesters).  The stored OIDs are the old cluster's numbers:
-- * logins are bound again by name (requesters, approvers): the name is what pg_dumpall kept;
-- * requests waiting or approved there are cancelled: this copy did not take them;
-- * every lease of the database that issued them is this copy's to end ('restore'): its role
--   is bound by name only when that role is clearly the lease's (jit._not_the_leases), and is
--   then made NOLOGIN and dropped like any ended lease's; otherwise the lease is bound to no
--   role (OID 0) and nothing is done to the role of its name, which jit._finish reports for an
--   operator.  A role at the lease's old OID is never touched.
-- * leases another database issued were history there and stay history (dbid 0: no database).
-- A copy beside the original on the same cluster only records its database: role OIDs still
-- name the same roles there, and the original's broker keeps acting on its own leases.
-- Returns a row for each lease it ended, as jit.expire_due reports them.
CREATE OR REPLACE FUNCTION jit._adopt_restored() RETURNS TABLE (rolname text, outcome text, sessions integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i jit_data.install;
    here bigint := (pg_control_system()).system_identifier;
    l jit_data.leases;
    r oid;
    why text;
    unbound int := 0;
    ended int := 0;
BEGIN
    SELECT * INTO i FROM jit_data.install;
    IF i.sysid = here AND i.dbid = jit._mydb() THEN
        RETURN;
    END IF;
    SELECT * INTO i FROM jit_data.install FOR UPDATE;   -- one taker at a time
    IF i.sysid = here THEN
        UPDATE jit_data.install SET dbid = jit._mydb();
        RETURN;
    END IF;
    UPDATE jit_data.leases SET dbid = 0 WHERE dbid <> i.dbid;
    UPDATE jit_data.leases SET dbid = jit._mydb() WHERE dbid = i.dbid;
    UPDATE jit_data.leases SET requester_oid = coalesce(jit._role_oid(requester), 0);
    UPDATE jit_data.requests SET requester_oid = coalesce(jit._role_oid(requester), 0);
    UPDATE jit_data.approvals SET approver_oid = coalesce(jit._role_oid(approver), 0);
    DELETE FROM jit_data.requesters;
    UPDATE jit_data.requests SET status = 'cancelled', decided_at = jit._clock(), decided_by = session_user,
                                 verifier = NULL
     WHERE status IN ('pending', 'approved');
    FOR l IN SELECT * FROM jit_data.leases x WHERE x.dbid = jit._mydb() AND x.dropped_at IS NULL ORDER BY x.id LOOP
        r := jit._role_oid(l.rolname);
        why := jit._not_the_leases(l, r);
        UPDATE jit_data.leases SET role_oid = CASE WHEN why IS NULL THEN r ELSE 0 END
         WHERE id = l.id RETURNING * INTO l;
        unbound := unbound + (why IS NOT NULL)::int;
        IF l.ended_at IS NULL THEN
            rolname := l.rolname;
            outcome := 'ended on this restored copy';
            sessions := (SELECT count(*) FROM pg_stat_activity a WHERE a.usesysid = jit._lease_role(l))::int;
            PERFORM jit._end(l, 'restore', jsonb_build_object(
                'why', 'restored onto another cluster: this copy did not issue it',
                'role', coalesce('not clearly the lease''s: ' || why, 'the lease''s own, bound by name')));
            ended := ended + 1;
            RETURN NEXT;
        END IF;
    END LOOP;
    UPDATE jit_data.install SET sysid = here, dbid = jit._mydb();
    PERFORM jit._audit('restore', NULL, NULL, NULL, NULL, NULL, jsonb_build_object(
        'why', 'this copy runs on another cluster than the one it was set up on',
        'leases_ended', ended, 'roles_left_alone', unbound));
END
$$;

RESET ROLE;
