"""The Controller against the real cluster: real roles, real connections, a fake clock only for time."""

from __future__ import annotations

import secrets
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from pgcli_jit.core.errors import ConnectionSwitchError, JitError, db_error_line
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config, parse_profile
from pgcli_jit.session.controller import EXPIRED, REVOKED, Controller
from pgcli_jit.session.manager import LeaseManager
from pgcli_jit.shell import session_state
from tests.conftest import end_jit_roles, live_jit_roles, postgres_profile_toml


class PsycopgConnector:
    """The Connector protocol over one plain psycopg connection (autocommit; BEGIN opens a transaction)."""

    def __init__(self, params: dict[str, str] | None, base: dict[str, str] | None = None) -> None:
        self.params: dict[str, str] = dict(params or base or {})
        self.previous: dict[str, str] | None = None
        self.active = False
        self.conn: psycopg.Connection[Any] | None = self._open(self.params) if params else None

    @staticmethod
    def _open(params: dict[str, str]) -> psycopg.Connection[Any]:
        return psycopg.connect(make_conninfo(**params), autocommit=True, connect_timeout=5)

    def in_transaction(self) -> bool:
        if self.conn is None or self.conn.closed:
            return False
        return self.conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    def switch(self, lease: Lease, overrides: dict[str, str]) -> list[str]:
        params = {**self.params, **overrides, "user": lease.username, "password": lease.credentials.password}
        state = session_state.capture(self.conn)
        try:
            new = self._open(params)
        except psycopg.Error as exc:
            raise ConnectionSwitchError(f"could not connect as {lease.username}: {db_error_line(exc)}",
                                        "the current connection was kept") from None
        if not self.active:
            self.previous = dict(self.params)
        old, self.conn, self.params, self.active = self.conn, new, params, True
        if old is not None:
            old.close()
        return session_state.apply(new, state)

    def previous_user(self) -> str | None:
        return self.previous.get("user") if self.previous else None

    def rotation_cost(self) -> list[str]:
        return session_state.lost_on_reconnect(session_state.capture(self.conn))

    def update_secret(self, lease: Lease) -> None:
        self.params["password"] = lease.credentials.password

    def restore(self) -> str | None:
        previous, self.previous, self.active = self.previous, None, False
        if not previous or "user" not in previous:
            self.close()
            return None
        new = self._open(previous)
        if self.conn is not None:
            self.conn.close()
        self.conn, self.params = new, previous
        return previous["user"]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.params.pop("password", None)

    def query(self, text: str) -> Any:
        assert self.conn is not None
        cur = self.conn.execute(text.encode())
        row = cur.fetchone() if cur.description else None
        return row[0] if row else None


class Harness:
    def __init__(self, cluster: Cluster, admin_dsn: str, tmp_path: Path, *, start_as_superuser: bool = True,
                 **profile_keys: object) -> None:
        self.cluster = cluster
        self.name = f"ctl_{secrets.token_hex(4)}"
        body = tomllib.loads(postgres_profile_toml(self.name, admin_dsn, cluster, **profile_keys))
        self.profile = parse_profile(self.name, body["profiles"][self.name], tmp_path / "config.toml")
        self.audit_path = tmp_path / "audit.jsonl"
        config = Config(tmp_path / "config.toml", MappingProxyType({self.name: self.profile}), None,
                        self.audit_path)
        self.clock = FakeClock(time.time())
        self.manager = LeaseManager(config, AuditLog(self.audit_path, clock=self.clock), "ctltest",
                                    clock=self.clock)
        base = {"host": cluster.host, "port": str(cluster.port), "dbname": "app"}
        initial = {**base, "user": cluster.superuser, "password": cluster.superpassword}
        self.connector = PsycopgConnector(initial if start_as_superuser else None, base)
        self.said: list[str] = []
        self.controller = Controller(self.manager, self.connector, self.said.append)
        self.leases: list[Lease] = []
        original_mint = self.manager.mint

        def mint(*args: Any, **kwargs: Any) -> Lease:
            lease = original_mint(*args, **kwargs)
            self.leases.append(lease)
            return lease

        self.manager.mint = mint  # type: ignore[method-assign]

    def roles(self) -> list[str]:
        """Names of the live JIT roles of this harness's profile."""
        return sorted(live_jit_roles(self.cluster, self.name))

    def user(self) -> str:
        return str(self.connector.query("select current_user"))

    def cleanup(self) -> None:
        self.controller.jobs.shutdown()
        self.connector.close()
        end_jit_roles(self.cluster, self.name)


