"""Every statement the client, the admin CLI and the demo send to the server, by name.

The ``jit`` schema is an interface (``sql/functions/*.sql``); this module is its other
half, the calls made into it, so one file shows everything this package may ask a
database and a change to a function's signature has one place to look.  Values are
always bound parameters (``%s``); an identifier (a role, a database) is composed with
:mod:`psycopg.sql`, never with string formatting.  ``tests/test_statements.py`` fails on
a SQL literal naming the ``jit`` schema anywhere else in the package.

Like the rest of :mod:`pgcli_jit.server`, this imports nothing of the package.
"""

from __future__ import annotations

from psycopg import sql

# -- a requester's own login (backends/postgres) ---------------------------------------------


#: the first statement on every connection the package opens (the broker's, the admin CLI's,
#: the reaper's, the doorbell's) and in setup's transaction: names resolve in pg_catalog
#: only, so a function or operator planted in a schema the login can see (``public`` where
#: anyone may CREATE) is never a closer match than the built-in one (docs/security.md)
PIN_SEARCH_PATH = "SET search_path = pg_catalog, pg_temp"
#: the user's search path as the session has it (pgcli's completer lists by it), read before
#: the completion refresh pins its own connection
CURRENT_SCHEMAS = "SELECT pg_catalog.current_schemas(true)"
#: the same for setup's one transaction
PIN_SEARCH_PATH_LOCAL = "SET LOCAL search_path = pg_catalog, pg_temp"

#: ask for a lease: server profile, wished TTL (NULL: the server's default), reason, verifier
REQUEST = "SELECT jit.request(%s, make_interval(secs => %s), %s, %s)"
#: extend a lease by name for a wished TTL (NULL: the profile's)
RENEW = "SELECT jit.renew(%s, make_interval(secs => %s))"
#: make a lease NOLOGIN now (committed before its sessions end)
REVOKE = "SELECT jit.revoke(%s)"
#: end a revoked lease's sessions and drop its role, in a transaction of its own
FINISH = "SELECT jit.finish(%s)"
#: this login's leases, one JSON object each (``lookup``)
MY_LEASES = "SELECT jit.my_leases()"
#: one server profile as this login may request it (``\jit profiles``)
MY_PROFILE = ("SELECT name, ttl_seconds, max_ttl_seconds, reason_required, description"
              " FROM jit.my_profiles() WHERE name = %s")
#: every server profile this login may request (``\\jit profiles`` and its completion)
MY_PROFILES = ("SELECT name, ttl_seconds, max_ttl_seconds, reason_required, description"
               " FROM jit.my_profiles()")
#: what a request for each of those must pass (approval: by whom, how many), one JSON object
#: each; a schema older than the function has no answer (``\jit profiles`` says unknown)
MY_PROFILE_RULES = "SELECT jit.my_profile_rules()"
#: what each of those grants (compact items such as ``SELECT on public.*``), whether it allows
#: break-glass and whether this login's requests skip its approval, one JSON object each
MY_PROFILE_GRANTS = "SELECT jit.my_profile_grants()"
#: the profiles this login may request that would allow a denied statement: privilege, kind
#: of object as the error names it, the object as SQL spells it, a column's name (or NULL);
#: smallest first (fewest grant roles, shortest max ttl)
PROFILES_GRANTING = ("SELECT profile, object, ttl_seconds, max_ttl_seconds, reason_required,"
                     " approval_required, grant_roles FROM jit.profiles_granting(%s, %s, %s, %s)")
#: a request waiting for approval: still pending, issued now, or closed
REQUEST_STATUS = "SELECT jit.request_status(%s)"
#: withdraw this login's own waiting request
CANCEL = "SELECT jit.cancel(%s)"

# -- an approver (backends/postgres and pgcli-jit-admin pending|approve|deny) ---------------

#: the requests this login may decide now (never its own)
#: does this login approve any profile's requests (then its shell listens for new ones)?
APPROVES_ANY = "SELECT jit.approves_any()"
PENDING = ("SELECT id, requester, profile, ttl_seconds, reason, created_at, expires_at, approvals,"
           " needed FROM jit.pending_for_me()")
#: live break-glass leases on profiles this login approves (never its own): the shell says each once
BREAK_GLASS_FOR_ME = ("SELECT lease_id, requester, profile, reason, issued_at, expires_at"
                      " FROM jit.break_glass_for_me()")
