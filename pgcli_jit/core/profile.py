"""A profile: one requestable kind of access, as the config file or the server names it.

A value that backends, the session and the shell all read; the file that declares it is
parsed in :mod:`pgcli_jit.session.config`, which checks each profile against its backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pgcli_jit.core.durations import parse_duration
from pgcli_jit.core.errors import ConfigError

RenewMode = Literal["prompt", "auto", "never"]
RENEW_MODES: tuple[RenewMode, ...] = ("prompt", "auto", "never")
DEFAULT_TTL = 900.0


@dataclass(frozen=True)
class Profile:
    """One requestable kind of access.  ``options`` are the backend's own keys."""

    name: str
    backend: str
    ttl: float = DEFAULT_TTL
    max_ttl: float | None = None
    renew: RenewMode = "prompt"
    renew_before: float | None = None
    revoke_on_exit: bool = True
    #: the file set ``ttl`` (else ``ttl`` is the default, and a server may apply its own)
    ttl_given: bool = False
    #: False lets access go on when the audit trail cannot be written (default: refuse)
    audit_required: bool = True
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    sslmode: str | None = None
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def connection_overrides(self) -> dict[str, str]:
        """host/port/dbname/sslmode the profile names, as libpq parameters."""
        pairs = {"host": self.host, "port": self.port, "dbname": self.dbname, "sslmode": self.sslmode}
        return {k: str(v) for k, v in pairs.items() if v not in (None, "")}

    def duration_option(self, key: str, default: float) -> float:
        """A backend's own duration key (e.g. ``timeout``); a bad value names the key."""
        try:
            return parse_duration(self.options.get(key, default))
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def error(self, key: str, message: str, hint: str = "") -> ConfigError:
        """A ConfigError that names this profile's file and key."""
        return ConfigError(message, path=self.source, key=f"profiles.{self.name}.{key}", hint=hint)


__all__ = ["DEFAULT_TTL", "RENEW_MODES", "Profile", "RenewMode"]
