"""Faults of the ``postgres`` backend, injected for real on a throwaway cluster of this module's own.

The server is stopped, restarted and starved of connection slots with ``pg_ctl``
and real connections; the session's shared cluster is never touched.  Time for
the lease windows comes from a fake clock; the few checks that need the server's
own clock to pass an expiry use TTLs of a few seconds and bounded waits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgcli_jit import server
from pgcli_jit.admin.reaper import one_pass
from pgcli_jit.backends.login import APPLICATION_NAME
from pgcli_jit.core.errors import BackendUnavailable, ConnectionSwitchError, JitError
from pgcli_jit.core.policy import Phase
from pgcli_jit.devtools.cluster import Cluster, _as_server_user, start_cluster
from tests import faultproxy
from tests.conftest import GRANT_ROLES, REQUESTER, can_login, end_jit_roles, make_login
from tests.test_controller import Harness

pytestmark = pytest.mark.faults

SLOTS = {"max_connections": "12", "superuser_reserved_connections": "3"}


@pytest.fixture(scope="module")
def own(cluster: Cluster) -> Iterator[Cluster]:
    """A cluster only this module stops and restarts (``cluster`` is requested only so that
    ``$PGPASSFILE`` exists for the requester's password)."""
    c = start_cluster(settings=SLOTS)
    try:
        c.execute("CREATE DATABASE app")
        c.execute("CREATE TABLE accounts (id int primary key, owner text);"
                  "INSERT INTO accounts VALUES (1, 'alice');", dbname="app")
        with c.connect("app") as conn:
            server.apply(conn)
            conn.execute(GRANT_ROLES.encode())
        make_login(c, REQUESTER, member_of="jit_requester")
        yield c
    finally:
        c.stop()


def pg_ctl(c: Cluster, *args: str) -> None:
    cmd = [str(c.bindir / "pg_ctl"), "-D", str(c.datadir), "-l", str(c.logfile), "-w", "-t", "60", *args]
    proc = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def stop(c: Cluster) -> None:
    pg_ctl(c, "-m", "fast", "stop")


def start(c: Cluster) -> None:
    pg_ctl(c, "start")


@pytest.fixture
def make(own: Cluster, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def factory(**kwargs: Any) -> Harness:
        h = Harness(own, "", tmp_path / f"h{len(made)}", **kwargs)
        made.append(h)
        return h

    yield factory
    if not _up(own):
        start(own)
    for h in made:
        h.cleanup()


def _up(c: Cluster) -> bool:
    try:
        c.connect().close()
    except psycopg.OperationalError:
        return False
    return True


def wait_until(moment: float, limit: float = 30.0) -> None:
    """Real seconds: until the wall clock passes ``moment`` (bounded)."""
    assert moment - time.time() < limit, "the lease is longer than this test expects"
    while time.time() < moment:
        time.sleep(0.1)


def reap_until_gone(c: Cluster, rolname: str, limit: float = 30.0) -> None:
    """The operator's reaper (one pass at a time, as ``reap`` from cron) until the role is gone."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with c.connect("app") as conn:
            one_pass(conn)
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (rolname,)).fetchone() is None:
                return
        time.sleep(0.2)
    raise AssertionError(f"the reaper never dropped {rolname}")


def login_roles(c: Cluster) -> set[str]:
    with c.connect() as conn:
        return {r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin")}


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


# -- at request ---------------------------------------------------------------------------


def test_server_stopped_at_request_is_one_line_and_leaves_nothing(own: Cluster, make: Any) -> None:
    h = make(start_as_superuser=False)
    stop(own)
    with pytest.raises(BackendUnavailable) as caught:
        h.controller.request(None, None, "INC-1")
    assert "cannot reach the server" in one_line(caught.value)
    assert h.controller.lease is None and h.leases == []
    start(own)
    assert h.roles() == []
    h.controller.request(None, None, "INC-1 again")  # the same controller works once it is back
    assert h.controller.lease is not None and h.user() == h.controller.lease.username


def test_connection_dropped_mid_request_leaves_no_half_made_role(own: Cluster, make: Any) -> None:
    """The request's backend is terminated while its transaction (role made, lease row not yet
    written) waits on a lock: the server rolls the role back; the one retry makes exactly one."""
    h = make(start_as_superuser=False)
    before = login_roles(own)
    blocker = own.connect("app")
    blocker.autocommit = False
    blocker.execute("LOCK TABLE jit_data.leases IN EXCLUSIVE MODE")
    result: dict[str, Any] = {}

    def ask() -> None:
        try:
            result["message"] = h.controller.request(None, None, "INC-2")
        except JitError as exc:
            result["error"] = exc

    worker = threading.Thread(target=ask)
    worker.start()
    with own.connect("app") as watcher:
        pid = None
        deadline = time.monotonic() + 30
        while pid is None and time.monotonic() < deadline:
            row = watcher.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                                  " AND wait_event_type = 'Lock'", (APPLICATION_NAME,)).fetchone()
            pid = row[0] if row else time.sleep(0.05)
        assert pid is not None, "the request never reached the lock"
        made = login_roles(own) - before
        watcher.execute("SELECT pg_terminate_backend(%s)", (pid,))
        blocker.rollback()  # the retry may go on now
        blocker.close()
        worker.join(60)
        assert not worker.is_alive()
    logins = login_roles(own) - before
    assert made == set()  # nothing committed while the request waited
    lease = h.controller.lease
    if "error" in result:  # either answer is fine; a role nobody tracks is not
        assert lease is None and logins == set()
    else:
        assert lease is not None and logins == {lease.username} and h.roles() == [lease.username]


def requests_of(c: Cluster, profile: str) -> list[str]:
    with c.connect("app") as conn:
        return [r for (r,) in conn.execute("SELECT rolname FROM jit_data.leases WHERE profile = %s",
                                           (profile,))]


def test_answer_lost_after_the_request_committed_gives_the_same_role_once(own: Cluster, make: Any) -> None:
    """The server made the role and committed; the answer never arrived (the connection broke
    on the way back).  The warm connection sends the same call again: the server recognises
    it (the same verifier) and answers with the role it made, not a second one."""
    with faultproxy.losing_proxy(own.host, own.port, b"jit.request(") as proxy:
        password = make_login(own, REQUESTER)  # the same login, reached through the proxy
        with open(os.environ["PGPASSFILE"], "a", encoding="utf-8") as fh:
            fh.write(f"{own.host}:{proxy.port}:*:{REQUESTER}:{password}\n")
        h = make(start_as_superuser=False, port=proxy.port)
        message = h.controller.request(None, None, "INC-5")
        assert proxy.lost.is_set(), "the proxy never lost an answer: the test proved nothing"
        lease = h.controller.lease
        assert lease is not None and message.startswith(f"Connected as {lease.username}")
        assert requests_of(own, h.name) == [lease.username]  # one role, the one the client holds
        assert h.user() == lease.username and can_login(own, lease)
    with own.connect("app") as conn:
        events = [e for (e,) in conn.execute(
            "SELECT event FROM jit_data.audit WHERE rolname = %s ORDER BY id", (lease.username,))]
    assert events == ["request", "replay"]


# -- a server that accepts and never answers ---------------------------------------------------


def warm_backend_pid(h: Harness) -> int:
    """The server process behind the backend's warm connection (the requester's own login)."""
    warm = h.manager.backend_for(h.profile)._warm  # type: ignore[attr-defined]
    assert warm._conn is not None and not warm._conn.closed
    return int(warm._conn.info.backend_pid)


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP: its socket still accepts bytes, nothing answers them (a hung server, or one
    partitioned away).  Always continued afterwards."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def bounded(started: float) -> None:
    """The 2 s timeout fired (a generous bound for a busy machine: without it the call hangs)."""
    assert time.monotonic() - started < 30


def test_server_hung_at_request_is_one_line_after_the_timeout(own: Cluster, make: Any) -> None:
    h = make(ttl="3s", timeout="2s")
    h.controller.request(None, None, "warm up")
    first = h.controller.lease
    assert first is not None
    h.controller.revoke()
    with stopped(warm_backend_pid(h)):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as caught:
            h.controller.request(None, None, "INC-6")
        bounded(started)
    assert re.search(r"^postgres backend \(profile \S+\): no answer from alice@127\.0\.0\.1:\d+/app "
                     r"within 2s", one_line(caught.value)), caught.value
    assert h.controller.lease is None and h.user() == "postgres"  # the session is untouched
    # the stopped server process ran the request once continued: a role whose password this
    # client forgot (nobody can log in as it); it ends at its expiry like any other
    wait_until(time.time() + 4)
    for name in set(requests_of(own, h.name)) - {first.username}:
        reap_until_gone(own, name)
    assert h.controller.request(None, None, "INC-6 again").startswith("Connected as")  # works again


def test_server_hung_at_renew_keeps_the_lease(own: Cluster, make: Any) -> None:
    h = make(start_as_superuser=False, ttl="10m", timeout="2s")
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    h.clock.set(lease.expires_at - 150)  # early in the renewal window
    with stopped(warm_backend_pid(h)):
        started = time.monotonic()
        h.controller.accept_offer()
        h.controller.settle()
        bounded(started)
    assert h.controller.lease is lease and h.controller.gate() is None
    assert h.user() == lease.username  # the session's own connection is not the hung one
    assert any("no answer from" in s and "Keeping the current lease" in s for s in h.said), h.said
    assert h.controller.renew(None).startswith(f"Renewed {lease.username}")  # a new warm connection


def test_server_hung_at_revoke_is_reported_and_the_role_still_ends(own: Cluster, make: Any) -> None:
    h = make(start_as_superuser=False, ttl="3s", timeout="2s")
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    with stopped(warm_backend_pid(h)):
        started = time.monotonic()
        with pytest.raises(JitError) as caught:
            h.controller.revoke()
        bounded(started)
    text = one_line(caught.value)
    assert text.startswith("revoke failed: postgres backend") and "no answer from" in text
    assert "end at their expiry" in text
    assert h.controller.lease is None and '"revoked": false' in h.audit_path.read_text()
    wait_until(lease.expires_at + 0.5)
    assert not can_login(own, lease)
    reap_until_gone(own, lease.username)


# -- mid-lease: restart, renew, revoke ------------------------------------------------------


def test_restart_mid_lease_a_valid_lease_reconnects_and_renews(own: Cluster, make: Any) -> None:
    h = make(ttl="10m")
    h.controller.request(None, None, "INC-3")
    lease = h.controller.lease
    assert lease is not None
    pg_ctl(own, "-m", "fast", "restart")
    with pytest.raises(psycopg.OperationalError):
        h.user()  # the server ended the session
    assert can_login(own, lease)  # a new connection with the lease's password works
    h.clock.set(lease.expires_at - 150)  # early in the renewal window
    assert h.manager.phase() is Phase.WINDOW
    assert h.controller.renew(None).startswith(f"Renewed {lease.username} until")  # warm conn reopened


def test_restart_after_expiry_the_lease_does_not_log_in(own: Cluster, make: Any) -> None:
    h = make(start_as_superuser=False, ttl="3s")
    h.controller.request(None, None, "INC-4")
    lease = h.controller.lease
    assert lease is not None
    stop(own)
    wait_until(lease.expires_at + 0.5)
    h.clock.set(time.time())
    assert (h.controller.gate() or "").startswith("JIT access expired")
    start(own)
    assert not can_login(own, lease)  # VALID UNTIL has passed: the server refuses it
    reap_until_gone(own, lease.username)


def test_server_down_early_in_the_window_keeps_the_lease(own: Cluster, make: Any) -> None:
    h = make(start_as_superuser=False, ttl="10m")
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    stop(own)
    h.clock.set(lease.expires_at - 150)
    h.controller.accept_offer()  # the user pressed F6
    h.controller.settle()
    assert h.controller.lease is lease and h.controller.gate() is None
    assert any(s.startswith("Renewal failed: postgres backend") and "Keeping the current lease" in s
               for s in h.said), h.said
    start(own)
    assert h.controller.renew(None).startswith(f"Renewed {lease.username}")


def test_server_down_in_the_final_part_ends_access_cleanly(own: Cluster, make: Any) -> None:
    h = make(start_as_superuser=False, ttl="10m")
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    stop(own)
    h.clock.set(lease.expires_at - 30)
    assert h.manager.phase() is Phase.FINAL
    h.controller.accept_offer()
    h.controller.settle()
    assert any("JIT access ends at" in s for s in h.said), h.said
    h.clock.set(lease.expires_at + 1)
    assert (h.controller.gate() or "").startswith("JIT access expired")
    assert h.connector.conn is not None and h.connector.conn.closed
    assert "password" not in h.connector.params
    start(own)


def test_server_down_at_revoke_is_reported_and_the_reaper_cleans_up(own: Cluster, make: Any) -> None:
    h = make(start_as_superuser=False, ttl="3s")
    h.controller.request(None, None, "")
    lease = h.controller.lease
    assert lease is not None
    stop(own)
    with pytest.raises(JitError) as caught:
        h.controller.revoke()
    assert one_line(caught.value).startswith("revoke failed: postgres backend")
    assert "end at their expiry" in str(caught.value)
    assert h.controller.lease is None
    assert '"revoked": false' in h.audit_path.read_text()
    start(own)
    wait_until(lease.expires_at + 0.5)
    assert not can_login(own, lease)
    reap_until_gone(own, lease.username)


# -- connect and revoke both failed ---------------------------------------------------------


def test_no_connection_slots_for_connect_or_revoke_says_what_the_reaper_will_do(
        own: Cluster, make: Any) -> None:
    h = make(ttl="3s")
    real_open = h.connector._open
    fillers: list[psycopg.Connection[Any]] = []

    def starve_then_open(params: dict[str, str]) -> Any:
        if params.get("user", "").startswith("jit_"):
            with own.connect() as su:  # the warm connection goes; its slot is taken by others
                su.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE application_name = %s", (APPLICATION_NAME,))
            for _ in range(20):
                try:
                    fillers.append(psycopg.connect(own.conninfo("app", user=REQUESTER)))
                except psycopg.OperationalError as exc:
                    assert "too many clients" in str(exc) or "remaining connection slots" in str(exc)
                    break
        return real_open(params)

    h.connector._open = starve_then_open  # type: ignore[method-assign]
    try:
        with pytest.raises(ConnectionSwitchError) as caught:
            h.controller.request(None, None, "INC-10")
        message = one_line(caught.value)
        lease = h.leases[0]
        assert f"{lease.username} could not be revoked either" in message
        assert "it can log in until" in message
        assert "pgcli-jit-admin reap --watch, drops it at that expiry" in message
        assert h.controller.lease is None and h.user() == "postgres"  # the old connection kept
        assert h.roles() == [lease.username]
    finally:
        for conn in fillers:
            conn.close()
    wait_until(lease.expires_at + 0.5)
    reap_until_gone(own, lease.username)
    assert '"action": "revoke"' in h.audit_path.read_text()


# -- the shell: pgcli's own reconnect after a restart -----------------------------------------


@pytest.mark.pty
def test_shell_after_a_restart_reconnects_a_valid_lease_not_an_expired_one(
        own: Cluster, home: Path) -> None:
    from tests.shell_fixtures import Session

    world = Session(home, own, "")
    world.profile("live", ttl="10m", renew="never")
    world.profile("brief", ttl="6s", renew="never")
    try:
        term = world.open("--jit", "live")
        term.wait_for(r"app>")
        screen = term.run("select current_user as whoami;", r"SELECT 1")
        user = re.findall(r"jit_[a-z0-9_]+_[a-z0-9]{8,}", screen)[-1]
        pg_ctl(own, "-m", "fast", "restart")
        screen = term.run("select 'after' || 'restart', current_user;", r"afterrestart")
        assert user in screen.split("afterrestart")[-1]  # pgcli reconnected as the live lease

        brief = world.open("--jit", "brief")
        brief.wait_for(r"app>")
        brief_user = re.findall(r"jit_[a-z0-9_]+_[a-z0-9]{8,}", brief.run(
            "select current_user as whoami;", r"SELECT 1"))[-1]
        stop(own)
        brief.wait_toolbar(r"JIT expired", timeout=60)
        mark = len(own.server_log())
        start(own)
        brief.run("select 'not' || 'again';", r"JIT access expired")
        assert "notagain" not in brief.text()
        after = own.server_log()[mark:]
        assert f"user={brief_user}" not in after and f'"{brief_user}"' not in after
    finally:
        if not _up(own):
            start(own)
        for t in world.terminals:
            t.close()
        end_jit_roles(own)
