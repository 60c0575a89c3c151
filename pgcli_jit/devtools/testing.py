"""The test kit shipped with the package: a fake clock and the backend contract.

Third-party backends run the same contract as the built-in ones::

    from pgcli_jit.testing import BackendContract

    class TestMyBackend(BackendContract):
        def make_backend(self): return MyBackend(profile)
        def can_login(self, lease): return try_connecting(lease)

Only pytest is needed to use it; the module imports nothing from it at import time.
"""

from __future__ import annotations

import threading
from abc import abstractmethod

from pgcli_jit.backends.base import Backend, LeaseRequest
from pgcli_jit.core.errors import BackendError, NotRenewable
from pgcli_jit.core.lease import Lease


class FakeClock:
    """A clock that moves only when told to; thread-safe so background renewals can read it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        with self._lock:
            self._now = now


class BackendContract:
    """What every backend promises.  Subclass, implement the two hooks, run with pytest.

    ``can_login`` answers whether the credentials of a lease open a session
    *now*; backends whose credentials cannot be checked here (a cloud token
    signed offline) return None and the login assertions are skipped.
    """

    ttl: float = 60.0
    #: how far a real backend's clock may disagree with the test's
    tolerance: float = 5.0

    @abstractmethod
    def make_backend(self) -> Backend: ...

    @abstractmethod
    def can_login(self, lease: Lease) -> bool | None: ...

    def request(self, backend: Backend, ttl: float | None = None) -> Lease:
        return backend.request(LeaseRequest(ttl=ttl or self.ttl, reason="contract", requester="tester"))

    def test_request_returns_working_credentials(self) -> None:
        backend = self.make_backend()
        lease = self.request(backend)
        try:
            assert lease.username and lease.credentials.password
            assert lease.backend == backend.name
            assert lease.profile == backend.profile.name
            assert lease.issued_at <= lease.expires_at
            assert lease.expires_at - lease.issued_at <= self.ttl + self.tolerance
            assert self.can_login(lease) in (True, None)
        finally:
            backend.revoke(lease)

    def test_repr_hides_the_password(self) -> None:
        backend = self.make_backend()
        lease = self.request(backend)
        try:
            assert lease.credentials.password not in repr(lease)
            assert lease.credentials.password not in str(lease.audit_fields())
        finally:
            backend.revoke(lease)

    def test_every_request_mints_a_new_secret(self) -> None:
        backend = self.make_backend()
        first, second = self.request(backend), self.request(backend)
        try:
            assert first.credentials.password != second.credentials.password
        finally:
            backend.revoke(first)
            backend.revoke(second)

    def test_renew_extends_or_says_it_cannot(self) -> None:
        backend = self.make_backend()
        lease = self.request(backend)
        try:
            try:
                renewed = backend.renew(lease, self.ttl)
            except NotRenewable:
                assert not backend.can_renew or not lease.renewable or lease.max_expires_at
                return
            assert renewed.username == lease.username
            assert renewed.expires_at >= lease.expires_at - self.tolerance
            assert renewed.renewals == lease.renewals + 1
            assert self.can_login(renewed) in (True, None)
        finally:
            backend.revoke(lease)

    def test_revoke_ends_access(self) -> None:
        backend = self.make_backend()
        lease = self.request(backend)
        backend.revoke(lease)
        assert self.can_login(lease) in (False, None)

    def test_lookup_keeps_the_identity(self) -> None:
        backend = self.make_backend()
        lease = self.request(backend)
        try:
            assert backend.lookup(lease).username == lease.username
        finally:
            backend.revoke(lease)

    def test_errors_are_backend_errors(self) -> None:
        """Renewing a revoked lease fails with a BackendError, never a raw exception."""
        backend = self.make_backend()
        lease = self.request(backend)
        backend.revoke(lease)
        try:
            backend.renew(lease, self.ttl)
        except BackendError as exc:
            assert lease.credentials.password not in str(exc)
        else:
            assert not backend.can_renew or self.can_login(lease) is None
