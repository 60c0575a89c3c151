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
