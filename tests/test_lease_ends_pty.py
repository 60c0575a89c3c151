"""The end of a lease as a demanding pgcli user meets it: real pgcli-jit in a pty, short TTLs.

Access ends on time whatever the shell is doing (output in the pager, a statement
running, a transaction open, a \\jit command waiting on a locked server); after the end
the session stays usable; the screen says what happened; the lease is visible at 80 columns.
"""

from __future__ import annotations

import re
import time

import pexpect
import pytest

from tests.shell_fixtures import Session
from tests.terminal import Terminal, pgpass_plus

pytestmark = pytest.mark.pty
JIT_USER = r"jit_[a-z0-9_]+_[a-z0-9]{8,}"


def start(session: Session, profile: str, *args: str, **env: str) -> tuple[Terminal, str]:
    term = session.open("--jit", profile, *args, **env)
    term.wait_for(r"app>")
    screen = term.run("select current_user as whoami;", r"SELECT 1")
    return term, re.findall(JIT_USER, screen)[-1]


def as_postgres(session: Session) -> Terminal:
    cluster = session.cluster
    term = session.open("-h", cluster.host, "-p", str(cluster.port), "-U", "postgres", "app",
                        PGPASSFILE=pgpass_plus(session.home, cluster.host, cluster.port, "postgres",
                                                cluster.superpassword))
    term.wait_for(r"app>")
    return term


