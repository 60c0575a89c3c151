-- pgcli-jit server-side broker, schema version 4: how many live leases of a profile one
-- requester may hold at once.  Without a cap a requester's loop could fill the cluster with
-- roles (each one LOGIN until its expiry).  Requests waiting for approval have their own cap
-- (5 per requester, in jit._ask_approval).

SET LOCAL ROLE jit_owner;

ALTER TABLE jit.profiles
    ADD COLUMN max_live integer NOT NULL DEFAULT 5 CHECK (max_live BETWEEN 1 AND 1000);

RESET ROLE;
