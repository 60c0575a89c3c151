"""Fixtures for driving pgcli-jit end to end: a config file, an environment, a terminal."""

from __future__ import annotations

import os
from pathlib import Path

from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import postgres_profile_toml
from tests.terminal import Terminal, isolated_env

INSTRUMENT = Path(__file__).parent / "instrument"


class Session:
    """One test's world: HOME, config, the secrets the run minted, and terminals to open."""

    def __init__(self, home: Path, cluster: Cluster, admin_dsn: str) -> None:
        self.home, self.cluster, self.admin_dsn = home, cluster, admin_dsn
        self.config = home / "jit.toml"
        self.secrets_file = home.parent / "minted-secrets.txt"
        self.terminals: list[Terminal] = []
        self.profiles: dict[str, dict[str, object]] = {}

    def profile(self, name: str, **keys: object) -> None:
        self.profiles[name] = keys
        body = f'audit_log = "{self.audit_log}"\n\n' + "\n".join(
            postgres_profile_toml(n, self.admin_dsn, self.cluster, **k) for n, k in self.profiles.items())
        self.config.write_text(body, encoding="utf-8")

    @property
    def audit_log(self) -> Path:
        return self.home / "state" / "audit.jsonl"

    def env(self, **extra: str) -> dict[str, str]:
        return isolated_env(self.home, self.config, {
            "PYTHONPATH": str(INSTRUMENT), "PGCLI_JIT_TEST_SECRETS": str(self.secrets_file),
            # the requester's own password, where libpq finds it (as in ~/.pgpass)
            "PGPASSFILE": os.environ["PGPASSFILE"], **extra})

    def open(self, *args: str, **env: str) -> Terminal:
        term = Terminal(list(args), self.env(**env), self.home)
        self.terminals.append(term)
        return term

    def minted(self) -> list[str]:
        if not self.secrets_file.exists():
            return []
        return [s for s in self.secrets_file.read_text().split() if s]

    def role_exists(self, name: str) -> bool:
        with self.cluster.connect() as conn:
            return conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone() is not None

    def valid_until(self, name: str) -> float:
        with self.cluster.connect() as conn:
            row = conn.execute("select rolvaliduntil from pg_roles where rolname = %s", (name,)).fetchone()
        assert row is not None, f"role {name} does not exist"
        return float(row[0].timestamp())
