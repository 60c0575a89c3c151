"""The live lease as a user sees it: countdown, the renewal offer (F6), auto-renewal, rotation, expiry.

Real pgcli-jit in a pseudo-terminal, real cluster, short TTLs: these are the
few tests that must watch real seconds pass.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.shell_fixtures import Session
from tests.terminal import Terminal

pytestmark = pytest.mark.pty
JIT_USER = r"jit_[a-z0-9_]+_[a-z0-9]{8,}"
F5 = "\x1b[15~"  # what an xterm sends for F5 (pgcli's Explain toggle)
F6 = "\x1b[17~"  # what an xterm sends for F6 (take the offer)


def start(session: Session, profile: str) -> tuple[Terminal, str]:
    term = session.open("--jit", profile)
    term.wait_for(r"app>")
    screen = term.run("select current_user as whoami;", r"SELECT 1")
    return term, re.findall(JIT_USER, screen)[-1]


def test_countdown_ticks_while_idle(session: Session) -> None:
    session.profile("read", ttl="5m", renew="never")
    term, user = start(session, "read")
    first = term.wait_toolbar(rf"JIT read as {user} \d:\d\d")
    later = term.wait_toolbar(rf"JIT read as {user} (?!{first[-4:]})\d:\d\d", timeout=5)
    assert later != first  # changed with no key pressed
    style = term.style_of(f"JIT read as {user}")
    assert style is not None and not style[1] and style[0][2:] != "0000"  # fresh: plain, not red


def test_f6_renews_and_keeps_what_was_typed(session: Session) -> None:
    """The offer is a line above the prompt and ``[F6] renew`` in the toolbar: nothing reads
    the terminal to ask, so what is being typed stays in the SQL line.  F5 stays pgcli's."""
    session.profile("p", ttl="12s", renew_before="10s", renew="prompt", max_ttl="5m")
    term, user = start(session, "p")
    before = session.valid_until(user)
    term.type(F5)
    term.wait_toolbar(r"\[F5\] Explain: ON")
    term.type(F5)
    term.wait_toolbar(r"\[F5\] Explain: OFF")
    term.type("select 40 + 2 as answer")  # typed, not yet sent
    term.wait_for(r"Lease for p ends at \d\d:\d\d:\d\d \(in 0:0\d\): F6 or \\jit renew extends it",
                  timeout=12)
    term.wait_toolbar(r"\[F6\] renew")
    term.type(F6)
    term.wait_for(rf"Renewed {user} until")
    assert session.valid_until(user) >= before + 2  # now + ttl, asked ~4 s after issue
    screen = term.run(";", r"SELECT 1")
    assert re.search(r"\|\s+42\s+\|", screen)


def test_an_offer_not_taken_lets_the_lease_expire_and_access_ends(session: Session) -> None:
    session.profile("p", ttl="10s", renew_before="8s", renew="prompt")
    term, user = start(session, "p")
    term.wait_for(r"Lease for p ends at", timeout=10)
    term.wait_toolbar(r"JIT expired", timeout=15)
    assert "Renewed" not in term.text()
    assert term.text().count("Lease for p ends at") == 1  # offered once
    term.run("select 1;", r"JIT access expired: \\jit request to continue")
    assert not session.role_exists(user)  # the client revoked it at expiry
    term.run(r"\jit status", r"JIT access expired")
    term.child.send("\\q\r")
    assert term.close() == 0


def test_auto_renews_in_the_background_without_asking(session: Session) -> None:
    session.profile("a", ttl="10s", renew_before="6s", renew="auto", max_ttl="5m")
    term, user = start(session, "a")
    before = session.valid_until(user)
    term.wait_for(rf"Renewed {user} until", timeout=12)
    assert "Renew?" not in term.text()
    assert session.valid_until(user) >= before + 3
    term.run("select current_user as still;", user)