#: approve a request by id, with a comment for the audit trail
APPROVE = "SELECT jit.approve(%s, %s)"
#: deny a request by id, with the reason the requester is shown
DENY = "SELECT jit.deny(%s, %s)"

# -- the operator: pgcli-jit-admin profile|leases|audit --------------------------------------

#: create or change a server profile; NULL keeps a value (admin/profiles.py names the columns)
PROFILE_SET = ("SELECT jit.profile_set(%s, %s, make_interval(secs => %s), make_interval(secs => %s),"
               " %s, %s, %s, %s, %s, %s, make_interval(secs => %s), %s, %s)")
#: remove a server profile; true if there was one
PROFILE_DROP = "SELECT jit.profile_drop(%s)"
#: whether a server profile exists (``add`` refuses one that does, ``set`` one that does not)
PROFILE_EXISTS = "SELECT 1 FROM jit_data.profiles WHERE name = %s"
_PROFILES = ("SELECT name, array_to_string(grants, ', '), extract(epoch FROM ttl),"
             " extract(epoch FROM max_ttl), max_live, requesters, reason_required, owner, approvers,"
             " approvals, extract(epoch FROM approval_timeout), description, log_statements"
             " FROM jit_data.profiles")
#: every server profile, for ``profile list``
PROFILES = _PROFILES + " ORDER BY name"
#: one server profile by name, as ``profile add|set`` print it
PROFILE = _PROFILES + " WHERE name = %s ORDER BY name"
#: the leases with their state and open sessions; the parameter true includes dropped ones
LEASES = """
SELECT l.rolname, l.requester, l.profile, l.reason, l.issued_at, l.expires_at,
       greatest(0, extract(epoch FROM l.expires_at - clock_timestamp())) AS remaining,
       (SELECT count(*) FROM pg_stat_activity a WHERE a.usesysid = l.role_oid) AS sessions,
       CASE WHEN l.dropped_at IS NOT NULL THEN 'dropped'
            WHEN l.dbid <> (SELECT oid FROM pg_database WHERE datname = current_database())
                 THEN 'of another database: this schema is a copy; it never acts on it'
            WHEN l.drop_error IS NOT NULL THEN 'kept: ' || l.drop_error
            WHEN l.ended_at IS NOT NULL THEN l.end_event || 'd, not yet dropped'
            WHEN l.expires_at <= clock_timestamp() THEN 'expired, not yet reaped'
            ELSE 'live' END AS state,
       l.renewals, l.max_expires_at, l.ended_at, l.client_addr, l.end_event
  FROM jit_data.leases l
 WHERE %s OR l.dropped_at IS NULL
 ORDER BY l.id
"""
#: who the login is, whether it is a superuser, and whether it is an operator (jit_admin may
#: not exist yet): what a ``permission denied`` means for the command that got it
WHO_AM_I = """
SELECT quote_ident(session_user), r.rolsuper,
       CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jit_admin')
            THEN pg_has_role(session_user, 'jit_admin', 'MEMBER') ELSE false END
  FROM pg_roles r WHERE r.rolname = session_user
"""
#: the server's audit trail since a time, newest first, at most a number of rows
AUDIT = """
SELECT id, at, event, profile, rolname, requester, actor, host(client_addr) AS client_addr, reason,
       expires_at, detail
  FROM jit_data.audit WHERE at >= %s ORDER BY id DESC LIMIT %s
"""
#: where a shipper's cursor stands: the chain position of the audit row it shipped last
AUDIT_SEQ_OF = "SELECT seq FROM jit_data.audit WHERE id = %s"
#: the chained audit rows after a chain position, in chain order (commit order: an id is
#: taken before its transaction commits, so ids alone would skip a row committed late)
AUDIT_AFTER = """
SELECT id, at, event, profile, rolname, requester, actor, host(client_addr) AS client_addr, reason,
       expires_at, detail
  FROM jit_data.audit WHERE seq > %s ORDER BY seq LIMIT %s
"""
#: check the audit hash chain: rows read, the first bad id, what is wrong with it
AUDIT_VERIFY = "SELECT * FROM jit.audit_verify()"
#: the audit doorbell, rung (no payload) by every transaction that writes an audit row
LISTEN_AUDIT = "LISTEN jit_audit"
#: ``audit --follow``: the chained rows after a chain position, in chain order, each with its
#: position first (the cursor) and then the columns of ``AUDIT``
AUDIT_FOLLOW = """
SELECT seq, id, at, event, profile, rolname, requester, actor, host(client_addr) AS client_addr,
       reason, expires_at, detail
  FROM jit_data.audit WHERE seq > %s ORDER BY seq LIMIT %s
"""
#: the last chained row: where ``audit --follow`` starts by default (none: the table is empty)
AUDIT_LAST = "SELECT seq, id FROM jit_data.audit WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
#: whether committed rows wait to be chained (another chainer held the lock): look again soon
AUDIT_UNCHAINED = "SELECT EXISTS (SELECT FROM jit_data.audit WHERE hash IS NULL)"

