"""The completion cache of the server's profiles: Tab never waits for the server, the list
is read on the session's worker, and ``\\jit request <Tab>`` offers what it holds."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from pgcli_jit.backends.base import ProfileGrants, RoleInfo
from pgcli_jit.core.errors import BackendUnavailable, PermissionDenied
from pgcli_jit.core.profile import Profile
from pgcli_jit.session.catalog import HINT, LISTING, ServerCatalog
from pgcli_jit.session.commands import parse, run
from pgcli_jit.session.config import Config
from pgcli_jit.session.jobs import Jobs
from tests.fakes import faulty_profile


class Server:
    """The server profiles' backend: answers with ``names`` once ``go`` is set (or at once)."""

    def __init__(self, *names: str) -> None:
        self.names = list(names)
        self.go = threading.Event()
        self.go.set()
        self.asked: list[str] = []
        self.fail: Exception | None = None

    def requestable(self) -> list[RoleInfo]:
        self.go.wait(10)
        if self.fail is not None:
            raise self.fail
        return [RoleInfo(name, kind="server profile", approvers="") for name in self.names]

    describes_grants = True

    def profile_grants(self) -> list[ProfileGrants]:
        return [ProfileGrants(name, (f"SELECT on {name}.*", "UPDATE on public.orders, public.order_lines"))
                for name in self.names]


class Manager:
    """Just enough of the lease manager: the one backend the listing is asked through."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.profiles: list[Profile] = []

    def backend_for(self, profile: Profile) -> Server:
        self.profiles.append(profile)
        self.server.asked.append(profile.name)
        return self.server


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    jobs = Jobs()
    yield jobs
    jobs.shutdown()


def config(*names: str) -> Config:
    return Config(None, MappingProxyType({n: faulty_profile(n) for n in names}), None, None)  # type: ignore[arg-type]


def settled(jobs: Jobs) -> None:
    """Wait for what the worker has queued: a job submitted after the fills runs after them."""
    jobs.submit(lambda: None).result(timeout=10)


def test_tab_never_waits_for_the_server_and_offers_its_list_once_read(jobs: Jobs) -> None:
    server = Server("shortw", "read")
    server.go.clear()   # the server takes its time
    catalog = ServerCatalog(jobs, Manager(server))  # type: ignore[arg-type]
    started = time.monotonic()
    assert catalog.profile_names(config("read", "write")) == ["read", "write"]
    assert time.monotonic() - started < 1.0
    server.go.set()
    settled(jobs)
    assert catalog.profile_names(config("read", "write")) == ["read", "write", "shortw"]
    assert catalog.profile_names(None) == ["read", "shortw"]  # an unreadable config: the server's only
    assert server.asked == [LISTING]  # asked once, through the listing profile, never again by Tab


def test_the_listing_profile_is_one_no_config_can_hold_and_asks_the_connected_server(jobs: Jobs) -> None:
    manager = Manager(Server("x"))
    ServerCatalog(jobs, manager).warm()  # type: ignore[arg-type]
    settled(jobs)
    (profile,) = manager.profiles
    assert profile.options == {"server_profile": LISTING}
    assert profile.backend == "postgres"


def test_only_names_a_profile_can_have_are_offered(jobs: Jobs) -> None:
    """A completion is typed into the input line: a server's control characters never are."""
    server = Server("ok.name-1", "bad\x1b[2Jname", "two words", "x\n", "-dash", "a" * 64)
    catalog = ServerCatalog(jobs, Manager(server))  # type: ignore[arg-type]
    catalog.warm()
    settled(jobs)
    assert catalog.names == ("ok.name-1",)


def test_a_list_that_cannot_be_read_keeps_the_last_one(jobs: Jobs) -> None:
    server = Server("shortw")
    catalog = ServerCatalog(jobs, Manager(server))  # type: ignore[arg-type]
    catalog.warm()
    settled(jobs)
    server.fail = BackendUnavailable("no answer within 10s", backend="postgres", profile=LISTING)
    catalog.refresh()
    settled(jobs)
    assert catalog.names == ("shortw",)
    server.fail = RuntimeError("a bug")   # logged, never raised at the prompt
    catalog.refresh()
    settled(jobs)
    assert catalog.names == ("shortw",)


def test_warm_asks_once_and_refresh_asks_again_one_read_at_a_time(jobs: Jobs) -> None:
    server = Server("a")
    catalog = ServerCatalog(jobs, Manager(server))  # type: ignore[arg-type]
    server.go.clear()
    catalog.warm()
    catalog.warm()
    catalog.refresh()   # one is in flight: no second read queued behind it
    server.go.set()
    settled(jobs)
    assert server.asked == [LISTING]
    catalog.warm()      # filled already: Tab asks nothing more
    settled(jobs)
    assert server.asked == [LISTING]
    server.names = ["a", "b"]
    catalog.refresh()
    settled(jobs)
    assert server.asked == [LISTING, LISTING] and catalog.names == ("a", "b")


