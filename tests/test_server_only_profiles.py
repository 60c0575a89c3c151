"""Profiles that exist only on the server (asked for by a name the config does not define)
go through the same lifecycle as configured ones: replaced, revoked, ended at exit."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from pgcli_jit.backends.login import Login
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config
from pgcli_jit.session.controller import Controller
from pgcli_jit.session.manager import LeaseManager, load_backend
from tests.conftest import declare_server_profile, live_jit_roles
from tests.test_controller import PsycopgConnector


def test_a_server_only_profile_lease_is_revoked_when_replaced(cluster: Cluster, tmp_path: Path) -> None:
    """Profiles the config does not define (asked of the server) are revoked like any other."""
    for name in ("srv-a", "srv-b"):
        declare_server_profile(cluster, name)
    where = {"host": cluster.host, "port": str(cluster.port), "dbname": "app", "user": "alice"}

    def factory(profile: Any, clock: Any) -> Any:
        backend = load_backend(profile, clock)
        backend.use_session(lambda: Login(where))
        return backend

    audit = tmp_path / "audit.jsonl"
    config = Config(tmp_path / "none.toml", MappingProxyType({}), None, audit, exists=False)
    manager = LeaseManager(config, AuditLog(audit), "alice", backend_factory=factory)
    said: list[str] = []
    controller = Controller(manager, PsycopgConnector(where), said.append)
    try:
        first = controller.request("srv-a", None, "one")
        assert "Connected as jit_alice_" in first
        second = controller.request("srv-b", None, "two")
        assert "Revoked the previous lease" in second
        assert live_jit_roles(cluster, "srv-a") == []
        assert len(live_jit_roles(cluster, "srv-b")) == 1
    finally:
        controller.shutdown()
    assert live_jit_roles(cluster, "srv-b") == []
