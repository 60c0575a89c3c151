"""The requester knows: one word, ``logged``, in the connected line and in ``\\jit profiles``
when the server logs a lease's statements (its profile's log_statements is not ``none``)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from types import MappingProxyType

import psycopg

from pgcli_jit.backends.base import LeaseRequest, RoleInfo
from pgcli_jit.backends.postgres.backend import PostgresBackend
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.session.config import Config, parse_profile
from pgcli_jit.session.ending import connected_line
from pgcli_jit.session.report import profile_rows
from tests.fakes import FaultyBackend, faulty_profile
from tests.session_logs import REQUESTER, LogsCluster

T0 = 1_700_000_000.0


def test_the_connected_line_says_logged_only_when_the_server_logs() -> None:
    profile = faulty_profile()
    plain = Lease(profile="fake", backend="faulty", credentials=Credentials("jit_u", "pw"), issued_at=T0,
                  expires_at=T0 + 900)
    logged = Lease(profile="fake", backend="faulty", credentials=Credentials("jit_u", "pw"), issued_at=T0,
                   expires_at=T0 + 900, backend_data={"logged": True})
    assert "logged" not in connected_line(plain, profile, None)
    line = connected_line(logged, profile, None)
    assert line.endswith(f"({profile.name}), logged.")


def test_jit_profiles_notes_a_logged_server_profile() -> None:
    class ServerBackend(FaultyBackend):
        server_policy = True

    config = Config(None, MappingProxyType({"read": faulty_profile("read")}), "read", None)  # type: ignore[arg-type]
    server = [RoleInfo("read", 300.0, 1800.0, "read-only", kind="server profile", approvers="", logged=True),
              RoleInfo("quiet", 60.0, 60.0, "", kind="server profile", approvers="")]
    rows = profile_rows(config, {"read": ServerBackend(config.profiles["read"], clock=lambda: 0.0)}, server)
    assert rows == [("read (default)", "5m", "30m", "", "logged; read-only"),
                    ("quiet (server)", "1m", "1m", "", "")]


def _backend(lc: LogsCluster, profile: str) -> PostgresBackend:
    body = tomllib.loads(f"""[profiles.{profile}]
backend = "postgres"
host = "{lc.cluster.host}"
port = {lc.cluster.port}
dbname = "app"
user = "{REQUESTER}"
""")["profiles"][profile]
    return PostgresBackend(parse_profile(profile, body, Path("config.toml")))


def test_the_postgres_backend_hears_it_from_the_server(logs_cluster: LogsCluster) -> None:
    os.environ["PGPASSWORD"] = logs_cluster.passwords[REQUESTER]
    try:
        with logs_cluster.superuser() as conn:
            conn.execute("SELECT jit.profile_set('logs_quiet', ARRAY['jit_read'], '15 minutes', '1 hour',"
                         " 'jit_requester', false, '', '', NULL, NULL, NULL, NULL, 'none')")
        backend = _backend(logs_cluster, "logs_read")
        lease = backend.request(LeaseRequest(ttl=300, reason="see", requester=REQUESTER))
        try:
            assert lease.backend_data.get("logged") is True
        finally:
            backend.revoke(lease)
        quiet = _backend(logs_cluster, "logs_quiet")
        lease = quiet.request(LeaseRequest(ttl=300, reason="see", requester=REQUESTER))
        try:
            assert not lease.backend_data.get("logged")
        finally:
            quiet.revoke(lease)
        infos = {r.name: r for r in backend.requestable()}
        assert infos["logs_read"].logged is True and infos["logs_quiet"].logged is False
    finally:
        del os.environ["PGPASSWORD"]
        with psycopg.connect(logs_cluster.cluster.conninfo("app"), autocommit=True) as conn:
            conn.execute("SELECT jit.profile_drop('logs_quiet')")
