"""What JIT access costs a user at ``\\jit request`` time, as a ratio to opening a connection.

Baseline: opening a scram-sha-256 psycopg connection as an existing role,
which every pgcli user pays anyway.  Candidates, with the ``postgres``
backend against a throwaway cluster and a least-privilege broker created
the way ``pgcli-jit-admin setup`` (and tests/conftest.py) create it:

- request: ``PostgresBackend.request`` (a fresh broker connection, a
  client-side SCRAM verifier, CREATE ROLE + COMMENT in one transaction);
- connect as the new role, and request + connect together (what the user waits for);
- renew: ``PostgresBackend.renew`` (ALTER ROLE VALID UNTIL + COMMENT);
- revoke: ``PostgresBackend.revoke`` (NOLOGIN, terminate, reassign, drop),
  after closing the JIT connection, in the order ``\\jit revoke`` uses.

Every operation is paired with a baseline connect, before it in even rounds
and after it in odd ones; each round's ratios are against the median of that
round's five baseline connects.

Run from the repository root: ``python -m bench.request [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from bench.common import Summary, format_seconds, per_round_ratios, table
from pgcli_jit.backends import pg_roles
from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.postgres import PostgresBackend
from pgcli_jit.cluster import Cluster, start_cluster
from pgcli_jit.config import parse_profile
from pgcli_jit.lease import Lease

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

BROKER = "jit_broker"
USER = "bench_user"
GRANTS = {"jit_read": ["pg_read_all_data"]}
BROKER_PW_ENV = "PGCLI_JIT_BENCH_BROKER_PW"
REQUEST = LeaseRequest(ttl=600.0, reason="bench", requester="bench")
RENEW_TTL = 1200.0  # longer than the request, so renew really runs ALTER ROLE

#: (key, label) in report order; "baseline" is the denominator of every ratio.
OPERATIONS = [
    ("baseline", "connect as an existing role (baseline)"),
    ("request", "request: broker connect + CREATE ROLE + COMMENT"),
    ("connect_new", "connect as the new role"),
    ("request_connect", "request + connect as the new role"),
    ("renew", "renew: ALTER ROLE VALID UNTIL + COMMENT"),
    ("revoke", "revoke: NOLOGIN + terminate + reassign + drop"),
    ("verifier", "client-side SCRAM verifier alone (in request)"),
]


@dataclass
class World:
    """The cluster, the backend under test, and the roles the benchmark made."""

    cluster: Cluster
    backend: PostgresBackend
    user_password: str
    helper: Conn  # a superuser connection whose pgconn computes SCRAM verifiers
    outstanding: list[Lease] = field(default_factory=list)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def prepare(cluster: Cluster) -> World:
    """Broker and grant roles as ``pg_roles.setup_statements`` prints them, plus a plain login role."""
    broker_pw, user_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    with cluster.connect() as conn:
        for stmt in pg_roles.setup_statements(BROKER, GRANTS):
            conn.execute(stmt)
        pg_roles.set_password(conn, BROKER, broker_pw)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE jit_read").format(sql.Identifier(USER)))
        pg_roles.set_password(conn, USER, user_pw)
    os.environ[BROKER_PW_ENV] = broker_pw
    body = {
        "backend": "postgres", "grant": ["jit_read"], "admin_password_env": BROKER_PW_ENV,
        "admin_dsn": f"host={cluster.host} port={cluster.port} dbname=postgres user={BROKER}",
    }
    profile = parse_profile("bench", body, Path(__file__))
    return World(cluster, PostgresBackend(profile), user_pw, cluster.connect())


def connect(world: World, user: str, password: str) -> Conn:
    return psycopg.connect(world.cluster.conninfo(user=user, password=password))


def one_round(world: World, baseline_first: bool) -> dict[str, float]:
    """One of each operation, each paired with a baseline connect.

    The baseline goes before its operation in one round and after it in the
    next, so neither side always follows the same neighbour.  Connections are
    closed outside the timings.
    """
    base: list[float] = []

    def baseline() -> None:
        seconds, conn = timed(lambda: connect(world, USER, world.user_password))
        conn.close()
        base.append(seconds)

    def step(op: Callable[[], T], prelude: Callable[[], object] = lambda: None) -> tuple[float, T]:
        if baseline_first:
            baseline()
        prelude()  # untimed, right before the operation
        result = timed(op)
        if not baseline_first:
            baseline()
        return result

    got: dict[str, float] = {}
    got["request"], lease = step(lambda: world.backend.request(REQUEST))
    world.outstanding.append(lease)
    got["connect_new"], jit_conn = step(lambda: connect(world, lease.username, lease.credentials.password))
    got["renew"], lease = step(lambda: world.backend.renew(lease, RENEW_TTL))
    got["verifier"], _ = step(lambda: pg_roles.scram_verifier(world.helper, lease.username, "x" * 32))
    # \jit revoke switches the session back first, then revokes at the backend
    got["revoke"], _ = step(lambda: world.backend.revoke(lease), prelude=jit_conn.close)
    world.outstanding.pop()  # the lease as requested; revoke goes by role name
    got["request_connect"] = got["request"] + got["connect_new"]
    got["baseline"] = statistics.median(base)
    return got


def run(world: World, rounds: int) -> dict[str, list[float]]:
    one_round(world, True)  # warm-up: first connections, catalog caches; not recorded
    samples: dict[str, list[float]] = {key: [] for key, _ in OPERATIONS}
    for r in range(rounds):
        for key, seconds in one_round(world, baseline_first=r % 2 == 0).items():
            samples[key].append(seconds)
    return samples


def cleanup(world: World) -> None:
    """Revoke whatever a failed round left behind, then close the helper connection."""
    for lease in world.outstanding:
        try:
            world.backend.revoke(lease)
        except Exception as exc:  # the cluster is thrown away next; say it, don't mask the first error
            print(f"cleanup: could not revoke {lease.username}: {exc}", file=sys.stderr)
    left = pg_roles.jit_roles(world.helper)
    if left:
        print(f"cleanup: {len(left)} JIT role(s) still exist: {[r.name for r in left]}", file=sys.stderr)
    world.helper.close()


def report(samples: dict[str, list[float]], rounds: int, server: str) -> str:
    rows = []
    for key, label in OPERATIONS:
        ratios = Summary.of(per_round_ratios(samples[key], samples["baseline"]))
        rows.append([label, ratios.ratio(), ratios.ratio_spread(),
                     format_seconds(Summary.of(samples[key]).median)])
    return "\n".join([
        "Request: JIT operations (postgres backend) vs opening a connection as an existing role",
        f"throwaway PostgreSQL {server}, scram-sha-256, log_statement=all; {rounds} rounds;",
        "ratio = median of per-round operation / that round's median baseline connect.",
        "",
        table(["operation", "ratio", "spread (min..max)", "median time"], rows),
        "",
        "median time is the absolute median per operation, for context only.",
    ])


def server_version(world: World) -> str:
    v = world.helper.info.server_version
    return f"{v // 10000}.{v % 10000}"


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m bench.request", description=summary)
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds (20)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print("starting a throwaway PostgreSQL cluster ...", file=sys.stderr)
    cluster = start_cluster()
    try:
        world = prepare(cluster)
        try:
            samples = run(world, args.rounds)
            version = server_version(world)
        finally:
            cleanup(world)
    finally:
        cluster.stop()
    print(report(samples, args.rounds, version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
