"""What the controller says and does around the ends of a lease, with the
fault-injecting backend, a fake clock and a connector that records: no database."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config
from pgcli_jit.session.controller import EXPIRED, Controller, connected_line
from pgcli_jit.session.manager import LeaseManager
from tests.fakes import FaultyBackend, RecordingConnector, faulty_profile

T0 = 1_800_000_000.0


class LoginConnector(RecordingConnector):
    """A session that began as ``alice`` before its first \\jit request."""

    def __init__(self, previous: str | None = "alice", notes: list[str] | None = None) -> None:
        super().__init__()
        self.previous = previous
        self.current = previous
        self.notes = notes or []

    def switch(self, lease: Lease, overrides: dict[str, str]) -> list[str]:
        super().switch(lease, overrides)
        self.current = lease.username
        return list(self.notes)

    def restore(self) -> str | None:
        self.current = self.previous
        return self.previous

    def previous_user(self) -> str | None:
        return self.previous


class World:
    def __init__(self, tmp_path: Path, connector: LoginConnector | None = None, **keys: Any) -> None:
        self.clock = FakeClock(T0)
        profile = faulty_profile(**{"ttl": 900.0, "renew": "never", **keys})
        self.audit_path = tmp_path / "audit.jsonl"
        config = Config(tmp_path / "c.toml", MappingProxyType({profile.name: profile}), None, self.audit_path)
        self.manager = LeaseManager(config, AuditLog(self.audit_path, clock=self.clock), "alice",
                                    clock=self.clock, backend_factory=self._backend)
        self.backend: FaultyBackend | None = None
        self.connector = connector or LoginConnector()
        self.said: list[str] = []
        self.controller = Controller(self.manager, self.connector, self.said.append)

    def _backend(self, profile, clock):  # type: ignore[no-untyped-def]
        self.backend = FaultyBackend(profile, clock=clock)
        return self.backend

    def events(self) -> list[str]:
        return [json.loads(line)["event"] for line in self.audit_path.read_text().splitlines()]

    def expire(self) -> None:
        lease = self.controller.lease
        assert lease is not None
        self.clock.set(lease.expires_at + 1)
        self.controller.gate()
        self.controller.jobs.submit(lambda: None).result()  # the background release is done


# -- the deadline of a waiting rotation ---------------------------------------------------------


def test_a_rotation_waiting_on_a_transaction_names_the_deadline(tmp_path: Path) -> None:
    w = World(tmp_path, renew="auto")
    w.controller.request(None, None, "INC-4")
    assert w.backend is not None
    w.backend.not_renewable = True
    w.connector.transaction = True
    w.clock.advance(700)
    message = w.controller.renew(None)
    assert "the session will reconnect when the open transaction ends" in message
    assert message.endswith(" or the transaction is lost.")
    assert "COMMIT before " in message


# -- back to the login after expiry ---------------------------------------------------------------


def test_revoke_after_expiry_returns_to_the_previous_login(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.controller.request(None, None, "INC-5")
    w.expire()
    refused = w.controller.gate()
    assert refused == EXPIRED + ", or \\jit revoke to return to alice"
    assert w.controller.revoke() == "JIT access had ended; back to alice."
    assert w.connector.current == "alice" and w.controller.gate() is None


def test_revoke_after_expiry_without_a_previous_login(tmp_path: Path) -> None:
    w = World(tmp_path, LoginConnector(previous=None))
    w.controller.request(None, None, "")
    w.expire()
    assert w.controller.gate() == EXPIRED
    assert w.controller.revoke() == "No JIT lease to revoke."


# -- status after the end, and a waiting credential ------------------------------------------------


def test_status_after_expiry_says_what_ended_when_and_what_to_do(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.controller.request(None, None, "")
    user = w.connector.users[-1]
    w.expire()
    w.clock.advance(120)
    text = w.controller.status_after_end()
    assert text.startswith(f"JIT lease {user} (fake) expired at ")
    assert "(2m1s ago)" in text and "\\jit request [PROFILE] to continue" in text
    assert "\\jit revoke to return to alice" in text


def test_status_after_revoke_says_where_the_session_is(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.controller.request(None, None, "")
    w.controller.revoke()
    text = w.controller.status_after_end()
    assert " revoked at " in text and "Now connected as alice." in text and "\\jit request" in text


def test_the_waiting_credential_is_visible(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.controller.request(None, None, "")
    assert w.backend is not None and w.controller.waiting_lease() is None
    w.backend.not_renewable = True
    w.connector.transaction = True
    w.clock.advance(700)
    w.controller.renew(None, rotate=True)
    waiting = w.controller.waiting_lease()
    assert waiting is not None and waiting.username != w.connector.users[-1]


# -- a TTL capped at request -----------------------------------------------------------------------


def test_request_says_when_the_ttl_was_capped(tmp_path: Path) -> None:
    w = World(tmp_path, max_ttl=1800.0)
    message = w.controller.request(None, 86400 * 10, "")
    assert "(ttl capped at 30m by max_ttl 30m; asked 240h)" in message


def test_request_within_the_limit_says_nothing_of_caps(tmp_path: Path) -> None:
    w = World(tmp_path, max_ttl=1800.0)
    assert "capped" not in w.controller.request(None, 600, "")


# -- a renewal that changes nothing ------------------------------------------------------------------


def test_renew_that_moves_nothing_says_so_and_is_not_audited(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.controller.request(None, None, "")
    assert w.backend is not None
    w.backend.renew = lambda lease, ttl: lease.extended(lease.expires_at)  # type: ignore[method-assign]
    w.clock.advance(10)
    before = w.controller.lease
    message = w.controller.renew(60)
    assert before is not None and w.controller.lease is before
    assert message.startswith("Nothing to renew: valid until ")
    assert w.events() == ["request"]


def test_a_renewal_that_moves_the_expiry_is_still_a_renewal(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.controller.request(None, None, "")
    w.clock.advance(10)
    assert w.controller.renew(None).startswith("Renewed ")
    assert w.events() == ["request", "renew"]


# -- what a switch says ----------------------------------------------------------------------------


def test_second_request_says_the_replaced_lease_was_revoked(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.controller.request(None, None, "one")
    first = w.connector.users[-1]
    message = w.controller.request(None, None, "two")
    assert f"Revoked the previous lease {first}." in message


def test_switch_notes_are_said(tmp_path: Path) -> None:
    notes = ["Session settings carried over: statement_timeout.",
             "Left behind in the old session: temp tables t."]
    w = World(tmp_path, LoginConnector(notes=notes))
    message = w.controller.request(None, None, "")
    assert message.endswith(" ".join(notes))


@pytest.mark.parametrize("kind", ["rotate"])
def test_rotation_says_what_was_revoked_and_carried(tmp_path: Path, kind: str) -> None:
    w = World(tmp_path, LoginConnector(notes=["Session settings carried over: search_path."]))
    w.controller.request(None, None, "")
    old = w.connector.users[-1]
    assert w.backend is not None
    w.backend.not_renewable = True
    w.clock.advance(700)  # in the window: the new lease adds more than half a term
    message = w.controller.renew(None)
    assert message.startswith("Rotated to ") and f"Revoked the previous lease {old}." in message
    assert message.endswith("Session settings carried over: search_path.")


def test_a_cap_the_backend_already_reported_is_said_once(tmp_path: Path) -> None:
    profile = faulty_profile(max_ttl=1800.0)
    lease = Lease(profile="fake", backend="faulty", credentials=Credentials("jit_u", "pw"), issued_at=T0,
                  expires_at=T0 + 1800, warnings=("TTL capped at the server's max_ttl (30m)",))
    line = connected_line(lease, profile, 3600)
    assert line.count("capped") == 1 and line.endswith("(TTL capped at the server's max_ttl (30m)).")
