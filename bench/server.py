"""The server side at scale: the reaper over N expired leases, and 50 concurrent requesters.

Reaper: N leases are requested with a 1-second TTL (N = 100, 1,000), a few of them
with an open session, and once all have expired one ``reaper.one_pass`` (what
``pgcli-jit-admin reap`` runs: ``jit.expire_due()`` then ``jit.finish_ended()``) is
timed.  Linear in N means the ms per lease stays flat from 100 to 1,000.

Concurrency: 50 threads, each its own requester connection (warm) as ``alice``, each
requests a lease and logs in with it once, all released together by a barrier; the
latency of each is compared with the same work done by 1 requester alone (the same
number of samples, one at a time).  Ratio: p95 of the 50 / p95 of the 1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import psycopg

from bench.common import Figure, Summary, percentile
from bench.world import PROFILE, REQUESTER, STATIC_USER, Conn, World
from pgcli_jit.admin import reaper
from pgcli_jit.backends.postgres.backend import JIT_CONNINFO, scram

WITH_SESSIONS = 5


def request_and_login(world: World, warm: Conn, ttl: float | None = None) -> tuple[str, Conn]:
    password = scram.new_password()
    verifier = scram.scram_verifier(warm, password)
    row = warm.execute("SELECT jit.request(%s, make_interval(secs => %s), '', %s)",
                       (PROFILE, ttl, verifier)).fetchone()
    assert row is not None and row[0].get("rolname"), row
    role = str(row[0]["rolname"])
    conn = psycopg.connect(world.cluster.conninfo("app", user=role, password=password, **JIT_CONNINFO),
                           autocommit=True)
    conn.execute("select 1")
    return role, conn


def reap_once(world: World, n: int) -> tuple[float, int]:
    """Seconds for one reaper pass over ``n`` expired leases; and how many it ended."""
    sessions: list[Conn] = []
    with world.connect(REQUESTER) as warm:
        for i in range(n):
            _role, conn = request_and_login(world, warm, ttl=1.0)
            if i < WITH_SESSIONS:
                sessions.append(conn)  # kept open: the reaper must terminate it
            else:
                conn.close()
    time.sleep(1.5)
    try:
        with world.connect() as admin:
            start = time.perf_counter()
            outcomes = reaper.one_pass(admin)
            elapsed = time.perf_counter() - start
    finally:
        for conn in sessions:
            conn.close()
    dropped = sum(1 for o in outcomes if o.action == "dropped")
    return elapsed, dropped


def reaper_figures(world: World, sizes: tuple[int, ...] = (100, 1000)) -> list[Figure]:
    per_lease: dict[int, float] = {}
    detail: dict[str, object] = {}
    for n in sizes:
        seconds, dropped = reap_once(world, n)
        if dropped != n:
            raise RuntimeError(f"reaper ended {dropped} of {n} leases")
        per_lease[n] = seconds * 1e3 / n
        detail[f"n{n}_total_ms"] = seconds * 1e3
    values = list(per_lease.values())
    growth = per_lease[sizes[-1]] / per_lease[sizes[0]]
    detail.update({"ms_per_lease": per_lease, "per_lease_growth": growth,
                   "sessions_terminated_per_pass": WITH_SESSIONS})
    return [Figure(f"reaper: ms per expired lease (N = {', '.join(map(str, sizes))})",
                   Summary.of(values), "ms/lease",
                   "linear in N", growth <= 1.5, "python -m bench --only reaper", detail)]


def concurrency_figure(world: World, clients: int = 50, bursts: int = 3) -> Figure:
    """The ratio, and the same ratio for plain logins (the floor's own contention on this machine).
    ``bursts`` bursts of ``clients`` at once, and as many single requests, alternating."""
    warms = [world.connect(REQUESTER) for _ in range(clients)]
    alone: list[float] = []
    together: list[float] = []
    login_alone: list[float] = []
    login_together: list[float] = []
    try:
        for _ in range(2):  # warm-ups, not recorded
            one_timed(world, warms[0])
            login_timed(world)
        for _ in range(bursts):
            alone += [one_timed(world, warms[0]) for _ in range(clients)]
            together += run_together(world, warms)
            login_alone += [login_timed(world) for _ in range(clients)]
            login_together += run_together(world, [None] * clients, lambda _w: login_timed(world))
    finally:
        for conn in warms:
            conn.close()
        world.end_all()
    login_ratio = percentile(login_together, 0.95) / percentile(login_alone, 0.95)
    ok = len(together) == clients * bursts
    ratio = percentile(together, 0.95) / percentile(alone, 0.95)
    return Figure(f"{clients} concurrent requesters / 1 (p95 of request + login)",
                  Summary(ratio, ratio, ratio), "x", "all succeed; p95 <= 3x", ok and ratio <= 3.0,
                  "python -m bench --only concurrency",
                  {"succeeded": len(together), "clients": clients, "bursts": bursts,
                   "p95_alone_ms": percentile(alone, 0.95) * 1e3,
                   "p95_together_ms": percentile(together, 0.95) * 1e3,
                   "median_alone_ms": percentile(alone, 0.5) * 1e3,
                   "median_together_ms": percentile(together, 0.5) * 1e3,
                   "plain_login_p95_ratio_50_vs_1": login_ratio,
                   "ratio_over_plain_login_ratio": ratio / login_ratio,
                   "note": "threads in one client process on the same 2 cores as the server"})


def one_timed(world: World, warm: Conn) -> float:
    start = time.perf_counter()
    role, conn = request_and_login(world, warm)
    elapsed = time.perf_counter() - start
    conn.close()
    warm.execute("SELECT jit.revoke(%s)", (role,))
    warm.execute("SELECT jit.finish(%s)", (role,))
    return elapsed


def login_timed(world: World) -> float:
    """One fresh SCRAM login as the static user and a statement: the floor of each request."""
    start = time.perf_counter()
    with world.connect(STATIC_USER) as conn:
        conn.execute("select 1")
        return time.perf_counter() - start


def run_together(world: World, warms: Sequence[Conn | None],
                 work: Callable[[Conn | None], float] | None = None) -> list[float]:
    """``work`` (default: request + login on each warm connection) in one thread per item,
    all released at once by a barrier; the latency of each."""
    barrier = threading.Barrier(len(warms))
    results: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def default(warm: Conn | None) -> float:
        assert warm is not None
        start = time.perf_counter()
        _role, conn = request_and_login(world, warm)
        elapsed = time.perf_counter() - start
        conn.close()
        return elapsed

    def client(warm: Conn | None) -> None:
        barrier.wait(timeout=30)
        try:
            elapsed = (work or default)(warm)
        except Exception as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            results.append(elapsed)

    threads = [threading.Thread(target=client, args=(w,)) for w in warms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(warms)} requesters failed: {errors[0]}")
    return results
