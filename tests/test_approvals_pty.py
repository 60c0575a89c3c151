"""Four eyes end to end: two real pgcli-jit sessions in pseudo-terminals against a real cluster.

``alice`` asks for ``write`` (which needs one approval by ``jit_leads``) and keeps working;
``bob`` sees the request in his toolbar, approves it from his own shell, and alice's session
switches to the new role.  Then a denial, a timeout, alice approving her own request, an
approval that arrives inside alice's transaction, and ``--jit`` waiting at start-up.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from pgcli_jit.devtools.cluster import Cluster
from tests.shell_fixtures import Session
from tests.terminal import Terminal
from tests.test_approvals_server import people  # noqa: F401  (the fixture)

pytestmark = pytest.mark.pty
JIT_USER = r"jit_alice_[a-z0-9]{8,}"


def approvals(cluster: Cluster, name: str, timeout: str = "1 hour", approvers: str = "jit_leads") -> None:
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.profile_set(%s, NULL, NULL, NULL, NULL, NULL, NULL, NULL, %s, 1,"
                     " %s::interval)", (name, approvers, timeout))


@pytest.fixture
def world(session: Session, people: None) -> Iterator[Session]:  # noqa: F811
    session.profile("write", grant=["jit_write"], ttl="10m")
    approvals(session.cluster, "write")
    bob_config = session.home / "bob.toml"
    bob_config.write_text(session.config.read_text().replace('user = "alice"', 'user = "bob"'))
    yield session
    with session.cluster.connect("app") as conn:
        conn.execute("UPDATE jit_data.requests SET status = 'cancelled', verifier = NULL"
                     " WHERE status IN ('pending', 'approved')")
    # other modules' "write" profiles are granted at once: the approval policy goes with the test
    approvals(session.cluster, "write", approvers="")


def shell(session: Session, user: str) -> Terminal:
    cluster = session.cluster
    extra = {"PGCLI_JIT_CONFIG": str(session.home / "bob.toml")} if user == "bob" else {}
    term = session.open("-h", cluster.host, "-p", str(cluster.port), "-U", user, "app", **extra)
    term.wait_for(r"app>")
    return term


def ask(alice: Terminal) -> str:
    screen = alice.run('\\jit request write --reason "INC-42 refund"', r"Request \d+ for write is waiting")
    line = re.findall(r"Request (\d+) for write is waiting for approval by jit_leads; keep working, "
                      r"the session switches when it is approved \(\\jit cancel to withdraw\)", screen)
    assert line, screen
    return line[-1]


def whoami(term: Terminal) -> str:
    """The session's user, read from this query's own output: a marker unique to the call, so a
    result still on screen from an earlier call is never read instead."""
    marker = f"w{time.monotonic_ns()}"
    screen = term.run(f"select current_user || ' {marker}' as whoami;", rf"\w+ {marker}\s+\|")
    return re.findall(rf"\|\s+(\w+) {marker}\s+\|", screen)[-1]


def test_bob_approves_from_his_shell_and_alices_session_switches(world: Session) -> None:
    alice, bob = shell(world, "alice"), shell(world, "bob")
    rid = ask(alice)
    alice.wait_toolbar(r"JIT write pending 0:0\d")
    assert whoami(alice) == "alice"  # the session goes on as before
    status = alice.run("\\jit status", r"waiting for approval by jit_leads")
    assert f"{rid} (write)" in status
    bob.wait_toolbar(r"JIT: 1 request waiting", timeout=10)
    assert "JIT:" not in alice.toolbar()  # her own request is never hers to approve
    pending = bob.run("\\jit pending", r"INC-42 refund")
    assert re.search(rf"\|\s*{rid}\s*\|\s*alice\s*\|\s*write\s*\|", pending)
    bob.run(f'\\jit approve {rid} --comment "checked INC-42"', rf"Approved request {rid} \(alice, write\)")
    alice.wait_for(rf"Approved by bob: connected as {JIT_USER} until", timeout=5)
    assert re.fullmatch(JIT_USER, whoami(alice))
    bob.wait_for(lambda _: "JIT: 1 request" not in bob.toolbar(), timeout=5)
    with world.cluster.connect("app") as conn:
        events = [e for (e,) in conn.execute(
            "SELECT event FROM jit_data.audit WHERE detail->>'request_id' = %s ORDER BY id", (rid,))]
    assert events == ["pending", "approve", "approved", "request"]


def listening(cluster: Cluster) -> list[str]:
    """The users with a connection waiting for the requests doorbell, once per connection."""
    with cluster.connect("app") as conn:
        rows = conn.execute("SELECT usename FROM pg_stat_activity WHERE query = 'LISTEN jit_requests'")
        return sorted(name for (name,) in rows)


def test_requests_and_decisions_are_pushed_not_polled(world: Session) -> None:
    """Each approver's session keeps one connection listening for the server's doorbell, so a
    new request reaches bob's toolbar, and bob's decision alice's session, at the commit; the
    polls left are a net for a lost ring (every 30 s and 15 s), too slow to pass this test."""
    alice, bob = shell(world, "alice"), shell(world, "bob")
    bob.wait_for(lambda _: "bob" in listening(world.cluster), timeout=15)
    time.sleep(1.5)  # past the first count, which the bell's first (re)connect also brings
    asked = time.monotonic()
    rid = ask(alice)
    bob.wait_toolbar(r"JIT: 1 request waiting", timeout=8)
    to_toolbar = time.monotonic() - asked
    # one listening connection per session, never more (alice: her request waits)
    alice.wait_for(lambda _: listening(world.cluster) == ["alice", "bob"], timeout=5)
    bob.run(f"\\jit approve {rid}", rf"Approved request {rid} \(alice, write\)")
    approved = time.monotonic()
    alice.wait_for(rf"Approved by bob: connected as {JIT_USER} until", timeout=8)
    print(f"request to toolbar {to_toolbar:.2f}s (includes typing the request), "
          f"approval to switch {time.monotonic() - approved:.2f}s")
    assert re.fullmatch(JIT_USER, whoami(alice))


def test_denial_and_alice_approving_her_own(world: Session) -> None:
    alice, bob = shell(world, "alice"), shell(world, "bob")
    rid = ask(alice)
    own = alice.run(f"\\jit approve {rid}", rf"request {rid} is your own")
    assert "Traceback" not in own
    alice.run("\\jit status", r"waiting for approval by jit_leads")  # nothing changed
    bob.run(f'\\jit deny {rid} --reason "not during the freeze"', rf"Denied request {rid}")
    alice.wait_for(rf"Request {rid} denied by bob: not during the freeze", timeout=5)
    alice.wait_for(lambda _: "pending" not in alice.toolbar(), timeout=3)
    assert whoami(alice) == "alice"


def test_timeout_is_said_once_and_cancel_withdraws(world: Session) -> None:
    approvals(world.cluster, "write", "3 seconds")
    alice = shell(world, "alice")
    rid = ask(alice)
    alice.wait_for(rf"Request {rid} for write timed out", timeout=10)
    time.sleep(2.5)
    alice.pump(0.2)
    assert alice.transcript.count(b"timed out") == 1
    approvals(world.cluster, "write", "1 hour")
    other = ask(alice)
    alice.run("\\jit cancel", rf"Request {other} for write withdrawn\.")
    with world.cluster.connect("app") as conn:
        row = conn.execute("SELECT status FROM jit_data.requests WHERE id = %s", (int(other),)).fetchone()
    assert row == ("cancelled",)


def test_approval_inside_a_transaction_waits_for_its_end(world: Session) -> None:
    alice, bob = shell(world, "alice"), shell(world, "bob")
    rid = ask(alice)
    alice.run("begin;", r"BEGIN")
    alice.pump(0.5)
    alice.run("select 41 + 1 as answer;", r"\|\s+42\s+\|")
    bob.run(f"\\jit approve {rid}", rf"Approved request {rid}")
    alice.wait_for(rf"Request {rid} approved by bob: the session switches when the open transaction ends",
                   timeout=5)
    assert whoami(alice) == "alice"  # still in her transaction, as herself
    alice.run("rollback;", r"ROLLBACK")
    alice.wait_for(rf"Approved by bob: connected as {JIT_USER}", timeout=5)
    assert re.fullmatch(JIT_USER, whoami(alice))


def test_jit_at_startup_waits_and_exits_non_zero_on_denial(world: Session) -> None:
    decided: list[str] = []

    def decide(verb: str, text: str) -> None:
        deadline = time.monotonic() + 10
        with psycopg.connect(world.cluster.conninfo("app", user="bob", password=""), autocommit=True) as bob:
            while time.monotonic() < deadline:
                row = bob.execute("SELECT max(id) FROM jit.pending_for_me()").fetchone()
                if row and row[0]:
                    bob.execute(f"SELECT jit.{verb}(%s, %s)", (row[0], text))
                    decided.append(str(row[0]))
                    return
                time.sleep(0.2)

    approver = threading.Thread(target=decide, args=("approve", "ok"))
    approver.start()
    term = world.open("--jit", "write", "-c", "select current_user as whoami")
    term.wait_for(r"is waiting for jit_leads: 0:0\d \(Ctrl-C withdraws\)")
    term.wait_for(JIT_USER)
    approver.join()
    assert term.close() == 0
    denier = threading.Thread(target=decide, args=("deny", "not today"))
    denier.start()
    term = world.open("--jit", "write", "-c", "select 1")
    term.wait_for(r"denied by bob: not today")
    denier.join()
    assert term.close() == 1


def test_ctrl_c_at_startup_withdraws_the_request(world: Session) -> None:
    term = world.open("--jit", "write", "-c", "select 1")
    screen = term.wait_for(r"Request (\d+) for write is waiting")
    rid = re.findall(r"Request (\d+) for write is waiting", screen)[-1]
    term.child.sendcontrol("c")
    term.wait_for(rf"Request {rid} withdrawn")
    assert term.close() == 1
    with world.cluster.connect("app") as conn:
        row = conn.execute("SELECT status FROM jit_data.requests WHERE id = %s", (int(rid),)).fetchone()
    assert row == ("cancelled",)


def test_waiting_at_startup_redraws_one_row_at_80_columns(world: Session) -> None:
    """The line was wider than 80 columns: every redraw with \\r added a row."""
    term = world.open("--jit", "write", "-c", "select 1", COLUMNS="80")
    term.wait_for(r"is waiting for jit_leads: 0:03")
    rows = [row for row in term.text().splitlines() if row.strip()]
    assert len(rows) == 1 and rows[0].startswith("Request ") and len(rows[0]) < 80, rows
    term.child.sendcontrol("c")
    term.wait_for(r"withdrawn")
    assert term.close() == 1
