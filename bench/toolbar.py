"""What the JIT countdown adds to pgcli's bottom toolbar, as a ratio to pgcli's own toolbar.

pgcli-jit redraws the toolbar every second while idle (``refresh_interval``)
and prompt_toolkit redraws it on every key press, so its cost is paid all
the time.  Baseline: pgcli's ``create_toolbar_tokens_func(pgcli)()``.
Candidate: the same tokens plus ``pgcli_jit.shell.toolbar.segment(...)`` for a live
lease, concatenated the way ``JitPGCli._build_cli`` does.  One lease, one
phase at a time (fresh, window, final minute, expired), with the clock fixed
so each phase is hit exactly.

Run from the repository root: ``python -m bench.toolbar [--rounds N] [--calls N]``.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pgcli.pgtoolbar import create_toolbar_tokens_func

from bench.common import Figure, Summary, format_seconds, per_round_ratios, rotated, table
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.policy import Phase, phase, windows
from pgcli_jit.shell.toolbar import Tokens, segment

T0 = 1_800_000_000.0
TTL = 900.0  # a 15-minute lease: renewal window from 10:00, final minute from 14:00


class _Completer:
    smart_completion = True


class _PGExecute:
    def failed_transaction(self) -> bool:
        return False

    def valid_transaction(self) -> bool:
        return False


class _Refresher:
    def is_refreshing(self) -> bool:
        return False


class StandInPGCli:
    """Exactly what pgcli's toolbar reads, at pgcli's defaults; emacs mode, so no ``get_app()``."""

    completer = _Completer()
    multi_line = False
    multiline_mode = "psql"
    vi_mode = False
    explain_mode = False
    pgexecute = _PGExecute()
    completion_refresher = _Refresher()


LEASE = Lease(profile="demo", backend="postgres", credentials=Credentials("jit_alice_x7f2", "unused"),
              issued_at=T0, expires_at=T0 + TTL, lease_id="jit_alice_x7f2")
_W = windows(LEASE, None)
#: the time the fixed clock shows in each phase, and the phase it must be in.
PHASES: dict[str, tuple[float, Phase]] = {
    "fresh": (T0 + 60, Phase.FRESH),
    "window": ((_W.renew_at + _W.final_at) / 2, Phase.WINDOW),
    "final minute": (_W.final_at + 30, Phase.FINAL),
    "expired": (_W.expires_at + 5, Phase.EXPIRED),
}


@dataclass(frozen=True)
class PhaseResult:
    name: str
    ratios: Summary
    baseline: Summary  # seconds per call
    segment: Summary  # seconds per call
    sample: Tokens


def callables(now: float) -> dict[str, Callable[[], Tokens]]:
    """Baseline, candidate and the segment alone, for a clock that always says ``now``."""
    pgcli_tokens = create_toolbar_tokens_func(StandInPGCli())

    def clock() -> float:
        return now

    def jit_segment() -> Tokens:
        return segment(LEASE, None, clock(), ended="")

    def candidate() -> Tokens:
        return [*pgcli_tokens(), *jit_segment()]

    return {"baseline": pgcli_tokens, "candidate": candidate, "segment": jit_segment}


def per_call(fn: Callable[[], Tokens], calls: int) -> float:
    """Seconds per call over a batch of ``calls`` (timeit: one timer read per batch, GC off)."""
    return timeit.Timer(fn).timeit(calls) / calls


def measure_phase(name: str, now: float, rounds: int, calls: int) -> PhaseResult:
    fns = callables(now)
    samples: dict[str, list[float]] = {key: [] for key in fns}
    for fn in fns.values():  # warm-up, not recorded
        per_call(fn, calls // 10 or 1)
    for r in range(rounds):
        for key in rotated(list(fns), r):
            samples[key].append(per_call(fns[key], calls))
    ratios = per_round_ratios(samples["candidate"], samples["baseline"])
    return PhaseResult(name, Summary.of(ratios), Summary.of(samples["baseline"]),
                       Summary.of(samples["segment"]), fns["segment"]())


def check_phases() -> None:
    """The fixed clocks must land in the phases they are named after, or the numbers mean nothing."""
    for name, (now, expected) in PHASES.items():
        got = phase(LEASE, None, now)
        if got is not expected:
            raise SystemExit(f"bench bug: phase {name!r} is {got.value} at now={now}")


def report(results: Sequence[PhaseResult], rounds: int, calls: int) -> str:
    rows = [[r.name, r.ratios.ratio(), r.ratios.ratio_spread(), format_seconds(r.segment.median),
             format_seconds(r.baseline.median), repr(r.sample[0][1]) if r.sample else "(none)"]
            for r in results]
    headers = ["phase", "ratio", "spread (min..max)", "segment/call", "pgcli/call", "segment text"]
    return "\n".join([
        "Toolbar: pgcli's tokens + JIT segment (candidate) vs pgcli's tokens (baseline)",
        f"{rounds} rounds x {calls} calls per phase; baseline, candidate and segment alone",
        "alternate who goes first each round; ratio = median of per-round candidate/baseline.",
        "",
        table(headers, rows),
        "",
        "segment/call and pgcli/call are medians of absolute per-call times, for context only.",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m bench.toolbar", description=summary)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per phase (15)")
    parser.add_argument("--calls", type=int, default=20000, help="calls per timed batch (20000)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    check_phases()
    results = [measure_phase(name, now, args.rounds, args.calls) for name, (now, _) in PHASES.items()]
    print(report(results, args.rounds, args.calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def toolbar_figure(rounds: int, calls: int) -> Figure:
    """The slowest phase's median per-call time of the segment alone, in µs (target: 20 µs)."""
    check_phases()
    results = [measure_phase(name, now, rounds, calls) for name, (now, _) in PHASES.items()]
    worst = max(results, key=lambda r: r.segment.median)
    micro = Summary(worst.segment.median * 1e6, worst.segment.low * 1e6, worst.segment.high * 1e6)
    return Figure("toolbar segment per redraw (slowest phase)", micro, "µs", "<= 20 µs median",
                  micro.median <= 20, "python -m bench --only toolbar", {
                      "phase": worst.name, "rounds": rounds, "calls": calls,
                      "per_phase_us": {r.name: r.segment.median * 1e6 for r in results},
                      "ratio_to_pgcli_toolbar": {r.name: r.ratios.median for r in results}})