# -- the reaper (pgcli-jit-admin reap) -------------------------------------------------------

#: wait on this connection for the doorbell the broker rings when a lease is issued, renewed or ended
LISTEN = "LISTEN jit_leases"
#: the doorbell of requests (asked, decided, withdrawn): a waiting shell and approvers' toolbars
LISTEN_REQUESTS = "LISTEN jit_requests"
#: every lease past its expiry becomes NOLOGIN (audited)
EXPIRE_DUE = "SELECT rolname, outcome, sessions FROM jit.expire_due()"
#: requests whose approval time ran out are closed; their ids
EXPIRE_REQUESTS = "SELECT * FROM jit.expire_requests()"
#: end the sessions of every ended lease and drop its role
FINISH_ENDED = "SELECT rolname, outcome, sessions FROM jit.finish_ended()"
#: chain the audit rows committed since the last pass
CHAIN_AUDIT = "SELECT jit.chain_audit()"
#: prepared transactions of ended or due leases, each with the role to roll it back as
PREPARED_TO_END = "SELECT gid, rolname FROM jit.prepared_to_end()"
#: record a prepared transaction's rollback (or why it failed); the server takes SET back
PREPARED_ENDED = "SELECT jit.prepared_ended(%s, %s, %s)"
#: back to the reaper's own login after acting as a lease
RESET_ROLE = "RESET ROLE"
#: seconds until the next expiry by the server's clock (NULL: nothing due)
SECONDS_TO_NEXT = "SELECT extract(epoch FROM jit.next_expiry() - clock_timestamp())"

# -- one reaper for several databases (reap --all-databases) ---------------------------------

#: the cluster's databases this login may connect to, where a jit schema may be
CONNECTABLE_DATABASES = """
SELECT datname FROM pg_database
 WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT')
 ORDER BY datname
"""
#: whether the database this connection is in has the jit schema, owned by jit_owner: a
#: database owner may create a schema named jit of her own, which --all-databases must not
#: call as the operator (only a member of jit_owner may give it that owner)
HAS_JIT_SCHEMA = ("SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r"
                  " ON r.oid OPERATOR(pg_catalog.=) n.nspowner"
                  " WHERE n.nspname OPERATOR(pg_catalog.=) 'jit'"
                  " AND r.rolname OPERATOR(pg_catalog.=) 'jit_owner')")

# -- the reaper without a daemon: a pg_cron job (pgcli-jit-admin cron) -----------------------

