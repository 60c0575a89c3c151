"""The reaper's systemd unit in docs/systemd: it runs this package's console script with
options ``reap`` accepts, as the OS user the operator guide's install steps create, logging
in by peer as the role of the same name; ``systemd-analyze verify`` accepts it."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from psycopg.conninfo import conninfo_to_dict

from pgcli_jit.admin import main
from pgcli_jit.admin.connect import check_dsn

ROOT = Path(__file__).parents[1]
UNIT = ROOT / "docs" / "systemd" / "pgcli-jit-reaper.service"
GUIDE = ROOT / "docs" / "operator-guide.md"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def exec_start() -> list[str]:
    return shlex.split(unit()["Service"]["ExecStart"])


def admin_script_name() -> str:
    """The console script pyproject.toml installs for ``pgcli_jit.admin:main``."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    return next(name for name, target in scripts.items() if target == "pgcli_jit.admin:main")


def guide_systemd_section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    return text.split("### As a systemd service", 1)[1].split("\n### ", 1)[0]


def test_execstart_runs_the_admin_console_script_from_the_guides_venv() -> None:
    argv = exec_start()
    binary = Path(argv[0])
    assert binary.name == admin_script_name()
    assert f"python3 -m venv {binary.parent.parent}" in guide_systemd_section()
    assert argv[1:3] == ["reap", "--watch"]


def test_execstart_options_are_ones_reap_accepts() -> None:
    argv = exec_start()
    reap = main.commands[argv[1]]
    ctx = reap.make_context(argv[1], argv[2:])
    assert ctx.params["watch"] is True
    assert ctx.params["dsns"]
    for dsn in ctx.params["dsns"]:
        check_dsn(dsn)   # no password on the command line
    with pytest.raises(click.UsageError):
        reap.make_context(argv[1], [*argv[2:], "--no-such-option"])


def test_user_is_the_one_the_guide_creates_and_the_role_it_logs_in_as() -> None:
    service = unit()["Service"]
    user = service["User"]
    dsn = conninfo_to_dict(reap_dsn())
    assert dsn["user"] == user, "peer authentication without a map needs the same name"
    assert str(dsn["host"]).startswith("/"), "peer authentication needs the local socket"
    steps = guide_systemd_section()
    assert f"--shell /usr/sbin/nologin {user}" in steps
    assert f"CREATE ROLE {user} LOGIN IN ROLE jit_admin" in steps
    assert f"local  {dsn['dbname']}  {user}  peer" in steps
    assert "(systemd/pgcli-jit-reaper.service)" in steps   # the guide links this very file


def reap_dsn() -> str:
    argv = exec_start()
    return argv[argv.index("--dsn") + 1]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """Pointed at this environment's own console script: the unit's /opt path exists only
    once the install steps have run."""
    script = Path(sys.executable).with_name(admin_script_name())
    installed = exec_start()[0]
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(installed, str(script)), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert UNIT.name not in done.stderr, done.stderr
