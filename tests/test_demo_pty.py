"""The README's first command, ``pgcli-jit --demo``, as a user runs it, in a pseudo-terminal.

The quick start is the first thing anyone tries: it had no test, and a change to the
config file check (directories another user owns are refused) broke it when run as
root (the cluster's directory belongs to the server's user) without any test noticing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.terminal import Terminal, isolated_env

pytestmark = pytest.mark.pty


def test_the_readme_demo_runs_word_for_word(home: Path) -> None:
    term = Terminal(["--demo"], isolated_env(home, None), home)
    try:
        term.wait_for(r"demo>", timeout=60)  # a cluster starts first
        assert re.search(r"Connected as jit_demo_user_\w+ until .* \(read\)", term.text())
        term.run('\\jit request write --ttl 15m --reason "INC-123 hotfix"',
                 r"Connected as jit_demo_user_\w+ until .* \(write\)")
        term.run("update orders set status = 'refunded' where id = 3;", r"proceed\? \[y/N\]")
        term.run("y", r"UPDATE 1")
        term.run("\\jit revoke", r"Revoked jit_demo_user_\w+ \(write\); back to demo_user")
        term.run("select jit.request('write', null, null, 'x') as asked;", r"requires a reason")
        term.child.send("\\q\r")
        term.wait_for(r"Demo cluster removed\. Client audit log: (\S+)", timeout=60)
        audit = Path(re.findall(r"Client audit log: (\S+audit\.jsonl)", term.text())[-1])
    finally:
        status = term.close()
    assert status == 0
    assert audit.exists() and '"event": "request"' in audit.read_text()
    spent = [audit.parent / name for name in ("pgpass", "config.toml")]
    assert not any(p.exists() for p in spent)  # the dead cluster's login is not left behind


def test_the_demo_prints_the_approvers_session_which_approves_a_request(home: Path,
                                                                       tmp_path: Path) -> None:
    """The second requester's command, from the banner, opens a real pgcli-jit session that
    sees the demo user's request and approves it; the demo session then switches to it."""
    term = Terminal(["--demo"], isolated_env(home, None), home)
    lead: Terminal | None = None
    try:
        term.wait_for(r"demo>", timeout=60)
        raw = term.transcript.decode(errors="replace")
        found = re.search(r"PGCLI_JIT_CONFIG=(\S+) \\\s+PGPASSFILE=(\S+) \\\s+"
                          r"pgcli-jit (-h \S+ -p \d+ -U demo_lead demo)", raw)
        assert found, raw
        assert "pgcli-jit-admin pending --all" in raw and "user=demo_ops" in raw
        term.run('\\jit request change --reason "INC-9 refund"', r"waiting for approval by demo_leads")
        lead_home = tmp_path / "lead"
        lead_home.mkdir()
        lead = Terminal(found.group(3).split(), isolated_env(lead_home, Path(found.group(1)),
                                                             {"PGPASSFILE": found.group(2)}), lead_home)
        lead.wait_for(r"demo>", timeout=30)
        listed = lead.run("\\jit pending", r"INC-9 refund")
        request_id = re.search(r"\|\s*(\d+)\s*\|\s*demo_user\s*\|", listed)
        assert request_id, listed
        lead.run(f"\\jit approve {request_id.group(1)}", r"Approved request")
        term.wait_for(r"Approved by demo_lead: connected as jit_demo_user_\w+", timeout=15)
    finally:
        if lead is not None:
            lead.close()
        term.close()
