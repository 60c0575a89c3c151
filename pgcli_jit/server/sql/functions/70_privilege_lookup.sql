-- pgcli-jit server-side broker, the functions: Which of my profiles would allow this, and what does each grant? profiles_granting, profiles_granting_resolved, my_profile_grants.
-- Re-applied by every `setup --apply` (CREATE OR REPLACE), after the numbered schema files,
-- with the other files of this folder in name order.
--
-- A statement failed with "permission denied for table orders"; the shell asks which profiles
-- the login may request would have let it run.  Two halves, so that the object is always the
-- one the caller means and may name:
-- * jit.profiles_granting runs as the CALLER (SECURITY INVOKER, no search_path of its own): the
--   name is resolved with the caller's search_path and the caller's schema privileges
--   (to_regclass and friends skip, or refuse, a schema the caller may not use), exactly as the
--   failed statement resolved it.  Anything that does not resolve returns no row; an error on
--   the way (a name that does not parse, a schema the caller may not use) returns no row too,
--   so nothing of the catalog leaks through an error message.
-- * jit.profiles_granting_resolved (SECURITY DEFINER) takes the object's oid and answers from
--   jit_data.profiles, which the caller cannot read: only profiles the caller (or, for a lease,
--   its own requester) may request, and only whether their grant roles hold the privilege.
--   Called directly with any oid, it still checks that the caller may use the object's schema,
--   and it says nothing the catalog (world-readable: pg_class, relacl, pg_auth_members) does
--   not already say about a role, beyond the names of profiles the caller may request anyway.
-- Bounded: names over 200 characters or with control characters are not looked up, at most 20
-- rows come back, at most 100 requestable profiles are examined, each a handful of privilege
-- checks on the catalog; lock_timeout is pinned (functions/90_privileges.sql).

SET LOCAL ROLE jit_owner;

-- The privileges each kind of object has, as has_*_privilege spells them.  A privilege not in
-- its kind's list is not looked up (PostgreSQL would raise on it, naming the privilege).
CREATE OR REPLACE FUNCTION jit._privileges_of(p_kind text) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_kind
        WHEN 'table' THEN ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']
        WHEN 'column' THEN ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']
        WHEN 'sequence' THEN ARRAY['USAGE', 'SELECT', 'UPDATE']
        WHEN 'schema' THEN ARRAY['USAGE', 'CREATE']
        WHEN 'function' THEN ARRAY['EXECUTE']
        WHEN 'database' THEN ARRAY['CONNECT', 'CREATE', 'TEMPORARY']
        ELSE ARRAY[]::text[] END
$$;

-- Whether grant role g holds privilege p on the object: a column's check when one is named
-- (a table-wide grant holds every column).  NULL (not granting) for an object that has gone.
CREATE OR REPLACE FUNCTION jit._role_holds(g oid, p_kind text, p_oid oid, p_attnum smallint, p text)
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_kind
        WHEN 'table' THEN CASE WHEN p_attnum IS NULL THEN has_table_privilege(g, p_oid, p)
                               ELSE has_column_privilege(g, p_oid, p_attnum, p) END
        WHEN 'sequence' THEN has_sequence_privilege(g, p_oid, p)
        WHEN 'schema' THEN has_schema_privilege(g, p_oid, p)
        WHEN 'function' THEN has_function_privilege(g, p_oid, p)
        WHEN 'database' THEN has_database_privilege(g, p_oid, p)
    END
$$;

