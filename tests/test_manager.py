"""LeaseManager: minting, renewing, rotating, pacing and releasing, with a fake clock and faults."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from pgcli_jit.core.clock import Clock
from pgcli_jit.core.errors import BackendError, JitError, LeaseExpired
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.policy import Phase
from pgcli_jit.core.profile import Profile
from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config
from pgcli_jit.session.manager import RETRY_INTERVAL, LeaseManager, Renewal
from tests.fakes import FaultyBackend, faulty_profile

T0 = 1_800_000_000.0


class Env:
    """A manager wired to a fake clock, faulty backends and an audit file."""

    def __init__(self, tmp_path: Path, *profiles: Profile) -> None:
        self.clock = FakeClock(T0)
        self.audit_path = tmp_path / "audit.jsonl"
        profiles = profiles or (faulty_profile(),)
        self.profiles = {p.name: p for p in profiles}
        config = Config(tmp_path / "config.toml", MappingProxyType(self.profiles), None, self.audit_path)
        self.backends: dict[str, FaultyBackend] = {}
        self.manager = LeaseManager(config, AuditLog(self.audit_path, clock=self.clock), "alice",
                                    clock=self.clock, backend_factory=self._factory)

    def _factory(self, profile: Profile, clock: Clock) -> FaultyBackend:
        backend = FaultyBackend(profile, clock=clock)
        self.backends[profile.name] = backend
        return backend

    def backend(self, name: str = "fake") -> FaultyBackend:
        return self.manager.backend_for(self.profiles[name])  # type: ignore[return-value]

    def start(self, name: str = "fake", ttl: float | None = None, reason: str = "INC-1 check") -> Lease:
        profile = self.profiles[name]
        lease = self.manager.mint(profile, ttl, reason)
        self.manager.adopt(lease, profile)
        return lease

    def events(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


# -- mint / adopt -------------------------------------------------------------------------


def test_mint_does_not_make_the_lease_current_until_adopted(env: Env) -> None:
    profile = env.profiles["fake"]
    lease = env.manager.mint(profile, None, "INC-1")
    assert env.manager.lease is None and env.manager.phase() is None
    assert lease.requester == "alice" and lease.reason == "INC-1"
    assert lease.expires_at == T0 + 900
    assert env.manager.adopt(lease, profile) is None
    assert env.manager.lease is lease and env.manager.profile is profile
    assert env.manager.phase() is Phase.FRESH


def test_mint_uses_the_requested_ttl(env: Env) -> None:
    assert env.manager.mint(env.profiles["fake"], 60, "").expires_at == T0 + 60


def test_adopt_returns_the_lease_it_replaces(env: Env) -> None:
    first = env.start()
    second = env.manager.mint(env.profiles["fake"], None, "again")
    assert env.manager.adopt(second, env.profiles["fake"]) is first
    assert env.manager.lease is second
    assert env.events()[-1]["replaced"] == first.username


def test_backend_is_built_once_per_profile(env: Env) -> None:
    assert env.backend() is env.backend()


def test_mint_failure_is_audited_and_raised(env: Env) -> None:
    env.backend().fail_request = True
    with pytest.raises(BackendError, match="broker refused"):
        env.manager.mint(env.profiles["fake"], None, "INC-2")
    [event] = env.events()
    assert event["event"] == "failure" and event["action"] == "request"
    assert event["profile"] == "fake" and event["reason"] == "INC-2" and event["requester"] == "alice"


def test_already_expired_lease_from_request_is_rejected(env: Env) -> None:
    env.backend().expired_request = True
    with pytest.raises(BackendError, match="already expired"):
        env.manager.mint(env.profiles["fake"], None, "")
    assert env.manager.lease is None


def test_rejected_expired_lease_is_revoked_and_audited(env: Env) -> None:
    backend = env.backend()
    backend.expired_request = True
    with pytest.raises(BackendError):
        env.manager.mint(env.profiles["fake"], None, "")
    assert backend.revoked == backend.requests
    assert [e["event"] for e in env.events()] == ["revoke", "failure"]


# -- renew ---------------------------------------------------------------------------------


def test_renew_extends_the_lease(env: Env) -> None:
    lease = env.start()
    env.clock.advance(700)
    renewal = env.manager.renew()
    assert renewal.kind == "extended" and renewal.base is lease
    assert renewal.lease.expires_at == T0 + 700 + 900
    assert renewal.lease.username == lease.username and renewal.lease.renewals == 1
    assert not renewal.new_secret
    assert env.manager.lease is renewal.lease
    assert env.events()[-1]["event"] == "renew"


def test_renew_with_ttl(env: Env) -> None:
    env.start()
    env.clock.advance(890)
    assert env.manager.renew(ttl=60).lease.expires_at == T0 + 890 + 60


def test_a_renewal_never_shortens_access(env: Env) -> None:
    """--ttl 90s on a lease with 14 minutes left: the backend is not asked (Vault counts an
    increment from now, so asking would shorten the lease), and the lease keeps its expiry."""
    lease = env.start()
    env.clock.advance(60)
    renewal = env.manager.renew(ttl=90)
    assert renewal.kind == "unchanged" and "already valid for longer than 1m30s" in renewal.reason
    assert env.manager.lease is lease and env.backend().renew_calls == []


def test_renew_with_a_new_secret_says_so(env: Env) -> None:
    env.start()
    env.backend().new_secret_on_renew = True
    assert env.manager.renew().new_secret


def test_renew_without_a_lease(env: Env) -> None:
    with pytest.raises(JitError, match="no JIT lease"):
        env.manager.renew()


def test_renew_of_an_expired_lease_is_refused(env: Env) -> None:
    lease = env.start()
    env.clock.advance(900)
    with pytest.raises(LeaseExpired):
        env.manager.renew()
    assert env.backend().renew_calls == []
    assert env.manager.lease is lease
    assert env.events()[-1]["event"] == "failure"


def test_renew_returning_an_expired_lease_is_rejected(env: Env) -> None:
    lease = env.start()
    env.backend().expired_renew = True
    env.clock.advance(700)
    with pytest.raises(BackendError, match="already expired"):
        env.manager.renew()
    assert env.manager.lease is lease  # the old lease is kept


def test_renew_failure_keeps_the_lease(env: Env) -> None:
    lease = env.start()
    env.backend().fail_renew = True
    env.clock.advance(700)
    with pytest.raises(BackendError, match="renew refused"):
        env.manager.renew()
    assert env.manager.lease is lease
    event = env.events()[-1]
    assert event["event"] == "failure" and event["action"] == "renew" and "renew refused" in event["error"]


def test_not_renewable_rotates_to_a_fresh_lease(env: Env) -> None:
    lease = env.start(reason="INC-7")
    backend = env.backend()
    backend.not_renewable = True
    env.clock.advance(700)
    renewal = env.manager.renew()
    assert renewal.kind == "rotate" and renewal.base is lease
    assert renewal.lease.username != lease.username
    assert renewal.lease.expires_at == T0 + 700 + 900
    assert renewal.lease.reason == "INC-7" and renewal.lease.requester == "alice"
    assert "max TTL" in renewal.reason
    assert env.manager.lease is lease  # still current until the caller adopts the new one
    assert env.manager.adopt(renewal.lease, env.profiles["fake"], event="rotate") is lease
    assert env.manager.lease is renewal.lease
    assert env.events()[-1]["event"] == "rotate"


def test_backend_that_cannot_renew_rotates_without_calling_renew(tmp_path: Path) -> None:
    class TokenBackend(FaultyBackend):
        can_renew = False

    env = Env(tmp_path)
    env.manager._factory = lambda profile, clock: TokenBackend(profile, clock=clock)
    env.start()
    env.clock.advance(700)  # in the window: new credentials add more than half a term
    assert env.manager.renew().kind == "rotate"
    assert env.backend().renew_calls == []


def test_rotation_that_cannot_mint_fails_and_keeps_the_lease(env: Env) -> None:
    lease = env.start()
    env.clock.advance(700)
    backend = env.backend()
    backend.not_renewable = True
    backend.fail_request = True
    with pytest.raises(BackendError, match="broker refused"):
        env.manager.renew()
    assert env.manager.lease is lease


# -- due() and pacing ---------------------------------------------------------------------------


def test_due_only_inside_the_window(env: Env) -> None:
    assert not env.manager.due(T0)
    env.start()
    assert not env.manager.due(T0 + 599)
    assert env.manager.due(T0 + 600)
    assert env.manager.due(T0 + 880)  # final part
    assert not env.manager.due(T0 + 900)  # expired: nothing to renew


def test_due_honours_renew_before(tmp_path: Path) -> None:
    env = Env(tmp_path, faulty_profile(renew_before=120.0))
    env.start()
    assert not env.manager.due(T0 + 700)
    assert env.manager.due(T0 + 780)


def test_never_due_with_renew_never(tmp_path: Path) -> None:
    env = Env(tmp_path, faulty_profile(renew="never"))
    env.start()
    assert not env.manager.due(T0 + 700)


def test_retry_pacing_after_a_failure(env: Env) -> None:
    env.start()
    env.backend().fail_renew = True
    env.clock.set(T0 + 600)
    with pytest.raises(BackendError):
        env.manager.renew()
    assert not env.manager.due(T0 + 600)
    assert not env.manager.due(T0 + 600 + RETRY_INTERVAL - 1)
    assert env.manager.due(T0 + 600 + RETRY_INTERVAL)
    env.backend().fail_renew = False
    env.clock.set(T0 + 600 + RETRY_INTERVAL)
    env.manager.renew()
    assert not env.manager.due(env.clock())  # the renewed lease is fresh again


def test_first_failure_report_once_per_run_of_failures(env: Env) -> None:
    assert not env.manager.first_failure_report()  # no lease
    env.start()
    backend = env.backend()
    backend.fail_renew = True
    reports = []
    for _ in range(3):
        with pytest.raises(BackendError):
            env.manager.renew()
        reports.append(env.manager.first_failure_report())
    assert reports == [True, False, False]
    backend.fail_renew = False
    env.clock.advance(5)
    env.manager.renew()
    backend.fail_renew = True
    with pytest.raises(BackendError):
        env.manager.renew()
    assert env.manager.first_failure_report()  # a new run of failures is said again


def test_not_due_right_after_a_renewal(env: Env) -> None:
    env.start()
    for _ in range(6):
        env.clock.advance(600)  # renew each time the default window opens
        env.manager.renew()
        assert not env.manager.due(env.clock() + 1)


# -- release ------------------------------------------------------------------------------------


def test_release_revokes_and_forgets(env: Env) -> None:
    lease = env.start()
    assert env.manager.release("revoke") is lease
    assert env.manager.lease is None
    assert env.backend().revoked == [lease]
    event = env.events()[-1]
    assert event["event"] == "revoke" and event["revoked"] is True
    assert env.manager.release("revoke") is None


def test_release_without_revoking(env: Env) -> None:
    lease = env.start()
    assert env.manager.release("expire", revoke=False) is lease
    assert env.backend().revoked == []
    event = env.events()[-1]
    assert event["event"] == "expire" and event["revoked"] is False


def test_release_with_expected_only_ends_that_lease(env: Env) -> None:
    old = env.start()
    new = env.start()
    assert env.manager.release("expire", expected=old) is None  # a late expiry of the old lease
    assert env.manager.lease is new
    assert env.manager.release("expire", expected=new) is new
    assert env.manager.lease is None


def test_release_whose_revoke_fails_still_forgets_and_says_so(env: Env) -> None:
    lease = env.start()
    env.backend().fail_revoke = True
    with pytest.raises(JitError, match="revoke failed"):
        env.manager.release("revoke")
    assert env.manager.lease is None
    event = env.events()[-1]
    assert event["revoked"] is False and "revoke refused" in event["error"]
    assert event["db_user"] == lease.username


def test_discard_revokes_a_lease_that_never_became_current(env: Env) -> None:
    lease = env.manager.mint(env.profiles["fake"], None, "")
    assert env.manager.discard(lease, env.profiles["fake"]) is None
    assert env.backend().revoked == [lease]
    assert env.events()[-1]["event"] == "revoke" and env.events()[-1]["note"] == "never used"
    env.backend().fail_revoke = True
    assert env.manager.discard(lease, env.profiles["fake"])  # a failure is audited and returned, not raised
    assert env.events()[-1]["event"] == "failure" and env.events()[-1]["action"] == "revoke"


# -- the race: background and foreground renewals -----------------------------------------------------


def _race(env: Env, foreground: Callable[[Lease], Renewal]) -> tuple[Lease, Renewal, Renewal]:
    """A background renewal blocks inside backend.renew while a foreground one starts."""
    lease = env.start()
    env.clock.advance(700)  # in the window, where renewals (and rotations) happen
    backend = env.backend()
    backend.renew_gate = threading.Event()
    results: dict[str, Renewal] = {}
    bg_thread = threading.Thread(target=lambda: results.setdefault("bg", env.manager.renew(None, lease)))
    bg_thread.start()
    assert backend.renew_entered.wait(5)
    fg_thread = threading.Thread(target=lambda: results.setdefault("fg", foreground(lease)))
    fg_thread.start()
    fg_thread.join(0.2)
    assert fg_thread.is_alive(), "the foreground renewal did not wait for the one in flight"
    backend.renew_gate.set()
    bg_thread.join(5)
    fg_thread.join(5)
    return lease, results["bg"], results["fg"]


def test_race_second_renewal_of_the_same_lease_is_superseded(env: Env) -> None:
    lease, bg, fg = _race(env, lambda lease: env.manager.renew(None, lease))
    assert bg.kind == "extended" and bg.base is lease
    assert fg.kind == "superseded" and fg.lease is bg.lease and fg.base is lease
    assert env.backend().renew_calls == [lease]
    assert env.manager.lease is bg.lease
    assert [e["event"] for e in env.events()].count("renew") == 1


def test_race_with_rotation_mints_one_replacement(env: Env) -> None:
    env.backend().not_renewable = True
    lease, bg, _ = _race(env, lambda lease: env.manager.renew(None, lease))
    assert bg.kind == "rotate"
    assert env.backend().renew_calls == [lease]
    assert len(env.backend().requests) == 2  # the first lease and one replacement


# -- audit -----------------------------------------------------------------------------------------


def test_audit_trail_of_a_whole_life_has_no_password(env: Env) -> None:
    first = env.start(reason="INC-42 hotfix")
    backend = env.backend()
    env.clock.advance(600)
    env.manager.renew()
    backend.fail_renew = True
    with pytest.raises(BackendError):
        env.manager.renew()
    backend.fail_renew = False
    backend.not_renewable = True
    rotation = env.manager.renew()
    env.manager.adopt(rotation.lease, env.profiles["fake"], event="rotate")
    env.manager.release("revoke")
    second = env.start()
    env.manager.release("expire", revoke=False)
    events = env.events()
    assert [e["event"] for e in events] == ["request", "renew", "failure", "rotate", "revoke", "request",
                                            "expire"]
    text = env.audit_path.read_text()
    for lease in (first, rotation.lease, second, *backend.requests):
        assert lease.credentials.password not in text
    for e in events:
        assert {"time", "event", "profile", "backend", "db_user", "requester", "reason",
                "lease_id"} <= set(e)
    assert events[0]["reason"] == "INC-42 hotfix" and events[0]["requester"] == "alice"
    assert events[0]["db_user"] == first.username and events[0]["lease_id"] == first.lease_id


def test_renewals_keep_the_ttl_the_lease_was_requested_with(env: Env) -> None:
    profile = env.profiles["fake"]
    lease = env.manager.mint(profile, 120, "short one")
    env.manager.adopt(lease, profile)
    env.clock.advance(100)
    renewed = env.manager.renew().lease
    assert renewed.expires_at == pytest.approx(env.clock() + 120)  # not the profile's 900 s
    env.manager.renew(300)
    env.clock.advance(250)
    assert env.manager.renew().lease.expires_at == pytest.approx(env.clock() + 300)  # --ttl sticks


def test_a_failure_is_said_again_when_the_final_part_begins(env: Env) -> None:
    env.start()
    env.backend().fail_renew = True
    env.clock.advance(650)  # the advisory window
    with pytest.raises(BackendError):
        env.manager.renew()
    assert env.manager.first_failure_report()
    assert not env.manager.first_failure_report()
    env.clock.advance(200)  # now in the final minute
    with pytest.raises(BackendError):
        env.manager.renew()
    assert env.manager.first_failure_report()


# -- a renewal that moves nothing ------------------------------------------------------------


def test_renewal_that_does_not_move_the_expiry_is_unchanged_and_not_audited(env: Env) -> None:
    lease = env.start()
    env.clock.advance(30)
    env.backend().renew = lambda lease, ttl: lease  # type: ignore[method-assign]
    renewal = env.manager.renew(60)
    assert renewal.kind == "unchanged" and renewal.lease is lease
    assert env.manager.lease is lease and lease.renewals == 0
    assert [e["event"] for e in env.events()] == ["request"]


def test_a_ttl_that_renewed_nothing_does_not_shape_later_renewals(env: Env) -> None:
    """\\jit renew --ttl 10s on a lease with minutes left renews nothing (the backend is not
    even asked); the next renewal still asks for the lease's own term, not for 10 s."""
    env.start(ttl=300)
    env.clock.advance(30)
    asked: list[float | None] = []
    real = env.backend().renew

    def renew(lease: Lease, ttl: float | None) -> Lease:
        asked.append(ttl)
        return lease if ttl == 10 else real(lease, ttl)

    env.backend().renew = renew  # type: ignore[method-assign]
    assert env.manager.renew(10).kind == "unchanged"
    env.clock.advance(220)
    assert env.manager.renew().kind == "extended"
    assert asked == [300]


