-- pgcli-jit server-side broker, the functions: Notifiers: where each stands in the audit chain.
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

REVOKE EXECUTE ON FUNCTION jit.notify_cursor(text), jit.notify_advance(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jit.notify_cursor(text), jit.notify_advance(text, bigint) TO jit_admin;

RESET ROLE;
