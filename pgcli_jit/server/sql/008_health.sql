-- pgcli-jit server-side broker, schema version 8: the reaper's passes, for monitoring.
--
-- * jit_data.reaper_runs: one row per login that reaps in this database, with the time of its
--   last pass (jit.expire_due writes it, whatever runs it: `reap --watch`, `reap` from cron,
--   a pg_cron job).  `pgcli-jit-admin health` (jit.health) says when none is recent enough.

SET LOCAL ROLE jit_owner;

CREATE TABLE jit_data.reaper_runs (
    reaper           name PRIMARY KEY,             -- the login (session_user) that ran the pass
    last_at          timestamptz NOT NULL,         -- when its last pass began, server clock
    application_name text NOT NULL DEFAULT '',     -- as pg_stat_activity shows the connection
    pid              integer,                      -- its backend then
    passes           bigint NOT NULL DEFAULT 1
);
GRANT SELECT ON jit_data.reaper_runs TO jit_admin;

RESET ROLE;
