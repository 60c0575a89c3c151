"""Approvals pushed: the approver's commit to the requester's switch, and what listening costs.

Latency: ``alice`` runs pgcli-jit in a pseudo-terminal and asks for a profile that needs one
approval; ``bench_lead`` approves over psycopg (autocommit: the call returns after the commit);
the clock runs from that return to the moment ``Approved by`` reaches alice's terminal, the
new connection made.  Its baseline, measured in the same run, is the floor of any push: a
bare psycopg connection that LISTENs on the same channel and hears the same commit.

Idle: an approver's session keeps one connection listening; its CPU at the prompt over a
window, against pgcli idle over the same window, as the idle figure of ``startup.py``.
"""

from __future__ import annotations

import statistics
import time

from bench.common import Figure, Summary
from bench.startup import Shell, idle_window, where
from bench.world import REQUESTER, World, executable

APPROVED = "bench_ok"
LEAD = "bench_lead"
LEADS = "jit_bench_leads"


def _setup(world: World) -> str:
    """The profile that needs one approval by ``jit_bench_leads``, its approver, a config for each."""
    with world.connect() as conn:
        conn.execute(f"CREATE ROLE {LEADS} NOLOGIN")
    world.make_login(LEAD, member_of=LEADS)
    world.declare_profile(APPROVED)
    with world.cluster.connect("app") as conn:
        conn.execute("SELECT jit.profile_set(%s, NULL, NULL, NULL, NULL, NULL, NULL, NULL, %s, 1,"
                     " '1 hour'::interval)", (APPROVED, LEADS))
    lead_config = world.home / "lead.toml"
    lead_config.write_text(world.config.read_text().replace(f'user = "{REQUESTER}"', f'user = "{LEAD}"')
                           + "\n" + world.profile_toml(APPROVED, user=f'"{LEAD}"'), encoding="utf-8")
    with open(world.config, "a", encoding="utf-8") as fh:
        fh.write("\n" + world.profile_toml(APPROVED))
    return str(lead_config)


def _pending_id(world: World, reason: str) -> int:
    with world.connect() as conn:
        row = conn.execute("SELECT id FROM jit_data.requests WHERE reason = %s", (reason,)).fetchone()
    assert row is not None
    return int(row[0])


def _floor(world: World, rounds: int) -> list[float]:
    """A bare LISTEN connection hearing a commit that rings the doorbell (a withdrawn request)."""
    seconds = []
    with world.connect(REQUESTER) as listener, world.connect(REQUESTER) as ringer:
        listener.execute("LISTEN jit_requests")
        for _ in range(rounds):
            start = time.perf_counter()
            ringer.execute("NOTIFY jit_requests")
            next(listener.notifies(timeout=5, stop_after=1))
            seconds.append(time.perf_counter() - start)
    return seconds


def latency_figure(world: World, rounds: int) -> Figure:
    env = world.env(COLUMNS="160", LINES="40")
    alice = Shell([executable("pgcli-jit"), *where(world, REQUESTER)], env)
    seconds: list[float] = []
    heard: list[bool] = []
    try:
        alice.wait_for(b"app>")
        with world.connect(LEAD) as lead:
            for i in range(rounds):
                reason = f"bench-{i}-{time.monotonic_ns()}"
                alice.output = b""
                alice.child.send(f"\\jit request {APPROVED} --reason {reason}\r")
                alice.wait_for(b"is waiting for approval")
                alice.pump(1.5)  # the bell is up and the first poll done: only a ring is fast
                heard.append(_listening(world, REQUESTER))
                alice.output = b""
                lead.execute("SELECT jit.approve(%s, 'bench')", (_pending_id(world, reason),))
                committed = time.perf_counter()
                while b"Approved by" not in alice.output:  # 5 ms steps: wait_for's are 100 ms
                    if time.perf_counter() - committed > 20:
                        raise RuntimeError(f"never saw the switch: {alice.output[-300:]!r}")
                    alice.pump(0.005)
                seconds.append(time.perf_counter() - committed)
                alice.pump(0.3)
    finally:
        alice.close()
        world.end_all()
    floor = _floor(world, max(rounds, 5))
    ms = [s * 1000 for s in seconds]
    value = Summary.of(ms)
    return Figure("approval commit to the requester's switch (pgcli-jit, ms)", value, "ms",
                  "<= 500 ms", value.median <= 500 and all(heard), "python -m bench --only push", {
                      "rounds": rounds, "samples_ms": [round(v, 1) for v in ms],
                      "requester_listening_every_round": all(heard),
                      "floor_listen_ms": round(statistics.median(floor) * 1000, 2),
                      "ratio_to_floor": round(value.median / (statistics.median(floor) * 1000), 1),
                      "note": "the floor is a bare LISTEN connection hearing a commit; the switch "
                              "includes the poll, a new SCRAM login and carrying session state over"})


def idle_listening_figure(world: World, seconds: float, lead_config: str) -> Figure:
    env = world.env(COLUMNS="160", LINES="40")
    base = Shell([executable("pgcli"), *where(world, LEAD)], env)
    lead = Shell([executable("pgcli-jit"), *where(world, LEAD)], {**env, "PGCLI_JIT_CONFIG": lead_config})
    try:
        for shell in (base, lead):
            shell.wait_for(b"app>")
        deadline = time.monotonic() + 20
        while not _listening(world, LEAD) and time.monotonic() < deadline:
            base.pump(0.25)
            lead.pump(0.25)
        listening = _listening(world, LEAD)
        elapsed, used = idle_window((base, lead), seconds)
    finally:
        base.close()
        lead.close()
    extra = (used[lead] - used[base]) / elapsed * 100
    return Figure("idle CPU of an approver's session listening for requests: pgcli-jit - pgcli",
                  Summary(extra, extra, extra), "% of a core", "<= +1% of one core",
                  extra <= 1.0 and listening,
                  "python -m bench --only push", {
                      "window_s": round(elapsed, 1), "listening": listening,
                      "pgcli_pct": used[base] / elapsed * 100, "pgcli_jit_pct": used[lead] / elapsed * 100})


def _listening(world: World, user: str) -> bool:
    with world.connect() as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
                           " AND query = 'LISTEN jit_requests'", (user,)).fetchone()
    return bool(row and row[0])


def push_figures(world: World, rounds: int, idle_seconds: float) -> list[Figure]:
    lead_config = _setup(world)
    return [latency_figure(world, rounds), idle_listening_figure(world, idle_seconds, lead_config)]

