"""Break-glass reaches the approver's shell: two real pgcli-jit sessions in pseudo-terminals
against a real cluster.  ``alice`` breaks glass on ``write`` (approved by ``jit_leads``);
``bob``, a member of ``jit_leads`` idle at his prompt, reads it above his prompt once and in his
toolbar, pushed by the doorbell.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.shell_fixtures import Session
from tests.test_approvals_pty import approvals, listening, shell
from tests.test_approvals_server import people  # noqa: F401  (the fixture)

pytestmark = pytest.mark.pty
NOTICE = r"BREAK-GLASS: alice took write until \d\d:\d\d:\d\d: \"INC-7 db down\""


@pytest.fixture
def world(session: Session, people: None) -> Iterator[Session]:  # noqa: F811
    session.profile("write", grant=["jit_write"], ttl="10m")
    approvals(session.cluster, "write")
    with session.cluster.connect("app") as conn:
        conn.execute("SELECT jit.profile_approval_rules('write', NULL, true, interval '30 min', 100)")
    bob_config = session.home / "bob.toml"
    bob_config.write_text(session.config.read_text().replace('user = "alice"', 'user = "bob"'))
    yield session
    with session.cluster.connect("app") as conn:
        for (name,) in conn.execute("SELECT rolname FROM jit_data.leases WHERE dropped_at IS NULL"
                                    " AND break_glass").fetchall():
            conn.execute("SELECT jit.revoke(%s)", (name,))
            conn.execute("SELECT jit.finish(%s)", (name,))
        conn.execute("UPDATE jit_data.requests SET status = 'cancelled', verifier = NULL"
                     " WHERE status IN ('pending', 'approved')")
        conn.execute("UPDATE jit_data.leases SET break_glass = false")
        conn.execute("SELECT jit.profile_approval_rules('write', NULL, false, interval '1 hour', 1)")
    # other modules' "write" profiles are granted at once: the approval policy goes with the test
    approvals(session.cluster, "write", approvers="")


def notices(screen: str) -> int:
    """Lines above the prompt that say a break-glass use (the toolbar row is not one)."""
    return sum(1 for line in screen.splitlines() if re.match(NOTICE, line))


def test_an_approver_reads_a_break_glass_use_once_pushed_by_the_doorbell(world: Session) -> None:
    alice, bob = shell(world, "alice"), shell(world, "bob")
    bob.wait_for(lambda _: "bob" in listening(world.cluster), timeout=15)
    time.sleep(1.5)  # past the first count, which the bell's first (re)connect also brings
    asked = time.monotonic()
    alice.run('\\jit request write --break-glass --reason "INC-7 db down"', r"Break-glass: ")
    screen = bob.wait_for(lambda s: notices(s) == 1, timeout=8)
    seen = time.monotonic() - asked
    assert re.search(NOTICE, bob.toolbar()), bob.toolbar()
    assert "BREAK-GLASS" not in alice.toolbar()  # her own use is not news to her
    # more rings (anyone may ring) make bob's session read the uses again: said once all the same
    with world.cluster.connect("app") as conn:
        for _ in range(3):
            conn.execute("NOTIFY jit_requests")
            time.sleep(0.7)
    bob.pump(1.0)
    assert notices(bob.text()) == 1, bob.text()
    assert "Traceback" not in screen
    print(f"break-glass to the approver's screen {seen:.2f}s (includes typing the request)")
    # the use ends: the toolbar drops it at the next look
    alice.run("\\jit revoke", r"app>")
    with world.cluster.connect("app") as conn:
        conn.execute("NOTIFY jit_requests")
    bob.wait_for(lambda _: "BREAK-GLASS" not in bob.toolbar(), timeout=8)