#: the job's command, run by pg_cron each minute in the jit database as the reaper's login
#: (``application_name`` then shows ``pgcli-jit reaper (pg_cron)`` in ``pg_stat_activity`` and
#: ``jit_data.reaper_runs``).
#: It works through its minute: a pass (each step its own transaction, as ``reap --watch``
#: runs them: the expiry commits before any session is ended), then a sleep until the next
#: expiry, at most a second and at least a quarter (a lease held open stays due), until the
#: minute is over; pg_cron starts the next run at the next minute, or at once if this one
#: ends late.  A step that fails is a WARNING in the server log and the next pass tries
#: again.  Prepared transactions of ended leases need ``ROLLBACK PREPARED``, which no DO
#: block can run: ``pgcli-jit-admin reap`` does it (their roles are kept until then).
CRON_JOB = """DO $reap$
DECLARE
    stop_at constant pg_catalog.timestamptz := pg_catalog.date_trunc('minute', pg_catalog.clock_timestamp())
                                               OPERATOR(pg_catalog.+) '1 minute'::pg_catalog.interval;
    next_at pg_catalog.timestamptz;
    nap pg_catalog.float8;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false);  -- PIN_SEARCH_PATH
    PERFORM pg_catalog.set_config('application_name', 'pgcli-jit reaper (pg_cron)', false);
    LOOP
        BEGIN PERFORM jit.expire_due();
        EXCEPTION WHEN OTHERS THEN RAISE WARNING 'pgcli-jit reaper: expire_due: %', SQLERRM; END;
        COMMIT;
        BEGIN PERFORM jit.expire_requests();
        EXCEPTION WHEN OTHERS THEN RAISE WARNING 'pgcli-jit reaper: expire_requests: %', SQLERRM; END;
        COMMIT;
        BEGIN PERFORM jit.finish_ended();
        EXCEPTION WHEN OTHERS THEN RAISE WARNING 'pgcli-jit reaper: finish_ended: %', SQLERRM; END;
        COMMIT;
        BEGIN PERFORM jit.chain_audit();
        EXCEPTION WHEN OTHERS THEN RAISE WARNING 'pgcli-jit reaper: chain_audit: %', SQLERRM; END;
        COMMIT;
        next_at := jit.next_expiry();
        nap := least(1.0, extract(epoch FROM stop_at - clock_timestamp()),
                     greatest(0.25, coalesce(extract(epoch FROM next_at - clock_timestamp()) + 0.002, 1.0)));
        EXIT WHEN nap <= 0;
        PERFORM pg_sleep(nap);
        COMMIT;
    END LOOP;
END
$reap$"""
#: pg_cron's settings as this server has them (NULL: pg_cron is not loaded)
CRON_SETTINGS = """
SELECT current_database(), current_setting('cron.database_name', true),
       current_setting('cron.use_background_workers', true), to_regnamespace('jit') IS NOT NULL
"""
#: the reaper's login: whether it exists, may log in, is in jit_admin, is a superuser
CRON_LOGIN = """
SELECT rolcanlogin, pg_has_role(oid, 'jit_admin', 'MEMBER'), rolsuper
  FROM pg_roles WHERE rolname = %s
"""
#: whether pg_cron is installed (CREATE EXTENSION) in the database this connection is in
CRON_INSTALLED = "SELECT to_regnamespace('cron') IS NOT NULL"
#: the jobs of this name: what each runs, where, as whom
CRON_JOBS = "SELECT jobid, command, database, username, active FROM cron.job WHERE jobname = %s"
#: take a job away (a superuser may take any)
CRON_UNSCHEDULE = "SELECT cron.unschedule(%s::bigint)"
#: every minute, in the jit database, as the reaper's login: the job's id
CRON_SCHEDULE = "SELECT cron.schedule_in_database(%s, '* * * * *', %s, %s, %s)"


# -- on-call auto-approval and break-glass (pgcli-jit-admin profile, audit) ---------------------

#: a profile's auto-approve role ('' none), break-glass on/off, its max TTL (seconds) and uses per
#: requester per day; NULL leaves one as it is
PROFILE_RULES = "SELECT jit.profile_approval_rules(%s, %s, %s, make_interval(secs => %s), %s)"
#: a profile's auto-approve and break-glass options, as profile add/set shows them
PROFILE_RULES_OF = """
SELECT auto_approve, break_glass, extract(epoch FROM break_glass_max_ttl), break_glass_per_day
  FROM jit_data.profiles WHERE name = %s
"""
#: the break-glass uses since a time, newest first, at most a number of rows
AUDIT_BREAK_GLASS = """
SELECT id, at, event, profile, rolname, requester, actor, host(client_addr) AS client_addr, reason,
       expires_at, detail
  FROM jit_data.audit WHERE event = 'break_glass' AND at >= %s ORDER BY id DESC LIMIT %s
"""
#: ask for a lease without approval, on a profile that allows break-glass (as ``REQUEST``)
REQUEST_BREAK_GLASS = "SELECT jit.request_break_glass(%s, make_interval(secs => %s), %s, %s)"

# -- the notifier (pgcli-jit-admin notify) -----------------------------------------------------

