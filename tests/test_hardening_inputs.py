"""Bad input: bounded durations and times, typed config values, safe names and
reasons, and config files only their owner can change.  Each test fails if its bound is lifted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pgcli_jit.backends import credential_json
from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.core.durations import parse_duration
from pgcli_jit.core.errors import ConfigError, DurationError, JitError, UsageError
from pgcli_jit.core.limits import MAX_DURATION, MAX_REASON
from pgcli_jit.session.config import load_config, parse_config, parse_profile

pytestmark = pytest.mark.security

NOW = 1_800_000_000.0
CMD = {"backend": "command", "command": ["broker"]}


def config(data: dict[str, Any]) -> Any:
    return parse_config(data, Path("/etc/x/config.toml"), {"HOME": "/home/a"})


# -- 1. durations and times are bounded ---------------------------------------------------

@pytest.mark.parametrize("text", ["99999999999h", "367d", 10**12, 1e300, 10**400, "9" * 400,
                                  "1" * 65 + "s", "100000000000000000000000000000d"])
def test_absurd_durations_are_refused_with_the_limit(text: object) -> None:
    with pytest.raises(DurationError, match=r"too long|not a duration|not one"):
        parse_duration(text)


def test_the_limit_itself_is_accepted() -> None:
    assert parse_duration("366d") == MAX_DURATION
    assert parse_duration(MAX_DURATION) == MAX_DURATION


@pytest.mark.parametrize("value", [[], ["15m"], {"a": 1}, None, object()])
def test_a_non_string_non_number_is_a_duration_error_not_attribute_error(value: object) -> None:
    with pytest.raises(DurationError, match="is not a duration"):
        parse_duration(value)


def test_duration_error_is_still_a_value_error_for_old_callers() -> None:
    with pytest.raises(ValueError):
        parse_duration("soon")


@pytest.mark.parametrize("answer", [
    {"ttl": 1e12}, {"ttl": 10**30}, {"ttl": MAX_DURATION + 1},
    {"expires_at": "9999-12-31T23:59:59Z"}, {"expires_at": "33715-01-01T00:00:00Z"},
    {"ttl": 60, "max_ttl": 1e12}, {"ttl": 60, "max_expires_at": "9999-01-01T00:00:00Z"},
])
def test_credential_answers_out_of_range_are_one_line_errors(answer: dict[str, Any]) -> None:
    data = {"version": 1, "username": "u", "password": "p", **answer}
    with pytest.raises(credential_json.CredentialFormatError) as info:
        credential_json.parse_object(data, now=NOW)
    assert "\n" not in str(info.value)


def test_a_number_of_5000_digits_in_credential_text_is_a_format_error() -> None:
    text = '{"version": 1, "username": "u", "password": "p", "ttl": ' + "9" * 5000 + "}"
    with pytest.raises(credential_json.CredentialFormatError, match="not credential JSON"):
        credential_json.parse_text(text, now=NOW)


def test_deeply_nested_credential_text_is_a_format_error() -> None:
    with pytest.raises(credential_json.CredentialFormatError):
        credential_json.parse_text("[" * 100_000 + "]" * 100_000, now=NOW)


# -- 2. every config value of the wrong type gets the one-line error ---------------------------

@pytest.mark.parametrize(("key", "value"), [
    ("ttl", ["15m"]), ("ttl", {"m": 15}), ("max_ttl", []), ("renew_before", {"a": 1}),
    ("ttl", "99999999999h"), ("renew", ["auto"]), ("renew", {"x": 1}), ("revoke_on_exit", "no"),
    ("audit_required", "yes"), ("host", ["h"]), ("backend", 3), ("backend", ["command"]),
    ("description", "a\x1b[2Jb"), ("host", "db\x00evil"),
])
def test_wrong_types_in_a_profile_name_file_and_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        config({"profiles": {"p": {**CMD, key: value}}})
    text = str(info.value)
    assert text.startswith("/etc/x/config.toml: profiles.p") and "\n" not in text


@pytest.mark.parametrize("value", [True, 1, ["a"], {"a": 1}, "", "a\x00b"])
def test_audit_log_must_be_a_path(value: object) -> None:
    with pytest.raises(ConfigError, match=r"/etc/x/config\.toml: audit_log"):
        config({"audit_log": value})


def test_audit_required_is_a_common_key() -> None:
    cfg = config({"profiles": {"p": {**CMD, "audit_required": False}, "q": CMD}})
    assert cfg.profiles["p"].audit_required is False and cfg.profiles["q"].audit_required is True


# -- 3. control characters in names and reasons; reasons capped --------------------------------

@pytest.mark.parametrize("name", ["a\x00b", "a\nb", "\x1b[2J", "x\u202ey", "a\x7fb"])
def test_profile_names_with_control_characters_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="control character") as info:
        config({"profiles": {name: CMD}})
    assert name not in str(info.value)  # shown escaped, never raw


@pytest.mark.parametrize("reason", ["INC-1\x00drop", "line\nbreak", "\x1b]0;pwned\x07", "a\u2028b"])
def test_reasons_with_control_characters_are_refused(reason: str) -> None:
    with pytest.raises(UsageError, match="the reason contains a control character"):
        LeaseRequest(ttl=60, reason=reason, requester="alice")


def test_reasons_are_capped_at_1000_characters() -> None:
    LeaseRequest(ttl=60, reason="x" * MAX_REASON, requester="alice")
    with pytest.raises(UsageError, match="5,000,000 characters long; the limit is 1,000"):
        LeaseRequest(ttl=60, reason="x" * 5_000_000, requester="alice")


def test_tabs_and_unicode_text_are_fine_in_a_reason() -> None:
    assert LeaseRequest(ttl=60, reason="INC-7 ünïcödé — 修复", requester="alice").reason


@pytest.mark.parametrize("ttl", [1e12, float("inf"), -5])
def test_a_request_ttl_out_of_range_is_a_usage_error(ttl: float) -> None:
    with pytest.raises(UsageError, match="the TTL"):
        LeaseRequest(ttl=ttl, reason="", requester="alice")


def test_an_own_key_with_control_characters_is_refused() -> None:
    with pytest.raises(ConfigError, match="control character"):
        parse_profile("p", {**CMD, "ti\x00meout": "5s"}, Path("c.toml"))


# -- 5. a config file others can write is refused, as ssh does --------------------------------

def write_config(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[profiles.p]\nbackend = "command"\ncommand = ["broker"]\n')
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646, 0o620])
def test_a_config_file_group_or_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_config(tmp_path, mode)
    with pytest.raises(ConfigError) as info:
        load_config({"PGCLI_JIT_CONFIG": str(path)})
    text = str(info.value)
    assert "writable by group or others" in text and f"chmod go-w {path}" in text and "\n" not in text


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640, 0o400])
def test_a_config_file_only_its_owner_can_write_is_read(tmp_path: Path, mode: int) -> None:
    path = write_config(tmp_path, mode)
    assert "p" in load_config({"PGCLI_JIT_CONFIG": str(path)}).profiles


def test_a_config_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    path = write_config(tmp_path, 0o644)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by another user"):
        load_config({"PGCLI_JIT_CONFIG": str(path)})


# -- 5b. ... and so is one in a directory others can write: they could swap the file ------------

def config_in(directory: Path, mode: int = 0o755) -> Path:
    """A well-formed 0644 config in ``directory`` (made, then set to ``mode``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = write_config(directory, 0o644)
    directory.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o775, 0o777, 0o757, 0o730], ids=oct)
