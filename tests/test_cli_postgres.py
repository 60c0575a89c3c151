"""The real ``pgcli-jit`` console script with the postgres backend and no config file at all:
a user holds only their own login, and ``--jit NAME`` asks the server for its profile NAME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pgcli_jit.cluster import Cluster
from tests.conftest import declare_server_profile, live_jit_roles
from tests.terminal import isolated_env

PGCLI_JIT = str(Path(sys.executable).with_name("pgcli-jit"))


def run(cluster: Cluster, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = isolated_env(home, None, {"PGPASSFILE": os.environ["PGPASSFILE"], **env})
    cmd = [PGCLI_JIT, "-h", cluster.host, "-p", str(cluster.port), "-U", "alice", *args, "app"]
    return subprocess.run(cmd, capture_output=True, text=True, env=base, stdin=subprocess.DEVNULL,
                          timeout=60, check=False)


def test_no_config_asks_the_server_and_revokes_at_exit(cluster: Cluster, home: Path) -> None:
    declare_server_profile(cluster, "cli-read", ttl="2m", max_ttl="5m")
    proc = run(cluster, home, "--jit", "cli-read", "--jit-reason", "INC-5", "-c",
               "select current_user, session_user")
    assert proc.returncode == 0, proc.stderr
    assert "jit_alice_" in proc.stdout
    assert "Connected as jit_alice_" in proc.stderr and "(cli-read)" in proc.stderr
    assert not live_jit_roles(cluster, "cli-read")  # revoked and dropped on exit
    with cluster.connect("app") as conn:
        row = conn.execute("select requester, reason, end_event from jit.leases where profile = 'cli-read'"
                           " order by id desc limit 1").fetchone()
    assert row == ("alice", "INC-5", "revoke")


def test_a_missing_password_is_one_line(cluster: Cluster, home: Path) -> None:
    proc = run(cluster, home, "--jit", "cli-read", "-c", "select 1", PGPASSFILE="/nonexistent")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("postgres backend (profile cli-read): ")
    assert "needs a password" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unknown_server_profile_is_one_line(cluster: Cluster, home: Path) -> None:
    proc = run(cluster, home, "--jit", "cli-nope", "-c", "select 1")
    assert proc.returncode == 1
    assert "no profile cli-nope that alice may request" in proc.stderr
    assert "Traceback" not in proc.stderr
