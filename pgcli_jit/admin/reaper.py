"""The reaper: ends access on the server's clock, with no client alive.

``VALID UNTIL`` only stops new password logins; open sessions go on until
something ends them.  One pass is a few transactions, in this order:

1. ``jit.expire_due()``: every lease past its expiry becomes NOLOGIN (audited);
   what it cannot end without waiting (a row held open) is reported and its
   sessions are ended anyway;
2. ``jit.finish_ended()``: once that is committed, the roles' grants are taken
   away, their sessions terminated (by OID) and the roles dropped;
3. prepared transactions of ended leases are rolled back (``SET ROLE`` to the
   lease, ``ROLLBACK PREPARED``: only their owner may, and not in a function);
4. ``jit.chain_audit()``: the audit rows committed since the last pass are
   linked into the hash chain.

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
from pgcli_jit.server import statements

log = logging.getLogger(__name__)
#: wake at least this often, lease or no lease: a superuser's GRANT that makes a grant role
#: unfit rings no doorbell, nor does a request while the cluster's NOTIFY queue is over half
#: full (the broker stays quiet then, so that no call fails at commit); roles kept for what
#: they own are retried
MAX_SLEEP = 5.0
#: wake this much after the expiry, so the server's now() has passed it
EPSILON = 0.002
#: never sleep less than this between passes: a lease whose row is held open stays due, and
#: a reaper that woke for it at once would spin
MIN_SLEEP = 0.25
#: what ``pg_stat_activity.application_name`` shows for the reaper's connection (``reap`` and
#: ``reap --watch``), and ``jit_data.reaper_runs`` records with each pass: a monitoring check
#: can look for it
APPLICATION_NAME = "pgcli-jit reaper"


@dataclass(frozen=True)
class Outcome:
    rolname: str
    action: str  # "expired", "dropped", "gone", "deferred", "kept", "failed: ..."
    sessions: int = 0

    @property
    def ok(self) -> bool:
        return not self.action.startswith(("failed", "kept", "skipped"))


def one_pass(conn: Conn) -> list[Outcome]:
    """Expire what is due, finish every ended lease, roll back their prepared transactions,
    chain the audit; autocommit makes each its own transaction."""
    expired = [Outcome(name, action, int(sessions)) for name, action, sessions
               in conn.execute(statements.EXPIRE_DUE)]
    expired += [Outcome(f"request {rid}", "timed out")
                for (rid,) in conn.execute(statements.EXPIRE_REQUESTS)]
    finished = [Outcome(name, action, int(sessions)) for name, action, sessions
                in conn.execute(statements.FINISH_ENDED)]
    rolled = roll_back_prepared(conn)
    if rolled:
        finished += [Outcome(name, action, int(sessions)) for name, action, sessions
                     in conn.execute(statements.FINISH_ENDED)]
    conn.execute(statements.CHAIN_AUDIT)
    return expired + finished + rolled


def roll_back_prepared(conn: Conn) -> list[Outcome]:
    """ROLLBACK PREPARED each prepared transaction of an ended or due lease, as that lease
    (the server granted this login SET on it for the purpose, and takes it back after)."""
    done: list[Outcome] = []
    for gid, rolname in conn.execute(statements.PREPARED_TO_END).fetchall():
        error = None
        try:
            conn.execute(statements.set_role(rolname))
            conn.execute(statements.rollback_prepared(gid))
        except psycopg.Error as exc:
            error = error_text(exc)
        finally:
            conn.execute(statements.RESET_ROLE)
        conn.execute(statements.PREPARED_ENDED, (gid, rolname, error))
        done.append(Outcome(rolname, f"failed: rollback of prepared {gid}: {error}" if error
                            else f"rolled back prepared transaction {gid}"))
    return done


def seconds_to_next(conn: Conn) -> float:
    """Until the next expiry by the server's clock (at most MAX_SLEEP, never under MIN_SLEEP)."""
    row = conn.execute(statements.SECONDS_TO_NEXT).fetchone()
    if row is None or row[0] is None:
        return MAX_SLEEP
    return min(MAX_SLEEP, max(MIN_SLEEP, float(row[0]) + EPSILON))


def wait(conn: Conn, timeout: float) -> bool:
    """Sleep until ``timeout`` passes or the doorbell rings; True if it rang."""
    if timeout <= 0:
        return False
    return any(True for _ in conn.notifies(timeout=timeout, stop_after=1))


Report = Callable[[Outcome], None]


def watch(connect: Callable[[], Conn], report: Report, stop: threading.Event,
          on_error: Callable[[str], None] = log.warning,
          on_info: Callable[[str], None] = log.info) -> None:
    """Run until ``stop`` is set; a lost connection is reopened with a growing pause, and
    ``on_info`` hears when it is back (a log read later shows how long no pass ran)."""
    pause = 1.0
    lost_at: float | None = None
    while not stop.is_set():
        try:
            with connect() as conn:
                conn.execute(statements.LISTEN)
                if lost_at is not None:
                    on_info(f"reaper: reconnected after {time.monotonic() - lost_at:.0f}s")
                lost_at, pause = None, 1.0
                _loop(conn, report, stop)
        except psycopg.Error as exc:
            if stop.is_set():
                return
            lost_at = time.monotonic() if lost_at is None else lost_at
            on_error(f"reaper: {error_text(exc)}; reconnecting in {pause:.0f}s")
            stop.wait(pause)
            pause = min(pause * 2, 30.0)


def _loop(conn: Conn, report: Report, stop: threading.Event) -> None:
    skipped: set[Outcome] = set()   # said once: a lease held open is skipped every pass
    last = -MIN_SLEEP
    while not stop.is_set():
        # any login may NOTIFY jit_leases: doorbells never make passes closer than MIN_SLEEP
        if (gap := last + MIN_SLEEP - time.monotonic()) > 0 and stop.wait(gap):
            return
        last = time.monotonic()
        outcomes = one_pass(conn)
        for outcome in outcomes:
            if outcome not in skipped:
                report(outcome)
        skipped = {o for o in outcomes if o.action.startswith("skipped")}
        deadline = time.monotonic() + seconds_to_next(conn)
        # in slices of at most a second, so that stop is noticed promptly
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if wait(conn, min(left, 1.0)):
                break  # the schedule changed: look again
