"""Whole processes: ``pgcli-jit -c 'select 1'`` against ``pgcli -c 'select 1'``, and idle CPU.

Start-up: pairs of runs, baseline and subject alternating which goes first; wall
time (perf_counter around the child) and CPU time (the child's user+system from
``os.wait4``).  The ratio is the median of per-pair subject/baseline ratios.

Idle: both shells run at once in pseudo-terminals, at their prompts, over the same
window; CPU from ``/proc/PID/stat`` (utime+stime, all threads) at its start and
end.  pgcli-jit holds a lease (``--jit``), so its 1 Hz countdown is ticking.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence

import pexpect

from bench.common import Figure, Summary, per_round_ratios, rotated
from bench.world import PROFILE, STATIC_USER, World, executable

QUERY = "select 1"


def run_once(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process; it must exit 0."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def where(world: World, user: str) -> list[str]:
    c = world.cluster
    return ["-h", c.host, "-p", str(c.port), "-U", user, "-d", "app", "-w"]


def rounds_of(world: World, runs: dict[str, list[str]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Every command in ``runs`` once per round, who goes first rotating each round; two
    unrecorded warm-up rounds.  Returns {name: {"wall": [...], "cpu": [...]}}."""
    env = world.env()
    out: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in runs}
    for r in range(-2, rounds):
        for name in rotated(list(runs), r):
            wall, cpu = run_once(runs[name], env)
            if r >= 0:
                out[name]["wall"].append(wall)
                out[name]["cpu"].append(cpu)
    return out


#: pgcli as pgcli-jit runs it (the same gc.freeze() after its imports): separates what
#: pgcli-jit adds from what that one line saves, since stock pgcli pays for a full GC pass
PGCLI_FROZEN = "import gc, sys; from pgcli import main; gc.freeze(); sys.argv[0] = 'pgcli'; main.cli()"


def pgcli_jit_argv(source: str | None) -> list[str]:
    """The installed console script, or (``--source DIR``) the same entry point run from another
    checkout, e.g. a ``git worktree`` of an older commit, to compare before and after."""
    if source is None:
        return [executable("pgcli-jit")]
    code = f"import sys; sys.path.insert(0, {source!r}); from pgcli_jit.shell.cli import main; main()"
    return [sys.executable, "-c", code]


def startup_figures(world: World, rounds: int, source: str | None = None) -> list[Figure]:
    jit = pgcli_jit_argv(source)
    base = [*where(world, STATIC_USER), "-c", QUERY]
    runs = {"pgcli": [executable("pgcli"), *base],
            "pgcli_frozen": [sys.executable, "-c", PGCLI_FROZEN, *base],
            "static": [*jit, *base],
            "leased": [*jit, "--jit", PROFILE, "-w", "-c", QUERY]}
    s = rounds_of(world, runs, rounds)
    figures = []
    for name, key, target, limit in (
        ("pgcli-jit -c 'select 1' (static password) / pgcli -c", "static", "<= 1.03x", 1.03),
        ("pgcli-jit --jit PROFILE -c 'select 1' / pgcli -c", "leased", "<= 1.15x", 1.15),
    ):
        wall = Summary.of(per_round_ratios(s[key]["wall"], s["pgcli"]["wall"]))
        cpu = Summary.of(per_round_ratios(s[key]["cpu"], s["pgcli"]["cpu"]))
        like = Summary.of(per_round_ratios(s[key]["wall"], s["pgcli_frozen"]["wall"]))
        figures.append(Figure(name, wall, "x", target, wall.median <= limit,
                              "python -m bench --only startup", {
                                  "rounds": rounds, "cpu_ratio": cpu.__dict__,
                                  "wall_ratio_to_pgcli_with_the_same_gc_freeze": like.__dict__,
                                  "source": source or "installed",
                                  "median_wall_ms": {k: Summary.of(v["wall"]).median * 1e3
                                                     for k, v in s.items()}}))
    return figures


# -- idle CPU ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Shell:
    """A child shell in a pty; its output is read (and ``ESC[6n`` answered) so it never blocks."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, dimensions=(40, 160), timeout=20)
        self.output = b""

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = self.child.read_nonblocking(65536, timeout=min(left, 0.2))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return
            self.output = (self.output + data)[-20000:]
            for _ in range(data.count(b"\x1b[6n")):
                self.child.send("\x1b[1;1R")

    def wait_for(self, needle: bytes, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while needle not in self.output:
            if time.monotonic() > deadline or not self.child.isalive():
                raise RuntimeError(f"never saw {needle!r}: {self.output[-500:]!r}")
            self.pump(0.1)

    def close(self) -> None:
        if self.child.isalive():
            self.child.sendcontrol("d")
            self.pump(1.0)
        self.child.close(force=True)


def idle_window(shells: Sequence[Shell], seconds: float) -> tuple[float, dict[Shell, float]]:
    """Both shells idle over the same window, their output read; (seconds, CPU seconds each)."""
    start = {s: cpu_seconds(s.child.pid) for s in shells}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for shell in shells:
            shell.pump(0.25)
    elapsed = time.monotonic() - t0
    return elapsed, {s: cpu_seconds(s.child.pid) - start[s] for s in shells}


def idle_figure(world: World, seconds: float) -> Figure:
    env = world.env(COLUMNS="160", LINES="40")
    base = Shell([executable("pgcli"), *where(world, STATIC_USER)], env)
    jit = Shell([executable("pgcli-jit"), "--jit", PROFILE, "-w"], env)
    try:
        for shell in (base, jit):
            shell.wait_for(b"app>")
        jit.wait_for(b"JIT bench as")
        base.pump(2.0)
        jit.pump(0.1)  # both settle (completion refresh) before the window opens
        elapsed, used = idle_window((base, jit), seconds)
    finally:
        base.close()
        jit.close()
    extra = (used[jit] - used[base]) / elapsed * 100
    value = Summary(extra, extra, extra)
    return Figure("idle CPU at the prompt, 1 Hz countdown: pgcli-jit - pgcli", value, "% of a core",
                  "<= +1% of one core", extra <= 1.0, "python -m bench --only idle", {
                      "window_s": round(elapsed, 1),
                      "pgcli_pct": used[base] / elapsed * 100, "pgcli_jit_pct": used[jit] / elapsed * 100,
                      "note": "one window, both shells measured over the same seconds; "
                              "/proc ticks are 10 ms"})
