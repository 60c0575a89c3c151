"""A broker that hangs at renew or at revoke, for the http, command and vault backends.

"Hangs" means the broker takes the request and never answers within the profile's
``timeout`` (2 s here), all on real sockets and real processes: the http broker reads
the request and says nothing; the command broker's renew or revoke program (and a
helper it started) sleeps; OpenBao is stopped with SIGSTOP, so the kernel still
accepts its connections but nothing answers.  Driven through the Controller, as the
shell drives it (:class:`tests.test_faults_brokers.World`); only the clock that
places the lease in its renewal windows is fake.

What must hold, for each backend:

- renew, early in the window: the call gives up at the timeout, the message says the
  lease is kept (and why, in one line, no secret), the connection is the same one;
- renew, in the final part: "JIT access ends at ..."; at expiry the connection is
  closed and statements are refused;
- revoke: one line saying the credentials end at their expiry, returned within the
  timeout (bounded generously here: the machine is shared); the lease is forgotten,
  the connection closed, the audit trail says ``"revoked": false``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgcli_jit.core.errors import JitError
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.policy import Phase, windows
from pgcli_jit.devtools.cluster import Cluster
from tests import test_faults_brokers
from tests.brokers import http_broker
from tests.test_faults_brokers import World, one_line

pytestmark = pytest.mark.faults

ROOT = str(Path(__file__).parent.parent)
#: a hang lasts far longer than the profile's 2 s timeout ...
HANG = 60.0
#: ... and a call that gave up at the timeout returns well within this (a shared, busy machine)
BOUND = 30.0


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


def take_offer(w: World) -> None:
    """F6: the renewal starts in the background; settle() waits for it and applies it, as the
    next beat of the prompt would."""
    w.controller.accept_offer()
    w.controller.settle()


def said_since(w: World, mark: int) -> list[str]:
    return w.said[mark:]


def renew_hangs_in_window_then_final(w: World, timeout_words: str) -> Lease:
    """The shared renew story: kept early in the window, "ends at" in the final part, closed
    at expiry; each renewal returns within BOUND and names the timeout (``timeout_words``)."""
    lease = w.controller.lease
    assert lease is not None
    conn = w.connector.conn
    assert conn is not None and not conn.closed
    window, final, end = windows(lease, w.profile.renew_before)

    w.clock.set((window + final) / 2)
    assert w.manager.phase() is Phase.WINDOW
    mark = len(w.said)
    _, took = timed(take_offer, w)
    assert took < BOUND, f"the renewal blocked for {took:.1f}s"
    said = said_since(w, mark)
    assert len(said) == 1, said
    assert said[0].startswith("Renewal failed: ") and "Keeping the current lease until" in said[0], said
    assert timeout_words in said[0], said
    assert "\n" not in said[0] and lease.credentials.password not in said[0]
    assert w.controller.lease is lease and w.controller.gate() is None
    assert w.connector.conn is conn and not conn.closed  # untouched: same connection, still open
    assert w.connector.query("select current_user") == lease.username

    w.clock.set((final + end) / 2)
    assert w.manager.phase() is Phase.FINAL
    mark = len(w.said)
    _, took = timed(take_offer, w)
    assert took < BOUND, f"the renewal blocked for {took:.1f}s"
    said = said_since(w, mark)
    assert len(said) == 1 and "JIT access ends at" in said[0], said
    assert w.controller.lease is lease and w.connector.conn is conn and not conn.closed

    w.clock.set(lease.expires_at + 1)
    assert (w.controller.gate() or "").startswith("JIT access expired")
    assert conn.closed
    released = time.monotonic() + 5  # the expired lease is let go on the worker, behind the renewal
    while w.controller.lease is not None and time.monotonic() < released:
        time.sleep(0.05)
    assert w.controller.lease is None
    audit = w.audit_path.read_text()
    assert lease.credentials.password not in audit
    failures = [json.loads(line) for line in audit.splitlines() if '"failure"' in line]
    assert [f.get("action") for f in failures] == ["renew", "renew"], failures
    return lease


def revoke_hangs(w: World, timeout_words: str) -> Lease:
    """``\\jit revoke`` against a hung broker: one line, within BOUND, everything local ended."""
    lease = w.controller.lease
    assert lease is not None
    conn = w.connector.conn
    started = time.monotonic()
    with pytest.raises(JitError) as caught:
        w.controller.revoke()
    took = time.monotonic() - started
    assert took < BOUND, f"\\jit revoke blocked the shell for {took:.1f}s"
    text = one_line(caught.value)
    assert text.startswith(f"revoke failed: {w.profile.backend} backend (profile {w.profile.name})"), text
    assert timeout_words in text and "end at their expiry" in text, text
    assert lease.credentials.password not in text
    assert w.controller.lease is None and w.manager.lease is None
    assert conn is not None and conn.closed
    lines = [json.loads(line) for line in w.audit_path.read_text().splitlines()]
    assert lines[-1]["event"] == "revoke" and lines[-1]["revoked"] is False, lines[-1]
    assert w.controller.gate() == "JIT access revoked: \\jit request to continue"
    return lease


def drop_role(cluster: Cluster, lease: Lease | None) -> None:
    """The test's own cleanup.  A broker let go again (OpenBao after SIGCONT) may be running
    its own revocation of the same role at this moment: the two DROPs can deadlock (the
    server ends one of them), or, on 18, this one fails with "could not find tuple for role"
    when the other dropped the role under it; then this one tries again."""
    if lease is None:
        return
    for _ in range(5):
        try:
            with cluster.connect() as conn:
                conn.execute(f'DROP ROLE IF EXISTS "{lease.username}"'.encode())
            return
        except (psycopg.errors.DeadlockDetected, psycopg.errors.InternalError_):
            time.sleep(0.5)
    raise AssertionError(f"could not drop {lease.username}")


# -- http: the broker reads the request and says nothing ------------------------------------


# test_faults_brokers.py's fixtures: the real http broker, and a World over it
broker, web = test_faults_brokers.broker, test_faults_brokers.web


#: silent: the request is read, nothing is ever sent; headers / body: a byte every half
#: second (each read is well within the timeout; only the call as a whole is not)
HTTP_HANGS = ["silent", "headers", "body"]


def hang_http(broker: http_broker.Broker, path: str, kind: str) -> None:
    if kind == "silent":
        broker.hang[path] = HANG
    else:
        broker.drip[path] = kind


@pytest.mark.parametrize("kind", HTTP_HANGS)
def test_http_broker_hanging_at_renew_keeps_the_lease_then_ends_access(
        web: World, broker: http_broker.Broker, cluster: Cluster, kind: str) -> None:
    web.controller.request(None, None, "INC-7")
    hang_http(broker, "/renew", kind)
    lease = renew_hangs_in_window_then_final(web, "within 2s")
    assert [p for p, _, _ in broker.requests].count("/v1/renew") == 2  # it was asked, twice
    web.controller.shutdown()  # the expiry's revoke (not hung) ran behind it
    assert not _role_exists(cluster, lease.username)


@pytest.mark.parametrize("kind", HTTP_HANGS)
def test_http_broker_hanging_at_revoke_does_not_block_the_shell(
        web: World, broker: http_broker.Broker, cluster: Cluster, kind: str) -> None:
    web.controller.request(None, None, "INC-7")
    hang_http(broker, "/revoke", kind)
    lease = revoke_hangs(web, "within 2s")
    assert [p for p, _, _ in broker.requests][-1] == "/v1/revoke"
    assert web.controller.shutdown() is None  # nothing left to revoke on the way out
    drop_role(cluster, lease)  # the broker never did; the test's cleanup does
    if kind != "silent":  # the client hung up on the drip: it did not read on in the background
        deadline = time.monotonic() + 10
        while not broker.hung and time.monotonic() < deadline:
            time.sleep(0.1)
        assert broker.hung and broker.hung[0][2], broker.hung


def _role_exists(cluster: Cluster, name: str) -> bool:
    with cluster.connect() as conn:
        return conn.execute(b"SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone() is not None


# -- command: the renew / revoke program (and its helper) sleeps -----------------------------

#: A broker program: pg_broker (real roles) unless a ``hang-ACTION`` file sits next to it.
#: Then it starts a helper, writes both pids to ``pids-ACTION`` and, as the file says:
#: "sleeps" (both hold stdout and stderr open, as a broker stuck on a browser login or a
#: dead network would), "closed" (both close their output first, then sleep: only the
#: wait for the exit is left to time out) or "orphan" (the program exits at once, its
#: helper sleeps on with the pipes open).
PROGRAM = """#!{python}
import os, subprocess, sys, time
from pathlib import Path

