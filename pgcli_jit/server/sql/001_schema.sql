-- pgcli-jit server-side broker, schema version 1: roles, tables and the audit chain.
--
-- Applied once per database by `pgcli-jit-admin setup --apply`, as a superuser, inside the
-- same transaction as functions/*.sql.  Everything below the role section is created while
-- SET ROLE jit_owner, so the schema's objects belong to a NOLOGIN role nobody can log in as.

-- Roles are cluster-wide: a second database finds them already there.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jit_owner') THEN
        -- owns the schema and runs its functions; NOLOGIN, no password, no members
        CREATE ROLE jit_owner NOLOGIN CREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jit_requester') THEN
        -- the default requesters role: its members may ask, nothing more
        CREATE ROLE jit_requester NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jit_admin') THEN
        -- operators: profiles, every lease, the audit trail, the reaper
        CREATE ROLE jit_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'jit_lease') THEN
        -- every temporary role is a member: it may renew, revoke and see its own lease
        CREATE ROLE jit_lease NOLOGIN;
    END IF;
END
$roles$;

-- jit_owner ends the sessions of the roles it drops, and hands jit_lease to the roles it creates.
GRANT pg_signal_backend TO jit_owner;
GRANT jit_lease TO jit_owner WITH ADMIN OPTION;

CREATE SCHEMA IF NOT EXISTS jit AUTHORIZATION jit_owner;
REVOKE ALL ON SCHEMA jit FROM PUBLIC;
GRANT USAGE ON SCHEMA jit TO jit_requester, jit_admin, jit_lease;

SET LOCAL ROLE jit_owner;

-- No function in this schema is callable by PUBLIC; functions/90_privileges.sql grants each one to whom it serves.
ALTER DEFAULT PRIVILEGES FOR ROLE jit_owner IN SCHEMA jit REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

CREATE TABLE jit.schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by name NOT NULL DEFAULT session_user
);

-- What may be requested.  Only jit.profile_set (jit_admin) writes here, after checking every role.
CREATE TABLE jit.profiles (
    name            text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    grants          text[] NOT NULL,
    ttl             interval NOT NULL CHECK (ttl > interval '0'),
    max_ttl         interval NOT NULL CHECK (max_ttl >= ttl),
    requesters      text NOT NULL DEFAULT 'jit_requester',
    reason_required boolean NOT NULL DEFAULT false,
    owner           text,   -- who receives what a lease created; NULL: it is dropped with the role (006)
    description     text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      name NOT NULL DEFAULT session_user
);

-- One row per temporary role, from request until the role is dropped (and after: history).
CREATE TABLE jit.leases (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rolname        text NOT NULL UNIQUE,
    role_oid       oid NOT NULL,
    profile        text NOT NULL,
    requester      text NOT NULL,
    requester_oid  oid NOT NULL,
    reason         text NOT NULL DEFAULT '',
    client_addr    inet,
    issued_at      timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    max_expires_at timestamptz NOT NULL,
    renewals       integer NOT NULL DEFAULT 0,
    ended_at       timestamptz,          -- NOLOGIN since: revoked or expired
    end_event      text,                 -- 'revoke' or 'expire'
    dropped_at     timestamptz,          -- the role is gone
    drop_error     text,                 -- why the role could not be dropped yet
    drop_tried_at  timestamptz
);
CREATE INDEX leases_live ON jit.leases (expires_at) WHERE ended_at IS NULL;
CREATE INDEX leases_undropped ON jit.leases (id) WHERE dropped_at IS NULL;

-- The audit trail: append-only, each row chained to the one before by a SHA-256 hash.
CREATE TABLE jit.audit (
    id          bigint PRIMARY KEY,
    at          timestamptz NOT NULL,
    event       text NOT NULL,
    profile     text,
    rolname     text,
    requester   text,
    actor       text NOT NULL,
    client_addr inet,
    reason      text,
    expires_at  timestamptz,
    detail      jsonb NOT NULL DEFAULT '{}',
    prev_hash   bytea,
    hash        bytea NOT NULL
);
CREATE SEQUENCE jit.audit_id_seq OWNED BY jit.audit.id;

-- The newest row's id and hash: cutting rows off the end breaks the chain too.
CREATE TABLE jit.audit_head (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id bigint NOT NULL,
    hash    bytea NOT NULL
);

CREATE FUNCTION jit._audit_is_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'jit.audit is append-only: % refused', TG_OP
        USING HINT = 'audit rows are never edited or deleted; pgcli-jit-admin audit --verify checks the chain';
END
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON jit.audit
    FOR EACH ROW EXECUTE FUNCTION jit._audit_is_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON jit.audit
    FOR EACH STATEMENT EXECUTE FUNCTION jit._audit_is_append_only();

-- Operators read everything; nobody but jit_owner's functions writes.
GRANT SELECT ON jit.profiles, jit.leases, jit.audit, jit.schema_version TO jit_admin;

RESET ROLE;
