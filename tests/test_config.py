"""Loading and validating the config file: every error names the file, the key and the fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgcli_jit.backends import available
from pgcli_jit.core.errors import ConfigError
from pgcli_jit.core.profile import DEFAULT_TTL
from pgcli_jit.session.config import config_path, default_audit_path, load_config

PG = '[profiles.{name}]\nbackend = "postgres"\nuser = "alice"\n'


def pg(name: str = "demo", **keys: str) -> str:
    """A minimal postgres profile; ``keys`` are raw TOML values."""
    return PG.format(name=name) + "".join(f"{k} = {v}\n" for k, v in keys.items())


def write_xdg(home: Path, text: str) -> Path:
    path = home / "config" / "pgcli-jit" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_error(home: Path, text: str) -> tuple[ConfigError, Path]:
    path = write_xdg(home, text)
    with pytest.raises(ConfigError) as info:
        load_config()
    return info.value, path


# -- where the file comes from --------------------------------------------------


def test_loads_from_xdg_config_home(home: Path) -> None:
    path = write_xdg(home, pg("demo", ttl='"10m"'))
    config = load_config()
    assert config.path == path and config.exists
    assert list(config.profiles) == ["demo"]
    assert config.profiles["demo"].ttl == 600
    assert config.profiles["demo"].source == path


def test_pgcli_jit_config_wins_over_xdg(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_xdg(home, pg("from_xdg"))
    other = tmp_path / "elsewhere.toml"
    other.write_text(pg("from_env"))
    monkeypatch.setenv("PGCLI_JIT_CONFIG", str(other))
    config = load_config()
    assert config.path == other
    assert list(config.profiles) == ["from_env"]


def test_missing_file_is_an_empty_config(home: Path) -> None:
    config = load_config()
    assert config.exists is False
    assert dict(config.profiles) == {}
    assert config.default_profile is None
    assert config.path == home / "config" / "pgcli-jit" / "config.toml"


def test_pgcli_jit_config_pointing_nowhere_is_an_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = home / "nope.toml"
    monkeypatch.setenv("PGCLI_JIT_CONFIG", str(missing))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(missing) in str(info.value)
    assert "not found" in str(info.value) and "PGCLI_JIT_CONFIG" in str(info.value)


def test_paths_fall_back_to_home_without_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    env: dict[str, str] = {}
    assert config_path(env) == tmp_path / ".config" / "pgcli-jit" / "config.toml"
    assert default_audit_path(env) == tmp_path / ".local" / "state" / "pgcli-jit" / "audit.jsonl"


def test_audit_log_defaults_under_xdg_state_home(home: Path) -> None:
    write_xdg(home, pg())
    assert load_config().audit_log == home / "state" / "pgcli-jit" / "audit.jsonl"
    assert load_config().audit_log == default_audit_path()


def test_audit_log_key_is_used_and_expands_tilde(home: Path) -> None:
    write_xdg(home, 'audit_log = "~/logs/jit.jsonl"\n' + pg())
    assert load_config().audit_log == home / "logs" / "jit.jsonl"


def test_empty_config_also_has_the_default_audit_path(home: Path) -> None:
    assert load_config().audit_log == home / "state" / "pgcli-jit" / "audit.jsonl"


# -- profiles and their keys ----------------------------------------------------------


def test_common_keys_are_parsed(home: Path) -> None:
    write_xdg(home, pg("demo", ttl='"15m"', max_ttl='"1h"', renew='"auto"', renew_before='"2m"',
                       revoke_on_exit="false", host='"db.internal"', port="6432", dbname='"app"',
                       sslmode='"require"', description='"read only"'))
    p = load_config().profiles["demo"]
    assert (p.ttl, p.max_ttl, p.renew, p.renew_before, p.revoke_on_exit) == (900, 3600, "auto", 120, False)
    assert p.connection_overrides() == {"host": "db.internal", "port": "6432", "dbname": "app",
                                        "sslmode": "require"}
    assert p.description == "read only"
    assert p.options["user"] == "alice"


def test_profile_defaults(home: Path) -> None:
    write_xdg(home, pg())
    p = load_config().profiles["demo"]
    assert (p.ttl, p.max_ttl, p.renew, p.renew_before, p.revoke_on_exit) == (DEFAULT_TTL, None, "prompt",
                                                                              None, True)
    assert p.connection_overrides() == {}


def test_max_ttl_alone_caps_the_default_ttl(home: Path) -> None:
    write_xdg(home, pg("demo", max_ttl='"5m"'))
    assert load_config().profiles["demo"].ttl == 300


def test_profile_options_are_read_only(home: Path) -> None:
    write_xdg(home, pg())
    p = load_config().profiles["demo"]
    with pytest.raises(TypeError):
        p.options["user"] = "x"  # type: ignore[index]


# -- errors: one line with file, key and what is wrong ----------------------------------


def test_bad_toml_names_the_file(home: Path) -> None:
    err, path = load_error(home, "[profiles.demo\nbackend = ")
    assert str(path) in str(err)
    assert "not valid TOML" in str(err)


def test_unknown_top_level_key(home: Path) -> None:
    err, path = load_error(home, 'defualt_profile = "demo"\n' + pg())
    assert err.path == path and err.key == "defualt_profile"
    assert str(err).startswith(f"{path}: defualt_profile: unknown key")
    assert "default_profile" in str(err)  # the hint lists the allowed keys


def test_profiles_must_be_tables(home: Path) -> None:
    err, _ = load_error(home, 'profiles = "demo"\n')
    assert err.key == "profiles"
    err, _ = load_error(home, "[profiles]\ndemo = 5\n")
    assert err.key == "profiles.demo" and "table" in str(err)


def test_unknown_profile_key(home: Path) -> None:
    err, path = load_error(home, pg("demo", tll='"15m"'))
    assert err.key == "profiles.demo.tll"
    assert str(path) in str(err) and "unknown key for the postgres backend" in str(err)
    assert "ttl" in err.hint and "server_profile" in err.hint


def test_missing_backend(home: Path) -> None:
    err, _ = load_error(home, '[profiles.demo]\nttl = "15m"\n')
    assert err.key == "profiles.demo.backend" and "missing" in str(err)


def test_unknown_backend_lists_the_installed_ones(home: Path) -> None:
    err, path = load_error(home, '[profiles.demo]\nbackend = "vualt"\n')
    assert err.key == "profiles.demo.backend"
    assert str(path) in str(err) and "unknown backend 'vualt'" in str(err)
    installed = available()
    assert "postgres" in installed and "vault" in installed
    for name in installed:
        assert name in err.hint


@pytest.mark.parametrize("key", ["ttl", "max_ttl", "renew_before"])
@pytest.mark.parametrize("value", ['"15 minutes"', '"0s"', "-5", "true"])
def test_bad_duration(home: Path, key: str, value: str) -> None:
    err, path = load_error(home, pg("demo", **{key: value}))
    assert err.key == f"profiles.demo.{key}"
    assert str(err).startswith(f"{path}: profiles.demo.{key}: ")
    assert "duration" in str(err)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_ttl_is_refused(home: Path, value: str) -> None:
    err, _ = load_error(home, pg("demo", ttl=value))
    assert err.key == "profiles.demo.ttl"


def test_renew_must_be_prompt_auto_or_never(home: Path) -> None:
    err, path = load_error(home, pg("demo", renew='"sometimes"'))
    assert err.key == "profiles.demo.renew"
    assert str(path) in str(err) and "'sometimes'" in str(err)
    for mode in ("prompt", "auto", "never"):
        assert mode in err.hint


def test_renew_list_value_is_a_config_error(home: Path) -> None:
    err, _ = load_error(home, pg("demo", renew='["auto"]'))
    assert err.key == "profiles.demo.renew"


def test_max_ttl_shorter_than_ttl(home: Path) -> None:
    err, path = load_error(home, pg("demo", ttl='"1h"', max_ttl='"15m"'))
    assert err.key == "profiles.demo.max_ttl"
    assert str(path) in str(err) and "shorter than ttl" in str(err)


def test_max_ttl_equal_to_ttl_is_fine(home: Path) -> None:
    write_xdg(home, pg("demo", ttl='"15m"', max_ttl='"15m"'))
    assert load_config().profiles["demo"].max_ttl == 900


def test_default_profile_naming_nothing(home: Path) -> None:
    err, path = load_error(home, 'default_profile = "prod"\n' + pg("demo"))
    assert err.key == "default_profile"
    assert str(path) in str(err) and "'prod'" in str(err)
    assert "demo" in err.hint


def test_default_profile_of_the_wrong_type(home: Path) -> None:
    err, _ = load_error(home, 'default_profile = ["demo"]\n' + pg("demo"))
    assert err.key == "default_profile"


@pytest.mark.parametrize("value", ['"5432"', "0", "70000", "5432.0"])
def test_port_not_a_number(home: Path, value: str) -> None:
    err, path = load_error(home, pg("demo", port=value))
    assert err.key == "profiles.demo.port"
    assert str(path) in str(err) and "port number" in str(err)


def test_port_bool_is_not_a_number(home: Path) -> None:
    err, _ = load_error(home, pg("demo", port="true"))
    assert err.key == "profiles.demo.port"


def test_revoke_on_exit_must_be_bool(home: Path) -> None:
    err, _ = load_error(home, pg("demo", revoke_on_exit='"no"'))
    assert err.key == "profiles.demo.revoke_on_exit" and "true or false" in str(err)


@pytest.mark.parametrize("key", ["host", "dbname", "sslmode", "description"])
def test_string_keys_must_be_strings(home: Path, key: str) -> None:
    err, _ = load_error(home, pg("demo", **{key: "5"}))
    assert err.key == f"profiles.demo.{key}" and "string" in str(err)


def test_postgres_client_broker_keys_say_what_replaced_them(home: Path) -> None:
    text = '[profiles.demo]\nbackend = "postgres"\nadmin_dsn = "host=db user=b password=hunter2"\n'
    err, path = load_error(home, text)
    assert err.key == "profiles.demo.admin_dsn"
    assert str(path) in str(err) and "grants and TTLs are declared in the database now" in str(err)
    assert "pgcli-jit-admin profile add" in err.hint


def test_postgres_profile_needs_nothing_but_the_backend(home: Path) -> None:
    write_xdg(home, '[profiles.demo]\nbackend = "postgres"\n')
    assert load_config().profiles["demo"].options == {}


def test_postgres_user_must_be_a_string(home: Path) -> None:
    err, _ = load_error(home, pg("demo").replace('user = "alice"', "user = 3"))
    assert err.key == "profiles.demo.user"


def test_a_name_the_file_does_not_define_is_asked_of_the_server(home: Path) -> None:
    write_xdg(home, pg())
    asked = load_config().requestable("ops-read")
    assert (asked.backend, asked.options["server_profile"]) == ("postgres", "ops-read")
    assert load_config().requestable("demo").options["user"] == "alice"


def test_non_utf8_file_is_a_config_error(home: Path) -> None:
    path = write_xdg(home, "")
    path.write_bytes(b'[profiles.demo]\nbackend = "postgres"\ndescription = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(path) in str(info.value)


def test_config_path_that_is_a_directory_is_a_config_error(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGCLI_JIT_CONFIG", str(home))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config()


# -- choosing a profile ---------------------------------------------------------------


def test_profile_by_name_and_default(home: Path) -> None:
    write_xdg(home, 'default_profile = "b"\n' + pg("a") + pg("b"))
    config = load_config()
    assert config.profile("a").name == "a"
    assert config.profile(None).name == "b"
    assert config.profile("").name == "b"


def test_single_profile_is_chosen_without_a_name(home: Path) -> None:
    write_xdg(home, pg("only"))
    assert load_config().profile(None).name == "only"


def test_no_name_no_default_several_profiles(home: Path) -> None:
    path = write_xdg(home, pg("a") + pg("b"))
    with pytest.raises(ConfigError) as info:
        load_config().profile(None)
    assert str(path) in str(info.value)
    assert "no default_profile" in str(info.value) and "a, b" in info.value.hint


def test_unknown_profile_name_lists_the_known_ones(home: Path) -> None:
    write_xdg(home, pg("a") + pg("b"))
    with pytest.raises(ConfigError) as info:
        load_config().profile("prod")
    assert "no profile 'prod'" in str(info.value) and "a, b" in info.value.hint


def test_empty_config_has_no_profile_to_give(home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config().profile(None)
    assert "[profiles.NAME]" in info.value.hint


# -- the server a name the file does not define is asked of (--jit, no connection options) --


def test_shared_server_is_where_every_postgres_profile_asks(home: Path) -> None:
    write_xdg(home, pg("read", host='"db"', port="6432", dbname='"app"')
              + pg("write", host='"db"', port="6432", dbname='"app"'))
    assert load_config().shared_server() == {"host": "db", "port": "6432", "dbname": "app", "user": "alice"}


def test_shared_server_leaves_the_user_to_libpq_when_profiles_ask_as_different_users(home: Path) -> None:
    write_xdg(home, pg("read", host='"db"') + '[profiles.write]\nbackend = "postgres"\nhost = "db"\n'
              'user = "bob"\n')
    assert load_config().shared_server() == {"host": "db"}


@pytest.mark.parametrize("text", [
    pg("read", host='"db1"') + pg("write", host='"db2"'),  # two servers: none is chosen
    pg("read"),  # nothing named: libpq's defaults are all there is
    "",  # no profiles
])
def test_no_shared_server(home: Path, text: str) -> None:
    write_xdg(home, text)
    assert load_config().shared_server() is None