#: wait on this connection for the doorbell the broker rings when a request changes
LISTEN_REQUESTS = "LISTEN jit_requests"
#: where a named notifier stands in the audit chain (NULL: it never ran)
NOTIFY_CURSOR = "SELECT jit.notify_cursor(%s)"
#: move a named notifier's cursor forward to a chain position, after a delivery
NOTIFY_ADVANCE = "SELECT jit.notify_advance(%s, %s)"
#: the end of the chain now (NULL: the table holds no chained row)
CHAIN_END = "SELECT max(seq) FROM jit_data.audit"
#: the database the notifier watches, named in every message
CURRENT_DATABASE = "SELECT current_database()"
#: the chained audit rows about requests after a chain position, up to another, in chain order,
#: each with what its profile grants now; the columns are the ones a message may carry (no
#: client address, no role name: nothing an approver does not need)
NOTIFY_EVENTS = """
SELECT a.seq, a.id, a.event, a.profile, a.requester, a.actor, a.reason, a.expires_at,
       a.detail, p.grants, extract(epoch FROM p.ttl)
  FROM jit_data.audit a LEFT JOIN jit_data.profiles p ON p.name = a.profile
 WHERE a.seq > %s AND a.seq <= %s AND a.event = ANY(%s)
 ORDER BY a.seq LIMIT %s
"""


def set_role(rolname: str) -> sql.Composed:
    """Act as a lease, to roll back its prepared transaction (the server granted SET on it)."""
    return sql.SQL("SET ROLE {}").format(sql.Identifier(rolname))


def rollback_prepared(gid: str) -> sql.Composed:
    """Roll back a prepared transaction by its global id (a literal: no parameter is allowed there)."""
    return sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid))


# -- setup (pgcli-jit-admin setup, server.apply) ----------------------------------------------

#: one setup at a time per database, until the transaction ends
SETUP_LOCK = "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgcli-jit setup'))"
#: where the schema version is recorded: jit_data since version 6, jit before; NULL: not installed
VERSION_TABLE = ("SELECT coalesce(to_regclass('jit_data.schema_version'),"
                 " to_regclass('jit.schema_version'))::text")


def max_version(table: str) -> sql.Composed:
    """The highest version recorded in ``table`` (as ``to_regclass`` names it), 0 if none."""
    return sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(sql.Identifier(*table.split(".")))


def record_version(table: str) -> sql.Composed:
    """Record one applied schema file's version (the parameter) in ``table``."""
    return sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(sql.Identifier(*table.split(".")))


# -- the demo (pgcli-jit --demo) --------------------------------------------------------------

#: the demo's little shop, in its own database
DEMO_DATA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, country text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2),
                     status text NOT NULL DEFAULT 'placed', placed_at timestamptz DEFAULT now());
INSERT INTO customers VALUES (1, 'Ada', 'UK'), (2, 'Grace', 'US'), (3, 'Edsger', 'NL');
INSERT INTO orders (id, customer_id, total) VALUES (1, 1, 42.00), (2, 2, 99.50), (3, 1, 7.25);
"""
#: what an operator would write: grant roles scoped to the schema, which jit_owner may hand
#: out, and the server profiles read and write
DEMO_GRANTS = """
CREATE ROLE demo_read NOLOGIN;
GRANT USAGE ON SCHEMA public TO demo_read;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO demo_read;
CREATE ROLE demo_write NOLOGIN IN ROLE demo_read;
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO demo_write;
GRANT demo_read, demo_write TO jit_owner WITH ADMIN OPTION;
SELECT jit.profile_set('read', ARRAY['demo_read'], '5 minutes', '30 minutes', NULL, false, NULL,
                       'read-only, asks before it ends');
SELECT jit.profile_set('write', ARRAY['demo_write'], '5 minutes', '1 hour', NULL, true, NULL,
                       'read-write, renews itself');
"""


def create_database(name: str) -> sql.Composed:
    """The demo's database."""
    return sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))


#: the demo's third profile, which waits for a colleague: demo_leads approve it; demo_oncall
#: (demo_lead is on call) is there to try ``profile set change --auto-approve demo_oncall``
DEMO_APPROVALS = """
CREATE ROLE demo_leads NOLOGIN;
CREATE ROLE demo_oncall NOLOGIN;
SELECT jit.profile_set('change', ARRAY['demo_write'], '5 minutes', '1 hour', NULL, true, NULL,
                       'read-write, once a colleague approves', 'demo_leads', 1, '1 hour');
"""


def create_login(name: str, verifier: str, member_of: tuple[str, ...]) -> sql.Composed:
    """A login in the given roles (the demo's approver and operator), with a SCRAM verifier."""
    return sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
        sql.Identifier(name), sql.Literal(verifier), sql.SQL(", ").join(map(sql.Identifier, member_of)))


