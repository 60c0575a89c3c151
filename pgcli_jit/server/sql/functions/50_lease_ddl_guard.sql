-- pgcli-jit server-side broker, the functions: The DDL guard: what a lease's session may not create or change.
-- Re-applied by every `setup --apply` (CREATE OR REPLACE), after the numbered schema files,
-- with the other files of this folder in name order.  Every function is SECURITY DEFINER with
-- a fixed search_path, builds every identifier with format('%I'), and takes the caller's
-- identity from session_user: what PostgreSQL authenticated, never a name the client
-- supplies.  Functions that refuse on purpose return {"status": "denied", ...} instead of
-- raising, so the refusal's audit row commits.

SET LOCAL ROLE jit_owner;

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
                 'CREATE TEXT SEARCH PARSER', 'CREATE TEXT SEARCH TEMPLATE', 'ALTER FUNCTION',
                 'ALTER PROCEDURE', 'ALTER ROUTINE', 'ALTER AGGREGATE']
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
        -- temporary objects end with the session (the broker's own guard table among them)
        CONTINUE WHEN c.schema_name = 'pg_temp' OR c.schema_name LIKE 'pg\_temp\_%';
        -- code a lease leaves in a schema others search would run as whoever calls it by
        -- name (a public.lower(varchar) is a better match than pg_catalog.lower(text))
        IF c.classid = 'pg_proc'::regclass AND c.command_tag IN ('CREATE FUNCTION', 'CREATE PROCEDURE',
                                                                 'CREATE AGGREGATE') THEN
            RAISE EXCEPTION 'a temporary role may create functions only in pg_temp (%)', c.object_identity
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'code a lease leaves would run as whoever calls it; CREATE FUNCTION pg_temp.f() lasts the session';
        END IF;
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

RESET ROLE;
