-- pgcli-jit server-side broker, schema version 2: four eyes.  A profile may name an
-- approvers role; a request for it then waits in jit.requests until N distinct members of
-- that role (never the requester) approve it.  No role exists before that.

SET LOCAL ROLE jit_owner;

ALTER TABLE jit.profiles
    ADD COLUMN approvers        text,      -- NULL: requests are granted at once
    ADD COLUMN approvals        integer NOT NULL DEFAULT 1 CHECK (approvals BETWEEN 1 AND 10),
    ADD COLUMN approval_timeout interval NOT NULL DEFAULT interval '1 hour'
        CHECK (approval_timeout > interval '0');

-- One row per request that needed approval.  The verifier the requester sent waits here
-- (a SCRAM verifier, not a password, and cleared once the request is decided); nobody
-- but jit_owner's functions reads that column.
CREATE TABLE jit.requests (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile          text NOT NULL,
    requester        text NOT NULL,
    requester_oid    oid NOT NULL,
    reason           text NOT NULL DEFAULT '',
    ttl_asked        interval,                -- NULL: the profile's ttl at issue
    verifier         text,                    -- NULL once decided
    approvers        text NOT NULL,           -- the policy when asked, not when approved
    approvals_needed integer NOT NULL,
    client_addr      inet,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN
                         ('pending', 'approved', 'denied', 'cancelled', 'timed_out', 'issued')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,    -- pending: undecided by then; approved: not collected
    decided_at       timestamptz,
    decided_by       text,
    decision_note    text,                    -- the denial's reason, or what ended it
    lease_id         bigint REFERENCES jit.leases (id)
);
CREATE INDEX requests_open ON jit.requests (expires_at) WHERE status IN ('pending', 'approved');

-- One row per approval: the same approver counts once.
CREATE TABLE jit.approvals (
    request_id   bigint NOT NULL REFERENCES jit.requests (id),
    approver     text NOT NULL,
    approver_oid oid NOT NULL,
    comment      text NOT NULL DEFAULT '',
    at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (request_id, approver_oid)
);

-- Operators read everything but the verifier.
GRANT SELECT (id, profile, requester, requester_oid, reason, ttl_asked, approvers, approvals_needed,
              client_addr, status, created_at, expires_at, decided_at, decided_by, decision_note,
              lease_id) ON jit.requests TO jit_admin;
GRANT SELECT ON jit.approvals TO jit_admin;

RESET ROLE;
