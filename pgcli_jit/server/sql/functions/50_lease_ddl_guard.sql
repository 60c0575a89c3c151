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

-- How many DDL records (jit_data.lease_objects rows) one lease may leave: each DDL command
-- adds one per object, and a lease repeating COMMENT ON its own table added ~1,100 a second
-- to a table every operator reads.  Past it, the lease's DDL is refused.
CREATE OR REPLACE FUNCTION jit._lease_objects_cap() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 10000
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
    IF (SELECT count(*) FROM jit_data.lease_objects o WHERE o.lease_id = l.id)
       + (SELECT count(*) FROM pg_event_trigger_ddl_commands()) > jit._lease_objects_cap() THEN
        RAISE EXCEPTION 'a temporary role may make at most % DDL changes; this lease has made them all',
                        jit._lease_objects_cap()
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'ask for a new lease, or have an operator do the rest';
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

-- What a lease created, back with the lease's role wherever its owner is now, before the
-- lease's end hands it over disarmed or drops it (jit._finish).  Ownership can leave the
-- lease's role without any event trigger firing: REASSIGN OWNED BY CURRENT_USER TO a grant
-- role needs only the grant role's privileges (INHERIT; SET FALSE does not stop it), and
-- fires none.  So the lease's end does not trust where an object's owner says it is: every
-- object the lease's own record (jit_data.lease_objects) says it created and that still
-- exists is given back to the lease's role.  jit_owner acts as the current owner by ADMIN
-- OPTION (a grant role's, jit_lease's, the database role's), for this transaction only; an
-- owner it cannot act as stops the lease's drop, and the error names the object.  Tables
-- come first: a sequence a column owns follows its table.  Returns how many were moved.
CREATE OR REPLACE FUNCTION jit._reclaim_created(l jit_data.leases) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o record;
    now_owner oid;
    borrowed oid[] := '{}';
    r oid;
    n integer := 0;
    with_opts text := CASE WHEN current_setting('server_version_num')::int >= 160000
                           THEN ' WITH INHERIT TRUE' ELSE '' END;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE oid = l.role_oid) THEN
        RETURN 0;
    END IF;
    FOR o IN SELECT x.classid, x.objid, i.type, i.identity
               FROM (SELECT DISTINCT y.classid, y.objid FROM jit_data.lease_objects y
                      WHERE y.lease_id = l.id AND y.command LIKE 'CREATE%'
                        AND y.classid IS NOT NULL AND y.objid IS NOT NULL) x
               CROSS JOIN LATERAL pg_identify_object(x.classid, x.objid, 0) i
              WHERE i.identity IS NOT NULL
              ORDER BY i.type NOT IN ('table', 'foreign table'), x.classid, x.objid LOOP
        now_owner := NULL;
        SELECT d.refobjid INTO now_owner FROM pg_shdepend d
         WHERE d.dbid = jit._mydb() AND d.classid = o.classid AND d.objid = o.objid
           AND d.objsubid = 0 AND d.deptype = 'o';
        CONTINUE WHEN now_owner IS NULL OR now_owner = l.role_oid;
        -- jit_owner created the role, so may join it (16+: its implicit grant is ADMIN alone,
        -- and ALTER ... OWNER TO needs SET on the new owner)
        EXECUTE format('GRANT %I TO %I', l.rolname, current_user);
        IF NOT pg_has_role(current_user, now_owner, 'USAGE') THEN
            IF NOT EXISTS (SELECT FROM pg_auth_members m
                            WHERE m.roleid = now_owner AND m.member = jit._role_oid(current_user)
                              AND m.admin_option) THEN
                RAISE EXCEPTION '% that lease % created now belongs to %, which the broker cannot act as',
                                o.identity, l.rolname, now_owner::regrole
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = format('as a superuser: ALTER ... OWNER TO %I (or drop it); the reaper then drops the lease', l.rolname);
            END IF;
            EXECUTE format('GRANT %s TO %I', now_owner::regrole, current_user) || with_opts;
            borrowed := borrowed || now_owner;
        END IF;
        EXECUTE format('ALTER %s %s OWNER TO %I',
                       CASE o.type WHEN 'statistics object' THEN 'STATISTICS'
                                   WHEN 'composite type' THEN 'TYPE' ELSE upper(o.type) END,
                       o.identity, l.rolname);
        n := n + 1;
    END LOOP;
    -- large objects: made by a function (lo_create, lo_from_bytea, lo_import), they fire no
    -- event trigger and are in no record; a grant role may own none (jit._grant_problem), so
    -- one a grant role of this lease owns now was given to it by a lease holding that role
    FOR o IN SELECT m.oid AS objid, m.lomowner FROM pg_largeobject_metadata m
              WHERE m.lomowner IN (SELECT g.roleid FROM pg_auth_members g WHERE g.member = l.role_oid)
                AND m.lomowner NOT IN (jit._role_oid('jit_lease'),
                                       jit._role_oid((SELECT db_role FROM jit_data.install))) LOOP
        EXECUTE format('GRANT %I TO %I', l.rolname, current_user);
        IF NOT pg_has_role(current_user, o.lomowner, 'USAGE') THEN
            EXECUTE format('GRANT %s TO %I', o.lomowner::regrole, current_user) || with_opts;
            borrowed := borrowed || o.lomowner;
        END IF;
        EXECUTE format('ALTER LARGE OBJECT %s OWNER TO %I', o.objid, l.rolname);
        n := n + 1;
    END LOOP;
    FOREACH r IN ARRAY ARRAY(SELECT DISTINCT b FROM unnest(borrowed) b) LOOP
        EXECUTE format('REVOKE %s FROM %I', r::regrole, current_user);
    END LOOP;
    RETURN n;
