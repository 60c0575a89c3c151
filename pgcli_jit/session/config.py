"""The one place that reads the configuration file and the environment.

Precedence for the file: ``$PGCLI_JIT_CONFIG``, else
``$XDG_CONFIG_HOME/pgcli-jit/config.toml`` (``~/.config/pgcli-jit/config.toml``).
The audit log: the ``audit_log`` key, else ``$XDG_STATE_HOME/pgcli-jit/audit.jsonl``
(``~/.local/state/pgcli-jit/audit.jsonl``).  Everything is read at call time,
never at import, and the file is never written.  No key ever holds a secret:
backends take secrets from env vars, token files or libpq's own password files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pgcli_jit.backends import SERVER_PROFILES, backend_class
from pgcli_jit.core.durations import parse_duration
from pgcli_jit.core.errors import ConfigError, UsageError
from pgcli_jit.core.limits import MAX_NAME
from pgcli_jit.core.permissions import fix_hint, ownership_problem, parent_problem
from pgcli_jit.core.profile import DEFAULT_TTL, RENEW_MODES, Profile
from pgcli_jit.core.sanitize import check_text

COMMON_KEYS = frozenset(
    {"backend", "ttl", "max_ttl", "renew", "renew_before", "revoke_on_exit",
     "host", "port", "dbname", "sslmode", "description", "audit_required"}
)
TOP_KEYS = frozenset({"default_profile", "audit_log", "profiles", "offer_on_denied"})
#: A config file is a few KiB; anything past this is not one.
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Config:
    path: Path
    profiles: Mapping[str, Profile]
    default_profile: str | None
    audit_log: Path
    exists: bool = True
    #: after "permission denied", offer the profile that grants it (session/denied_offer.py)
    offer_on_denied: bool = True

    @classmethod
    def empty(cls, env: Mapping[str, str] | None = None) -> Config:
        """No profiles: a session whose config is missing or unreadable still runs pgcli."""
        return cls(config_path(env), MappingProxyType({}), None, default_audit_path(env), exists=False)

    def profile(self, name: str | None) -> Profile:
        """The named profile, or the default; an unknown name says which ones exist."""
        chosen = name or self.default_profile
        if not chosen:
            if len(self.profiles) == 1:
                return next(iter(self.profiles.values()))
            raise ConfigError(
                "no profile named and no default_profile set", path=self.path,
                hint=f"use \\jit request PROFILE; profiles: {self._names()}",
            )
        try:
            return self.profiles[chosen]
        except KeyError:
            raise ConfigError(
                f"no profile {chosen!r}", path=self.path, hint=f"profiles: {self._names()}"
            ) from None

    def requestable(self, name: str | None) -> Profile:
        """The named profile; a name this file does not define is asked of the server the
        session is connected to (the postgres backend's server profile of that name), so a
        user needs no config file at all: ``pgcli-jit --jit read -h db -U alice``."""
        if name and name not in self.profiles:
            return server_side_profile(name, self.path)
        return self.profile(name)

    def _names(self) -> str:
        return ", ".join(sorted(self.profiles)) or "none (add [profiles.NAME] to the file)"

    def shared_server(self) -> dict[str, str] | None:
        """Where every profile of the server-profiles backend asks: ``host``, ``port``,
        ``dbname``, and ``user`` (the login that asks) when they all name the same one.

        ``pgcli-jit --jit NAME`` with a NAME this file does not define and no connection
        options asks this server for its profile NAME: the server the user's profiles point
        at, not libpq's defaults.  None when the profiles point at several servers, or name
        none (libpq's defaults are then all there is)."""
        ours = [p for p in self.profiles.values() if p.backend == SERVER_PROFILES]
        servers = {(p.host, p.port, p.dbname) for p in ours}
        if len(servers) != 1:
            return None
        ((host, port, dbname),) = servers
        where = {k: str(v) for k, v in (("host", host), ("port", port), ("dbname", dbname)) if v}
        users = {str(p.options.get("user") or "") for p in ours}
        if where and len(users) == 1 and "" not in users:
            where["user"] = users.pop()
        return where or None


def server_side_profile(name: str, source: Path | None = None) -> Profile:
    """A profile that exists only on the server: its broker's backend, nothing else set."""
    return Profile(name=name, backend=SERVER_PROFILES, options={"server_profile": name},
                   description="asked of the connected server", source=source)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("PGCLI_JIT_CONFIG"):
        return Path(env["PGCLI_JIT_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pgcli-jit" / "config.toml"


def default_audit_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pgcli-jit" / "audit.jsonl"


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the whole file; a missing file is an empty config."""
    import tomllib  # here, not at import: a session that never reads a config never loads it

    env = os.environ if env is None else env
    path = config_path(env)
    if not path.exists():
        if env.get("PGCLI_JIT_CONFIG"):
            raise ConfigError("file not found", path=path, hint="check $PGCLI_JIT_CONFIG")
        return Config.empty(env)
    try:
        data = tomllib.loads(_read_own_file(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=path, hint="save the file as UTF-8") from None
    return parse_config(data, path, env)


def _read_own_file(path: Path) -> str:
    """The file's text, if only its owner (the user or root) can change it, or swap it
    through a directory above it, as ssh insists.

    Checked on the open descriptor, so the file read is the file checked.
    """
    with open(path, "rb") as fh:
        problem = ownership_problem(os.fstat(fh.fileno()))
        if problem:
            raise ConfigError(problem, path=path, hint=fix_hint(path))
        above = parent_problem(path)
        if above:
            raise ConfigError(above[0], path=path, hint=above[1])
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"is larger than {MAX_CONFIG_BYTES // 1024} KiB", path=path)
    return raw.decode("utf-8")


def parse_config(data: Mapping[str, Any], path: Path, env: Mapping[str, str]) -> Config:
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ConfigError(
            "unknown key", path=path, key=_safe_name(unknown[0]),
            hint="top-level keys are default_profile, audit_log, offer_on_denied and [profiles.NAME] tables",
        )
    raw_profiles = data.get("profiles", {})
    if not isinstance(raw_profiles, Mapping):
        raise ConfigError("must be a table of [profiles.NAME]", path=path, key="profiles")
    profiles = {name: parse_profile(name, body, path) for name, body in raw_profiles.items()}
    default = data.get("default_profile")
    if default is not None and not isinstance(default, str):
        raise ConfigError("must be a profile name (a string)", path=path, key="default_profile")
    if default is not None and default not in profiles:
        raise ConfigError(
            f"names no profile ({default!r})", path=path, key="default_profile",
            hint=f"profiles: {', '.join(sorted(profiles)) or 'none'}",
        )
    offer = data.get("offer_on_denied", True)
    if not isinstance(offer, bool):
        raise ConfigError("must be true or false", path=path, key="offer_on_denied")
    return Config(path, MappingProxyType(profiles), default, _audit_path(data, path, env),
                  offer_on_denied=offer)


def _audit_path(data: Mapping[str, Any], path: Path, env: Mapping[str, str]) -> Path:
    """``audit_log`` must be a path (``audit_log = true`` once wrote a file named ``True``)."""
    audit = data.get("audit_log")
    if audit is None:
        return default_audit_path(env)
    if not isinstance(audit, str) or not audit.strip():
        raise ConfigError("must be a file path (a non-empty string)", path=path, key="audit_log",
                          hint='e.g. audit_log = "~/.local/state/pgcli-jit/audit.jsonl"')
    _check_string(audit, path, "audit_log")
    return Path(os.path.expanduser(audit))


def _check_string(value: str, path: Path, key: str, limit: int = 4096) -> None:
    """No control characters (a NUL cuts C strings short) and no megabytes, in any string key."""
    try:
        check_text(value, "the value", limit=limit)
    except UsageError as exc:
        raise ConfigError(exc.message, path=path, key=key) from None


def parse_profile(name: str, body: Any, path: Path) -> Profile:
    """Validate one ``[profiles.NAME]`` table against the common keys and its backend's."""
    where = f"profiles.{_safe_name(name)}"
    _check_string(name, path, where, MAX_NAME)
    if not isinstance(body, Mapping):
        raise ConfigError("must be a table", path=path, key=where)
    if "backend" not in body:
        raise ConfigError(
            "missing", path=path, key=f"{where}.backend",
            hint='every profile names its backend, for example backend = "postgres"',
        )
    backend = body["backend"]
    if not isinstance(backend, str):
        raise ConfigError("must be a string", path=path, key=f"{where}.backend")
    _check_string(backend, path, f"{where}.backend", MAX_NAME)
    cls = backend_class(backend, path=path, key=f"{where}.backend")
    own = {k: v for k, v in body.items() if k not in COMMON_KEYS}
    for key in sorted(own):
        _check_string(key, path, where, MAX_NAME)
        if key not in cls.OPTIONS | cls.RETIRED_OPTIONS:
            allowed = ", ".join(sorted(COMMON_KEYS | cls.OPTIONS))
            raise ConfigError(
                f"unknown key for the {backend} backend", path=path, key=f"{where}.{key}",
                hint=f"allowed: {allowed}",
            )
    common = _common_keys(body, path, where)
    profile = Profile(name=name, backend=backend, options=own, source=path, **common)
    cls.check_profile(profile)
    return profile


def _safe_name(name: str) -> str:
    """A profile name as an error message may show it: control characters escaped."""
    return name if name.isprintable() and len(name) <= MAX_NAME else repr(name)[:MAX_NAME]


def _common_keys(body: Mapping[str, Any], path: Path, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"ttl_given": "ttl" in body}
    for key in ("ttl", "max_ttl", "renew_before"):
        if key in body:
            try:
                out[key] = parse_duration(body[key])
            except ValueError as exc:
                raise ConfigError(str(exc), path=path, key=f"{where}.{key}") from None
    if "max_ttl" in out:
        if out["max_ttl"] < out.get("ttl", 0):
            raise ConfigError("is shorter than ttl", path=path, key=f"{where}.max_ttl")
        out.setdefault("ttl", min(DEFAULT_TTL, out["max_ttl"]))
    if "renew" in body:
        if not (isinstance(body["renew"], str) and body["renew"] in RENEW_MODES):
            raise ConfigError(
                f"is {repr(body['renew'])[:40]}", path=path, key=f"{where}.renew",
                hint='use "prompt", "auto" or "never"',
            )
        out["renew"] = body["renew"]
    for key in ("revoke_on_exit", "audit_required"):
        if key in body:
            if not isinstance(body[key], bool):
                raise ConfigError("must be true or false", path=path, key=f"{where}.{key}")
            out[key] = body[key]
    if "port" in body:
        port = body["port"]
        if not (isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536):
            raise ConfigError("must be a port number", path=path, key=f"{where}.port")
        out["port"] = port
    for key in ("host", "dbname", "sslmode", "description"):
        if key in body:
            if not isinstance(body[key], str):
                raise ConfigError("must be a string", path=path, key=f"{where}.{key}")
            _check_string(body[key], path, f"{where}.{key}")
            out[key] = body[key]
    return out
