"""``pgcli-jit-admin pending|approve|deny`` and ``profile add/set --approvers``, against the real
cluster: every refusal is one line and exit 1, bad usage exit 2, and nothing changes."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgcli_jit.admin import main
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import REQUESTER, make_login
from tests.test_approvals_server import people  # noqa: F401  (the fixture)

PROFILE = "adm-4eyes"


def dsn(cluster: Cluster, user: str) -> str:
    return f"host={cluster.host} port={cluster.port} dbname=app user={user}"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def ops(cluster: Cluster, people: None) -> str:  # noqa: F811
    make_login(cluster, "ops", member_of="jit_admin")
    return dsn(cluster, "ops")


def ask(cluster: Cluster) -> int:
    with psycopg.connect(dsn(cluster, REQUESTER), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request(%s, NULL, 'INC-9', %s)",
                           (PROFILE, scram_verifier(conn, new_password()))).fetchone()
    assert row is not None and row[0]["status"] == "pending"
    return int(row[0]["request_id"])


def one_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_profile_with_approvers_and_the_decisions(cluster: Cluster, ops: str) -> None:
    added = run("profile", "add", PROFILE, "--grant", "jit_read", "--approvers", "jit_leads",
                "--approvals", "1", "--approval-timeout", "30m", "--dsn", ops)
    assert added.exit_code == 0, added.output
    assert "1 of jit_leads within 30m" in added.output
    listed: dict[str, Any] = json.loads(run("profile", "list", "--json", "--dsn", ops).output)["profiles"]
    assert listed[PROFILE]["approvers"] == "jit_leads" and listed[PROFILE]["approvals"] == 1
    rid = ask(cluster)
    waiting = run("pending", "--dsn", dsn(cluster, "bob"))
    assert waiting.exit_code == 0 and "INC-9" in waiting.output and REQUESTER in waiting.output
    assert run("pending", "--dsn", dsn(cluster, REQUESTER)).output.strip() == "No requests waiting for you."
    own = run("approve", str(rid), "--dsn", dsn(cluster, REQUESTER))
    assert own.exit_code == 1 and "is your own" in one_line(own)
    stranger = run("approve", str(rid), "--dsn", dsn(cluster, "dave"))
    assert stranger.exit_code == 1 and f"no request {rid} that you may decide" in one_line(stranger)
    nobody = run("approve", str(rid), "--dsn", ops)  # jit_admin may call, but is no approver
    assert nobody.exit_code == 1 and "that you may decide" in one_line(nobody)
    ok = run("approve", str(rid), "--comment", "checked INC-9", "--dsn", dsn(cluster, "bob"))
    assert ok.exit_code == 0 and f"Approved request {rid}" in ok.output
    twice = run("deny", str(rid), "--reason", "oops", "--dsn", dsn(cluster, "erin"))
    assert twice.exit_code == 1 and "already approved" in one_line(twice)
    with psycopg.connect(dsn(cluster, REQUESTER), autocommit=True) as conn:
        conn.execute("SELECT jit.cancel(%s)", (rid,))  # approved, not yet collected: withdrawn


def test_deny_and_bad_usage(cluster: Cluster, ops: str) -> None:
    run("profile", "set", PROFILE, "--approvers", "jit_leads", "--dsn", ops)
    rid = ask(cluster)
    assert run("deny", str(rid), "--dsn", dsn(cluster, "bob")).exit_code == 2  # --reason required
    denied = run("deny", str(rid), "--reason", "not in the freeze", "--dsn", dsn(cluster, "bob"))
    assert denied.exit_code == 0 and "Denied request" in denied.output and "freeze" in denied.output
    bad = run("profile", "set", PROFILE, "--approval-timeout", "soon", "--dsn", ops)
    assert bad.exit_code == 2 and "--approval-timeout" in one_line(bad)
    assert run("profile", "set", PROFILE, "--approvals", "0", "--dsn", ops).exit_code == 2
    missing = run("profile", "set", PROFILE, "--approvers", "no_such_group", "--dsn", ops)
    assert missing.exit_code == 1 and "does not exist" in one_line(missing)
    cleared = run("profile", "set", PROFILE, "--approvers", "", "--dsn", ops)
    # APPROVAL none, then LOGGED (the default, all), and no description
    assert cleared.exit_code == 0 and cleared.output.splitlines()[-1].split()[-2:] == ["none", "all"]
