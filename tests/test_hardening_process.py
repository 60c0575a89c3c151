"""The pgcli-jit process writes no core dump and is not dumpable."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.security

CHECK = ("import atexit, resource; from pgcli_jit.shell import procsafety; "
         "atexit.register(lambda: print('CORE', resource.getrlimit(resource.RLIMIT_CORE),"
         " 'DUMPABLE', procsafety.is_dumpable())); ")


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False).stdout


def test_harden_process_disables_core_dumps_and_dumpability() -> None:
    out = run(CHECK + "procsafety.harden_process()")
    assert "CORE (0, 0)" in out
    if sys.platform.startswith("linux"):
        assert "DUMPABLE False" in out


def test_the_console_script_hardens_itself_before_anything_else() -> None:
    """``pgcli-jit --version`` goes through cli.main, as every run does."""
    out = run(CHECK + "import sys; sys.argv = ['pgcli-jit', '--version'];"
                      " from pgcli_jit.shell.cli import main; main()")
    assert "pgcli-jit" in out and "CORE (0, 0)" in out


def test_without_it_the_process_is_dumpable() -> None:
    """The control: the checks above are not vacuous."""
    if not sys.platform.startswith("linux"):
        pytest.skip("prctl is Linux only")
    assert "DUMPABLE True" in run(CHECK)


def test_children_of_a_hardened_process_are_dumpable_again() -> None:
    """exec resets dumpability: brokers and pgcli's pager run as usual."""
    if not sys.platform.startswith("linux"):
        pytest.skip("prctl is Linux only")
    code = ("from pgcli_jit.shell import procsafety; procsafety.harden_process(); import subprocess, sys;"
            " print(subprocess.run([sys.executable, '-c', 'from pgcli_jit.shell import procsafety;"
            " print(procsafety.is_dumpable())'], capture_output=True, text=True).stdout)")
    assert run(code).strip() == "True"