-- Whether the object exists as that kind and the caller may use the schema it lives in (a
-- schema and a database live in none: their names are in the world-readable catalog).
CREATE OR REPLACE FUNCTION jit._nameable(p_kind text, p_oid oid, p_attnum smallint) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_kind
        WHEN 'table' THEN EXISTS (
            SELECT FROM pg_class c WHERE c.oid = p_oid AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
               AND has_schema_privilege(session_user, c.relnamespace, 'USAGE')
               AND (p_attnum IS NULL OR EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid
                                                   AND a.attnum = p_attnum AND a.attnum > 0
                                                   AND NOT a.attisdropped)))
        WHEN 'sequence' THEN p_attnum IS NULL AND EXISTS (
            SELECT FROM pg_class c WHERE c.oid = p_oid AND c.relkind = 'S'
               AND has_schema_privilege(session_user, c.relnamespace, 'USAGE'))
        WHEN 'function' THEN p_attnum IS NULL AND EXISTS (
            SELECT FROM pg_proc f WHERE f.oid = p_oid
               AND has_schema_privilege(session_user, f.pronamespace, 'USAGE'))
        WHEN 'schema' THEN p_attnum IS NULL AND EXISTS (SELECT FROM pg_namespace WHERE oid = p_oid)
        WHEN 'database' THEN p_attnum IS NULL AND EXISTS (SELECT FROM pg_database WHERE oid = p_oid)
        ELSE false
    END
$$;

-- The half that reads the profiles: which profiles the caller may request (a lease: its own
-- requester, while the lease is live) have a grant role holding p_privilege on the object.
-- "size" orders them: fewest grant roles, then shortest max ttl, then name.
CREATE OR REPLACE FUNCTION jit.profiles_granting_resolved(p_privilege text, p_kind text, p_oid oid,
                                                          p_attnum smallint DEFAULT NULL)
RETURNS TABLE (profile text, ttl_seconds double precision, max_ttl_seconds double precision,
               reason_required boolean, approval_required boolean, grant_roles integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lease jit_data.leases := jit._lease_of(session_user);
    who oid := jit._role_oid(session_user);
BEGIN
    IF p_privilege IS NULL OR p_kind IS NULL OR p_oid IS NULL
       OR NOT upper(p_privilege) = ANY (jit._privileges_of(CASE WHEN p_attnum IS NULL THEN p_kind
                                                                ELSE 'column' END))
       OR NOT jit._nameable(p_kind, p_oid, p_attnum) THEN
        RETURN;
    END IF;
    IF lease.id IS NOT NULL THEN
        IF lease.ended_at IS NOT NULL OR lease.expires_at <= jit._clock() THEN
            RETURN;
        END IF;
        who := lease.requester_oid;
    END IF;
    IF who IS NULL OR NOT EXISTS (SELECT FROM pg_roles WHERE oid = who) THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT p.name, extract(epoch FROM p.ttl)::float8, extract(epoch FROM p.max_ttl)::float8,
           p.reason_required, p.approvers IS NOT NULL, cardinality(p.grants)
      FROM (SELECT * FROM jit_data.profiles q
             WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = q.requesters)
               AND pg_has_role(who, q.requesters, 'MEMBER')
             ORDER BY q.name LIMIT 100) p
     WHERE EXISTS (SELECT FROM unnest(p.grants) g JOIN pg_roles r ON r.rolname = g
                    WHERE jit._role_holds(r.oid, p_kind, p_oid, p_attnum, upper(p_privilege)))
     ORDER BY cardinality(p.grants), p.max_ttl, p.name
     LIMIT 20;
END
$$;

-- The half the client calls: the object named as the caller names it.  p_object_kind is what
-- the error said ("table", "view", "sequence", "schema", "function", "database", ...);
-- p_object an identifier as SQL spells it (quoted where needed, schema-qualified or not);
-- p_column a column's name as it is (not quoted).  Returns the profiles as
-- profiles_granting_resolved does, each with the object's qualified name.
CREATE OR REPLACE FUNCTION jit.profiles_granting(p_privilege text, p_object_kind text, p_object text,
                                                 p_column text DEFAULT NULL)
RETURNS TABLE (profile text, object text, ttl_seconds double precision,
               max_ttl_seconds double precision, reason_required boolean,
               approval_required boolean, grant_roles integer)
