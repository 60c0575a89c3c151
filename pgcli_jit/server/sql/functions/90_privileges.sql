-- pgcli-jit server-side broker, the functions: Who may call what, the settings pinned on every entry point, and the event triggers.
-- Re-applied by every `setup --apply` (CREATE OR REPLACE), after the numbered schema files,
-- with the other files of this folder in name order.  Every function is SECURITY DEFINER with
-- a fixed search_path, builds every identifier with format('%I'), and takes the caller's
-- identity from session_user: what PostgreSQL authenticated, never a name the client
-- supplies.  Functions that refuse on purpose return {"status": "denied", ...} instead of
-- raising, so the refusal's audit row commits.

SET LOCAL ROLE jit_owner;

-- -- who may call what -----------------------------------------------------------------

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA jit FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jit.request(text, interval, text, text), jit.my_profiles(),
    jit.my_profile_rules(), jit.request_status(bigint), jit.cancel(bigint), jit.my_requests()
    TO jit_requester;
-- pending_for_me lists only what the caller may decide, and approve/deny check membership of
-- each request's approvers role: callable by any requester, so a non-member gets a clear no
GRANT EXECUTE ON FUNCTION jit.pending_for_me(), jit.approve(bigint, text), jit.deny(bigint, text),
    jit.approves_any() TO jit_requester, jit_admin;
GRANT EXECUTE ON FUNCTION jit.renew(text, interval), jit.revoke(text), jit.finish(text),
    jit.my_leases() TO jit_requester, jit_lease;
-- which profiles of the caller's (a lease: of its requester's) would allow a denied statement
GRANT EXECUTE ON FUNCTION jit.profiles_granting(text, text, text, text),
    jit.profiles_granting_resolved(text, text, oid, smallint) TO jit_requester, jit_lease;
-- what each profile of the caller's grants (\jit profiles); a lease requests nothing
GRANT EXECUTE ON FUNCTION jit.my_profile_grants() TO jit_requester;
GRANT EXECUTE ON FUNCTION jit.revoke(text), jit.finish(text), jit.my_leases(),
    jit.profile_set(text, text[], interval, interval, text, boolean, text, text),
    jit.profile_set(text, text[], interval, interval, text, boolean, text, text, text, integer, interval),
    jit.profile_set(text, text[], interval, interval, text, boolean, text, text, text, integer, interval,
                    integer),
    jit.profile_set(text, text[], interval, interval, text, boolean, text, text, text, integer, interval,
                    integer, text),
    jit.profile_drop(text), jit.expire_due(), jit.finish_ended(), jit.next_expiry(),
    jit.expire_requests(), jit.chain_audit(), jit.prepared_to_end(),
    jit.prepared_ended(text, text, text), jit.audit_verify() TO jit_admin;
-- operators only: revoke any lease with a reason, list every waiting request, health
GRANT EXECUTE ON FUNCTION jit.operator_revoke(text, text), jit.pending_all(), jit.health(interval)
    TO jit_admin;
-- jit.my_profile_rules() goes with jit.my_profiles(): exactly the roles that may call one may
-- call the other.  profile_set grants both to a profile's requesters role; this carries the
-- grant to the roles given my_profiles before my_profile_rules existed, and takes it from a
-- role an operator has taken my_profiles from.
SELECT jit._grant_alongside('jit.my_profiles()', ARRAY['jit.my_profile_rules()']::regprocedure[]);
DO $rules$
DECLARE
    r regrole;
BEGIN
    FOR r IN SELECT g.grantee FROM pg_proc p, aclexplode(p.proacl) g
              WHERE p.oid = 'jit.my_profile_rules()'::regprocedure AND g.privilege_type = 'EXECUTE'
                AND g.grantee NOT IN (0, p.proowner)
                AND NOT has_function_privilege(g.grantee, 'jit.my_profiles()', 'EXECUTE') LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION jit.my_profile_rules() FROM %s', r);
    END LOOP;
END
$rules$;
-- jit.approves_any() goes with jit.pending_for_me() (the roles profile_set gave it to before
-- approves_any existed): whoever may list what waits on them may ask if anything could
SELECT jit._grant_alongside('jit.pending_for_me()', ARRAY['jit.approves_any()']::regprocedure[]);

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
                 ' SET default_transaction_read_only = off SET row_security = on'
                 ' SET plpgsql.extra_errors = ''none'' SET plpgsql.extra_warnings = ''none'''
                 ' SET plpgsql.print_strict_params = off';
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

-- Audit retention (functions/40_operators.sql): the archiving login removes chained rows,
-- through these two functions only, and only it: jit_archiver, not jit_admin (the reaper and
-- monitoring are in jit_admin).  The grant to jit_admin of databases set up before
-- jit_archiver existed is taken back.
SET LOCAL ROLE jit_owner;
REVOKE EXECUTE ON FUNCTION jit.audit_archive_rows(timestamptz),
    jit.audit_archive(bigint, bytea, bigint, bytea, bigint, timestamptz) FROM PUBLIC, jit_admin;
GRANT EXECUTE ON FUNCTION jit.audit_archive_rows(timestamptz),
    jit.audit_archive(bigint, bytea, bigint, bytea, bigint, timestamptz) TO jit_archiver;
RESET ROLE;
