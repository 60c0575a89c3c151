-- pgcli-jit server-side broker, schema version 3: a request answered twice is issued once.
-- A client that loses the answer to jit.request (the connection dropped after the commit)
-- sends the same call again.  The verifier it sends is new for every request (a fresh
-- password, a fresh salt), so its SHA-256 identifies the request: the second call gets
-- the lease (or the pending request) the first one made, not a second role.

SET LOCAL ROLE jit_owner;

ALTER TABLE jit.leases ADD COLUMN request_key bytea;
ALTER TABLE jit.requests ADD COLUMN request_key bytea;
CREATE UNIQUE INDEX leases_request_key ON jit.leases (requester_oid, request_key)
    WHERE request_key IS NOT NULL;
CREATE UNIQUE INDEX requests_request_key ON jit.requests (requester_oid, request_key)
    WHERE request_key IS NOT NULL;

RESET ROLE;
