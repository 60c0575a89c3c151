"""A user command or the clock racing a renewal that runs in the background worker.

The backend is the fault-injecting fake (its renew blocks on an Event) and time
is a FakeClock: only faults and time are faked.
"""

from __future__ import annotations

import threading
from types import MappingProxyType

from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config
from pgcli_jit.session.controller import EXPIRED, Controller
from pgcli_jit.session.manager import LeaseManager
from tests.fakes import FaultyBackend, RecordingConnector, faulty_profile


class World:
    def __init__(self, **profile_keys: object) -> None:
        self.clock = FakeClock()
        profile = faulty_profile(ttl=900.0, renew="auto", **profile_keys)
        config = Config(profile.source, MappingProxyType({profile.name: profile}), None,  # type: ignore[arg-type]
                        profile.source)  # type: ignore[arg-type]
        self.backend: FaultyBackend | None = None
        self.manager = LeaseManager(config, AuditLog(None), "tester", clock=self.clock,
                                    backend_factory=self._backend)
        self.connector = RecordingConnector()
        self.said: list[str] = []
        self.controller = Controller(self.manager, self.connector, self.said.append)
        self.controller.request(None, None, "race")

    def _backend(self, profile, clock):  # type: ignore[no-untyped-def]
        self.backend = FaultyBackend(profile, clock=clock)
        return self.backend

    def start_gated_renewal(self) -> threading.Event:
        assert self.backend is not None
        gate = threading.Event()
        self.backend.renew_gate = gate
        self.clock.advance(700)  # inside the window: the auto-renewal is due
        self.controller.step()
        assert self.backend.renew_entered.wait(5), "the background renewal never started"
        return gate


def open_soon(gate: threading.Event) -> None:
    threading.Timer(0.2, gate.set).start()


def test_user_renew_during_a_background_rotation_never_revokes_the_live_lease() -> None:
    w = World()
    assert w.backend is not None
    w.backend.not_renewable = True  # every renewal is a rotation
    gate = w.start_gated_renewal()
    open_soon(gate)
    w.controller.renew(None)  # waits for the background rotation, then renews (rotates) again
    w.controller.step()
    current = w.controller.lease
    assert current is not None
    assert all(not current.same_grant(r) for r in w.backend.revoked)
    assert w.connector.users[-1] == current.username


def test_user_revoke_during_a_background_extension_revokes_at_the_backend() -> None:
    w = World()
    assert w.backend is not None
    first = w.controller.lease
    gate = w.start_gated_renewal()
    open_soon(gate)
    message = w.controller.revoke()
    assert message.startswith("Revoked")
    assert w.controller.lease is None
    assert first is not None and any(first.same_grant(r) for r in w.backend.revoked)


def test_expiry_while_a_renewal_is_running_ends_access_once_and_drops_the_result() -> None:
    w = World()
    assert w.backend is not None
    lease = w.controller.lease
    gate = w.start_gated_renewal()
    w.clock.advance(300)  # past the expiry while the backend still works on the renewal
    w.controller.step()
    w.controller.step()
    assert w.said.count(EXPIRED) == 1 and w.connector.closed == 1
    gate.set()
    w.controller.settle()
    w.controller.jobs.submit(lambda: None).result(5)  # the queued release has run
    w.controller.step()
    assert not any(s.startswith("Renewed") for s in w.said)
    assert w.controller.gate() == EXPIRED
    assert w.controller.lease is None
    assert lease is not None and any(lease.same_grant(r) for r in w.backend.revoked)


def test_ticks_and_backend_lookups_never_wait_for_a_slow_renewal() -> None:
    """The ticker runs on prompt_toolkit's loop (blocking it freezes typing), and \\jit status
    looks up its backend: neither may wait for a background renewal to finish."""
    w = World()
    profile = w.manager.profile
    gate = w.start_gated_renewal()
    try:
        done = threading.Event()

        def tick_and_look_up() -> None:
            w.controller.step()
            assert profile is not None
            w.manager.backend_for(profile)
            done.set()

        threading.Thread(target=tick_and_look_up, daemon=True).start()
        assert done.wait(2), "blocked on the renewal in progress"
    finally:
        gate.set()
