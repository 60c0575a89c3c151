"""Parsing raw ``\\jit`` lines and completing them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pgcli_jit.core.errors import UsageError
from pgcli_jit.session.commands import (
    BY_NAME,
    DEFAULT,
    MENU_DESCRIPTION,
    MENU_SYNTAX,
    SUBCOMMANDS,
    TABLE,
    USAGE,
    Argument,
    JitCommand,
    Result,
    Subcommand,
    completions,
    is_jit,
    parse,
    usage,
)

PROFILES = ["demo", "prod-read", "prod-write"]


@pytest.mark.parametrize("action", ["status", "renew", "revoke", "profiles", "help", "request"])
def test_every_subcommand_parses(action: str) -> None:
    assert parse(f"\\jit {action}") == JitCommand(action)


@pytest.mark.parametrize("line", ["\\jit", "\\jit ", "  \\jit  ", "\\jit;", "\\JIT", "\\jit help"])
def test_bare_jit_is_help(line: str) -> None:
    assert parse(line) == JitCommand("help")


@pytest.mark.parametrize("line", ["\\JIT STATUS", "\\Jit Status", "\\jit status;", "\\jit status ;",
                                  "  \\jit   status  ;  "])
def test_case_insensitive_and_trailing_semicolon(line: str) -> None:
    assert parse(line) == JitCommand("status")


def test_request_with_profile_ttl_and_quoted_reason() -> None:
    cmd = parse('\\jit request prod-read --ttl 15m --reason "INC-123 hotfix"')
    assert cmd == JitCommand("request", "prod-read", 900.0, "INC-123 hotfix")


def test_options_before_the_profile_and_equals_form() -> None:
    cmd = parse("\\jit request --ttl=1h30m --reason='INC-9  two  spaces' demo")
    assert cmd == JitCommand("request", "demo", 5400.0, "INC-9  two  spaces")


def test_option_names_are_case_insensitive_profile_case_is_kept() -> None:
    assert parse("\\JIT REQUEST Prod --TTL 90").profile == "Prod"
    assert parse("\\JIT REQUEST Prod --TTL 90").ttl == 90.0


def test_renew_ttl() -> None:
    assert parse("\\jit renew --ttl 15m") == JitCommand("renew", ttl=900.0)
    assert parse("\\jit renew --ttl=90s;") == JitCommand("renew", ttl=90.0)


def test_trailing_semicolon_after_quoted_reason() -> None:
    assert parse('\\jit request --reason "fix it";').reason == "fix it"
    assert parse('\\jit request --reason "a;b"').reason == "a;b"


def test_unknown_subcommand() -> None:
    with pytest.raises(UsageError) as info:
        parse("\\jit reqeust demo")
    assert "unknown subcommand 'reqeust'" in str(info.value)
    for sub in SUBCOMMANDS:
        assert sub in info.value.hint


@pytest.mark.parametrize(
    ("line", "words"),
    [("\\jit request --ttl 5m --user bob", "unknown option --user"),
     ("\\jit renew --reason x", "unknown option --reason"),
     ("\\jit status --ttl 5m", "unknown option --ttl"),
     ("\\jit request demo -- comment", "unknown option --")],
)
def test_unknown_option(line: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse(line)


def test_unknown_option_lists_the_allowed_ones() -> None:
    with pytest.raises(UsageError) as info:
        parse("\\jit request --password hunter2")
    assert "--ttl" in info.value.hint and "--reason" in info.value.hint
    with pytest.raises(UsageError) as info:
        parse("\\jit revoke --now")
    assert "none" in info.value.hint


@pytest.mark.parametrize(
    "line", ["\\jit status now", "\\jit revoke demo", "\\jit request a b", "\\jit renew 15m",
             "\\jit help renew now", "\\jit profiles all"],
)
def test_extra_arguments(line: str) -> None:
    with pytest.raises(UsageError, match="unexpected argument"):
        parse(line)


@pytest.mark.parametrize("line", ["\\jit request --ttl", "\\jit renew --ttl", "\\jit request --reason"])
def test_option_without_value(line: str) -> None:
    with pytest.raises(UsageError, match="needs a value"):
        parse(line)


@pytest.mark.parametrize("line", ["\\jit request --ttl soon", "\\jit renew --ttl 0", "\\jit renew --ttl="])
def test_bad_ttl(line: str) -> None:
    with pytest.raises(UsageError, match="--ttl"):
        parse(line)


def test_unclosed_quote() -> None:
    with pytest.raises(UsageError) as info:
        parse('\\jit request --reason "INC-123 hotfix')
    assert "quot" in str(info.value).lower()


def test_option_value_is_not_another_option() -> None:
    with pytest.raises(UsageError):
        parse("\\jit request --reason --ttl 15m")


def test_is_jit() -> None:
    assert is_jit("\\jit") and is_jit("  \\JIT status") and is_jit("\\jit;")
    assert not is_jit("\\jitter") and not is_jit("select '\\jit'") and not is_jit("\\j")


def test_usage_mentions_every_subcommand() -> None:
    for sub in ("request", "status", "renew", "revoke", "profiles"):
        assert f"\\jit {sub}" in USAGE


# -- completions ----------------------------------------------------------------------------


def test_complete_subcommands() -> None:
    assert completions("\\jit ", PROFILES) == list(SUBCOMMANDS)
    assert completions("\\jit re", PROFILES) == ["request", "renew", "revoke"]
    assert completions("\\JIT RE", PROFILES) == ["request", "renew", "revoke"]
    assert completions("\\jit st", PROFILES) == ["status"]


def test_complete_profiles_and_options_after_request() -> None:
    assert completions("\\jit request ", PROFILES) == [*PROFILES, "--ttl", "--reason", "--break-glass"]
    assert completions("\\jit request pr", PROFILES) == ["prod-read", "prod-write"]
    assert completions("\\jit request --", PROFILES) == ["--ttl", "--reason", "--break-glass"]
    assert completions("\\jit request demo --r", PROFILES) == ["--reason"]


def test_complete_renew_options() -> None:
    assert completions("\\jit renew ", PROFILES) == ["--ttl", "--rotate"]
    assert completions("\\jit renew --", PROFILES) == ["--ttl", "--rotate"]
    assert completions("\\jit renew --rotate ", PROFILES) == ["--ttl"]  # a flag takes no value


def test_rotate_is_a_flag() -> None:
    assert parse("\\jit renew --rotate").rotate and not parse("\\jit renew").rotate
    assert parse("\\jit renew --rotate --ttl 5m").ttl == 300
    with pytest.raises(UsageError, match="--rotate takes no value"):
        parse("\\jit renew --rotate=yes")


def test_break_glass_is_a_flag_of_request() -> None:
    cmd = parse('\\jit request demo --break-glass --reason "INC-7 down"')
    assert cmd.break_glass and cmd.reason == "INC-7 down" and cmd.profile == "demo"
    assert not parse("\\jit request demo").break_glass
    with pytest.raises(UsageError, match="--break-glass takes no value"):
        parse("\\jit request demo --break-glass=yes")


def test_nothing_to_complete_for_option_values_or_plain_commands() -> None:
    assert completions("\\jit request --ttl ", PROFILES) == []
    assert completions("\\jit request --reason ", PROFILES) == []
    assert completions("\\jit status ", PROFILES) == []
    assert completions("\\jit revoke ", PROFILES) == []
    assert completions("select ", PROFILES) == []
    assert completions("\\d", PROFILES) == []


def test_complete_right_after_jit_does_not_crash() -> None:
    assert completions("\\jit", PROFILES) in ([], list(SUBCOMMANDS))


def test_no_second_profile_offered() -> None:
    assert completions("\\jit request demo ", PROFILES) == ["--ttl", "--reason", "--break-glass"]


# -- \jit help SUBCOMMAND ------------------------------------------------------------------


def test_help_for_one_subcommand() -> None:
    assert parse("\\jit help request") == JitCommand("help", "request")
    assert parse("\\JIT HELP Renew") == JitCommand("help", "Renew")
    text = usage("request")
    assert text.splitlines()[0].startswith("\\jit request [PROFILE] [--ttl DUR] [--reason TEXT]")
    assert "max ttl caps it, the server's for a server profile" in " ".join(text.split())
    assert "\\jit renew" not in text
    assert "--ttl" in usage("renew") and all(len(line) <= 80 for line in usage("renew").splitlines()[1:])


def test_help_for_an_unknown_subcommand_is_one_line() -> None:
    with pytest.raises(UsageError, match="unknown subcommand 'me'"):
        parse("\\jit help me")


def test_usage_descriptions_are_aligned() -> None:
    lines = [line for line in USAGE.splitlines() if line.startswith("\\jit")]
    starts = {len(line) - len(line.split("   ")[-1].lstrip()) for line in lines}
    assert len(lines) == len(SUBCOMMANDS) and len(starts) == 1, USAGE


def test_given_options_are_not_offered_again() -> None:
    assert completions("\\jit request demo --ttl 5m ", PROFILES) == ["--reason", "--break-glass"]
    assert completions("\\jit request --reason x --", PROFILES) == ["--ttl", "--break-glass"]
    assert completions("\\jit request demo --ttl=5m --reason x ", PROFILES) == ["--break-glass"]
    assert completions("\\jit request demo --ttl=5m --reason x --break-glass ", PROFILES) == []
    assert completions("\\jit renew --ttl 5m ", PROFILES) == ["--rotate"]


def test_help_completes_subcommands() -> None:
    assert completions("\\jit help re", PROFILES) == ["request", "renew", "revoke"]
    assert completions("\\jit help renew ", PROFILES) == []


# -- the table: each subcommand is one row, and help, completion, \? and dispatch read it --------


def _shortest_line(row: Subcommand) -> str:
    """The shortest line that parses as ``row``: its required argument and options filled in."""
    words = [row.name, *(["7"] if row.argument is Argument.REQUEST_ID else [])]
    words += [f"{option.name} x" for option in row.options if option.required]
    return "\\jit " + " ".join(words)


def test_the_table_is_the_list_of_subcommands() -> None:
    names = [row.name for row in TABLE]
    assert tuple(names) == SUBCOMMANDS and len(set(names)) == len(names)
    assert all(name == name.lower() and name.isalpha() for name in names)
    assert DEFAULT in names


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row.name)
def test_every_row_is_in_help(row: Subcommand) -> None:
    assert USAGE.splitlines()[TABLE.index(row)].startswith(row.synopsis)
    assert row.synopsis.startswith(f"\\jit {row.name}")
    one = usage(row.name)
    assert one.splitlines()[0].startswith(row.synopsis) and row.summary in one.splitlines()[0]
    assert " ".join(one.splitlines()[1:]) == " ".join(row.details.split())


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row.name)
def test_every_row_is_in_completions(row: Subcommand) -> None:
    assert row.name in completions("\\jit ", PROFILES)
    assert row.name in completions(f"\\jit {row.name[:2]}", PROFILES)
    assert row.name in completions("\\jit help ", PROFILES)
    offered = completions(f"\\jit {row.name} ", PROFILES)
    if row.argument is Argument.SUBCOMMAND:
        assert offered == list(SUBCOMMANDS)
    else:
        assert offered == [*(PROFILES if row.argument is Argument.PROFILE else []),
                           *(option.name for option in row.options)]


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row.name)
def test_every_row_is_dispatched_to_its_handler(row: Subcommand, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the shell's own dispatch, with the row's handler swapped for one that records."""
    from pgcli_jit.shell.jitshell import JitShell

    ran: list[tuple[object, JitCommand]] = []

    def handler(jit: Any, cmd: JitCommand) -> Result:
        ran.append((jit, cmd))
        return (None, None, None, f"ran {cmd.action}")

    monkeypatch.setitem(BY_NAME, row.name, dataclasses.replace(row, handler=handler))
    shell = JitShell.__new__(JitShell)  # no pgcli start-up: only the dispatch is exercised
    controller = object()
    shell._jit, shell._jit_config_error = controller, None
    line = _shortest_line(row)
    assert list(shell.jit_results(line)) == [(None, None, None, f"ran {row.name}")]
    assert ran == [(controller, parse(line))]


