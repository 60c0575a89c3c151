"""What pgcli-jit adds to every statement typed at the prompt, against pgcli itself.

Three shells in this process, each connected once and kept for the whole run:

- pgcli's own ``PGCli`` as the static login ``bench_user`` (the baseline);
- ``JitShell`` as the same login, ``\\jit`` never used: what every pgcli-jit user pays
  (the "permission denied" watch: ``PGExecute.run`` wrapped for the command);
- ``JitShell`` on a live lease: also the gate before the statement (pending work, expiry,
  the server's end of the lease), the statement watchdog's thread, the offer bookkeeping.

Each runs ``execute_command("select 1")`` (pgcli's full path: execute, format, print to
memory) ``STATEMENTS`` times per round; who goes first rotates every round.  The figure is
the per-round ratio of the median statement time against pgcli's.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import Figure, Summary, per_round_ratios, rotated
from bench.request import close_shell, new_shell, quiet, run
from bench.world import PROFILE, REQUESTER, STATIC_USER, World

STATEMENTS = 200


def _median_statement(shell: Any, n: int) -> float:
    times = []
    with quiet():
        for _ in range(n):
            start = time.perf_counter()
            run(shell, "select 1")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def statement_figures(world: World, rounds: int, n: int = STATEMENTS) -> list[Figure]:
    pgcli = new_shell(world, STATIC_USER, plain_pgcli=True)
    plain = new_shell(world, STATIC_USER)
    leased = new_shell(world, REQUESTER)
    shells = {"pgcli": pgcli, "jit_plain": plain, "jit_lease": leased}
    samples: dict[str, list[float]] = {k: [] for k in shells}
    try:
        with quiet():
            run(leased, f"\\jit request {PROFILE}")
        for r in range(-1, rounds):  # round -1 warms every path up and is not recorded
            for name in rotated(list(shells), r):
                value = _median_statement(shells[name], n)
                if r >= 0:
                    samples[name].append(value)
    finally:
        for shell in (plain, leased):
            close_shell(shell)
        if pgcli.pgexecute is not None and pgcli.pgexecute.conn is not None:
            pgcli.pgexecute.conn.close()
        world.end_all()
    plain_ratio = Summary.of(per_round_ratios(samples["jit_plain"], samples["pgcli"]))
    lease_ratio = Summary.of(per_round_ratios(samples["jit_lease"], samples["pgcli"]))
    us = {k: round(Summary.of(v).median * 1e6, 1) for k, v in samples.items()}
    cmd = "python -m bench --only statement"
    details = {"rounds": rounds, "statements_per_round": n, "median_us_per_statement": us}
    return [
        Figure("a statement at the prompt, \\jit never used / pgcli", plain_ratio, "x", "<= 1.05x",
               plain_ratio.median <= 1.05, cmd, details),
        Figure("a statement at the prompt, on a live lease / pgcli", lease_ratio, "x", "<= 1.25x",
               lease_ratio.median <= 1.25, cmd, details),
    ]
