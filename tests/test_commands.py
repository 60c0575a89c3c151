"""Parsing raw ``\\jit`` lines and completing them."""

from __future__ import annotations

import pytest

from pgcli_jit.commands import SUBCOMMANDS, USAGE, JitCommand, completions, is_jit, parse
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
             "\\jit help me", "\\jit profiles all"],
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