def test_unchanged_renewal_paces_the_next_attempt(env: Env) -> None:
    env.start()
    env.clock.advance(700)  # inside the window
    env.backend().renew = lambda lease, ttl: lease.extended(lease.expires_at)  # type: ignore[method-assign]
    assert env.manager.due(env.clock())
    assert env.manager.renew().kind == "unchanged"
    assert not env.manager.due(env.clock())  # no question every second
    assert env.manager.due(env.clock() + RETRY_INTERVAL)


def test_a_shorter_renewal_is_no_change(env: Env) -> None:
    lease = env.start()
    env.clock.advance(10)
    assert env.manager.renew(60).kind == "unchanged"
    assert env.manager.lease is lease


def test_new_credentials_capped_shorter_are_refused_once_and_not_minted_every_second(env: Env) -> None:
    """The backend caps a replacement below what is left: it is revoked, nothing changes,
    the next attempt waits the retry interval, and the term it learned stops a second mint."""
    lease = env.start()
    backend = env.backend()
    backend.not_renewable = True
    env.clock.advance(700)
    real_request = backend.request

    def capped(req: Any) -> Lease:
        minted = real_request(req)
        return dataclasses.replace(minted, expires_at=minted.issued_at + 60)

    backend.request = capped  # type: ignore[method-assign]
    first = env.manager.renew(rotate="always")
    assert first.kind == "unchanged" and "would end sooner" in first.reason
    assert env.manager.lease is lease and not env.manager.due(env.clock())
    minted = len(backend.requests)
    env.clock.advance(RETRY_INTERVAL)
    assert env.manager.renew(rotate="always").kind == "unchanged"
    assert len(backend.requests) == minted  # the learned term says it would end sooner: not minted


def test_an_offer_is_paced_like_a_failure(env: Env) -> None:
    env.start()
    env.backend().not_renewable = True
    env.clock.advance(700)
    assert env.manager.renew(rotate="never").kind == "offer"
    assert not env.manager.due(env.clock())
