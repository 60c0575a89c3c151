"""``\\jit request`` and ``\\jit renew`` in a real pgcli session, against the floor.

The subject is pgcli-jit's own shell (``JitShell``, pgcli's ``PGCli`` subclass) in
this process, connected as the requester ``alice``: ``execute_command("\\jit request
bench")`` then ``execute_command("select current_user")``, timed together, so the
figure is "until the session runs its first statement as the new role".

The floor is the work no implementation can skip, done with psycopg directly: a SCRAM
verifier of a fresh password (libpq), ``SELECT jit.request(...)`` on a connection
that is already open (warm), one fresh SCRAM login as the new role and ``select
current_user`` on it.

Two subject rows: the *first* request of a session (a new shell each round; the
backend has no connection of its own yet) and a *later* one (the same shell, after
``\\jit revoke``).  Renew: ``\\jit renew --ttl N`` on a live lease against a raw
``SELECT jit.renew(...)`` on a warm connection, counting the logins (new server
backends) the subject made meanwhile: a renewal that extends must make none.
Each round alternates which of subject and floor goes first.  Leases are revoked
(untimed) after every round.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from bench.common import Figure, Summary, per_round_ratios
from bench.world import PROFILE, REQUESTER, Conn, World
from pgcli_jit.backends.postgres.backend import JIT_CONNINFO, scram


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The shell's output goes to memory while timed (a terminal would cost the same either way)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def new_shell(world: World, user: str = REQUESTER, plain_pgcli: bool = False) -> Any:
    """A JitShell (or pgcli's own ``PGCli``) connected as ``user``, the way pgcli's cli()
    makes and connects one."""
    import os

    os.environ.update(world.env())
    if plain_pgcli:
        from pgcli.main import PGCli as Shell
    else:
        from pgcli_jit.shell.jitshell import JitShell as Shell

    shell = Shell(never_passwd_prompt=True, less_chatty=True)
    c = world.cluster
    with quiet():
        shell.connect(database="app", host=c.host, user=user, port=str(c.port))
    return shell


def run(shell: Any, line: str) -> None:
    result = shell.execute_command(line)
    if hasattr(result, "successful") and not result.successful:
        raise RuntimeError(f"{line!r} failed in the benchmark's shell")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    with quiet():
        fn()
    return time.perf_counter() - start


def subject_request(shell: Any) -> float:
    return timed(lambda: (run(shell, f"\\jit request {PROFILE}"), run(shell, "select current_user")))


def floor_request(world: World, warm: Conn) -> tuple[float, str]:
    """(seconds, role) of the unavoidable work; the new role is left for the caller to end."""
    start = time.perf_counter()
    password = scram.new_password()
    verifier = scram.scram_verifier(warm, password)
    row = warm.execute("SELECT jit.request(%s, NULL, '', %s)", (PROFILE, verifier)).fetchone()
    assert row is not None
    role = str(row[0]["rolname"])
    conn = psycopg.connect(world.cluster.conninfo("app", user=role, password=password, **JIT_CONNINFO))
    conn.execute("select current_user").fetchall()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed, role


def end(warm: Conn, role: str) -> None:
    warm.execute("SELECT jit.revoke(%s)", (role,))
    warm.execute("SELECT jit.finish(%s)", (role,))


def now(monitor: Conn) -> Any:
    row = monitor.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def logins_since(monitor: Conn, since: Any) -> int:
    """Server sessions that started since ``since`` and are still open (a login, not yet closed)."""
    row = monitor.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                          " AND backend_start >= %s", (since,)).fetchone()
    return int(row[0]) if row else 0


def request_figures(world: World, rounds: int) -> list[Figure]:
    warm = world.connect(REQUESTER)  # the floor's warm connection, as the requester
    monitor = world.connect()
    samples: dict[str, list[float]] = {k: [] for k in ("first", "later", "floor", "renew", "raw_renew",
                                                         "pgcli_statement")}
    reconnects: list[int] = []
    logins: dict[str, list[int]] = {"first_logins": [], "later_logins": []}
    session = new_shell(world)
    try:
        for r in range(-1, rounds):  # round -1 warms both paths up and is not recorded
            got = one_round(world, warm, monitor, session, r)
            if r >= 0:
                for key, value in got.items():
                    if key == "reconnects":
                        reconnects.append(int(value))
                    elif key in logins:
                        logins[key].append(int(value))
                    else:
                        samples[key].append(value)
    finally:
        close_shell(session)
        world.end_all()
        warm.close()
        monitor.close()
    first = Summary.of(per_round_ratios(samples["first"], samples["floor"]))
    later = Summary.of(per_round_ratios(samples["later"], samples["floor"]))
    renew = Summary.of(per_round_ratios(samples["renew"], samples["raw_renew"]))
    # what is left once pgcli's own statement path (execute, format, print) is taken out
    later_own = [t - s for t, s in zip(samples["later"], samples["pgcli_statement"], strict=True)]
    first_own = [t - s for t, s in zip(samples["first"], samples["pgcli_statement"], strict=True)]
    ms = {k: Summary.of(v).median * 1e3 for k, v in samples.items()}
    cmd = "python -m bench --only request"
    return [
        Figure("\\jit request + first statement, first of the session / floor", first, "x", "<= 1.15x",
               first.median <= 1.15, cmd, {"rounds": rounds, "median_ms": ms,
                                           "new_server_sessions_per_request": max(logins["first_logins"]),
                                           "without_pgcli_statement_path": Summary.of(per_round_ratios(
                                               first_own, samples["floor"])).__dict__}),
        Figure("\\jit request + first statement, later in the session / floor", later, "x", "<= 1.15x",
               later.median <= 1.15, cmd, {"rounds": rounds, "median_ms": ms,
                                           "new_server_sessions_per_request": max(logins["later_logins"]),
                                           "without_pgcli_statement_path": Summary.of(per_round_ratios(
                                               later_own, samples["floor"])).__dict__}),
        Figure("\\jit renew (extends) / raw jit.renew on a warm connection", renew, "x",
               "<= 1.2x, 0 reconnects", renew.median <= 1.2 and not any(reconnects), cmd,
               {"rounds": rounds, "reconnects": sum(reconnects), "median_ms": ms}),
    ]


def one_round(world: World, warm: Conn, monitor: Conn, session: Any, r: int) -> dict[str, float]:
    """The first request of a new shell; then a later request and a renewal in ``session``, the
    shell that lives through every round (its backend's warm connection is warm); the floor
    before both in odd rounds, after both in even ones."""
    out: dict[str, float] = {}
    if r % 2 == 1:
        out["floor"], role = floor_request(world, warm)
        end(warm, role)
    fresh = new_shell(world)
    try:
        since = now(monitor)
        out["first"] = subject_request(fresh)
        out["first_logins"] = logins_since(monitor, since)
        timed(lambda: run(fresh, "\\jit revoke"))
    finally:
        close_shell(fresh)
    since = now(monitor)
    out["later"] = subject_request(session)
    out["later_logins"] = logins_since(monitor, since)
    out["pgcli_statement"] = timed(lambda: run(session, "select current_user"))  # pgcli's own part
    renew_pair(session, warm, monitor, out, r)
    timed(lambda: run(session, "\\jit revoke"))
    if r % 2 == 0:
        out["floor"], role = floor_request(world, warm)
        end(warm, role)
    return out


def close_shell(shell: Any) -> None:
    with quiet():
        shell._jit_shutdown()
    if shell.pgexecute is not None and shell.pgexecute.conn is not None:
        shell.pgexecute.conn.close()


RENEWS_PER_ROUND = 5


def renew_pair(shell: Any, warm: Conn, monitor: Conn, out: dict[str, float], r: int) -> None:
    """RENEWS_PER_ROUND renewals of the shell's live lease, each alternating with a raw renewal of
    the same lease (who goes first alternates by round); every call asks for a longer TTL than
    the one before, so each really extends.  The round's sample is the median of each kind."""
    manager = shell.jit.manager
    role = manager.lease.username
    subject_s: list[float] = []
    raw_s: list[float] = []
    since = now(monitor)
    ttl = 1200 + 60 * 2 * RENEWS_PER_ROUND * (r + 2)

    def subject() -> None:
        nonlocal ttl
        ttl += 60
        before = manager.lease.expires_at
        subject_s.append(timed(lambda: run(shell, f"\\jit renew --ttl {ttl}s")))
        if manager.lease.expires_at <= before or manager.lease.username != role:
            raise RuntimeError("\\jit renew did not extend the lease in place")

    def raw() -> None:
        nonlocal ttl
        ttl += 60
        start = time.perf_counter()
        row = warm.execute("SELECT jit.renew(%s, make_interval(secs => %s))", (role, ttl)).fetchone()
        raw_s.append(time.perf_counter() - start)
        if row is None or row[0].get("status") in ("unchanged", "max_ttl", "denied", "ended"):
            raise RuntimeError(f"raw renew did not extend: {row}")

    for _ in range(RENEWS_PER_ROUND):
        for step in ((subject, raw) if r % 2 == 0 else (raw, subject)):
            step()
    out["reconnects"] = logins_since(monitor, since)
    out["renew"] = statistics.median(subject_s)
    out["raw_renew"] = statistics.median(raw_s)