def test_what_jit_profiles_read_is_stored_without_a_second_call(jobs: Jobs) -> None:
    server = Server()
    catalog = ServerCatalog(jobs, Manager(server))  # type: ignore[arg-type]
    catalog.store([RoleInfo("fresh", kind="server profile")])
    catalog.warm()
    settled(jobs)
    assert catalog.names == ("fresh",) and server.asked == []


class Refused:
    """A controller whose request the server refuses; its catalog counts the reads asked for."""

    def __init__(self) -> None:
        self.config = config("read")
        self.refreshed = 0
        self.catalog = SimpleNamespace(refresh=self._refresh)

    def _refresh(self) -> None:
        self.refreshed += 1

    def request(self, profile: str | None, ttl: float | None, reason: str) -> str:
        raise PermissionDenied("no profile gone that alice may request", backend="postgres", profile="gone")


def test_a_request_refused_by_the_server_still_makes_completion_read_the_list_again() -> None:
    """An operator removed the profile: Tab should stop offering it."""
    jit = Refused()
    with pytest.raises(PermissionDenied):
        run(jit, parse("\\jit request gone"))  # type: ignore[arg-type]
    assert jit.refreshed == 1


def test_the_shells_completer_offers_server_only_profiles_after_jit_request(jobs: Jobs) -> None:
    from pgcli_jit.shell.jitshell import JitCompleter

    catalog = ServerCatalog(jobs, Manager(Server("shortw", "shorter")))  # type: ignore[arg-type]
    shell: Any = SimpleNamespace(jit=SimpleNamespace(catalog=catalog), jit_config=config("read", "write"))
    completer = JitCompleter(inner=None, shell=shell)  # type: ignore[arg-type]

    def words(text: str) -> list[str]:
        tab = CompleteEvent(completion_requested=True)
        return [c.text for c in completer.get_completions(Document(text), tab)]

    options = ["--ttl", "--reason", "--break-glass"]
    assert words("\\jit request ") == ["read", "write", *options]  # the first Tab starts the read
    settled(jobs)
    assert words("\\jit request ") == ["read", "write", "shorter", "shortw", *options]
    assert words("\\jit request sh") == ["shorter", "shortw"]
    assert words("\\jit request shortw ") == options
    metas = {c.text: c.display_meta_text for c in completer.get_completions(
        Document("\\jit request sh"), CompleteEvent(completion_requested=True))}
    assert metas == {"shorter": "SELECT on shorter.*; UPDATE on public.o…",
                     "shortw": "SELECT on shortw.*; UPDATE on public.or…"}
    assert all(not c.display_meta_text for c in completer.get_completions(
        Document("\\jit request shortw "), CompleteEvent(completion_requested=True)))


def test_a_tab_while_the_session_ends_is_no_error(jobs: Jobs) -> None:
    catalog = ServerCatalog(jobs, Manager(Server("a")))  # type: ignore[arg-type]
    catalog.warm()
    jobs.shutdown()
    catalog.refresh()   # \jit request's refresh, or a Tab, after the worker has stopped
    assert catalog.profile_names(config("read")) == ["read", "a"]


def test_each_profile_has_a_short_hint_of_what_it_grants_read_in_the_background(jobs: Jobs) -> None:
    server = Server("shortw", "read")
    server.go.clear()
    catalog = ServerCatalog(jobs, Manager(server))  # type: ignore[arg-type]
    assert catalog.profile_names(None) == [] and catalog.hint("shortw") == ""   # never waits
    server.go.set()
    settled(jobs)
    assert catalog.hint("shortw") == "SELECT on shortw.*; UPDATE on public.or…"
    assert len(catalog.hint("shortw")) == HINT
    assert catalog.hint("nope") == ""


def test_a_config_profile_is_hinted_by_the_server_profile_it_asks_for(jobs: Jobs) -> None:
    from pgcli_jit.session.config import server_side_profile

    catalog = ServerCatalog(jobs, Manager(Server("shortw")))  # type: ignore[arg-type]
    catalog.warm()
    settled(jobs)
    mine = dataclasses.replace(server_side_profile("shortw"), name="mine")
    other = Profile(name="shortw", backend="command", options={})
    cfg = Config(None, MappingProxyType({"mine": mine, "shortw": other}), None, None)
    assert catalog.hint("mine", cfg).startswith("SELECT on shortw.*")
    assert catalog.hint("shortw", cfg) == ""   # another broker's profile of the same name


def test_hints_kept_when_the_grants_cannot_be_read(jobs: Jobs) -> None:
    catalog = ServerCatalog(jobs, Manager(Server("a")))  # type: ignore[arg-type]
    catalog.warm()
    settled(jobs)
    catalog.store([RoleInfo("a", kind="server profile")], None)
    assert catalog.hint("a").startswith("SELECT on a.*")
    catalog.store([RoleInfo("a", kind="server profile")], [ProfileGrants("a", listed=False)])
    assert catalog.hint("a") == "too many objects to list"
