"""The console script's own options: help text and options that would be dropped silently."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pgcli_jit.shell import cli


def test_version_help_names_both_programs() -> None:
    result = CliRunner().invoke(cli.build_command(), ["--help"])
    assert result.exit_code == 0
    assert "Version of pgcli." not in result.output
    assert "versions of pgcli-jit and pgcli" in result.output


def test_pgcli_own_command_keeps_its_help() -> None:
    from pgcli import main as pgmain

    cli.build_command()
    [version] = [p for p in pgmain.cli.params if p.name == "version"]
    assert isinstance(version, click.Option) and version.help == "Version of pgcli."


@pytest.mark.parametrize(("ttl", "reason", "said"), [
    (None, "INC-1", "--jit-reason ignored: it applies only with --jit PROFILE"),
    ("5m", "", "--jit-ttl ignored: it applies only with --jit PROFILE"),
    ("5m", "INC-1", "--jit-ttl and --jit-reason ignored: they apply only with --jit PROFILE"),
])
def test_jit_options_without_jit_are_said(capsys: pytest.CaptureFixture[str], ttl: str | None,
                                          reason: str, said: str) -> None:
    cli._warn_unused_jit_options(None, ttl, reason)
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1


def test_jit_options_with_jit_are_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    cli._warn_unused_jit_options("demo", "5m", "INC-1")
    cli._warn_unused_jit_options(None, None, "")
    assert capsys.readouterr().err == ""


def test_a_profile_found_nowhere_says_so_before_the_unreachable_default(tmp_path: Path) -> None:
    """``--jit nope`` with no server named and libpq's default unreachable: "no profile nope"
    first (a typo is likelier than a missing server), then why the server was not asked."""
    from pgcli_jit.core.errors import BackendUnavailable
    from pgcli_jit.session.config import parse_config
    from pgcli_jit.shell import startup

    config = parse_config({"profiles": {"read": {"backend": "postgres", "host": "db1"},
                                        "write": {"backend": "postgres", "host": "db2"}}},
                          tmp_path / "c.toml", {})
    exc = BackendUnavailable("cannot reach the server as x@local socket:5432/x: refused",
                             backend="postgres", profile="nope")
    line = startup.failure_line(exc, "nope", config, asked_defaults=True)
    assert line.startswith(f"no profile nope in {tmp_path / 'c.toml'} (it has read, write)")
    assert "cannot reach the server as x@local socket" in line and "-h HOST" in line
    assert startup.failure_line(exc, "nope", config, asked_defaults=False) == str(exc)
