"""A fault-injecting backend for lease-logic tests.

Only faults and time are faked here: the backend mints leases from a
:class:`~pgcli_jit.devtools.testing.FakeClock`, and can be told to fail, hang, hand
back an already-expired lease or refuse to renew.  Everything that talks to a
real database uses the real ``postgres`` backend instead.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from pathlib import Path
from typing import ClassVar

from pgcli_jit.backends.base import Backend, LeaseRequest
from pgcli_jit.core.clock import Clock
from pgcli_jit.core.errors import BackendError, NotRenewable
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.profile import Profile

_counter = itertools.count(1)


class FaultyBackend(Backend):
    """A backend whose every operation can be made to fail, block or misbehave on demand.

    ``fail_request`` / ``fail_renew`` / ``fail_revoke``: raise BackendError.
    ``not_renewable``: renew raises NotRenewable (the rotation path).
    ``expired_request`` / ``expired_renew``: return a lease that has already ended.
    ``renew_gate``: renew blocks until the event is set (for race tests);
    ``renew_entered`` is set when a renew call is inside the backend.
    """

    name: ClassVar[str] = "faulty"

    def __init__(self, profile: Profile, *, clock: Clock) -> None:
        super().__init__(profile, clock=clock)
        self.fail_request = False
        self.fail_renew = False
        self.fail_revoke = False
        self.not_renewable = False
        self.expired_request = False
        self.expired_renew = False
        self.new_secret_on_renew = False
        self.renew_gate: threading.Event | None = None
        self.renew_entered = threading.Event()
        self.requests: list[Lease] = []
        self.renew_calls: list[Lease] = []
        self.revoked: list[Lease] = []
        self._calls_lock = threading.Lock()

    def request(self, req: LeaseRequest) -> Lease:
        if self.fail_request:
            raise BackendError("broker refused", backend=self.name, profile=self.profile.name)
        now = self.clock()
        ttl = self.effective_ttl(req.ttl)
        n = next(_counter)
        lease = Lease(
            profile=self.profile.name, backend=self.name,
            credentials=Credentials(f"jit_fake_{n}", secrets.token_urlsafe(18)),
            issued_at=now - 2 * ttl if self.expired_request else now,
            expires_at=now - ttl if self.expired_request else now + ttl,
            lease_id=f"fake/creds/{n}", reason=req.reason, requester=req.requester,
        )
        self.requests.append(lease)
        return lease

    def renew(self, lease: Lease, ttl: float | None) -> Lease:
        with self._calls_lock:
            self.renew_calls.append(lease)
        self.renew_entered.set()
        if self.renew_gate is not None:
            assert self.renew_gate.wait(10), "renew_gate was never opened"
        if self.not_renewable:
            raise NotRenewable("max TTL reached", backend=self.name, profile=self.profile.name)
        if self.fail_renew:
            raise BackendError("renew refused", backend=self.name, profile=self.profile.name)
        now = self.clock()
        if self.expired_renew:
            return lease.extended(now - 1)
        changes = {}
        if self.new_secret_on_renew:
            changes["credentials"] = Credentials(lease.username, secrets.token_urlsafe(18))
        return lease.extended(now + self.effective_ttl(ttl), **changes)

    def revoke(self, lease: Lease) -> None:
        self.revoked.append(lease)
        if self.fail_revoke:
            raise BackendError("revoke refused", backend=self.name, profile=self.profile.name)


def faulty_profile(name: str = "fake", **keys: object) -> Profile:
    """A profile for the faulty backend (built directly: it is not an installed entry point)."""
    fields: dict[str, object] = {"name": name, "backend": FaultyBackend.name, "ttl": 900.0,
                                 "source": Path("config.toml")}
    fields.update(keys)
    return Profile(**fields)  # type: ignore[arg-type]


class RecordingConnector:
    """Records what the controller asks of the connection; faults and time are all it fakes."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.users: list[str] = []
        self.closed = 0
        self.transaction = False
        #: what a reconnect would drop (temp tables, prepared statements): a test sets it
        self.cost: list[str] = []

    def in_transaction(self) -> bool:
        return self.transaction

    def rotation_cost(self) -> list[str]:
        return list(self.cost)

    def switch(self, lease: Lease, overrides: dict[str, str]) -> list[str]:
        self.secrets.append(lease.credentials.password)
        self.users.append(lease.username)
        return []

    def update_secret(self, lease: Lease) -> None:
        self.secrets.append(lease.credentials.password)

    def restore(self) -> str | None:
        return None

    def previous_user(self) -> str | None:
        return None

    def close(self) -> None:
        self.closed += 1
