"""An operator's revoke reason reaches the requester: ``jit.my_leases()`` carries it for the
requester's own lease (and no one else's), after the role is dropped, and the postgres
backend's lookup, which the shell asks when the server ends its session, says it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgcli_jit.admin import main
from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.postgres.backend import PostgresBackend
from pgcli_jit.core.errors import NotRenewable
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.session.config import parse_profile
from tests.conftest import REQUESTER, make_login, postgres_profile_toml

REASON = "INC-41 laptop stolen"


def backend(cluster: Cluster) -> PostgresBackend:
    body = tomllib.loads(postgres_profile_toml("rr", None, cluster))["profiles"]["rr"]
    return PostgresBackend(parse_profile("rr", body, Path("config.toml")))


def operator(cluster: Cluster) -> str:
    make_login(cluster, "rr_ops", member_of="jit_admin")
    return f"host={cluster.host} port={cluster.port} dbname=app user=rr_ops"


def mine(cluster: Cluster, user: str, name: str) -> list[dict[str, object]]:
    with psycopg.connect(f"host={cluster.host} port={cluster.port} dbname=app user={user}",
                         autocommit=True) as conn:
        return [row for (row,) in conn.execute("SELECT jit.my_leases()") if row["rolname"] == name]


def test_the_requester_reads_the_operators_reason_after_the_drop(cluster: Cluster) -> None:
    ops, pg = operator(cluster), backend(cluster)
    lease: Lease = pg.request(LeaseRequest(ttl=60, reason="INC-40 look", requester=REQUESTER))
    done = CliRunner().invoke(main, ["revoke", lease.username, "--reason", REASON, "--dsn", ops])
    assert done.exit_code == 0 and "its role is dropped" in done.output, done.output
    rows = mine(cluster, REQUESTER, lease.username)
    assert len(rows) == 1 and rows[0]["status"] == "ended" and rows[0]["end_event"] == "revoke"
    assert rows[0]["revoke_reason"] == REASON and rows[0]["revoked_by"] == "operator"
    assert rows[0]["reason"] == "INC-40 look"   # the requester's own reason is kept apart
    with pytest.raises(NotRenewable, match=f"was revoked by an operator: {REASON}$"):
        pg.lookup(lease)
    make_login(cluster, "rr_other", member_of="jit_requester")
    assert mine(cluster, "rr_other", lease.username) == []   # nobody else's business


def test_a_requesters_own_revoke_has_no_operator_reason(cluster: Cluster) -> None:
    pg = backend(cluster)
    lease = pg.request(LeaseRequest(ttl=60, reason="INC-42 look", requester=REQUESTER))
    pg.revoke(lease)
    rows = mine(cluster, REQUESTER, lease.username)
    assert len(rows) == 1 and "revoke_reason" not in rows[0]
    with pytest.raises(NotRenewable, match=r"has ended \(revoke\)$"):
        pg.lookup(lease)
