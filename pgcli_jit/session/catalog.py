"""What the connected server lets this login request by name, kept for Tab completion.

``\\jit request <Tab>`` offers the server's profiles as well as the config's, but the
completer runs in prompt_toolkit's completer thread on every key: it must never wait for
a server.  So the server's list is kept here, read by the completer as it stands, and
filled on the session's background worker (:mod:`pgcli_jit.session.jobs`): the first time
a ``\\jit`` line is completed, after each ``\\jit request``, and with what ``\\jit profiles``
has just read.  A list that cannot be read leaves the cache as it was; completion then
offers the config's profiles and what was read last.  With the names it keeps a short hint
of what each grants (from a broker that ``describes_grants``), shown beside the candidate.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING

from pgcli_jit.backends import SERVER_PROFILES
from pgcli_jit.core.errors import JitError
from pgcli_jit.core.limits import PROFILE_NAME_PATTERN
from pgcli_jit.session.config import server_side_profile

if TYPE_CHECKING:
    from concurrent.futures import Future

    from pgcli_jit.backends.base import Backend, ProfileGrants, RoleInfo
    from pgcli_jit.session.config import Config
    from pgcli_jit.session.jobs import Jobs
    from pgcli_jit.session.manager import LeaseManager

log = logging.getLogger(__name__)
#: only what the server could hold as a profile name is offered: a completion is typed into
#: the input line, so nothing else from the server may reach it
_NAME = re.compile(PROFILE_NAME_PATTERN)
#: the profile the server's list is asked through: a name no config can hold (it only
#: lists, it never requests)
LISTING = "(server)"


def listing_backend(manager: LeaseManager) -> Backend:
    """The broker the server's profiles are listed through."""
    return manager.backend_for(server_side_profile(LISTING))


def ask_server(manager: LeaseManager) -> list[RoleInfo]:
    """The server's profiles for this login, asked now (blocks on the server: never call it
    from the completer)."""
    return listing_backend(manager).requestable()


def ask_grants(backend: Backend) -> list[ProfileGrants] | None:
    """What each of its profiles grants, asked now of a broker that describes it (blocks on
    the server); none from any other; None when it could not be read (a description: the
    log says why, nobody else)."""
    if not backend.describes_grants:
        return []
    try:
        return backend.profile_grants()
    except JitError as exc:
        log.info("what the server's profiles grant was not read: %s", exc)
        return None


#: the longest hint shown beside a completion (the menu is narrow)
HINT = 40


def hint(grants: ProfileGrants) -> str:
    """``SELECT on public.*; UPDATE on …``: the start of what a profile grants, short."""
    text = grants.summary() or "grants nothing listed"
    return text if len(text) <= HINT else text[:HINT - 1] + "…"


class ServerCatalog:
    """The server's profile names as last read; safe to read from any thread."""

    def __init__(self, jobs: Jobs, manager: LeaseManager) -> None:
        self._jobs = jobs
        self._manager = manager
        self._names: tuple[str, ...] = ()  # replaced whole, never changed in place
        self._hints: dict[str, str] = {}  # replaced whole, never changed in place
        self._lock = threading.Lock()  # the completer thread and the main thread both start fills
        self._fill: Future[None] | None = None
        self._asked = False

    @property
    def names(self) -> tuple[str, ...]:
        """What the server offered when last asked; empty until a fill has landed."""
        return self._names

    def hint(self, name: str, config: Config | None = None) -> str:
        """What profile ``name`` grants, short, as last read; ``""`` when unknown.  A config
        profile is hinted by the server profile it asks for, and only when it asks the
        server's broker (a profile of another backend may share a name, not the grants)."""
        hints = self._hints
        profile = config.profiles.get(name) if config is not None else None
        if profile is None:
            return hints.get(name, "")
        if profile.backend != SERVER_PROFILES:
            return ""
        return hints.get(str(profile.options.get("server_profile") or name), "")

    def profile_names(self, config: Config | None) -> list[str]:
        """For completion: the config's profiles, then the server's that the config lacks.
        Never waits: the first call starts a fill in the background and offers what is known."""
        self.warm()
        mine = sorted(config.profiles) if config is not None else []
        return mine + sorted(set(self._names) - set(mine))

    def warm(self) -> None:
        """Fill the cache in the background unless it has been asked for already."""
        with self._lock:
            if self._asked:
                return
        self.refresh()

    def refresh(self) -> None:
        """Read the server's list again in the background (one fill at a time)."""
        with self._lock:
            self._asked = True
            if self._fill is not None and not self._fill.done():
                return
            try:
                self._fill = self._jobs.submit(self._read)
            except RuntimeError:  # the worker is shut down: the session is ending
                log.debug("the server's profiles were not read: the session is ending")

    def store(self, profiles: list[RoleInfo], grants: list[ProfileGrants] | None = None) -> None:
        """What the main thread has just read (``\\jit profiles``): no second call for it.
        ``grants`` None keeps the hints as they were."""
        with self._lock:
            self._asked = True
        self._names = tuple(info.name for info in profiles if _NAME.fullmatch(info.name))
        if grants is not None:
            self._hints = {g.name: hint(g) for g in grants if _NAME.fullmatch(g.name)}

    def _read(self) -> None:
        try:
            backend = listing_backend(self._manager)
            self.store(backend.requestable(), ask_grants(backend))
        except JitError as exc:  # kept as it was: completion is a convenience, never an error
            log.info("the server's profiles were not read for completion: %s", exc)
        except Exception:  # a bug: in the log, never over the prompt
            log.exception("reading the server's profiles for completion failed")