def create_requester(name: str, verifier: str) -> sql.Composed:
    """A login that may only ask (``jit_requester``), with a SCRAM verifier made client-side."""
    return sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE jit_requester").format(
        sql.Identifier(name), sql.Literal(verifier))


# -- setup's review and audit retention (pgcli-jit-admin setup --dsn, audit archive) ----------

#: the digest of the function files a database last ran (schema version 7 on)
FUNCTIONS_APPLIED = "SELECT digest FROM jit_data.functions_applied"
#: record the digest of the function files just run (setup --apply's transaction)
RECORD_FUNCTIONS = ("INSERT INTO jit_data.functions_applied (digest) VALUES (%s)"
                    " ON CONFLICT (one) DO UPDATE SET digest = excluded.digest, applied_at = now(),"
                    " applied_by = session_user")
#: where the table's audit chain starts: the last archived row's seq and hash (no row: none yet)
AUDIT_CHECKPOINT = "SELECT seq, hash FROM jit_data.audit_checkpoint"
#: the chained rows older than a time, from the checkpoint on, each with the text its hash covers
AUDIT_ARCHIVE_ROWS = "SELECT seq, prev_hash, hash, hashed FROM jit.audit_archive_rows(%s)"
#: remove what an archive file holds: after (seq, hash), through (seq, hash), rows, before
AUDIT_ARCHIVE = "SELECT jit.audit_archive(%s, %s, %s, %s, %s, %s)"
#: the database an archive file came from, for its header
CURRENT_DATABASE = "SELECT current_database()"
#: the printed setup script's own reading of the installed version, inside its transaction
#: (the version table moved to jit_data in 6; none: 0)
SCRIPT_VERSION_FUNCTION = """\
CREATE OR REPLACE FUNCTION pg_temp.jit_setup_version() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t regclass := coalesce(to_regclass('jit_data.schema_version'), to_regclass('jit.schema_version'));
    v integer;
BEGIN
    IF t IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT coalesce(max(version), 0) FROM %s', t) INTO v;
    RETURN v;
END
$$;"""
#: the printed setup script's record of the functions it ran (``digest``: hex, from the package)
SCRIPT_RECORD_FUNCTIONS = ("INSERT INTO jit_data.functions_applied (digest) VALUES ('{digest}')"
                           " ON CONFLICT (one) DO UPDATE SET digest = excluded.digest, applied_at = now(),"
                           " applied_by = session_user;")


# -- the operator: revoke with a reason, every waiting request, health ------------------------

#: end a lease (its role's name or its id) now, for the operator's reason: NOLOGIN, audited
#: with the operator as actor; then FINISH, in a transaction of its own
OPERATOR_REVOKE = "SELECT jit.operator_revoke(%s, %s)"
#: every request waiting for a decision, whoever may decide it, and the role that decides
PENDING_ALL = ("SELECT id, requester, profile, ttl_seconds, reason, created_at, expires_at, approvals,"
               " needed, approvers FROM jit.pending_all()")
#: the checks a monitoring system runs: the reaper's last pass against a limit in seconds,
#: leases not reaped, the audit chain, the grant roles; one row per check (or unfit role)
HEALTH = "SELECT check_name, ok, message, detail FROM jit.health(make_interval(secs => %s))"
#: whether the session-log collector read the log within a number of seconds (when it has to)
SESSION_LOG_HEALTH = """
SELECT check_name, ok, message, detail FROM jit.session_log_health(make_interval(secs => %s))
"""


# -- profiles as code: ``profile list --json`` and ``apply`` ---------------------------------

#: every server profile as ``apply`` compares it with a file: grants as an array, durations in
#: seconds, no owner/approvers/auto-approve role as '', the approval rules last
PROFILE_STATE = ("SELECT name, grants, extract(epoch FROM ttl)::float8,"
                 " extract(epoch FROM max_ttl)::float8, max_live, requesters, reason_required,"
                 " coalesce(owner::text, ''), coalesce(description, ''), coalesce(approvers::text, ''),"
                 " approvals, extract(epoch FROM approval_timeout)::float8, log_statements,"
                 " coalesce(auto_approve, ''), break_glass, extract(epoch FROM break_glass_max_ttl)::float8,"
                 " break_glass_per_day"
                 " FROM jit_data.profiles ORDER BY name")
#: which of the given role names no role has: ``apply`` names the profile and key before any change
MISSING_ROLES = ("SELECT r FROM unnest(%s::text[]) AS r"
                 " WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r)")


