"""Backend discovery: one path, the ``pgcli_jit.backends`` entry-point group.

The built-in backends are registered in pyproject.toml exactly like a third
party's would be, so there is nothing special about them.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pgcli_jit.core.errors import ConfigError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from pgcli_jit.backends.base import Backend

GROUP = "pgcli_jit.backends"
#: the backend of a profile that only the server defines (``pgcli-jit --jit NAME`` with no
#: config file): the broker that keeps its profiles in the database the session is connected to
SERVER_PROFILES = "postgres"


@functools.cache
def _entry_points() -> tuple[EntryPoint, ...]:
    """The group's entry points, read once per process when a profile first needs a backend
    (never at import): scanning every installed distribution takes milliseconds, and a
    config load followed by a request would otherwise scan twice."""
    from importlib.metadata import entry_points

    return tuple(entry_points(group=GROUP))


def available() -> list[str]:
    """Names of every installed backend."""
    return sorted({ep.name for ep in _entry_points()})


def backend_class(name: str, *, path: object = None, key: str = "backend") -> type[Backend]:
    """Load the class registered under ``name``; an unknown name lists the known ones."""
    from pgcli_jit.backends.base import Backend

    matches = [ep for ep in _entry_points() if ep.name == name]
    if not matches:
        raise ConfigError(
            f"unknown backend {name!r}", path=path, key=key,
            hint=f"installed backends: {', '.join(available()) or 'none'}",
        )
    try:
        cls = matches[0].load()
    except ImportError as exc:
        raise ConfigError(
            f"backend {name!r} cannot be loaded: {exc}", path=path, key=key,
            hint="reinstall the package that provides it",
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"entry point {name!r} is not a pgcli-jit Backend", path=path, key=key)
    return cls
