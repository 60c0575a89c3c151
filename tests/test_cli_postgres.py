"""The real ``pgcli-jit`` console script with the postgres backend and no config file at all:
a user holds only their own login, and ``--jit NAME`` asks the server for its profile NAME."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import declare_server_profile, live_jit_roles, make_login
from tests.terminal import Terminal, isolated_env

PGCLI_JIT = str(Path(sys.executable).with_name("pgcli-jit"))


def run(cluster: Cluster, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = isolated_env(home, None, {"PGPASSFILE": os.environ["PGPASSFILE"], **env})
    cmd = [PGCLI_JIT, "-h", cluster.host, "-p", str(cluster.port), "-U", "alice", *args, "app"]
    return subprocess.run(cmd, capture_output=True, text=True, env=base, stdin=subprocess.DEVNULL,
                          timeout=60, check=False)


@pytest.fixture(autouse=True)
def _cli_read(cluster: Cluster) -> None:
    declare_server_profile(cluster, "cli-read", ttl="2m", max_ttl="5m")


def test_no_config_asks_the_server_and_revokes_at_exit(cluster: Cluster, home: Path) -> None:
    proc = run(cluster, home, "--jit", "cli-read", "--jit-reason", "INC-5", "-c",
               "select current_user, session_user")
    assert proc.returncode == 0, proc.stderr
    assert "jit_alice_" in proc.stdout
    assert "Connected as jit_alice_" in proc.stderr and "(cli-read)" in proc.stderr
    assert not live_jit_roles(cluster, "cli-read")  # revoked and dropped on exit
    with cluster.connect("app") as conn:
        row = conn.execute("select requester, reason, end_event from jit_data.leases"
                           " where profile = 'cli-read'"
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


@pytest.mark.pty
def test_a_typed_password_for_the_own_login_works_and_revoke_returns_to_it(
        cluster: Cluster, home: Path) -> None:
    """A site without .pgpass: the only password asked for is the user's own, at start-up;
    it stays in memory, and \\jit revoke goes back to that login."""
    password = make_login(cluster, "dora", member_of="jit_requester")
    env = isolated_env(home, None, {"PGPASSFILE": "/nonexistent"})
    term = Terminal(["-h", cluster.host, "-p", str(cluster.port), "-U", "dora", "--jit", "cli-read",
                     "--jit-reason", "typed", "app"], env, home)
    try:
        term.wait_for("Password for dora")
        term.child.send(password + "\r")
        term.wait_for("Connected as jit_dora_")
        term.run("\\jit revoke", expect="back to dora")
        term.run("select session_user as who;", expect="dora")
    finally:
        term.close()
    for path in home.rglob("*"):  # the typed password went nowhere on disk
        if path.is_file():
            assert password not in path.read_text(errors="replace"), path


@pytest.mark.pty
@pytest.mark.parametrize("ask", ["when needed", "-W"])
def test_a_password_typed_for_the_profiles_user_reaches_that_login(cluster: Cluster, home: Path,
                                                                   ask: str) -> None:
    """The profile names the login that asks (``user``) and the command line has no -U: the
    prompt names that user, and what is typed is used for it (it was dropped as another
    user's password, and the start failed with "needs a password")."""
    password = make_login(cluster, "erin_cli", member_of="jit_requester")
    config = home / "config.toml"
    config.write_text(f'[profiles.cli-read]\nbackend = "postgres"\nhost = "{cluster.host}"\n'
                      f'port = {cluster.port}\ndbname = "app"\nuser = "erin_cli"\n', encoding="utf-8")
    config.chmod(0o600)
    env = isolated_env(home, config, {"PGPASSFILE": "/nonexistent"})
    flags = ["-W"] if ask == "-W" else []
    term = Terminal([*flags, "-h", cluster.host, "-p", str(cluster.port), "--jit", "cli-read", "app"],
                    env, home)
    try:
        term.wait_for("Password for erin_cli")
        term.child.send(password + "\r")
        term.wait_for("Connected as jit_erin_cli_")
        term.run("\\jit revoke", expect="back to erin_cli")
    finally:
        term.close()


def test_a_reason_required_profile_refuses_a_request_without_one(cluster: Cluster, home: Path) -> None:
    declare_server_profile(cluster, "cli-reason", reason_required=True)
    proc = run(cluster, home, "--jit", "cli-reason", "-c", "select 1")
    assert proc.returncode == 1 and "profile cli-reason requires a reason" in proc.stderr
    with cluster.connect("app") as conn:
        row = conn.execute("select event, requester from jit_data.audit where profile = 'cli-reason'"
                           " order by id desc limit 1").fetchone()
    assert row == ("deny", "alice")


def write_config(cluster: Cluster, home: Path, *names: str) -> Path:
    """Profiles that all ask as alice at the test cluster's ``app``, as a user's file would."""
    config = home / "config.toml"
    config.write_text("".join(
        f'[profiles.{name}]\nbackend = "postgres"\nhost = "{cluster.host}"\nport = {cluster.port}\n'
        f'dbname = "app"\nuser = "alice"\n\n' for name in names), encoding="utf-8")
    config.chmod(0o600)
    return config


def run_bare(home: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pgcli-jit ARGS`` with no -h/-p/-U/DBNAME: only the config says where the server is."""
    env = isolated_env(home, config, {"PGPASSFILE": os.environ["PGPASSFILE"]})
    return subprocess.run([PGCLI_JIT, *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)


def test_a_server_only_profile_is_asked_of_the_server_the_configs_profiles_use(
        cluster: Cluster, home: Path) -> None:
    """No connection options: a name the file does not define goes to the server its profiles
    point at (it went to libpq's defaults, a local socket, and failed "cannot reach")."""
    declare_server_profile(cluster, "cli-only", ttl="2m")
    config = write_config(cluster, home, "cli-read")
    proc = run_bare(home, config, "--jit", "cli-only", "-c", "select current_user")
    assert proc.returncode == 0, proc.stderr
    assert "jit_alice_" in proc.stdout
    assert proc.stderr.splitlines()[0] == (
        f"Profile cli-only is not in {config}: asking the server of its profiles, "
        f"alice@{cluster.host}:{cluster.port}/app.")
    assert not live_jit_roles(cluster, "cli-only")


def test_an_unknown_profile_says_no_profile_and_names_the_configs(cluster: Cluster, home: Path) -> None:
    config = write_config(cluster, home, "cli-read", "cli-write")
    proc = run_bare(home, config, "--jit", "nope", "-c", "select 1")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "no profile nope that alice may request" in last and "cannot reach" not in proc.stderr
    assert f"profiles in {config}: cli-read, cli-write" in last and "\\jit profiles" in last


def test_a_reason_required_profile_at_startup_names_jit_reason(cluster: Cluster, home: Path) -> None:
    """The server's hint names \\jit request's --reason; at start-up the option is --jit-reason."""
    declare_server_profile(cluster, "cli-reason", reason_required=True)
    proc = run(cluster, home, "--jit", "cli-reason", "-c", "select 1")
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith('profile cli-reason requires a reason (add --jit-reason "...")')


def test_expiry_during_c_stops_the_run_with_status_1_and_no_advice(cluster: Cluster, home: Path) -> None:
    """A -c statement the lease's end cancels: exit 1 (it was 0), and the message names no \\jit
    command (nobody is at a prompt to type one).  max_ttl = ttl: nothing can extend the lease."""
    declare_server_profile(cluster, "cli-short", ttl="3s", max_ttl="3s")
    proc = run(cluster, home, "--jit", "cli-short", "-c", "select pg_sleep(10)", "-c", "select 'after'")
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"^JIT access expired at \d\d:\d\d:\d\d; the running statement was cancelled$",
                     proc.stderr, re.M), proc.stderr
    assert "\\jit" not in proc.stderr and "after" not in proc.stdout
    assert not live_jit_roles(cluster, "cli-short")


def start_with_password_prompt(cluster: Cluster, home: Path, user: str, *flags: str) -> Terminal:
    env = isolated_env(home, None, {"PGPASSFILE": "/nonexistent"})
    return Terminal([*flags, "-h", cluster.host, "-p", str(cluster.port), "-U", user, "--jit", "cli-read",
                     "-c", "select session_user as who", "app"], env, home)


@pytest.mark.pty
@pytest.mark.parametrize("ask", ["when needed", "-W"])
def test_a_wrong_password_is_asked_again(cluster: Cluster, home: Path, ask: str) -> None:
    password = make_login(cluster, "gus_cli", member_of="jit_requester")
    term = start_with_password_prompt(cluster, home, "gus_cli", *(["-W"] if ask == "-W" else []))
    try:
        term.wait_for("Password for gus_cli")
        term.child.send("not-the-password\r")
        term.wait_for("Password authentication failed for gus_cli: try again")
        term.child.send(password + "\r")
        term.wait_for("Connected as jit_gus_cli_")
        term.wait_for(r"Revoked jit_gus_cli_")
    finally:
        status = term.close()
    assert status == 0


@pytest.mark.pty
def test_three_wrong_passwords_end_with_one_line_and_status_1(cluster: Cluster, home: Path) -> None:
    make_login(cluster, "hal_cli", member_of="jit_requester")
    term = start_with_password_prompt(cluster, home, "hal_cli")
    try:
        for asked in range(1, 4):
            term.wait_for(lambda screen, asked=asked: screen.count("Password for hal_cli") == asked)
            term.child.send("not-the-password\r")
        screen = term.wait_for(r"\(3 tries\)")
    finally:
        status = term.close()
    assert status == 1
    assert (f"postgres backend (profile cli-read): password authentication failed for "
            f"hal_cli@{cluster.host}:{cluster.port}/app (3 tries)") in screen
    assert "Traceback" not in screen
