"""Session logs: what logging a lease's statements costs, and how fast the collector reads.

* **Logging cost**: a statement-heavy lease (N ``SELECT 1`` through psycopg, each one parse,
  bind and execute on the wire) on a profile with ``log_statements = all`` (every statement
  and its duration written to the jsonlog), against the same on a profile with ``none``: the
  same server, the same round, who goes first alternating.  The ratio is what a lease pays
  for being logged.
* **Collector throughput**: one ``jit.collect_session_logs()`` pass over what each round
  wrote, in log lines read per second (every line of the file is parsed; the lease's are kept).
* **A byte that is not UTF-8**: a pass over a file of N jsonlog lines with one such byte
  (what a pre-authentication client can put in the log through its user name) against a pass
  over the same file clean, same round, order alternating: the parsing is linear either way.

Its own cluster (``logging_collector``, jsonlog, ``log_statement = none`` cluster-wide), so
nothing else the bench does lands in the log it reads.
"""

from __future__ import annotations

import json
import secrets
import time

import psycopg
from psycopg import sql

from bench.common import Figure, Summary, per_round_ratios
from pgcli_jit import server
from pgcli_jit.backends.postgres.scram import scram_verifier
from pgcli_jit.devtools.cluster import Cluster, start_cluster

Conn = psycopg.Connection[tuple[object, ...]]
SETTINGS = {"logging_collector": "on", "log_destination": "'jsonlog'", "log_directory": "'log'",
            "log_connections": "on", "log_disconnections": "on", "log_statement": "'none'"}


def _login(conn: Conn, name: str, member_of: str) -> str:
    password = secrets.token_urlsafe(18)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
        sql.Identifier(name), sql.Literal(scram_verifier(conn, password)), sql.Identifier(member_of)))
    return password


def _setup(cluster: Cluster) -> dict[str, str]:
    cluster.execute("CREATE DATABASE app")
    with cluster.connect("app") as conn:
        server.apply(conn)
        conn.execute("CREATE ROLE bench_read NOLOGIN; GRANT bench_read TO jit_owner WITH ADMIN OPTION")
        passwords = {"bench_alice": _login(conn, "bench_alice", "jit_requester"),
                     "bench_collector": _login(conn, "bench_collector", "jit_collector")}
        for name, mode in (("logged", "all"), ("quiet", "none")):
            conn.execute("SELECT jit.profile_set(%s, ARRAY['bench_read'], '1 hour', '1 hour',"
                         " 'jit_requester', false, '', '', NULL, NULL, NULL, 1000, %s)", (name, mode))
    return passwords


def _lease(cluster: Cluster, passwords: dict[str, str], profile: str) -> Conn:
    password = secrets.token_urlsafe(24)
    with psycopg.connect(cluster.conninfo("app", user="bench_alice", password=passwords["bench_alice"]),
                         autocommit=True) as conn:
        row = conn.execute("SELECT jit.request(%s, NULL, 'bench', %s)",
                           (profile, scram_verifier(conn, password))).fetchone()
    assert row is not None
    answer = dict(row[0])  # type: ignore[call-overload]
    return psycopg.connect(cluster.conninfo("app", user=str(answer["rolname"]), password=password),
                           autocommit=True)


def _statements(conn: Conn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        conn.execute("SELECT 1")
    return time.perf_counter() - started


def _synthetic_log(n: int, bad: bool) -> bytes:
    """n jsonlog lines of no lease (parsed, none kept); the middle one's user has a byte that
    is not UTF-8 when bad."""
    lines = [(json.dumps({"timestamp": "2026-12-05 09:00:00.000 UTC", "user": "nobody", "pid": 1,
                          "session_id": f"bench.{i}", "line_num": 1, "error_severity": "LOG",
                          "message": f"statement: SELECT {i}"}) + "\n").encode() for i in range(n)]
    if bad:
        lines[n // 2] = lines[n // 2].replace(b"nobody", b"evil\xff\xfe\xc3")
    return b"".join(lines)


def _pass_over(cluster: Cluster, collector: Conn, name: str, content: bytes) -> float:
    path = cluster.datadir / "log" / name
    path.write_bytes(content)
    try:
        started = time.perf_counter()
        collector.execute("SELECT jit.collect_session_logs()")
        return time.perf_counter() - started
    finally:
        path.unlink()


def bad_byte_seconds(cluster: Cluster, collector: Conn, rounds: int,
                     n: int) -> tuple[list[float], list[float]]:
    """Seconds of a collector pass over n lines with one byte that is not UTF-8, and clean."""
    bad_s: list[float] = []
    clean_s: list[float] = []
    for r in range(rounds):
        for bad in ((True, False) if r % 2 == 0 else (False, True)):
            took = _pass_over(cluster, collector, f"zz-bench-{r}-{int(bad)}.json", _synthetic_log(n, bad))
            (bad_s if bad else clean_s).append(took)
    return bad_s, clean_s


def session_logs_figures(rounds: int, statements: int = 10000) -> list[Figure]:
    cluster = start_cluster(settings=SETTINGS)
    try:
        passwords = _setup(cluster)
        logged_s: list[float] = []
        quiet_s: list[float] = []
        rates: list[float] = []
        lines_read: list[int] = []
        collector = psycopg.connect(cluster.conninfo("app", user="bench_collector",
                                                     password=passwords["bench_collector"]), autocommit=True)
        with collector:
            collector.execute("SELECT jit.collect_session_logs()")   # the set-up's own lines
            for r in range(rounds):
                order = ("logged", "quiet") if r % 2 == 0 else ("quiet", "logged")
                for profile in order:
                    with _lease(cluster, passwords, profile) as conn:
                        _statements(conn, 50)   # warm
                        took = _statements(conn, statements)
                    (logged_s if profile == "logged" else quiet_s).append(took)
                time.sleep(0.5)   # the logging collector has written the round's lines
                started = time.perf_counter()
                row = collector.execute("SELECT jit.collect_session_logs()").fetchone()
                took = time.perf_counter() - started
                assert row is not None
                result = dict(row[0])  # type: ignore[call-overload]
                lines_read.append(int(result["lines"]))
                rates.append(int(result["lines"]) / took)
            bad_s, clean_s = bad_byte_seconds(cluster, collector, rounds, 30000)
        ratios = per_round_ratios(logged_s, quiet_s)
        return [
            Figure(f"lease running {statements} statements, log_statements all / none", Summary.of(ratios),
                   "x", "measured (no target)", None, "python -m bench --only session_logs",
                   {"logged_s": logged_s, "quiet_s": quiet_s, "statements": statements}),
            Figure("session log collector: log lines read per second", Summary.of(rates), "lines/s",
                   "measured (no target)", None, "python -m bench --only session_logs",
                   {"lines_per_pass": lines_read}),
            Figure("collector pass over 30,000 lines with one byte that is not UTF-8 / clean",
                   Summary.of(per_round_ratios(bad_s, clean_s)), "x", "measured (no target)", None,
                   "python -m bench --only session_logs", {"bad_s": bad_s, "clean_s": clean_s}),
        ]
    finally:
        cluster.stop()