@pytest.fixture
def make(cluster: Cluster, admin_dsn: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def factory(**kwargs: Any) -> Harness:
        h = Harness(cluster, admin_dsn, tmp_path / f"h{len(made)}", **kwargs)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.cleanup()


def test_request_switches_to_the_jit_role(make: Any) -> None:
    h = make(ttl="5m")
    assert h.user() == "postgres"
    message = h.controller.request(None, None, "INC-1 check")
    lease = h.controller.lease
    assert lease is not None and message.startswith(f"Connected as {lease.username} until ")
    assert h.user() == lease.username
    assert h.connector.query("select count(*) from accounts") == 2
    assert h.roles() == [lease.username]
    assert lease.expires_at == pytest.approx(h.clock() + 300)


def test_second_request_replaces_and_drops_the_first_role(make: Any) -> None:
    h = make()
    h.controller.request(None, None, "one")
    first = h.controller.lease
    h.controller.request(None, None, "two")
    second = h.controller.lease
    assert first is not None and second is not None and first.username != second.username
    assert h.user() == second.username
    assert h.roles() == [second.username]


def test_request_inside_a_transaction_is_refused_and_the_transaction_kept(make: Any) -> None:
    h = make()
    h.connector.query("begin")
    xid = h.connector.query("select pg_current_xact_id()::text")
    h.connector.query("create temp table t_keep (x int)")
    h.connector.query("insert into t_keep values (1)")
    with pytest.raises(JitError, match="transaction is open"):
        h.controller.request(None, None, "")
    assert h.controller.lease is None and h.leases == [] and h.roles() == []
    assert h.connector.in_transaction()
    assert h.connector.query("select pg_current_xact_id()::text") == xid
    h.connector.query("commit")
    assert h.connector.query("select count(*) from t_keep") == 1


def test_renew_extends_the_role(make: Any) -> None:
    h = make(ttl="2m")
    h.controller.request(None, None, "")
    lease = h.controller.lease
    h.clock.advance(90)
    message = h.controller.renew(None)
    renewed = h.controller.lease
    assert renewed is not None and lease is not None
    assert message.startswith(f"Renewed {lease.username} until ")
    assert renewed.username == lease.username and renewed.renewals == 1
    assert renewed.expires_at == pytest.approx(h.clock() + 120)
    with h.cluster.connect("app") as conn:
        row = conn.execute("select rolvaliduntil from pg_roles where rolname = %s",
                           (lease.username,)).fetchone()
    assert row is not None and row[0] is not None
    assert abs(row[0].timestamp() - time.time() - (renewed.expires_at - h.clock())) < 1
    assert h.user() == lease.username  # same connection, no reconnect


def test_renew_past_max_ttl_rotates_and_drops_the_old_role(make: Any) -> None:
    h = make(ttl="1m", max_ttl="1m")
    h.controller.request(None, None, "INC-5")
    old = h.controller.lease
    assert old is not None
    h.clock.advance(30)  # asking for another minute now would pass max_ttl
    message = h.controller.renew(None)
    new = h.controller.lease
    assert new is not None and new.username != old.username
    assert message.startswith(f"Rotated to {new.username}") and "max TTL" in message
    assert h.user() == new.username
    assert h.roles() == [new.username]
    events = [line for line in h.audit_path.read_text().splitlines() if '"rotate"' in line]
    assert len(events) == 1


def test_rotation_waits_for_the_open_transaction(make: Any) -> None:
    h = make(ttl="1m", max_ttl="1m")
    h.controller.request(None, None, "")
    old = h.controller.lease
    assert old is not None
    h.connector.query("begin")
    xid = h.connector.query("select pg_current_xact_id()::text")
    h.connector.query("create temp table t_rot (x int)")
    h.connector.query("insert into t_rot values (1)")
    h.clock.advance(30)
    message = h.controller.renew(None, rotate=True)
    assert "when the open transaction ends" in message
    assert h.controller.lease is old and h.user() == old.username
    h.controller.apply_pending()  # still inside the transaction: nothing happens
    assert h.controller.lease is old
    assert h.connector.query("select pg_current_xact_id()::text") == xid
    h.connector.query("commit")
    assert h.connector.query("select count(*) from t_rot") == 1
    h.controller.apply_pending()
    new = h.controller.lease
    assert new is not None and new.username != old.username
    assert any(s.startswith(f"Rotated to {new.username}") for s in h.said)
    assert h.user() == new.username
    assert h.roles() == [new.username]


def test_revoke_restores_the_previous_identity(make: Any) -> None:
    h = make()
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    message = h.controller.revoke()
    assert message == f"Revoked {lease.username} ({h.name}); back to postgres."
    assert h.user() == "postgres"
    assert h.controller.lease is None and h.roles() == []
    assert h.controller.gate() is None
    assert h.controller.revoke() == "No JIT lease to revoke."


def test_revoke_after_two_requests_goes_back_to_the_first_identity(make: Any) -> None:
    h = make()
    h.controller.request(None, None, "")
    h.controller.request(None, None, "")
    h.controller.revoke()
    assert h.user() == "postgres"


def test_revoke_without_a_previous_identity_ends_access(make: Any) -> None:
    h = make(start_as_superuser=False)
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None and h.user() == lease.username
    message = h.controller.revoke()
    assert "no identity to return to" in message
    assert h.connector.conn is not None and h.connector.conn.closed
    assert h.controller.gate() == REVOKED
    assert h.controller.access.word() == "revoked"
    assert h.roles() == []


def test_revoke_inside_a_transaction_is_refused(make: Any) -> None:
    h = make()
    h.controller.request(None, None, "")
    h.connector.query("begin")
    with pytest.raises(JitError, match="transaction is open"):
        h.controller.revoke()
    assert h.controller.lease is not None and h.connector.in_transaction()
    h.connector.query("rollback")


def test_expiry_closes_the_connection_and_blocks_statements(make: Any) -> None:
    h = make(ttl="2m")
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    assert h.controller.gate() is None
    h.clock.set(lease.expires_at + 1)
    assert (h.controller.gate() or "").startswith(EXPIRED + ", or \\jit revoke to return to postgres")
    assert any(said.startswith(EXPIRED) for said in h.said)
    assert h.connector.conn is not None and h.connector.conn.closed
    assert "password" not in h.connector.params
    assert h.controller.access.word() == "expired"
    assert h.controller.shutdown() is None  # waits for the background release
    assert h.controller.lease is None and h.roles() == []
    assert '"expire"' in h.audit_path.read_text()


def test_request_after_expiry_reopens_access(make: Any) -> None:
    h = make(ttl="2m")
    h.controller.request(None, None, "")
    h.clock.advance(121)
    assert (h.controller.gate() or "").startswith(EXPIRED)
    h.controller.request(None, None, "again")
    assert h.controller.gate() is None
    lease = h.controller.lease
    assert lease is not None and h.user() == lease.username


def test_real_short_ttl_expires(make: Any) -> None:
    """One real-seconds check: the server itself refuses the role after VALID UNTIL."""
    h = make(ttl="2s")
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    time.sleep(2.5)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(h.cluster.conninfo("app", user=lease.username, password=lease.credentials.password))


def test_failing_switch_keeps_the_old_connection_and_drops_the_unused_role(make: Any) -> None:
    h = make()
    real_open = h.connector._open

    def refuse_jit_logins(params: dict[str, str]) -> Any:
        if params.get("user", "").startswith("jit_"):  # the broker worked; the new login fails
            raise psycopg.OperationalError("connection refused (injected)")
        return real_open(params)

    h.connector._open = refuse_jit_logins  # type: ignore[method-assign]
    with pytest.raises(ConnectionSwitchError, match="could not connect"):
        h.controller.request(None, None, "")
    assert h.user() == "postgres"
    assert h.controller.lease is None
    assert len(h.leases) == 1
    assert h.roles() == []


def test_shutdown_revokes(make: Any) -> None:
    h = make()
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    assert h.controller.shutdown() == f"Revoked {lease.username} ({h.name})."
    assert h.roles() == []
    assert h.connector.conn is not None and h.connector.conn.closed


def test_shutdown_keeps_the_lease_with_revoke_on_exit_false(make: Any) -> None:
    h = make(revoke_on_exit=False)
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    message = h.controller.shutdown()
    assert message is not None and message.startswith(f"Kept {lease.username} until ")
    assert h.roles() == [lease.username]
    psycopg.connect(h.cluster.conninfo("app", user=lease.username,
                                       password=lease.credentials.password)).close()


def test_shutdown_without_a_lease(make: Any) -> None:
    assert make().controller.shutdown() is None


def test_password_never_in_audit_file_or_server_log(make: Any) -> None:
    h = make(ttl="1m", max_ttl="1m")
    h.controller.request(None, None, "INC-9 audit")
    h.clock.advance(30)
    assert h.controller.renew(None).startswith("Rotated")
    h.controller.revoke()
    assert len(h.leases) == 2
    audit = h.audit_path.read_text()
    log = h.cluster.server_log()
    for lease in h.leases:
        assert lease.username in audit and lease.username in log
        assert lease.credentials.password not in audit
        assert lease.credentials.password not in log


# -- rotations that wait ------------------------------------------------------------------------------


def _tick(h: Harness) -> None:
    """What the shell's idle ticker does every second, waiting for any renewal it started."""
    h.controller.step()
    h.controller._renewals.settle()


def test_waiting_rotation_is_not_minted_again_every_tick(make: Any) -> None:
    h = make(ttl="3m", max_ttl="3m", renew="auto")
    h.controller.request(None, None, "")
    h.connector.query("begin")
    h.clock.advance(150)  # inside the window; max_ttl reached, so renewal means rotation
    for _ in range(4):
        _tick(h)
    assert len(h.roles()) == 2  # the current lease and exactly one waiting replacement
    assert len(h.leases) == 2
    assert h.controller.handover.rotation() is not None
    assert any("reconnect when the open transaction ends" in s for s in h.said)
    h.connector.query("rollback")


def test_shutdown_discards_a_waiting_rotation(make: Any) -> None:
    h = make(ttl="1m", max_ttl="1m")
    h.controller.request(None, None, "")
    h.connector.query("begin")
    h.clock.advance(30)
    assert "when the open transaction ends" in h.controller.renew(None)
    assert len(h.leases) == 2
    h.controller.shutdown()
    assert h.roles() == []


def test_failed_waiting_rotation_does_not_break_the_gate(make: Any) -> None:
    h = make(ttl="2m", max_ttl="2m")
    h.controller.request(None, None, "")
    old = h.controller.lease
    assert old is not None
    h.connector.query("begin")
    h.clock.advance(30)
    assert "when the open transaction ends" in h.controller.renew(None, rotate=True)
    with h.cluster.connect("app") as conn:  # the replacement can no longer log in
        conn.execute("select jit.revoke(%s)", (h.leases[-1].username,))
        conn.execute("select jit.finish(%s)", (h.leases[-1].username,))
    h.connector.query("commit")
    assert h.controller.gate() is None  # the statement still runs on the current lease
    assert h.controller.lease is old and h.user() == old.username


def test_a_rotation_that_would_drop_a_temp_table_is_offered_not_done(make: Any) -> None:
    """At the hard limit, \\jit renew says what new credentials would cost and mints nothing;
    the toolbar offers them (F6) and --rotate takes them."""
    h = make(ttl="1m", max_ttl="1m")
    h.controller.request(None, None, "")
    old = h.controller.lease
    assert old is not None
    h.connector.query("create temp table t_keep (x int)")
    h.clock.advance(45)
    message = h.controller.renew(None)
    assert message.startswith(f"{old.username} cannot be extended") and "drop temp table t_keep" in message
    assert "--rotate" in message and h.controller.lease is old and h.roles() == [old.username]
    assert h.controller.offer() == "new credentials"
    assert h.controller.renew(None, rotate=True).startswith("Rotated to ")
    assert h.controller.lease is not old and h.controller.offer() is None


def test_a_renewal_never_shortens_the_lease(make: Any) -> None:
    h = make(ttl="30m", max_ttl="1h")
    h.controller.request(None, None, "")
    old = h.controller.lease
    assert old is not None
    message = h.controller.renew(90)
    assert message.startswith("Nothing to renew") and "already valid for longer than 1m30s" in message
    assert h.controller.lease is old and h.roles() == [old.username]


def test_the_offer_in_prompt_mode_is_said_once_and_taken_with_f5(make: Any) -> None:
    h = make(ttl="1m", max_ttl="10m", renew="prompt")
    h.controller.request(None, None, "INC-8")
    h.controller.step()
    assert h.controller.offer() is None  # fresh: not yet
    h.clock.advance(45)
    h.connector.query("begin")
    h.controller.step()
    h.controller.step()
    offers = [s for s in h.said if s.startswith(f"Lease for {h.name} ends at ")]
    assert len(offers) == 1 and "F6 or \\jit renew extends it" in offers[0]
    assert "COMMIT before" in offers[0]  # a transaction is open: its deadline is said with the offer
    assert h.controller.offer() == "renew"
    old = h.controller.lease
    assert h.controller.accept_offer() is None  # started in the background
    h.controller.settle()
    assert h.controller.lease is not None and h.controller.lease.expires_at > old.expires_at
    assert any(s.startswith("Renewed ") for s in h.said)
    assert h.controller.offer() is None


def test_a_declined_offer_names_the_open_transaction_again_in_the_final_part(make: Any) -> None:
    """The offer stands (not taken) into the final part: the open transaction's deadline is
    said once more there, once, while the toolbar still offers the renewal."""
    h = make(ttl="1m", max_ttl="10m", renew="prompt")
    h.controller.request(None, None, "INC-8")
    lease = h.controller.lease
    assert lease is not None
    h.connector.query("begin")
    h.clock.advance(42)  # the window (the last 20 s) is open, the final part (10 s) not yet
    h.controller.step()
    assert [s for s in h.said if s.startswith(f"{lease.username} ends at ")] == []
    h.clock.advance(10)
    h.controller.step()
    h.controller.step()
    finals = [s for s in h.said if s.startswith(f"{lease.username} ends at ")]
    assert len(finals) == 1 and "A transaction is open: COMMIT before" in finals[0]
    assert h.controller.offer() == "renew"


def test_expiry_says_when_it_ends_an_open_transaction(make: Any) -> None:
    h = make(ttl="1m", renew="never")
    h.controller.request(None, None, "INC-9")
    h.connector.query("begin")
    h.clock.advance(61)
    assert (h.controller.gate() or "").startswith(EXPIRED)
    assert any("the open transaction was rolled back" in s for s in h.said)