def test_a_broken_config_stops_only_the_rows_that_need_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pgcli_jit.core.errors import JitError
    from pgcli_jit.shell.jitshell import JitShell

    for row in TABLE:
        monkeypatch.setitem(BY_NAME, row.name, dataclasses.replace(
            row, handler=lambda jit, cmd: (None, None, None, "ran")))
    shell = JitShell.__new__(JitShell)
    shell._jit, shell._jit_config_error = object(), "the config is bad"
    for row in TABLE:
        if row.needs_config:
            with pytest.raises(JitError, match="the config is bad"):
                list(shell.jit_results(_shortest_line(row)))
        else:
            assert list(shell.jit_results(_shortest_line(row))) == [(None, None, None, "ran")]


def test_the_menu_row_is_no_wider_than_pgclis_own() -> None:
    """``\\?`` lists ``\\jit`` among pgcli's commands; a syntax column wider than theirs pushed
    every description off an 80-column screen.  The subcommands are in ``\\jit help``."""
    from pgspecial.main import PGSpecial

    widest = max(len(command.syntax) for command in PGSpecial().commands.values())
    assert len(MENU_SYNTAX) <= widest
    assert "\\jit help" in MENU_DESCRIPTION


@pytest.mark.parametrize("line", ["\\jit request --ttl 1h 30m", "\\jit request write --ttl 1h 30m",
                                  "\\jit renew --ttl 1h 30s"])
def test_a_duration_with_a_space_is_refused_before_anything_is_asked(line: str) -> None:
    """``--ttl 1h 30m`` asked the server for a profile named ``30m`` (and audited the refusal)."""
    with pytest.raises(UsageError, match="a duration has no spaces") as refused:
        parse(line)
    assert "--ttl 1h30" in str(refused.value.hint)


def test_a_profile_named_like_a_word_after_the_ttl_still_parses() -> None:
    assert parse("\\jit request --ttl 1h write").profile == "write"
