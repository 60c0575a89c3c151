"""The reaper: ends access on the server's clock, with no client alive.

``VALID UNTIL`` only stops new password logins; open sessions go on until
something ends them.  One pass is two transactions, in this order:

1. ``jit.expire_due()``: every lease past its expiry becomes NOLOGIN (audited);
2. ``jit.finish_ended()``: once that is committed, the roles' grants are taken
   away, their sessions terminated (by OID) and the roles dropped.

Terminating before step 1 commits would let an automatic reconnect slip in.
``watch`` sleeps until the next expiry (server clock) or a ``NOTIFY jit_leases``
(a request, renewal or revoke changed the schedule), so access ends within a few
milliseconds of ``VALID UNTIL``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from pgcli_jit.admin.connect import Conn, error_text

log = logging.getLogger(__name__)
CHANNEL = "jit_leases"
#: wake at least this often: roles kept for what they own are retried, a lost doorbell is harmless
MAX_SLEEP = 60.0
#: wake this much after the expiry, so the server's now() has passed it
EPSILON = 0.002


@dataclass(frozen=True)
class Outcome:
    rolname: str
    action: str  # "expired", "dropped", "gone", "deferred", "kept", "failed: ..."
    sessions: int = 0

    @property
    def ok(self) -> bool:
        return not self.action.startswith(("failed", "kept"))


def one_pass(conn: Conn) -> list[Outcome]:
    """Expire what is due, then finish every ended lease; autocommit makes each its own transaction."""
    expired = [Outcome(name, "expired") for (name,) in conn.execute("SELECT * FROM jit.expire_due()")]
    expired += [Outcome(f"request {rid}", "timed out")
                for (rid,) in conn.execute("SELECT * FROM jit.expire_requests()")]
    finished = [Outcome(name, action, int(sessions)) for name, action, sessions
                in conn.execute("SELECT rolname, outcome, sessions FROM jit.finish_ended()")]
    return expired + finished


def seconds_to_next(conn: Conn) -> float:
    """Until the next expiry by the server's clock (capped at MAX_SLEEP)."""
    row = conn.execute("SELECT extract(epoch FROM jit.next_expiry() - clock_timestamp())").fetchone()
    if row is None or row[0] is None:
        return MAX_SLEEP
    return min(MAX_SLEEP, max(0.0, float(row[0]) + EPSILON))


def wait(conn: Conn, timeout: float) -> bool:
    """Sleep until ``timeout`` passes or the doorbell rings; True if it rang."""
    if timeout <= 0:
        return False
    return any(True for _ in conn.notifies(timeout=timeout, stop_after=1))


Report = Callable[[Outcome], None]


def watch(connect: Callable[[], Conn], report: Report, stop: threading.Event,
          on_error: Callable[[str], None] = log.warning) -> None:
    """Run until ``stop`` is set; a lost connection is reopened with a growing pause."""
    pause = 1.0
    while not stop.is_set():
        try:
            with connect() as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                pause = 1.0
                _loop(conn, report, stop)
        except psycopg.Error as exc:
            if stop.is_set():
                return
            on_error(f"reaper: {error_text(exc)}; reconnecting in {pause:.0f}s")
            stop.wait(pause)
            pause = min(pause * 2, 30.0)


def _loop(conn: Conn, report: Report, stop: threading.Event) -> None:
    while not stop.is_set():
        for outcome in one_pass(conn):
            report(outcome)
        deadline = time.monotonic() + seconds_to_next(conn)
        # in slices of at most a second, so that stop is noticed promptly
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if wait(conn, min(left, 1.0)):
                break  # the schedule changed: look again