# -- session logs: ``pgcli-jit-admin sessions|session`` and ``audit --verify`` ----------------

#: one collector pass: read the server's jsonlog from where the last stopped, keep the leases'
#: lines, seal the ended ones into the audit chain; a jsonb summary
COLLECT_SESSION_LOGS = "SELECT jit.collect_session_logs()"
#: what the collector's connection allows one pass, whatever the log holds: the function
#: itself stops taking chunks after 60 s, so this is only ever reached by a fault
COLLECT_TIMEOUT = "SET statement_timeout = '5min'"
#: every sealed lease whose collected lines no longer match its 'session' audit row
SESSION_LOG_VERIFY = "SELECT sessions_checked, bad_lease, problem FROM jit.session_log_verify()"
#: the sealed leases that ended before a time, each line with its lease's seal, in digest order
SESSION_LOG_ARCHIVE_ROWS = """
SELECT lease_id, rolname, requester, profile, seal_id, lines, digest, hashed
  FROM jit.session_log_archive_rows(%s)
"""
#: remove the lines of the leases an archive file holds (their ids and digests), for a cut-off
SESSION_LOG_ARCHIVE = "SELECT jit.session_log_archive(%s, %s, %s)"
#: leases issued since a time, optionally one requester's or one profile's, with what was
#: collected of them: statements (statement, execute and pgaudit lines) and every line
SESSIONS = """
SELECT l.id AS lease_id, l.rolname, l.requester, l.profile, l.reason, l.issued_at,
       coalesce(l.ended_at, l.expires_at) AS until, l.end_event, l.log_statements,
       (SELECT count(*) FROM jit_data.session_log s WHERE s.lease_id = l.id AND s.context IS NULL
           AND s.severity = 'LOG'
           AND (s.message LIKE 'statement: %%' OR s.message LIKE 'execute %%' OR s.message LIKE 'AUDIT: %%'
                OR s.message LIKE 'fastpath function call: %%'))
           AS statements,
       (SELECT count(*) FROM jit_data.session_log s WHERE s.lease_id = l.id) AS lines,
       l.log_sealed_at AS sealed_at
  FROM jit_data.leases l
 WHERE l.issued_at >= %s AND (%s::text IS NULL OR l.requester = %s) AND (%s::text IS NULL OR l.profile = %s)
 ORDER BY l.issued_at DESC, l.id DESC
"""
#: one lease by id or role name, with its approvals (who and when) and its seal
SESSION_HEADER = """
SELECT l.id AS lease_id, l.rolname, l.requester, l.profile, l.reason, l.issued_at,
       coalesce(l.ended_at, l.expires_at) AS until, l.ended_at, l.end_event, l.log_statements,
       l.log_sealed_at AS sealed_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object('approver', a.approver, 'at', a.at, 'comment', a.comment)
                                  ORDER BY a.at)
                   FROM jit_data.requests r JOIN jit_data.approvals a ON a.request_id = r.id
                  WHERE r.lease_id = l.id), '[]'::jsonb) AS approvals
  FROM jit_data.leases l
 WHERE l.rolname = %s OR l.id::text = %s
 ORDER BY l.id DESC LIMIT 1
"""
#: a lease's collected lines in log order
SESSION_LINES = """
SELECT session_id, line_num, logged_at, dbname, remote, severity, ps, message, detail, context
  FROM jit_data.session_log WHERE lease_id = %s
 ORDER BY logged_at, session_id, line_num
"""
#: a lease's lines the collector could not read (longer than one read of the log)
SESSION_GAPS = """
SELECT logged_at, file, at_byte, bytes FROM jit_data.session_log_gaps WHERE lease_id = %s
 ORDER BY logged_at NULLS LAST, file, at_byte
"""
#: failed logins (lines from before authentication) that claimed a lease's name
SESSION_LOGIN_ATTEMPTS = """
SELECT logged_at, remote, dbname, severity, message, detail FROM jit_data.login_attempts WHERE lease_id = %s
 ORDER BY logged_at, session_id, line_num
"""
#: sealed leases whose seal says lines are missing: ``audit --verify`` names them
SESSION_LOGS_INCOMPLETE = """
SELECT (detail->>'lease_id')::bigint, (detail->>'gaps')::bigint FROM jit_data.audit
 WHERE event = 'session' AND detail->>'complete' = 'false' ORDER BY id
"""
