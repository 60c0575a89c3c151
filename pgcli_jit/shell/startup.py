"""What ``pgcli-jit --jit PROFILE`` says when the start fails, worded for the command line.

A failed start is one line and exit status 1.  The broker's refusals are worded for the
shell (``\\jit request ... --reason``, ``\\jit profiles``); before the first connection the
user is at the command line, where the same advice is ``--jit-reason`` and a profile name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgcli_jit.backends.base import NeedsPassword
from pgcli_jit.core.errors import BackendError, BackendUnavailable, JitError

if TYPE_CHECKING:
    from pgcli_jit.session.config import Config

#: the user's own password, typed at start-up: asked this many times in all, then exit 1
PASSWORD_TRIES = 3
#: the broker's hints (server/sql/functions/20_requesters.sql), as the shell words them
REASON_HINT = 'add --reason "..."'
PROFILES_HINT = "\\jit profiles lists what you may request"
NAME_THE_SERVER = "name the server to ask: -h HOST -p PORT -U USER DBNAME"


def wrong_password(exc: JitError) -> bool:
    """The server refused the password of the login that asks (libpq's words, which pgcli
    reads the same way); any other failure is not worth asking again."""
    return isinstance(exc, BackendUnavailable) and "password authentication failed" in str(exc)


def out_of_tries(exc: BackendError, who: str) -> BackendError:
    """The one line after the last try, without libpq's multi-part connection message."""
    return BackendError(f"password authentication failed for {who} ({PASSWORD_TRIES} tries)",
                        backend=exc.backend, profile=exc.profile)


def failure_line(exc: JitError, name: str, config: Config | None, asked_defaults: bool) -> str:
    """``exc`` as the start-up's one line.  ``asked_defaults``: ``name`` is not in the config
    and no server was named, so libpq's defaults were asked; when they cannot be reached, the
    profile not being in the config is what the user needs to hear first."""
    if asked_defaults and isinstance(exc, BackendUnavailable) and not isinstance(exc, NeedsPassword):
        return _found_nowhere(exc, name, config)
    if exc.hint == REASON_HINT:
        return f'{exc.message} (add --jit-reason "...")'
    if exc.hint == PROFILES_HINT:
        return f"{exc.message} ({_profiles_hint(config)})"
    return str(exc)


def _profiles_hint(config: Config | None) -> str:
    names = ", ".join(sorted(config.profiles)) if config is not None else ""
    listed = f"profiles in {config.path}: {names}; " if config is not None and names else ""
    return f"{listed}\\jit profiles in a session lists the ones you may request"


def _found_nowhere(exc: BackendUnavailable, name: str, config: Config | None) -> str:
    if config is not None and config.profiles:
        where = f"in {config.path} (it has {', '.join(sorted(config.profiles))})"
    else:
        where = f"in a config file ({config.path if config is not None else 'none'} has none)"
    return (f"no profile {name} {where}, and libpq's default server could not be asked for one: "
            f"{exc.reason} ({NAME_THE_SERVER})")
