-- pgcli-jit server-side broker, schema version 11: approvals that reach people.
--
-- * jit_data.notify_cursors: where each notifier (`pgcli-jit-admin notify --watch`) stands in
--   the audit chain: the chain position (seq) of the last row it delivered.  A notifier that
--   restarts reads its cursor here and goes on after it, so nothing is lost or posted twice
--   (but for a crash between the receiver's answer and the advance: that one row once more).
--   Operators read it; only jit.notify_advance (functions/80_notify.sql) writes it.

SET LOCAL ROLE jit_owner;

CREATE TABLE jit_data.notify_cursors (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    last_seq   bigint NOT NULL CHECK (last_seq >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by name NOT NULL DEFAULT session_user
);
GRANT SELECT ON jit_data.notify_cursors TO jit_admin;

RESET ROLE;
