"""Parsing raw ``\\jit`` lines and completing them."""

from __future__ import annotations

import pytest

from pgcli_jit.commands import SUBCOMMANDS, USAGE, JitCommand, completions, is_jit, parse, usage
from pgcli_jit.errors import UsageError

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
    assert completions("\\jit request ", PROFILES) == [*PROFILES, "--ttl", "--reason"]
    assert completions("\\jit request pr", PROFILES) == ["prod-read", "prod-write"]
    assert completions("\\jit request --", PROFILES) == ["--ttl", "--reason"]
    assert completions("\\jit request demo --r", PROFILES) == ["--reason"]


def test_complete_renew_options() -> None:
    assert completions("\\jit renew ", PROFILES) == ["--ttl"]
    assert completions("\\jit renew --", PROFILES) == ["--ttl"]


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
    assert completions("\\jit request demo ", PROFILES) == ["--ttl", "--reason"]


# -- issue 9, item 16 -----------------------------------------------------------------------


def test_help_for_one_subcommand() -> None:
    assert parse("\\jit help request") == JitCommand("help", "request")
    assert parse("\\JIT HELP Renew") == JitCommand("help", "Renew")
    text = usage("request")
    assert text.splitlines()[0].startswith("\\jit request [PROFILE] [--ttl DUR] [--reason TEXT]")
    assert "max_ttl" in text and "\\jit renew" not in text
    assert "--ttl" in usage("renew") and all(len(line) <= 80 for line in usage("renew").splitlines()[1:])


def test_help_for_an_unknown_subcommand_is_one_line() -> None:
    with pytest.raises(UsageError, match="unknown subcommand 'me'"):
        parse("\\jit help me")


def test_usage_descriptions_are_aligned() -> None:
    lines = [line for line in USAGE.splitlines() if line.startswith("\\jit")]
    starts = {len(line) - len(line.split("   ")[-1].lstrip()) for line in lines}
    assert len(lines) == len(SUBCOMMANDS) and len(starts) == 1, USAGE


def test_given_options_are_not_offered_again() -> None:
    assert completions("\\jit request demo --ttl 5m ", PROFILES) == ["--reason"]
    assert completions("\\jit request --reason x --", PROFILES) == ["--ttl"]
    assert completions("\\jit request demo --ttl=5m --reason x ", PROFILES) == []
    assert completions("\\jit renew --ttl 5m ", PROFILES) == []


def test_help_completes_subcommands() -> None:
    assert completions("\\jit help re", PROFILES) == ["request", "renew", "revoke"]
    assert completions("\\jit help renew ", PROFILES) == []
