"""``\\jit request`` on the ``vault`` backend against a real OpenBao dev server, and its floor.

Subject: the JitShell (connected as the requester) runs ``\\jit request v`` and then
``select current_user`` as the new role.  Floor: one raw ``GET /v1/database/creds/ro``
on a ``requests.Session`` that is already connected (warm), one fresh SCRAM login as
the role OpenBao made, and the same statement.  OpenBao's own work (its CREATE ROLE on
its pooled connection) is in both.  Each round alternates which goes first; every lease
is revoked (untimed) through ``sys/leases/revoke``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg
import requests

from bench.common import Figure, Summary, per_round_ratios
from bench.request import new_shell, quiet, run, timed
from bench.world import World
from tests import openbao


def vault_figure(world: World, rounds: int) -> Figure | None:
    binary = openbao.bao_binary()
    if binary is None:
        return None
    server = openbao.start_bao(binary)
    try:
        openbao.configure_database(server, world.cluster)
        openbao.create_role(server, "ro", default_ttl="10m", max_ttl="1h")
        token = openbao.create_token(server, "jit-user", openbao.USER_POLICY)
        with open(world.config, "a", encoding="utf-8") as fh:
            c = world.cluster
            fh.write(f'\n[profiles.v]\nbackend = "vault"\nrole = "ro"\naddr = "{server.addr}"\n'
                     f'allow_http = true\nhost = "{c.host}"\nport = {c.port}\ndbname = "app"\n'
                     'renew = "never"\n')
        os.environ["VAULT_TOKEN"] = token
        return _measure(world, server, token, rounds)
    finally:
        server.stop()


def _measure(world: World, server: openbao.BaoServer, token: str, rounds: int) -> Figure:
    session = requests.Session()
    session.headers.update({"X-Vault-Token": token, "X-Vault-Request": "true"})
    session.get(f"{server.addr}/v1/sys/health", timeout=10)  # connected: the floor's session is warm
    shell = new_shell(world)
    subject: list[float] = []
    statement: list[float] = []
    floor: list[float] = []
    try:
        for r in range(-1, rounds):
            if r % 2 == 0:
                s, st = subject_once(shell)
                f = floor_once(world, server, session)
            else:
                f = floor_once(world, server, session)
                s, st = subject_once(shell)
            if r >= 0:
                subject.append(s)
                statement.append(st)
                floor.append(f)
    finally:
        with quiet():
            shell._jit_shutdown()
        session.close()
    ratio = Summary.of(per_round_ratios(subject, floor))
    return Figure("\\jit request on vault (OpenBao) + first statement / floor", ratio, "x", "<= 1.15x",
                  ratio.median <= 1.15, "python -m bench --only vault",
                  {"rounds": rounds, "subject_ms_median": Summary.of(subject).median * 1e3,
                   "floor_ms_median": Summary.of(floor).median * 1e3,
                   "pgcli_statement_ms_median": Summary.of(statement).median * 1e3,
                   "without_pgcli_statement_path": Summary.of(per_round_ratios(
                       [a - b for a, b in zip(subject, statement, strict=True)], floor)).__dict__,
                   "note": "later requests in one session (the backend's HTTP session is warm)"})


def subject_once(shell: Any) -> tuple[float, float]:
    """(request + first statement, pgcli's own time for the same statement right after)."""
    seconds = timed(lambda: (run(shell, "\\jit request v"), run(shell, "select current_user")))
    statement = timed(lambda: run(shell, "select current_user"))
    timed(lambda: run(shell, "\\jit revoke"))
    return seconds, statement


def floor_once(world: World, server: openbao.BaoServer, session: requests.Session) -> float:
    start = time.perf_counter()
    resp = session.get(f"{server.addr}/v1/database/creds/ro", timeout=10)
    resp.raise_for_status()
    body = resp.json()
    user, password = body["data"]["username"], body["data"]["password"]
    conn = psycopg.connect(world.cluster.conninfo("app", user=user, password=password))
    conn.execute("select current_user").fetchall()
    elapsed = time.perf_counter() - start
    conn.close()
    session.put(f"{server.addr}/v1/sys/leases/revoke", json={"lease_id": body["lease_id"]}, timeout=10)
    return elapsed
