"""The pending state through the Backend interface: the postgres broker and the http protocol
(``202 {"request_id", "poll_after"}``), against the real cluster and the test broker."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgcli_jit.backends.base import ApprovalPending, LeaseRequest, PendingRequest
from pgcli_jit.backends.http import HttpBackend
from pgcli_jit.backends.postgres.backend import PostgresBackend
from pgcli_jit.core.errors import BackendError, RequestClosed
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.session.config import parse_profile
from tests.brokers import http_broker
from tests.conftest import REQUESTER, can_login, postgres_profile_toml
from tests.test_approvals_server import PROFILE, people, set_profile  # noqa: F401

TOKEN = "tok-approvals-0123456789"
TOKEN_ENV = "PGCLI_JIT_TEST_HTTP_TOKEN"


def ask(backend: PostgresBackend | HttpBackend) -> PendingRequest:
    with pytest.raises(ApprovalPending) as info:
        backend.request(LeaseRequest(ttl=60, reason="INC-42", requester=REQUESTER))
    return info.value.pending


# -- postgres ---------------------------------------------------------------------------


@pytest.fixture
def pg(cluster: Cluster, people: None) -> Iterator[PostgresBackend]:  # noqa: F811
    body = tomllib.loads(postgres_profile_toml(PROFILE, None, cluster))["profiles"][PROFILE]
    set_profile(cluster)  # after postgres_profile_toml, which declares the profile without approvers
    backend = PostgresBackend(parse_profile(PROFILE, body, Path("config.toml")))
    yield backend
    backend.close()


def bob(cluster: Cluster, query: str, *params: object) -> None:
    with psycopg.connect(cluster.conninfo("app", user="bob", password=""), autocommit=True) as conn:
        conn.execute(query, params)


def test_postgres_pending_then_granted(cluster: Cluster, pg: PostgresBackend) -> None:
    pending = ask(pg)
    assert pending.approvers == "jit_leads" and pending.secret and "secret" not in repr(pending)
    assert isinstance(pg.poll(pending), PendingRequest)
    bob(cluster, "SELECT jit.approve(%s, 'ok')", int(pending.request_id))
    lease = pg.poll(pending)
    assert isinstance(lease, Lease) and can_login(cluster, lease)
    assert lease.expires_at - lease.issued_at == pytest.approx(60, abs=2)  # from issue, as asked
    pg.revoke(lease)


def test_postgres_denied_and_cancelled(cluster: Cluster, pg: PostgresBackend) -> None:
    pending = ask(pg)
    bob(cluster, "SELECT jit.deny(%s, 'not during the freeze')", int(pending.request_id))
    with pytest.raises(RequestClosed) as info:
        pg.poll(pending)
    assert (info.value.state, info.value.decided_by, info.value.note) == (
        "denied", "bob", "not during the freeze")
    other = ask(pg)
    pg.cancel(other)
    with pytest.raises(RequestClosed) as closed:
        pg.poll(other)
    assert closed.value.state == "cancelled"


def test_postgres_approver_side(cluster: Cluster, pg: PostgresBackend) -> None:
    pending = ask(pg)
    assert pg.waiting_for_me() == []  # alice's own request is never hers to decide
    with pytest.raises(BackendError, match="is your own"):
        pg.decide(int(pending.request_id), True, "")
    pg.cancel(pending)


# -- http ---------------------------------------------------------------------------------


def test_postgres_doorbell_rings_on_a_decision_and_only_approvers_listen(
        cluster: Cluster, pg: PostgresBackend) -> None:
    """The ring comes from the server's commit of bob's decision, on a connection of alice's
    own login; ``approves_any`` is what decides whether an idle session listens at all."""
    door = pg.doorbell()
    try:
        assert door.wait(0.1) is True  # a fresh connection: a ring may have been missed
        assert door.wait(0.2) is False
        pending = ask(pg)
        assert door.wait(5.0) is True  # the request itself rang
        bob(cluster, "SELECT jit.approve(%s, 'ok')", int(pending.request_id))
        assert door.wait(5.0) is True
        with cluster.connect("app") as conn:
            listening = conn.execute(
                "SELECT usename FROM pg_stat_activity WHERE query = 'LISTEN jit_requests'").fetchall()
        assert ("alice",) in listening
    finally:
        door.close()
    assert pg.approves_any() is True  # alice is in jit_leads too (she may not approve her own)
    with psycopg.connect(cluster.conninfo("app", user="dave", password=""), autocommit=True) as conn:
        assert conn.execute("SELECT jit.approves_any()").fetchone() == (False,)  # a requester only


@pytest.fixture
def broker(admin_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[http_broker.Broker]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with http_broker.running(admin_dsn, TOKEN) as b:
        b.need_approval = True
        yield b


def web(broker: http_broker.Broker) -> HttpBackend:
    return HttpBackend(parse_profile("web", {"backend": "http", "url": broker.url, "token_env": TOKEN_ENV,
                                             "allow_http": True}, Path("config.toml")))


def test_http_202_then_credentials(cluster: Cluster, broker: http_broker.Broker) -> None:
    backend = web(broker)
    pending = ask(backend)
    assert (pending.request_id, pending.poll_after, pending.approvers) == ("r1", 0.2, "leads")
    assert isinstance(backend.poll(pending), PendingRequest)
    broker.waiting["r1"]["state"] = "approved"
    lease = backend.poll(pending)
    assert isinstance(lease, Lease) and can_login(cluster, lease)
    backend.revoke(lease)


@pytest.mark.parametrize(("state", "says"), [("denied", "not during the freeze"),
                                             ("timed_out", "not decided within 1h")])
def test_http_closed_requests(broker: http_broker.Broker, state: str, says: str) -> None:
    backend = web(broker)
    pending = ask(backend)
    broker.waiting[pending.request_id]["state"] = state
    with pytest.raises(RequestClosed) as info:
        backend.poll(pending)
    assert info.value.state == state and says in info.value.note and TOKEN not in str(info.value)


def test_http_cancel_and_a_bad_202(broker: http_broker.Broker) -> None:
    backend = web(broker)
    pending = ask(backend)
    backend.cancel(pending)
    assert broker.waiting[pending.request_id]["state"] == "cancelled"
    with pytest.raises(RequestClosed):
        backend.poll(pending)
    broker.force["/credentials"] = (202, {"poll_after": 1})
    with pytest.raises(BackendError, match="without a request_id"):
        backend.request(LeaseRequest(ttl=60, reason="", requester=REQUESTER))
