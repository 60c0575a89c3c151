"""The demo's second requester (an approver) and operator: the commands it prints open their
sessions, against the suite's cluster (the demo's own database, ``demo``)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import psycopg
import pytest

from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools import demo
from pgcli_jit.devtools.cluster import Cluster

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo_home(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("demo-home")
    demo.prepare(cluster, home)
    return home


def shell_words(command: str) -> list[str]:
    """The words a POSIX shell reads from the banner's command, its line continuations joined."""
    return shlex.split(command.replace("\\\n", " "))


def test_the_banner_commands_fit_80_columns(cluster: Cluster) -> None:
    """With the demo's own directory (``mkdtemp`` in /tmp), no line of them wraps."""
    for command in demo.second_sessions(cluster, Path("/tmp/pgcli-jit-demo-_q0nfm7s")):
        assert all(len("  " + line) <= 80 for line in command.splitlines()), command


def env_of(assignments: list[str]) -> dict[str, str]:
    return {**os.environ, **dict(a.split("=", 1) for a in assignments)}


def test_the_operator_command_runs_as_the_operator(cluster: Cluster, demo_home: Path) -> None:
    _approver, operator = demo.second_sessions(cluster, demo_home)
    words = shell_words(operator)
    assert words[1:3] == ["pgcli-jit-admin", "pending"]
    with psycopg.connect(cluster.conninfo(demo.DB, user=demo.REQUESTER, password=_password(
            demo_home, demo.REQUESTER)), autocommit=True) as alice:
        asked = alice.execute("SELECT jit.request('change', NULL, 'INC-9 refund', %s)",
                              (scram_verifier(alice, new_password()),)).fetchone()
    assert asked is not None and asked[0]["status"] == "pending"
    done = subprocess.run([str(BIN / words[1]), *words[2:]], env=env_of(words[:1]),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "demo_user" in done.stdout and "change" in done.stdout and "demo_leads" in done.stdout


def test_the_approver_command_names_a_config_and_login_that_may_approve(cluster: Cluster,
                                                                        demo_home: Path) -> None:
    approver, _operator = demo.second_sessions(cluster, demo_home)
    words = shell_words(approver)
    assignments = dict(w.split("=", 1) for w in words[:2])
    assert words[2] == "pgcli-jit" and words[words.index("-U") + 1] == demo.APPROVER
    config = tomllib.loads(Path(assignments["PGCLI_JIT_CONFIG"]).read_text())
    assert {p["user"] for p in config["profiles"].values()} == {demo.APPROVER}
    assert config["audit_log"].endswith("audit-lead.jsonl")
    with psycopg.connect(cluster.conninfo(demo.DB, user=demo.REQUESTER, password=_password(
            demo_home, demo.REQUESTER)), autocommit=True) as alice:
        asked = alice.execute("SELECT jit.request('change', NULL, 'INC-10 refund', %s)",
                              (scram_verifier(alice, new_password()),)).fetchone()
    assert asked is not None
    os.environ["PGPASSFILE"], saved = assignments["PGPASSFILE"], os.environ.get("PGPASSFILE", "")
    try:
        with psycopg.connect(f"host={cluster.host} port={cluster.port} dbname={demo.DB} "
                             f"user={demo.APPROVER}", autocommit=True) as lead:
            approved = lead.execute("SELECT jit.approve(%s, 'ok')", (asked[0]["request_id"],)).fetchone()
    finally:
        os.environ["PGPASSFILE"] = saved
    assert approved is not None and approved[0]["state"] == "approved"


def _password(home: Path, user: str) -> str:
    for line in (home / "pgpass").read_text().splitlines():
        if line.split(":")[3] == user:
            return line.split(":", 4)[4]
    raise AssertionError(f"no {user} in the demo's pgpass")