LANGUAGE plpgsql STABLE SECURITY INVOKER AS $$
DECLARE
    -- it runs with the caller's search_path, so every type, function and operator here is
    -- pg_catalog's by name; the kind by a lookup, not CASE (a CASE compares with whatever "="
    -- that path finds first)
    kind pg_catalog.text := (SELECT k.kind FROM (VALUES ('table', 'table'), ('view', 'table'),
                      ('materialized view', 'table'), ('foreign table', 'table'), ('relation', 'table'),
                      ('sequence', 'sequence'), ('schema', 'schema'), ('function', 'function'),
                      ('procedure', 'function'), ('database', 'database')) AS k(word, kind)
                   WHERE k.word OPERATOR(pg_catalog.=) pg_catalog.lower(p_object_kind));
    target pg_catalog.oid;
    attnum pg_catalog.int2;
    named pg_catalog.text;
    parts pg_catalog.text[];
BEGIN
    IF kind IS NULL OR p_privilege IS NULL OR p_object IS NULL
       OR pg_catalog.length(p_object) OPERATOR(pg_catalog.>) 200
       OR pg_catalog.length(p_privilege) OPERATOR(pg_catalog.>) 20
       OR pg_catalog.length(coalesce(p_column, '')) OPERATOR(pg_catalog.>) 200
       OR p_object OPERATOR(pg_catalog.~) '[[:cntrl:]]'
       OR coalesce(p_column, '') OPERATOR(pg_catalog.~) '[[:cntrl:]]'
       OR (p_column IS NOT NULL AND kind OPERATOR(pg_catalog.<>) 'table') THEN
        RETURN;
    END IF;
    BEGIN
        IF kind OPERATOR(pg_catalog.=) ANY (ARRAY['table', 'sequence']) THEN
                target := pg_catalog.to_regclass(p_object);
                SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO named
                  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                 WHERE c.oid OPERATOR(pg_catalog.=) target;
        ELSIF kind OPERATOR(pg_catalog.=) 'function' THEN
                target := pg_catalog.to_regproc(p_object);
                SELECT pg_catalog.format('%I.%I', n.nspname, f.proname) INTO named
                  FROM pg_catalog.pg_proc f JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) f.pronamespace
                 WHERE f.oid OPERATOR(pg_catalog.=) target;
        ELSIF kind OPERATOR(pg_catalog.=) 'schema' THEN
                target := pg_catalog.to_regnamespace(p_object);
                named := target::pg_catalog.regnamespace::pg_catalog.text;
        ELSIF kind OPERATOR(pg_catalog.=) 'database' THEN
                parts := pg_catalog.parse_ident(p_object);
                IF pg_catalog.cardinality(parts) OPERATOR(pg_catalog.=) 1 THEN
                    SELECT d.oid, pg_catalog.quote_ident(d.datname) INTO target, named
                      FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) parts[1];
                END IF;
        END IF;
        IF target IS NOT NULL AND p_column IS NOT NULL THEN
            SELECT a.attnum INTO attnum FROM pg_catalog.pg_attribute a
             WHERE a.attrelid OPERATOR(pg_catalog.=) target AND a.attname OPERATOR(pg_catalog.=) p_column
               AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
            IF attnum IS NULL THEN
                RETURN;
            END IF;
            named := named OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(p_column);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RETURN;   -- a name that does not parse, a schema the caller may not use: nothing
    END;
    IF target IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT r.profile, named, r.ttl_seconds, r.max_ttl_seconds, r.reason_required,
           r.approval_required, r.grant_roles
      FROM jit.profiles_granting_resolved(p_privilege, kind, target, attnum) r;
END
$$;