def test_a_config_in_a_directory_group_or_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    path = config_in(shared, mode)
    with pytest.raises(ConfigError) as info:
        load_config({"PGCLI_JIT_CONFIG": str(path)})
    text = str(info.value)
    assert text.startswith(f"{path}: is in {shared}, which group or others can write (mode {mode:04o})"), text
    assert text.endswith(f"run chmod go-w {shared})") and "\n" not in text


def test_a_loose_directory_further_up_is_refused_too(tmp_path: Path) -> None:
    path = config_in(tmp_path / "team" / "me" / "pgcli-jit")
    (tmp_path / "team").chmod(0o775)
    with pytest.raises(ConfigError, match=f"run chmod go-w {tmp_path / 'team'}\\)$"):
        load_config({"PGCLI_JIT_CONFIG": str(path)})


@pytest.mark.parametrize("mode", [0o1777, 0o1775], ids=oct)
def test_a_config_in_a_sticky_directory_others_can_write_is_read(tmp_path: Path, mode: int) -> None:
    """Like /tmp: others may add files there but not rename or remove ours."""
    path = config_in(tmp_path / "sticky", mode)
    assert "p" in load_config({"PGCLI_JIT_CONFIG": str(path)}).profiles


def test_a_symlinked_config_is_checked_as_named_and_as_resolved(tmp_path: Path) -> None:
    good = config_in(tmp_path / "good")
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "config.toml").symlink_to(good)  # the link's directory decides which file is read
    loose.chmod(0o777)
    with pytest.raises(ConfigError, match=f"is in {loose}, which group or others can write"):
        load_config({"PGCLI_JIT_CONFIG": str(loose / "config.toml")})
    target = config_in(tmp_path / "loose-target", 0o777)
    (tmp_path / "good" / "link.toml").symlink_to(target)  # the target's directory, what it holds
    with pytest.raises(ConfigError, match=f"is in {target.parent}, which group or others can write"):
        load_config({"PGCLI_JIT_CONFIG": str(tmp_path / "good" / "link.toml")})


def test_the_test_temp_tree_itself_passes(tmp_path: Path) -> None:
    """pytest's tmp_path (under the sticky /tmp) and directories made in it with the usual
    umask are fine, as a user's ~/.config is."""
    assert "p" in load_config({"PGCLI_JIT_CONFIG": str(config_in(tmp_path / "a" / "b"))}).profiles


@pytest.mark.parametrize("sticky", [False, True])
def test_a_config_in_a_directory_of_another_user_is_refused(tmp_path: Path, sticky: bool) -> None:
    """Even with the sticky bit: a directory's owner may rename anything in it."""
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    theirs = tmp_path / "theirs"
    path = config_in(theirs, 0o1777 if sticky else 0o755)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(ConfigError) as info:
        load_config({"PGCLI_JIT_CONFIG": str(path)})
    text = str(info.value)
    assert f"is in {theirs}, which is owned by another user (uid 65534)" in text and "\n" not in text


def test_a_huge_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_config({"PGCLI_JIT_CONFIG": str(path)})


def test_all_of_it_is_jit_error() -> None:
    assert issubclass(DurationError, JitError) and issubclass(ConfigError, JitError)