def wait_gone(session: Session, user: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while session.role_exists(user) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not session.role_exists(user)


# 1. output left in the pager across expiry: access ends, and the screen does not claim a
# statement was cancelled (none was running)
def test_output_paged_across_expiry_says_expired_not_cancelled(session: Session) -> None:
    session.profile("p", ttl="8s", renew="never")
    term, user = start(session, "p", PAGER="less", LESS="")
    term.child.send("select generate_series(1, 200) as n;\r")
    term.wait_for(r"(?m)^\s*40\s*$|:\s*$|\(END\)", timeout=10)  # less shows the first page
    term.pump(9)  # the lease ends while the output is read
    assert "JIT access expired" not in term.text()  # nothing is drawn over the pager
    term.type("q")
    screen = term.wait_for(r"JIT access expired", timeout=10)
    assert "the running statement was cancelled" not in screen
    assert wait_gone(session, user)
    term.run("select 1 as one;", r"JIT access expired: \\jit request to continue")


# 2. Ctrl-C while a \jit command waits on a locked server cancels that command only: the
# session and its open transaction are kept, and the wait was shown
def test_ctrl_c_during_a_jit_command_keeps_the_transaction(session: Session) -> None:
    session.profile("w", grant=["jit_write"], ttl="5m", max_ttl="1h", renew="never")
    term, user = start(session, "w")
    term.run("begin;", r"BEGIN")
    term.run("insert into accounts values (92, 'kept', 1);", r"INSERT 0 1")
    with session.cluster.connect("app") as holder:  # holds the lease's row: jit.renew waits on it
        holder.execute("begin")
        holder.execute("select 1 from jit_data.leases where rolname = %s for update", (user,))
        term.child.send("\\jit renew\r")
        term.wait_for(r"\\jit renew: waiting for the server \ds \(Ctrl-C cancels\)", timeout=5)
        term.child.sendcontrol("c")
        term.wait_for(r"\\jit renew cancelled: the session and its open transaction are kept", timeout=5)
        holder.execute("rollback")
    term.run("commit;", r"COMMIT")
    with session.cluster.connect("app") as conn:
        assert conn.execute("select owner from accounts where id = 92").fetchone() == ("kept",)
        conn.execute("delete from accounts where id = 92")
    term.run("select current_user as still;", user)
    assert term.child.isalive()


# 3. a statement running at expiry is cancelled, within a second, and the screen says why
def test_statement_running_at_expiry_is_cancelled(session: Session) -> None:
    session.profile("s", ttl="6s", renew="never")
    term, user = start(session, "s")
    expires = session.valid_until(user)
    term.run(r"\jit status", r"as of")  # a table through the pager before: still cancelled after
    term.child.send("select pg_sleep(60);\r")
    term.wait_for(r"the running statement was cancelled", timeout=15)
    assert time.time() - expires < 2.5  # cancel + close within a second of expiry (+ polling)
    assert "canceling statement due to user request" in term.text() or "server closed" in term.text()
    term.run("select 1 as one;", r"JIT access expired")
    with session.cluster.connect() as conn:
        rows = conn.execute("select count(*) from pg_stat_activity where usename = %s", (user,)).fetchone()
    assert rows == (0,)


# 3b. a long statement across the lease's end is kept alive by a renewal made in the
# background while it runs: in auto mode as the window opens, in prompt mode once, in the
# final part (nothing reads the terminal to ask), and the screen says why
@pytest.mark.parametrize(("renew", "said"), [
    ("auto", r"Renewed {user} until \d\d:\d\d:\d\d\."),
    ("prompt", r"Renewed {user} until \d\d:\d\d:\d\d \(a statement was running into the lease's end\)"),
])
def test_a_long_statement_is_kept_alive_across_the_end(session: Session, renew: str, said: str) -> None:
    session.profile("k", ttl="10s", renew_before="8s", renew=renew, max_ttl="5m")
    term, user = start(session, "k")
    before = session.valid_until(user)
    term.child.send("select pg_sleep(10) as slept;\r")
    screen = term.wait_for(lambda s: "SELECT 1" in s.split("pg_sleep(10)")[-1], timeout=30)
    assert "cancel" not in screen.split("pg_sleep(10)")[-1]
    term.wait_for(said.format(user=user))
    assert session.valid_until(user) >= before + 3
    term.run("select current_user as still;", user)


# 4. a rotation waiting on a transaction names its deadline; 7. status shows the waiting credential
def test_waiting_rotation_names_the_deadline_and_status_shows_it(session: Session) -> None:
    session.profile("w", ttl="20s", max_ttl="20s", renew_before="8s", renew="auto")
    term, _ = start(session, "w")
    term.run("begin;", r"BEGIN")
    screen = term.wait_for(r"COMMIT before \d\d:\d\d:\d\d or the transaction is lost", timeout=15)
    assert "reconnect when the open transaction ends" in screen
    status = term.run(r"\jit status", r"waiting to switch in")
    assert re.search(r"waiting to switch in\s+\|\s+" + JIT_USER, status)
    term.run("rollback;", r"ROLLBACK")
    term.wait_for(r"Rotated to " + JIT_USER, timeout=5)


# 5. after expiry, \jit revoke returns to the login of before; 6. local commands keep working;
# 7. status says what ended, when, and what to do
def test_after_expiry_local_commands_status_and_the_way_back(session: Session) -> None:
    session.profile("x", ttl="4s", renew="never")
    term = as_postgres(session)
    term.run(r"\jit request x", r"Connected as " + JIT_USER)
    term.wait_for(r"JIT access expired", timeout=10)
    term.run("select 1 as one;", r"or \\jit revoke to return to postgres")
    term.run(r"\jit renew", r"JIT access expired: .* or \\jit revoke to return to postgres")
    term.run(r"\jit status", r"JIT lease " + JIT_USER + r" \(x\) expired at \d\d:\d\d:\d\d \w+ \(\d+s ago\)")
    term.run(r"\timing", r"Timing is (on|off)")
    term.run(r"\x", r"Expanded display is (on|off)")
    term.run(r"\?", r"\\jit \[command\]")
    term.run(r"\jit help", r"\\jit request \[PROFILE\]")
    term.run(r"\jit help revoke", r"after expiry")
    term.run(r"\jit revoke", r"JIT access had ended; back to postgres")
    term.run("select current_user as back;", r"postgres")
    term.run(r"\jit status", r"expired at .* Now connected as postgres")


# 5/6/7 with --jit: the way back is the login that asked (the postgres backend's requester)
def test_after_expiry_of_a_jit_start_revoke_returns_to_the_requester(session: Session) -> None:
    session.profile("r", ttl="4s", renew="never")
    term, user = start(session, "r")
    term.wait_for(r"JIT access expired", timeout=10)
    term.run(r"\pager cat", r"(?i)pager")
    term.run(r"\echo still here", r"still here")
    term.run(r"\jit status", rf"JIT lease {user} \(r\) expired at")
    term.run(r"\jit revoke", r"JIT access had ended; back to \w+")
    term.run("select 1 as one;", r"SELECT 1")


# 11. --jit says who and until when; a second request says the first was revoked; 8. the cap
def test_startup_line_cap_and_replaced_lease_are_said(session: Session) -> None:
    session.profile("c", ttl="1m", max_ttl="2m", renew="never")
    term = session.open("--jit", "c", "--jit-ttl", "1h")
    screen = term.wait_for(r"app>")
    first = re.search(r"Connected as (" + JIT_USER + r") until \d\d:\d\d:\d\d \(c\)", screen)
    assert first is not None, screen
    assert re.search(r"\((ttl|TTL) capped at [^)]*2m", screen), screen  # said once, by us or the backend
    screen = term.run(r"\jit request c", r"Revoked the previous lease " + first.group(1))
    assert wait_gone(session, first.group(1))


# 13. at 80 columns the lease is visible, and \j puts it in the prompt
def test_lease_visible_at_80_columns_and_in_the_prompt(session: Session) -> None:
    session.profile("n", ttl="5m", renew="never")
    term, user = start(session, "n", COLUMNS="80")
    bar = term.wait_toolbar(rf"JIT n as {user} \d:\d\d")
    assert term.toolbar().startswith("  JIT n as"), bar
    pgclirc = session.home / "pgclirc"
    pgclirc.write_text("[main]\nshow_bottom_toolbar = False\nprompt = '\\j\\d> '\n")
    plain = session.open("--jit", "n", "--pgclirc", str(pgclirc), COLUMNS="80")
    first = plain.wait_for(r"JIT n \d:\d\d app>")
    shown = re.findall(r"JIT n (\d:\d\d) app>", first)[-1]
    plain.wait_for(lambda s: re.findall(r"JIT n (\d:\d\d) app>", s)[-1:] not in ([shown], []), timeout=4)
    assert "[F2]" not in plain.text()


# 2b. Ctrl-C while the revoke on exit waits on a locked server: pgcli-jit leaves at once and
# says what stays valid (the reaper ends it at its expiry)
def test_ctrl_c_during_the_revoke_on_exit_leaves_and_says_what_stays(session: Session) -> None:
    session.profile("w", grant=["jit_write"], ttl="5m", max_ttl="1h", renew="never")
    term, user = start(session, "w")
    with session.cluster.connect("app") as holder:
        holder.execute("begin")
        holder.execute("select 1 from jit_data.leases where rolname = %s for update", (user,))
        term.child.send("\\q\r")
        term.wait_for(r"revoking on exit: waiting for the server \ds \(Ctrl-C cancels\)", timeout=5)
        term.child.sendcontrol("c")
        term.wait_for(rf"revoke cancelled \(Ctrl-C\): {user} stays valid until \d\d:\d\d:\d\d",
                      timeout=5)
        holder.execute("rollback")
    term.child.expect(pexpect.EOF, timeout=10)
    assert "Traceback" not in term.transcript.decode(errors="replace")
