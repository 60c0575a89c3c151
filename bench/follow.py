"""``audit --follow``: from an audit row's commit to its line on the follower's stdout.

The subject is the real command, ``pgcli-jit-admin audit --follow --json``, run as an
operator login (``bench_ops``, in ``jit_admin``) with its default 30 s net: a line well under
that came from the doorbell.  Each round the superuser commits one audit row through the
broker's own ``jit._audit`` (autocommit: the call returns after the commit) and the clock runs
from that return to the moment the line is read from the pipe.  The floor, timed from the
same commit in the same round, is a bare psycopg connection LISTENing on ``jit_audit``.
"""

from __future__ import annotations

import statistics
import subprocess
import threading
import time

from bench.common import Figure, Summary
from bench.world import World, executable

OPS = "bench_ops"


class _Stamped:
    """The perf_counter time at which each line (or ring) arrived, filled by a thread."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cond = threading.Condition()

    def add(self) -> None:
        with self.cond:
            self.times.append(time.perf_counter())
            self.cond.notify_all()

    def nth(self, n: int, timeout: float = 20.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.times) > n, timeout):
                raise RuntimeError(f"bench: follow: no line {n} within {timeout:.0f}s")
            return self.times[n]


def latency_figure(world: World, rounds: int) -> Figure:
    world.make_login(OPS, member_of="jit_admin")
    c = world.cluster
    proc = subprocess.Popen([executable("pgcli-jit-admin"), "audit", "--follow", "--json", "--dsn",
                             f"host={c.host} port={c.port} dbname=app user={OPS}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=world.env())
    lines, rings = _Stamped(), _Stamped()
    stop = threading.Event()
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr

    def read_lines() -> None:
        for _ in stdout:
            lines.add()

    def hear_rings() -> None:
        with world.connect() as listener:
            listener.execute("LISTEN jit_audit")
            listening.set()
            while not stop.is_set():
                for _ in listener.notifies(timeout=0.5):
                    rings.add()

    listening = threading.Event()
    threading.Thread(target=read_lines, daemon=True).start()
    threading.Thread(target=hear_rings, daemon=True).start()
    follow_ms: list[float] = []
    floor_ms: list[float] = []
    call_ms: list[float] = []
    try:
        if "audit --follow: after" not in stderr.readline() or not listening.wait(10):
            raise RuntimeError("bench: follow: the follower or the floor's listener did not start")
        with world.connect() as writer:
            for i in range(rounds):
                called = time.perf_counter()
                writer.execute("SELECT jit._audit('bench', 'bench', NULL, 'alice', %s, NULL)", (f"r{i}",))
                call_ms.append((time.perf_counter() - called) * 1000)
                follow_ms.append((lines.nth(i) - called) * 1000)
                floor_ms.append((rings.nth(i) - called) * 1000)
                time.sleep(0.3)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)
    value = Summary.of(follow_ms)
    floor = statistics.median(floor_ms)
    return Figure("audit row commit to its audit --follow line (ms)", value, "ms", "<= 1000 ms",
                  value.high <= 1000, "python -m bench --only follow", {
                      "rounds": rounds, "samples_ms": [round(v, 1) for v in follow_ms],
                      "floor_listen_ms": round(floor, 2),
                      "committing_call_ms": round(statistics.median(call_ms), 2),
                      "ratio_to_floor": round(value.median / floor, 1) if floor > 0 else None,
                      "net_s": 30,
                      "note": "the floor is a bare LISTEN connection hearing the same commit; the "
                              "line includes the follower's chain_audit call, the read of the "
                              "chained row and the write to the pipe"})


def follow_figures(world: World, rounds: int) -> list[Figure]:
    return [latency_figure(world, rounds)]
