"""The server logs every lease's statements as its profile says, and the lease cannot stop it.

Against a cluster whose postgresql.conf logs no statement (tests/session_logs.py): what a
lease's statements leave in the log is there because the broker set it on the lease's role.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.session_logs import (
    LogsCluster,
    end_lease,
    lease_conn,
    request_lease,
)

pytestmark = pytest.mark.security


def role_settings(lc: LogsCluster, rolname: str) -> list[str]:
    with lc.superuser() as conn:
        row = conn.execute("SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = 0"
                           " AND setrole = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                           (rolname,)).fetchone()
    return sorted(row[0]) if row else []  # type: ignore[arg-type]


def set_logging(lc: LogsCluster, profile: str, mode: str) -> None:
    with lc.superuser() as conn:
        conn.execute("SELECT jit.profile_set(%s, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                     " NULL, NULL, %s)", (profile, mode))


def test_a_profile_logs_every_statement_by_default(logs_cluster: LogsCluster) -> None:
    with logs_cluster.superuser() as conn:
        row = conn.execute("SELECT log_statements FROM jit_data.profiles WHERE name = 'logs_read'").fetchone()
    assert row == ("all",)
    lease = request_lease(logs_cluster, "logs_read")
    try:
        assert role_settings(logs_cluster, lease.rolname) == ["log_duration=on", "log_statement=all"]
        with lease_conn(logs_cluster, lease) as conn:
            assert conn.execute("SHOW log_statement").fetchone() == ("all",)
        with logs_cluster.superuser() as conn:
            row = conn.execute("SELECT log_statements FROM jit_data.leases WHERE id = %s",
                               (lease.lease_id,)).fetchone()
        assert row == ("all",)
    finally:
        end_lease(logs_cluster, lease)


@pytest.mark.parametrize(("mode", "settings"), [
    ("mod", ["log_statement=mod"]),
    ("ddl", ["log_statement=ddl"]),
    ("none", []),
])
def test_each_mode_sets_the_lease_role(logs_cluster: LogsCluster, mode: str, settings: list[str]) -> None:
    set_logging(logs_cluster, "logs_write", mode)
    try:
        lease = request_lease(logs_cluster, "logs_write")
        try:
            assert role_settings(logs_cluster, lease.rolname) == settings
        finally:
            end_lease(logs_cluster, lease)
    finally:
        set_logging(logs_cluster, "logs_write", "all")


#: every way a lease's own login might try to stop or lower its logging
STOPPERS = [
    "SET log_statement = 'none'",
    "SET SESSION log_statement = 'none'",
    "RESET log_statement",
    "SET log_duration = off",
    "SELECT set_config('log_statement', 'none', false)",
    "SELECT set_config('log_statement', 'none', true)",
    "ALTER ROLE CURRENT_USER SET log_statement = 'none'",
    "ALTER ROLE CURRENT_USER RESET log_statement",
    "ALTER ROLE CURRENT_USER SET log_statement TO DEFAULT",
    "ALTER ROLE SESSION_USER IN DATABASE app SET log_statement = 'none'",
    "ALTER ROLE CURRENT_USER RESET log_duration",
    "ALTER SYSTEM SET log_statement = 'none'",
    "ALTER DATABASE app SET log_statement = 'none'",
    "ALTER ROLE ALL SET log_statement = 'none'",
    "SET log_min_duration_statement = -1",
    "SET log_min_messages = panic",
    "SET client_min_messages = log; SET log_min_messages = fatal",
    "LOAD 'auto_explain'",
    "SET SESSION AUTHORIZATION postgres",
]


@pytest.mark.parametrize("statement", STOPPERS)
def test_the_lease_cannot_stop_its_logging(logs_cluster: LogsCluster, statement: str) -> None:
    lease = request_lease(logs_cluster, "logs_write")
    try:
        with lease_conn(logs_cluster, lease) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            assert conn.execute("SHOW log_statement").fetchone() == ("all",)
        assert role_settings(logs_cluster, lease.rolname) == ["log_duration=on", "log_statement=all"]
    finally:
        end_lease(logs_cluster, lease)


def test_what_the_lease_may_run_leaves_its_logging_as_it_was(logs_cluster: LogsCluster) -> None:
    """RESET ALL, DISCARD ALL, ALTER ROLE ... RESET ALL, SET LOCAL in a transaction, SET ROLE
    to its grant role (15; 16+ refuses it), and a function with a SET clause: each runs or is
    refused, and the next login of the lease is logged as before."""
    lease = request_lease(logs_cluster, "logs_write")
    try:
        with lease_conn(logs_cluster, lease) as conn:
            conn.execute("RESET ALL")
            conn.execute("DISCARD ALL")
            conn.execute("ALTER ROLE CURRENT_USER RESET ALL")
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute("SET LOCAL log_statement = 'none'")
            try:
                conn.execute("SET ROLE jit_write")
            except psycopg.errors.InsufficientPrivilege:
                pass   # 16+: a lease holds its grant roles WITH SET FALSE
            else:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SET log_statement = 'none'")
                assert conn.execute("SHOW log_statement").fetchone() == ("all",)
                conn.execute("RESET ROLE")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE FUNCTION public.quiet() RETURNS int LANGUAGE sql"
                             " SET log_statement = 'none' AS 'SELECT 1'")
            assert conn.execute("SHOW log_statement").fetchone() == ("all",)
        assert role_settings(logs_cluster, lease.rolname) == ["log_duration=on", "log_statement=all"]
        with lease_conn(logs_cluster, lease) as conn:
            assert conn.execute("SHOW log_statement").fetchone() == ("all",)
    finally:
        end_lease(logs_cluster, lease)


def test_startup_options_cannot_turn_it_off(logs_cluster: LogsCluster) -> None:
    """PGOPTIONS='-c log_statement=none' is a superuser setting in the startup packet: refused."""
    lease = request_lease(logs_cluster, "logs_read")
    try:
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(logs_cluster.cluster.conninfo(
                "app", user=lease.rolname, password=lease.password, options="-c log_statement=none"))
    finally:
        end_lease(logs_cluster, lease)


def test_older_profile_set_signatures_keep_the_logging(logs_cluster: LogsCluster) -> None:
    set_logging(logs_cluster, "logs_write", "ddl")
    try:
        with logs_cluster.superuser() as conn:
            conn.execute("SELECT jit.profile_set('logs_write', ARRAY['jit_write'], '15 minutes', '1 hour',"
                         " 'jit_requester', false, '', 'logged writes')")
            conn.execute("SELECT jit.profile_set('logs_write', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                         " NULL, NULL, NULL, 5)")
            row = conn.execute("SELECT log_statements FROM jit_data.profiles"
                               " WHERE name = 'logs_write'").fetchone()
        assert row == ("ddl",)
    finally:
        set_logging(logs_cluster, "logs_write", "all")


@pytest.mark.parametrize("mode", ["verbose", "pgaudit:", "pgaudit:read;drop", "ALL"])
def test_a_mode_that_means_nothing_is_refused(logs_cluster: LogsCluster, mode: str) -> None:
    with logs_cluster.superuser() as conn, pytest.raises(psycopg.errors.InvalidParameterValue,
                                                         match="log_statements"):
        conn.execute("SELECT jit.profile_set('logs_write', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                     " NULL, NULL, NULL, NULL, %s)", (mode,))


def test_pgaudit_per_role_where_it_is_loaded(logs_cluster: LogsCluster) -> None:
    """pgaudit:CLASSES sets pgaudit.log on the lease's role; the lease cannot change it.
    Where pgaudit is not loaded the profile is refused, saying so."""
    if not logs_cluster.pgaudit:
        with logs_cluster.superuser() as conn, pytest.raises(psycopg.errors.InvalidParameterValue,
                                                             match="pgaudit is not loaded"):
            set_logging(logs_cluster, "logs_write", "pgaudit:read,write")
        pytest.skip("pgaudit is not installed for this PostgreSQL (the embedded 18 has none): "
                    "only the refusal was checked")
    set_logging(logs_cluster, "logs_write", "pgaudit:read,write")
    try:
        lease = request_lease(logs_cluster, "logs_write")
        try:
            assert role_settings(logs_cluster, lease.rolname) == ["pgaudit.log=read,write"]
            with lease_conn(logs_cluster, lease) as conn:
                assert conn.execute("SHOW pgaudit.log").fetchone() == ("read,write",)
                for statement in ("SET pgaudit.log = 'none'",
                                  "ALTER ROLE CURRENT_USER SET pgaudit.log = 'none'",
                                  "ALTER ROLE CURRENT_USER RESET pgaudit.log",
                                  "SELECT set_config('pgaudit.log', 'none', false)"):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(statement)
                assert conn.execute("SHOW pgaudit.log").fetchone() == ("read,write",)
        finally:
            end_lease(logs_cluster, lease)
    finally:
        set_logging(logs_cluster, "logs_write", "all")


@pytest.mark.parametrize("broker_role", ["jit_collector", "jit_log_reader"])
def test_a_grant_role_in_the_collectors_roles_is_unfit(logs_cluster: LogsCluster, broker_role: str) -> None:
    """A lease must not run the collector nor read the log files through a grant role."""
    with logs_cluster.superuser() as conn:
        conn.execute(f"CREATE ROLE logs_sneaky_{broker_role} NOLOGIN IN ROLE {broker_role}")
        conn.execute(f"GRANT logs_sneaky_{broker_role} TO jit_owner WITH ADMIN OPTION")
        with pytest.raises(psycopg.errors.RaiseException, match=f"member of {broker_role}"):
            conn.execute("SELECT jit.profile_set('logs_sneaky', ARRAY[%s], '15 minutes', '1 hour',"
                         " 'jit_requester', false, '', '')", (f"logs_sneaky_{broker_role}",))
