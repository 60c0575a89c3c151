"""pgcli-jit as a user drives it: the real console script in a pseudo-terminal, a real cluster."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REQUESTER, declare_server_profile, end_jit_roles
from tests.shell_fixtures import Session
from tests.terminal import pgcli_jit_executable, pgpass_plus

pytestmark = pytest.mark.pty
JIT_USER = r"jit_[a-z0-9_]+_[a-z0-9]{8,}"


def current_user(term, expect: str = JIT_USER) -> str:  # type: ignore[no-untyped-def]
    screen = term.run("select current_user as whoami;", r"SELECT 1")
    return re.findall(expect, screen)[-1]


def test_jit_startup_status_renew_profiles_help(session: Session) -> None:
    session.profile("read", ttl="5m", max_ttl="20m", renew="never")
    session.profile("write", grant=["jit_write"], ttl="2m")
    term = session.open("--jit", "read", "--jit-reason", "first look")
    term.wait_for(r"app>")
    user = current_user(term)
    term.wait_toolbar(rf"JIT read as {user} [45]:\d\d")

    screen = term.run(r"\jit status", r"as of")
    for field in ("profile", "backend", "database user", "issued", "expires", "remaining",
                  "renewable", "hard limit", "renewals", "lease id"):
        assert field in screen
    assert user in screen and "first look" in screen

    before = session.valid_until(user)
    term.run(r"\JIT RENEW --ttl 15m", rf"Renewed {user} until")
    assert session.valid_until(user) > before + 500
    term.run(r"\jit status", r"renewals\s+\|\s+1")

    # read from what was printed, not the screen: other tests' server profiles, listed after
    # the config's, may scroll them away
    start = term.screen_lines_count()

    def listing(_screen: str = "") -> str:
        text = term.transcript[start:].decode(errors="replace")
        return text if re.search(r"\| write[^\n]*\n(?:\|[^\n]*\n)*\+-[-+]*\+", text) else ""

    term.type("\\jit profiles\r")
    term.wait_for(lambda screen: bool(listing(screen)))
    assert re.search(r"read(?: \(default\))?\s+\|\s+5m\s+\|\s+20m", listing())
    term.run(r"\jit", r"\\jit request \[PROFILE\]")
    term.run(r"\?", r"\\jit \[command\]")
    term.run(r"\jit frobnicate", r"unknown subcommand 'frobnicate'")


def test_request_reconnects_and_revoke_returns_to_previous_identity(session: Session) -> None:
    session.profile("write", grant=["jit_write"], ttl="2m")
    cluster = session.cluster
    term = session.open("-h", cluster.host, "-p", str(cluster.port), "-U", "postgres", "app",
                        PGPASSFILE=pgpass_plus(session.home, cluster.host, cluster.port, "postgres",
                                                cluster.superpassword))
    term.wait_for(r"app>")
    term.run(r'\jit request write --ttl 90s --reason "INC-123 hotfix"', r"Connected as " + JIT_USER)
    user = current_user(term)
    assert session.role_exists(user)
    term.run("insert into accounts values (77, 'jit', 1);", r"INSERT 0 1")
    term.run(r"\jit revoke", r"Revoked .* back to postgres")
    assert current_user(term, r"postgres") == "postgres"
    assert not session.role_exists(user)
    events = [json.loads(line) for line in session.audit_log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["request", "revoke"]
    assert events[0]["reason"] == "INC-123 hotfix" and events[0]["db_user"] == user
    with cluster.connect("app") as conn:
        conn.execute("delete from accounts where id = 77")


def test_request_inside_a_transaction_is_refused_and_the_transaction_kept(session: Session) -> None:
    session.profile("read", ttl="2m")
    cluster = session.cluster
    term = session.open("-h", cluster.host, "-p", str(cluster.port), "-U", "postgres", "app",
                        PGPASSFILE=pgpass_plus(session.home, cluster.host, cluster.port, "postgres",
                                                cluster.superpassword))
    term.wait_for(r"app>")
    term.run("begin;", r"BEGIN")
    term.run("insert into accounts values (78, 'tx', 1);", r"INSERT 0 1")
    term.run(r"\jit request read", r"refused: a transaction is open")
    term.run("commit;", r"COMMIT")
    with cluster.connect("app") as conn:
        assert conn.execute("select owner from accounts where id = 78").fetchone() == ("tx",)
        conn.execute("delete from accounts where id = 78")


def test_failed_request_keeps_the_current_connection(session: Session) -> None:
    session.profile("nodb", ttl="2m", dbname="no_such_db")
    cluster = session.cluster
    term = session.open("-h", cluster.host, "-p", str(cluster.port), "-U", "postgres", "app",
                        PGPASSFILE=pgpass_plus(session.home, cluster.host, cluster.port, "postgres",
                                                cluster.superpassword))
    term.wait_for(r"app>")
    # the server-side broker is reached through the profile's database, so it fails there
    # first; a client-side broker gets to the switch and says it kept the connection
    term.run(r"\jit request nodb", r"could not connect as[\s\S]*kept|cannot reach the server as")
    assert current_user(term, "postgres") == "postgres"
    with cluster.connect() as conn:
        left = conn.execute("select count(*) from pg_roles where rolname like 'jit\\_%' "
                            "and shobj_description(oid, 'pg_authid') like '%nodb%'").fetchone()
    assert left == (0,)


def test_quit_revokes_unless_the_profile_keeps_it(session: Session) -> None:
    session.profile("read", ttl="2m")
    session.profile("keep", ttl="2m", revoke_on_exit=False)
    term = session.open("--jit", "read")
    term.wait_for(r"app>")
    user = current_user(term)
    term.child.send("\\q\r")
    term.wait_for(rf"Revoked {user}")
    assert term.close() == 0
    assert not session.role_exists(user)

    kept = session.open("--jit", "keep")
    kept.wait_for(r"app>")
    kept_user = current_user(kept)
    kept.child.sendcontrol("d")
    kept.wait_for(r"revoke_on_exit = false")
    kept.close()
    assert session.role_exists(kept_user)


def test_non_interactive_run_connects_and_revokes(session: Session) -> None:
    session.profile("read", ttl="2m")
    proc = subprocess.run(
        [pgcli_jit_executable(), "--jit", "read", "-c", "select current_user as who"],
        env=session.env(), cwd=session.home, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    [user] = re.findall(JIT_USER, proc.stdout)
    assert not session.role_exists(user)
    assert "Traceback" not in proc.stderr


def test_bad_config_is_one_line_not_a_traceback(session: Session) -> None:
    session.config.write_text('[profiles.x]\nbackend = "postgres"\nttl = "soon"\n')
    proc = subprocess.run(
        [pgcli_jit_executable(), "--jit", "x", "-c", "select 1"], env=session.env(),
        cwd=session.home, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "profiles.x.ttl" in proc.stderr and str(session.config) in proc.stderr


def test_no_secret_in_history_logs_audit_or_server_log(session: Session) -> None:
    session.profile("read", ttl="2m", max_ttl="3m")
    term = session.open("--jit", "read")
    term.wait_for(r"app>")
    term.run(r"\jit renew --ttl 3m", r"Renewed")  # a renewal right after issue would move nothing
    term.run(r"\jit renew", r"Renewed|Rotated")
    term.run(r'\jit request read --reason "again"', r"Connected as")
    term.run("select 1/0;", r"division by zero")
    term.run(r"\jit revoke", r"Revoked")
    term.child.send("\\q\r")
    term.close()
    secrets = session.minted()
    assert len(secrets) >= 2
    files = [p for p in Path(session.home).rglob("*") if p.is_file() and p != session.secrets_file]
    assert any(p.name == "history" for p in files) and session.audit_log in files
    for path in files:
        content = path.read_bytes().decode(errors="replace")
        for secret in secrets:
            assert secret not in content, f"a password leaked into {path}"
    log = session.cluster.server_log()
    for secret in secrets:
        assert secret not in log


def test_jit_with_ping_revokes_on_the_way_out(session: Session) -> None:
    """pgcli's cli() exits before run_cli for --ping/-l: the lease must not outlive it."""
    session.profile("read", ttl="2m")
    proc = subprocess.run(
        [pgcli_jit_executable(), "--jit", "read", "--ping"], env=session.env(), cwd=session.home,
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0 and "PONG" in proc.stdout, proc.stderr
    events = [json.loads(line)["event"] for line in session.audit_log.read_text().splitlines()]
    assert events == ["request", "revoke"]


def test_jit_request_from_an_include_file_is_refused(session: Session) -> None:
    session.profile("read", ttl="2m")
    script = session.home / "include.sql"
    script.write_text("\\jit request read --ttl 1m --reason from-a-file\n")
    term = session.open("--jit", "read")
    term.wait_for(r"app>")
    term.run(f"\\i {script}", r"cannot run from a \\i file")
    events = [json.loads(line)["event"] for line in session.audit_log.read_text().splitlines()]
    assert events == ["request"]  # only the startup lease


def test_an_operator_revoke_mid_session_returns_to_the_login_that_asked(session: Session) -> None:
    """An operator ends the lease on the server (jit.revoke, jit.finish: its session is
    terminated).  The next statement does not try the dead password in a reconnect: the
    shell says the lease ended on the server, goes back to the requester's login and does
    not run the statement under it unasked."""
    session.profile("write", grant=["jit_write"], ttl="5m")
    term = session.open("--jit", "write", "--jit-reason", "INC-9")
    term.wait_for(r"app>")
    user = current_user(term)
    with session.cluster.connect("app") as ops:
        ops.execute("SELECT jit.revoke(%s)", (user,))
        ops.execute("SELECT jit.finish(%s)", (user,))
    screen = term.run("insert into accounts values (78, 'late', 1);",
                      r"JIT access ended on the server: .*back to alice")
    assert "Reconnect Failed" not in screen and "password authentication failed" not in screen
    assert "The statement was not run" in screen and "INSERT 0 1" not in screen
    assert current_user(term, r"alice") == "alice"
    with session.cluster.connect("app") as conn:
        assert conn.execute("select 1 from accounts where id = 78").fetchone() is None
    last = json.loads(session.audit_log.read_text().splitlines()[-1])
    assert last["event"] == "revoke" and last["revoked"] is False
    assert last["note"].startswith("ended on the server")


def test_an_operator_revoke_is_noticed_while_idle(session: Session) -> None:
    """Nobody types: the shell still learns within seconds that the server ended the lease
    (it asks the server every few seconds while idle), says so and goes back to the login
    that asked; the toolbar stops counting."""
    session.profile("write", grant=["jit_write"], ttl="5m")
    term = session.open("--jit", "write", "--jit-reason", "INC-10")
    term.wait_for(r"app>")
    user = current_user(term)
    term.wait_toolbar(rf"JIT write as {user} \d:\d\d")
    with session.cluster.connect("app") as ops:
        ops.execute("SELECT jit.revoke(%s)", (user,))
        ops.execute("SELECT jit.finish(%s)", (user,))
    term.wait_for(r"JIT access ended on the server: .*back to alice\.", timeout=10)
    term.pump(1.5)
    assert f"JIT write as {user}" not in term.toolbar()
    assert current_user(term, r"alice") == "alice"


def test_revoke_after_switching_database_keeps_the_database(session: Session) -> None:
    """``\\c postgres`` under the lease, then ``\\jit revoke``: back to the login that asked,
    in the database the user chose, not silently back in the first one."""
    session.profile("write", grant=["jit_write"], ttl="5m")
    term = session.open("--jit", "write", "--jit-reason", "INC-11")
    term.wait_for(r"app>")
    term.run(r"\c postgres", r"postgres>")
    term.run(r"\jit revoke", r"back to alice")
    screen = term.run("select current_database() as db, current_user as who;", r"SELECT 1")
    assert re.search(r"\|\s+postgres\s+\|\s+alice\s+\|", screen), screen


def test_tab_after_jit_request_completes_a_profile_only_the_server_has(session: Session) -> None:
    """The config defines only read; the server also lets alice request sh-pty-only.  Typing
    ``\\jit`` starts the read of the server's list in the background (a key never waits for
    it), Tab after ``\\jit request sh`` completes the server's profile, and the completed
    line requests it."""
    declare_server_profile(session.cluster, "sh-pty-only", ttl="2m", max_ttl="5m")
    session.profile("read", ttl="2m")
    cluster = session.cluster
    term = session.open("-h", cluster.host, "-p", str(cluster.port), "-U", REQUESTER, "app")
    term.wait_for(r"app>")
    try:
        term.type("\\jit ")
        term.pump(1.5)
        term.type("request sh")
        term.type("\t")
        term.wait_for(r"app> \\jit request sh-pty-only")
        term.type("\r")  # Enter takes the completion from the menu; the next one runs the line
        term.run("", r"Connected as " + JIT_USER)
        assert session.role_exists(current_user(term))
    finally:
        term.close()
        end_jit_roles(cluster, "sh-pty-only")
        with cluster.connect("app") as conn:  # later \jit profiles listings stay as they were
            conn.execute("SELECT jit.profile_drop('sh-pty-only')")
