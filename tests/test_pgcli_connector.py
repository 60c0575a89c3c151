"""PgcliConnector over pgcli's real PGExecute and a real cluster (no terminal needed)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType, SimpleNamespace

import pytest
from pgcli.pgexecute import PGExecute

from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.postgres.backend import PostgresBackend
from pgcli_jit.core.errors import ConnectionSwitchError
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.shell.jitshell import PgcliConnector
from tests.test_postgres_backend import make_backend


@pytest.fixture
def jit(cluster: Cluster) -> tuple[PostgresBackend, Lease]:
    backend = make_backend(cluster)
    lease = backend.request(LeaseRequest(ttl=60, reason="connector", requester="alice"))
    yield backend, lease
    backend.revoke(lease)


def connector_over(executor: PGExecute) -> PgcliConnector:
    shell = SimpleNamespace(pgexecute=executor, after_reconnect=lambda: None, jit_say=lambda _t: None)
    return PgcliConnector(shell)  # type: ignore[arg-type]


@pytest.mark.parametrize("with_dsn", [False, True])
def test_switch_restore_and_close_forget_every_password(cluster: Cluster, jit: tuple[PostgresBackend, Lease],
                                                        with_dsn: bool) -> None:
    _backend, lease = jit
    if with_dsn:  # pgcli folds the password into the DSN when it was given one
        ex = PGExecute(dsn=cluster.conninfo("app"))
    else:
        ex = PGExecute("app", cluster.superuser, cluster.superpassword, cluster.host, str(cluster.port))
    connector = connector_over(ex)
    connector.switch(lease, {"dbname": "app"})
    assert ex.user == lease.username and ex.dbname == "app"
    assert connector.restore() == cluster.superuser
    connector.switch(lease, {})
    connector.close()
    assert ex.conn.closed
    remembered = repr(ex._conn_params)
    assert lease.credentials.password not in remembered
    assert "password" not in remembered


def test_failed_switch_keeps_the_connection(cluster: Cluster, jit: tuple[PostgresBackend, Lease]) -> None:
    _backend, lease = jit
    ex = PGExecute("app", cluster.superuser, cluster.superpassword, cluster.host, str(cluster.port))
    connector = connector_over(ex)
    with pytest.raises(ConnectionSwitchError, match="kept"):
        connector.switch(lease, {"dbname": "no_such_db"})
    assert ex.user == cluster.superuser
    assert next(iter(ex.run("select current_user")))[1].fetchall() == [(cluster.superuser,)]


def test_in_transaction_sees_open_and_failed_transactions(cluster: Cluster) -> None:
    ex = PGExecute("app", cluster.superuser, cluster.superpassword, cluster.host, str(cluster.port))
    connector = connector_over(ex)
    assert not connector.in_transaction()
    list(ex.run("begin"))
    assert connector.in_transaction()
    list(ex.run("select 1/0", exception_formatter=str))
    assert connector.in_transaction()  # failed, still open: never rolled back for the user
    list(ex.run("rollback"))
    assert not connector.in_transaction()


def test_while_restoring_the_requesters_parameters_are_never_the_leases(
        cluster: Cluster, jit: tuple[PostgresBackend, Lease]) -> None:
    """The worker and the doorbell thread ask as the session's own login (``previous``, else
    pgcli's parameters) at any moment; a thread switch may fall between any two lines of
    the restore, so at every line boundary they must read the requester's, never the lease's."""
    _backend, lease = jit
    ex = PGExecute("app", cluster.superuser, cluster.superpassword, cluster.host, str(cluster.port))
    connector = connector_over(ex)
    connector.switch(lease, {"dbname": "app"})

    def asking_user() -> object:  # what JitShell._requester_login reads
        params = connector.previous
        if params is None and not connector.active:
            params = ex._conn_params
        return (params or {}).get("user")

    seen: list[object] = []

    def trace(frame: FrameType, event: str, _arg: object) -> Callable[..., object] | None:
        if frame.f_code is not PgcliConnector.restore.__code__:
            return None
        if event in ("line", "return"):
            seen.append(asking_user())
        return trace

    sys.settrace(trace)
    try:
        assert connector.restore() == cluster.superuser
    finally:
        sys.settrace(None)
    assert len(seen) > 5 and set(seen) == {cluster.superuser}
