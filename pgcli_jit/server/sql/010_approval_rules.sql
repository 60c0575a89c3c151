-- pgcli-jit server-side broker, schema version 11: approvals that reach people.
--
-- * jit_data.notify_cursors: where each notifier (`pgcli-jit-admin notify --watch`) stands in
--   the audit chain: the chain position (seq) of the last row it delivered.  A notifier that
--   restarts reads its cursor here and goes on after it, so nothing is lost or posted twice
--   (but for a crash between the receiver's answer and the advance: that one row once more).
--   Operators read it; only jit.notify_advance (functions/80_notify.sql) writes it.
-- * Two ways past the wait for approval, each a profile option the server checks at request
--   time (jit.profile_approval_rules sets them):
--   - profiles.auto_approve: a request from a member of this role (whoever the paging tool
--     puts in `oncall`) is granted at once, audited 'auto_approved' with the role;
--   - profiles.break_glass: `jit.request_break_glass(...)` (as jit.request) is granted at once
--     with a reason, for at most break_glass_max_ttl, at most break_glass_per_day times per
--     requester in 24 hours, audited 'break_glass'.  leases.break_glass marks such leases,
--     which is what the daily count counts.

SET LOCAL ROLE jit_owner;

CREATE TABLE jit_data.notify_cursors (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    last_seq   bigint NOT NULL CHECK (last_seq >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by name NOT NULL DEFAULT session_user
);
GRANT SELECT ON jit_data.notify_cursors TO jit_admin;

ALTER TABLE jit_data.profiles
    ADD COLUMN auto_approve        text,     -- NULL: nobody skips the approval
    ADD COLUMN break_glass         boolean NOT NULL DEFAULT false,
    ADD COLUMN break_glass_max_ttl interval NOT NULL DEFAULT interval '1 hour'
        CHECK (break_glass_max_ttl > interval '0'),
    ADD COLUMN break_glass_per_day integer NOT NULL DEFAULT 1
        CHECK (break_glass_per_day BETWEEN 1 AND 100);
ALTER TABLE jit_data.leases ADD COLUMN break_glass boolean NOT NULL DEFAULT false;
CREATE INDEX leases_break_glass ON jit_data.leases (requester_oid, issued_at) WHERE break_glass;

RESET ROLE;