-- What each profile the caller may request grants, for `\jit profiles` and completion: the
-- privileges its grant roles hold (directly or through roles they inherit) on the tables,
-- views (and their columns) and schemas the CALLER may name (schemas it may use; the broker's
-- own and the system's left out), in a compact form: privileges held on every relation of a
-- schema (two or more) read `SELECT on public.*`, a relation's full set reads `ALL`, relations
-- with the same privileges share one item (naming five of them at most, then how many more).
-- The catalog is read once for all of p_names (profiles' names), and each grant role's
-- memberships are asked once.  Bounded: at most 2000 relations are examined (beyond that
-- `listed` is false and no item is given rather than a wrong one), at most 20 items a profile.
CREATE OR REPLACE FUNCTION jit._grants_summary(p_names text[], p_who oid)
RETURNS TABLE (profile text, summary jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH pg AS (   -- each profile's grant roles
        SELECT DISTINCT p.name AS profile, r.oid AS g
          FROM jit_data.profiles p, unnest(p.grants) n JOIN pg_roles r ON r.rolname = n
         WHERE p.name = ANY (p_names)),
    rel AS (
        SELECT c.oid, c.relname, s.nspname, coalesce(c.relacl, acldefault('r', c.relowner)) AS acl
          FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
           AND s.nspname NOT IN ('information_schema', 'jit', 'jit_data') AND s.nspname NOT LIKE 'pg\_%'
           AND has_schema_privilege(p_who, s.oid, 'USAGE')
         LIMIT 2001),
    listed AS (SELECT count(*) <= 2000 AS ok FROM rel),
    acl AS (
        SELECT rel.nspname, rel.relname, a.grantee, a.privilege_type AS priv
          FROM rel, aclexplode(rel.acl) a WHERE a.grantee <> 0),
    colacl AS (
        SELECT rel.nspname, rel.relname, att.attname, x.grantee, x.privilege_type AS priv
          FROM rel JOIN pg_attribute att ON att.attrelid = rel.oid, aclexplode(att.attacl) x
         WHERE att.attacl IS NOT NULL AND att.attnum > 0 AND NOT att.attisdropped AND x.grantee <> 0),
    -- which grantees each grant role has the privileges of: a few roles, asked once each
    gmap AS (
        SELECT DISTINCT g.g, e.grantee
          FROM (SELECT DISTINCT pg.g FROM pg) g,
               (SELECT grantee FROM acl UNION SELECT grantee FROM colacl) e
         WHERE pg_has_role(g.g, e.grantee, 'USAGE')),
    held AS (
        SELECT DISTINCT pg.profile, acl.nspname, acl.relname, acl.priv
          FROM acl JOIN gmap ON gmap.grantee = acl.grantee JOIN pg ON pg.g = gmap.g),
    -- a column-level grant where the table-wide one is not held: `UPDATE on lk.orders (status)`
    cols AS (
        SELECT pg.profile, c.nspname, c.relname, c.priv,
               string_agg(DISTINCT quote_ident(c.attname), ', ') AS names
          FROM colacl c JOIN gmap ON gmap.grantee = c.grantee JOIN pg ON pg.g = gmap.g
         WHERE NOT EXISTS (SELECT FROM held h WHERE h.profile = pg.profile AND h.nspname = c.nspname
                                                AND h.relname = c.relname AND h.priv = c.priv)
         GROUP BY pg.profile, c.nspname, c.relname, c.priv),
    per_schema AS (SELECT nspname, count(*) AS n FROM rel GROUP BY nspname),
    wild AS (
        SELECT h.profile, h.nspname, h.priv FROM held h JOIN per_schema s ON s.nspname = h.nspname
         GROUP BY h.profile, h.nspname, h.priv, s.n HAVING count(*) > 1 AND count(*) = s.n),
    items AS (
        SELECT w.profile, format('%I.*', w.nspname) AS obj, w.priv, 0 AS rank FROM wild w
        UNION ALL
        SELECT h.profile, format('%I.%I', h.nspname, h.relname), h.priv, 1 FROM held h
         WHERE NOT EXISTS (SELECT FROM wild w WHERE w.profile = h.profile AND w.nspname = h.nspname
                                                AND w.priv = h.priv)
        UNION ALL
        SELECT c.profile, format('%I.%I (%s)', c.nspname, c.relname, c.names), c.priv, 1 FROM cols c
        UNION   -- two grant roles with CREATE on one schema: one item
        SELECT pg.profile, format('schema %I', s.nspname), 'CREATE', 2
          FROM pg, pg_namespace s
         WHERE s.nspname NOT IN ('information_schema', 'jit', 'jit_data') AND s.nspname NOT LIKE 'pg\_%'
           AND has_schema_privilege(pg.g, s.oid, 'CREATE')),
    per_obj AS (
        SELECT i.profile, i.obj, min(i.rank) AS rank,
               CASE WHEN count(*) >= (SELECT count(*) FROM aclexplode(acldefault('r', 10::oid)))
                    THEN 'ALL'
                    ELSE string_agg(i.priv, ', ' ORDER BY array_position(ARRAY['SELECT', 'INSERT',
                         'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER', 'MAINTAIN', 'CREATE'],
                         i.priv)) END AS privs
          FROM items i GROUP BY i.profile, i.obj),
    grouped AS (
        SELECT o.profile, o.privs || ' on '
                   || array_to_string((array_agg(o.obj ORDER BY o.obj))[1:5], ', ')
                   || CASE WHEN count(*) > 5 THEN format(' and %s more', count(*) - 5) ELSE '' END AS item,
               min(o.rank) AS rank,
               row_number() OVER (PARTITION BY o.profile ORDER BY min(o.rank), o.privs) AS n
          FROM per_obj o GROUP BY o.profile, o.privs)
    SELECT x.name,
           CASE WHEN NOT (SELECT ok FROM listed)
                THEN jsonb_build_object('listed', false, 'grants', '[]'::jsonb, 'more', 0)
                ELSE jsonb_build_object('listed', true, 'grants', coalesce(
                         (SELECT jsonb_agg(gr.item ORDER BY gr.n) FROM grouped gr
                           WHERE gr.profile = x.name AND gr.n <= 20), '[]'::jsonb),
                         'more', (SELECT count(*) FROM grouped gr WHERE gr.profile = x.name AND gr.n > 20))
           END
      FROM unnest(p_names) AS x(name)
$$;

-- `\jit profiles` for the caller: per profile it may request (the same as jit.my_profiles(),
-- at most 100, none for a lease: a lease requests nothing), what it grants (above), whether it
-- allows break-glass, and whether the caller's requests skip its approval (a member of its
-- auto_approve role, as jit.request decides it: jit._auto_approves, functions/80_notify.sql).
-- A set of jsonb, as jit.my_profile_rules(), so that it can say more later without a DROP.
CREATE OR REPLACE FUNCTION jit.my_profile_grants() RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who oid := jit._role_oid(session_user);
    names text[];
BEGIN
    IF who IS NULL OR EXISTS (SELECT FROM jit_data.leases l WHERE l.role_oid = who) THEN
        RETURN;
    END IF;
    SELECT array_agg(q.name ORDER BY q.name) INTO names
      FROM (SELECT p.name FROM jit_data.profiles p
             WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = p.requesters)
               AND pg_has_role(who, p.requesters, 'MEMBER')
             ORDER BY p.name LIMIT 100) q;
    IF names IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT jsonb_build_object('profile', p.name, 'break_glass', p.break_glass,
                              'auto_approved', p.approvers IS NOT NULL AND jit._auto_approves(p, who))
           || s.summary
      FROM jit._grants_summary(names, who) s JOIN jit_data.profiles p ON p.name = s.profile
     ORDER BY p.name;
END
$$;

-- Grant EXECUTE on p_functions to every role that may execute p_with (its owner and PUBLIC
-- aside): functions that go with another take its grants over, including those an operator's
-- jit.profile_set gave before they existed.  Run by setup as jit_owner.
CREATE OR REPLACE FUNCTION jit._grant_alongside(p_with regprocedure, p_functions regprocedure[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r regrole;
    f regprocedure;
BEGIN
    FOR r IN SELECT g.grantee FROM pg_proc p, aclexplode(p.proacl) g
              WHERE p.oid = p_with AND g.privilege_type = 'EXECUTE'
                AND g.grantee NOT IN (0, p.proowner) LOOP
        FOREACH f IN ARRAY p_functions LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', f, r);
        END LOOP;
    END LOOP;
END
$$;

-- The lookups go with jit.my_profiles(): a requesters role given my_profiles by profile_set
-- may call them too (jit_requester and jit_lease: 90_privileges.sql).
SELECT jit._grant_alongside('jit.my_profiles()', ARRAY[
    'jit.profiles_granting(text, text, text, text)',
    'jit.profiles_granting_resolved(text, text, oid, smallint)',
    'jit.my_profile_grants()']::regprocedure[]);

RESET ROLE;