here = Path(__file__).resolve().parent
action = sys.argv[1]
flag = here / f"hang-{{action}}"
if flag.exists():
    kind = flag.read_text()
    out = subprocess.DEVNULL if kind == "closed" else None
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep({hang})"],
                              stdout=out, stderr=out)
    with open(here / f"pids-{{action}}", "a") as pids:
        pids.write(f"{{os.getpid()}} {{helper.pid}} ")
    if kind == "closed":
        os.close(1)
        os.close(2)
    if kind != "orphan":
        time.sleep({hang})
    sys.exit(0)
sys.path.insert(0, {root!r})
from tests.brokers import pg_broker
sys.exit(pg_broker.main([*sys.argv[1:], "--reason", os.environ.get("PGCLI_JIT_REASON", "")]))
"""
COMMAND_HANGS = ["sleeps", "closed", "orphan"]


@pytest.fixture
def cmd(cluster: Cluster, tmp_path: Path, admin_dsn: str) -> Iterator[World]:
    from tests.conftest import BROKER_PW_ENV

    program = tmp_path / "bin" / "hang-broker"
    program.parent.mkdir()
    program.write_text(PROGRAM.format(python=sys.executable, hang=HANG, root=ROOT))
    program.chmod(0o755)
    w = World(cluster, tmp_path, "cmd", {
        "backend": "command",
        "command": [str(program), "request", "--profile", "{profile}", "--ttl", "{ttl}",
                    "--requester", "{requester}"],
        "renew_command": [str(program), "renew", "--username", "{username}", "--ttl", "{ttl}"],
        "revoke_command": [str(program), "revoke", "--username", "{username}"],
        "env": {"PG_BROKER_DSN": admin_dsn}, "pass_env": [BROKER_PW_ENV],
    })
    yield w
    w.close()


def hang_at(w: World, action: str, kind: str) -> Path:
    program = Path(str(w.profile.options["command"][0]))
    (program.parent / f"hang-{action}").write_text(kind)
    return program.parent / f"pids-{action}"


def assert_all_gone(pid_file: Path, runs: int) -> None:
    """Each program run and the helper it started were all killed (a zombie counts as gone:
    in a container nobody may reap an orphan)."""
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == runs * 2, pids
    deadline = time.monotonic() + 10
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"still running after the timeout: {alive}"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.parametrize("kind", COMMAND_HANGS)
def test_command_broker_hanging_at_renew_keeps_the_lease_then_ends_access(
        cmd: World, cluster: Cluster, kind: str) -> None:
    cmd.controller.request(None, None, "INC-7")
    pid_file = hang_at(cmd, "renew", kind)
    lease = renew_hangs_in_window_then_final(cmd, "did not finish within 2s and was killed")
    assert_all_gone(pid_file, runs=2)
    cmd.controller.shutdown()  # the expiry's revoke (not hung) ran behind it
    assert not _role_exists(cluster, lease.username)


@pytest.mark.parametrize("kind", COMMAND_HANGS)
def test_command_broker_hanging_at_revoke_is_killed_and_does_not_block_the_shell(
        cmd: World, cluster: Cluster, kind: str) -> None:
    cmd.controller.request(None, None, "INC-7")
    pid_file = hang_at(cmd, "revoke", kind)
    lease = revoke_hangs(cmd, "did not finish within 2s and was killed")
    assert_all_gone(pid_file, runs=1)
    assert cmd.controller.shutdown() is None
    drop_role(cluster, lease)


# -- vault: OpenBao stopped (SIGSTOP): connections are accepted, nothing answers ------------


@pytest.fixture(scope="module")
def bao(cluster: Cluster) -> Iterator[Any]:
    """An OpenBao server only this module stops."""
    from tests import openbao

    with openbao.running_vault(cluster) as vault:
        yield vault


@pytest.fixture
def vault(bao: Any, cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("VAULT_TOKEN", bao.user_token)
    monkeypatch.delenv("BAO_TOKEN", raising=False)
    w = World(cluster, tmp_path, "v", {"backend": "vault", "role": "ro", "addr": bao.server.addr,
                                       "ttl": "2m", "allow_http": True})
    yield w
    w.close()


class Stopped:
    """SIGSTOP the server now; SIGCONT on leaving, and in any case after a safety delay, so a
    timeout that does not fire fails the test instead of hanging the suite."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.safety = threading.Timer(2 * BOUND, self.resume)

    def __enter__(self) -> Stopped:
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _state(self.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(self.pid) == "T", "the server did not stop"
        self.safety.start()
        return self

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def __exit__(self, *exc: object) -> None:
        self.safety.cancel()
        self.resume()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_vault_stopped_at_renew_keeps_the_lease_then_ends_access(vault: World, bao: Any,
                                                                  cluster: Cluster) -> None:
    vault.controller.request(None, None, "INC-7")
    lease = vault.controller.lease
    assert lease is not None
    try:
        with Stopped(bao.server.proc.pid):
            # the expiry inside: its revoke hangs too, in the background, and is only logged
            renew_hangs_in_window_then_final(vault, "within 2s")
        assert vault.controller.shutdown() is None
    finally:
        drop_role(cluster, lease)


def test_vault_stopped_at_revoke_does_not_block_the_shell(vault: World, bao: Any, cluster: Cluster) -> None:
    vault.controller.request(None, None, "INC-7")
    lease = vault.controller.lease
    try:
        with Stopped(bao.server.proc.pid):
            revoke_hangs(vault, "within 2s")
        assert vault.controller.shutdown() is None
    finally:
        drop_role(cluster, lease)
    # the server, running again, still answers this module's next test
    assert bao.server.api("GET", "sys/health").status_code == 200