def test_rotation_waits_for_the_open_transaction(session: Session) -> None:
    # max_ttl == ttl: the lease cannot be extended, so renewal means a new role
    # renewed 8 s before its end, a new 20 s role adds 12 s: more than half a term, so it is
    # taken without asking (it drops nothing: no temp table, no prepared statement)
    session.profile("w", grant=["jit_write"], ttl="20s", max_ttl="20s", renew_before="8s", renew="auto")
    term, old = start(session, "w")
    term.run("begin;", r"BEGIN")
    term.run("insert into accounts values (91, 'held open', 1);", r"INSERT 0 1")
    term.wait_for(r"reconnect when the open transaction ends", timeout=15)
    assert session.role_exists(old)
    term.run("commit;", r"COMMIT")
    screen = term.wait_for(r"Rotated to " + JIT_USER, timeout=5)
    new = re.findall(r"Rotated to (" + JIT_USER + ")", screen)[-1]
    assert new != old
    term.run("select current_user as whoami;", new)
    with session.cluster.connect("app") as conn:
        assert conn.execute("select owner from accounts where id = 91").fetchone() == ("held open",)
        conn.execute("delete from accounts where id = 91")
    deadline = time.monotonic() + 5
    while session.role_exists(old) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not session.role_exists(old)


def test_ctrl_d_after_expiry_exits_cleanly(session: Session) -> None:
    session.profile("short", ttl="4s", renew="never")
    term, user = start(session, "short")
    term.wait_toolbar(r"JIT expired", timeout=10)
    term.wait_for(r"JIT access expired")  # said once, above the prompt
    term.child.sendcontrol("d")
    term.wait_for(r"Goodbye!")
    assert term.close() == 0
    assert not session.role_exists(user)


def test_toolbar_alarm_style_and_show_bottom_toolbar_off(session: Session) -> None:
    # 12 s, renew_before 8 s: warning from 0:08 left, alarm in the final part (0:04 left)
    session.profile("short", ttl="12s", renew_before="8s", renew="never")
    term, user = start(session, "short")
    term.wait_toolbar(rf"JIT short as {user} 0:0[5-7]")
    style = term.style_of(f"JIT short as {user}")
    assert style is not None and style[1] and style[0][2:] != "0000", style  # warning: bold, not red
    term.wait_toolbar(rf"JIT short as {user} 0:0[0-3]")
    style = term.style_of(f"JIT short as {user}")
    assert style is not None
    bg, bold = style  # the final part: alarm, white on red (#aa0000, 256-colour af0000)
    assert bold and int(bg[:2], 16) >= 0xA0 and bg[2:] == "0000", style

    pgclirc = session.home / "pgclirc"
    pgclirc.write_text("[main]\nshow_bottom_toolbar = False\n")
    plain = session.open("--jit", "short", "--pgclirc", str(pgclirc))
    plain.wait_for(r"app>")
    plain.run("select 1 as one;", r"SELECT 1")
    plain.pump(1.5)
    assert "[F2]" not in plain.text() and "JIT short" not in plain.text()


def test_typing_across_the_offer_at_80_columns_loses_no_key(session: Session) -> None:
    """SQL typed at three keys a second while the offer appears: every key lands in the SQL
    line, none is taken as an answer, and Enter runs the statement as typed."""
    session.profile("p", ttl="30s", renew_before="26s", renew="prompt", max_ttl="5m")
    term = session.open("--jit", "p", COLUMNS="80")
    term.wait_for(r"app>")
    started = time.monotonic()
    sql = "select now() is not null, 'yes' as y"
    for key in sql:  # ~13 s of typing: the window opens 4 s in
        term.type(key)
        term.pump(0.25)
    assert time.monotonic() - started > 6
    assert "Lease for p ends at" in term.text()
    screen = term.run(";", r"SELECT 1")
    assert re.search(r"\|\s+True\s+\|\s+yes\s+\|", screen), screen
    term.child.send("\\q\r")
    assert term.close() == 0