END
$$;

-- What a lease leaves for its profile's owner role, with no expression left that runs as
-- whoever touches it.  A column default, a CHECK constraint, a generated column, an index's
-- expression or predicate, an exclusion constraint's expressions, a statistics object's
-- expressions and a domain's default and constraints are evaluated by whoever writes the
-- row (a superuser's INSERT read a server file through a default; a CHECK set
-- log_statement = none in the superuser's session) or, on VACUUM, ANALYZE and REINDEX, as
-- the owner role.  The handover keeps the data and the shape, and removes every one of
-- them: defaults (but a plain nextval() of a sequence, which a serial column needs) and
-- CHECK constraints are dropped; a stored generated column keeps its values as a plain
-- column (DROP EXPRESSION), a virtual one (18), which has no values of its own, is dropped;
-- expression and partial indexes and the constraints they back are dropped; statistics on
-- expressions are dropped.  Triggers, rules and policies are dropped by jit._finish.
CREATE OR REPLACE FUNCTION jit._disarm_expressions(l jit_data.leases) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o record;
    n integer := 0;
BEGIN
    -- constraints first: an exclusion constraint owns its index, a CHECK may name a column
    FOR o IN SELECT c.conname, c.conrelid::regclass::text AS rel, c.contypid
               FROM pg_constraint c
               LEFT JOIN pg_class t ON t.oid = c.conrelid
               LEFT JOIN pg_type d ON d.oid = c.contypid
               LEFT JOIN pg_index i ON i.indexrelid = c.conindid
              WHERE (t.relowner = l.role_oid OR d.typowner = l.role_oid)
                AND c.coninhcount = 0   -- an inherited one goes with its parent's
                AND (c.contype = 'c'
                     OR (c.contype IN ('x', 'u', 'p')
                         AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL OR c.contype = 'x')))
              ORDER BY c.contype DESC LOOP
        IF o.contypid <> 0 THEN
            EXECUTE format('ALTER DOMAIN %s DROP CONSTRAINT %I', o.contypid::regtype, o.conname);
        ELSE
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', o.rel, o.conname);
        END IF;
        n := n + 1;
    END LOOP;
    FOR o IN SELECT i.indexrelid::regclass::text AS idx
               FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
              WHERE t.relowner = l.role_oid AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
                AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)
                AND NOT EXISTS (SELECT FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) LOOP
        EXECUTE format('DROP INDEX %s', o.idx);
        n := n + 1;
    END LOOP;
    FOR o IN SELECT a.attrelid::regclass::text AS rel, a.attname, a.attgenerated
               FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid
              WHERE t.relowner = l.role_oid AND t.relkind IN ('r', 'p', 'f')
                AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
                AND a.attinhcount = 0 LOOP
        IF o.attgenerated = 's' THEN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP EXPRESSION', o.rel, o.attname);
        ELSE
            EXECUTE format('ALTER TABLE %s DROP COLUMN %I', o.rel, o.attname);
        END IF;
        n := n + 1;
    END LOOP;
    FOR o IN SELECT d.adrelid::regclass::text AS rel, a.attname
               FROM pg_attrdef d
               JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
               JOIN pg_class t ON t.oid = d.adrelid
              WHERE t.relowner = l.role_oid AND a.attgenerated = ''
                AND pg_get_expr(d.adbin, d.adrelid) !~ '^nextval\(''[^'']+''::regclass\)$' LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', o.rel, o.attname);
        n := n + 1;
    END LOOP;
    FOR o IN SELECT t.oid::regtype::text AS dom FROM pg_type t
              WHERE t.typowner = l.role_oid AND t.typtype = 'd' AND t.typdefaultbin IS NOT NULL LOOP
        EXECUTE format('ALTER DOMAIN %s DROP DEFAULT', o.dom);
        n := n + 1;
    END LOOP;
    FOR o IN SELECT x.oid FROM pg_statistic_ext x
              WHERE x.stxowner = l.role_oid AND x.stxexprs IS NOT NULL LOOP
        EXECUTE format('DROP STATISTICS %s',
                       (SELECT format('%I.%I', x.stxnamespace::regnamespace, x.stxname)
                          FROM pg_statistic_ext x WHERE x.oid = o.oid));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

RESET ROLE;
