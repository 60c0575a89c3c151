"""``pgcli-jit-admin notify``: requests and decisions posted to a webhook, against a real
scram-sha-256 cluster and a receiver this module starts on loopback.

The operator is ``ntf_ops`` (in ``jit_admin``), the requester ``ntf_dave``, the approver
``ntf_lena`` (in ``ntf_leads``).  A database of its own keeps this module's audit chain apart
from the rest of the suite.  Each test names its own notifier (``--name``), so its cursor
starts at the end of the chain and it sees only what the test does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from click.testing import Result

from pgcli_jit.admin import notify as nt
from pgcli_jit.backends.postgres.scram import new_password, scram_verifier
from pgcli_jit.core.errors import UsageError
from pgcli_jit.devtools.cluster import Cluster
from tests import admin_db
from tests.admin_db import admin_database, run

DB = "ntf_db"
Conn = psycopg.Connection[tuple[object, ...]]


# -- a receiver on loopback ----------------------------------------------------------------------

Behaviour = Callable[[BaseHTTPRequestHandler], None]


def ok(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "2")
    handler.end_headers()
    handler.wfile.write(b"ok")


def status(code: int) -> Behaviour:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


class Receiver:
    """Records every post (headers and JSON body); answers with the next behaviour queued,
    then ``ok``.  ``sent`` counts the body bytes it managed to write for its answers."""

    def __init__(self, port: int = 0) -> None:
        self.posts: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.queue: list[Behaviour] = []
        self.sent = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with outer.lock:
                    outer.posts.append((dict(self.headers), body))
                    behave = outer.queue.pop(0) if outer.queue else ok
                behave(self)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/T000/B000/s3cr3tpath"

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _headers, body in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# -- the database --------------------------------------------------------------------------------

dsn = functools.partial(admin_db.dsn, db=DB)


@pytest.fixture(scope="module")
def ops(cluster: Cluster) -> str:
    return admin_database(
        cluster, DB, operator="ntf_ops",
        roles_sql="CREATE ROLE ntf_read NOLOGIN; GRANT ntf_read TO jit_owner WITH ADMIN OPTION;"
                  "CREATE ROLE ntf_leads NOLOGIN",
        logins=[("ntf_ops", "jit_admin"), ("ntf_dave", "jit_requester"), ("ntf_lena", "ntf_leads")],
        profiles=[["ntf-4eyes", "--grant", "ntf_read", "--approvers", "ntf_leads"]])


def ask(cluster: Cluster, reason: str = "INC-42 refund") -> int:
    """A request for approval, as ntf_dave's backend makes it; its id."""
    with cluster.connect(DB) as su:   # at most 5 wait per requester: earlier tests' are closed
        su.execute("UPDATE jit_data.requests SET status = 'cancelled', verifier = NULL"
                   " WHERE status IN ('pending', 'approved')")
    with psycopg.connect(dsn(cluster, "ntf_dave"), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request('ntf-4eyes', NULL, %s, %s)",
                           (reason, scram_verifier(conn, new_password()))).fetchone()
    assert row is not None and row[0]["status"] == "pending", row
    return int(row[0]["request_id"])


def decide(cluster: Cluster, how: str, request_id: int, text: str) -> None:
    with psycopg.connect(dsn(cluster, "ntf_lena"), autocommit=True) as conn:
        conn.execute(f"SELECT jit.{how}(%s, %s)", (request_id, text))


def notify_once(ops: str, receiver_url: str, name: str, *more: str) -> Result:
    return run("notify", "--dsn", ops, "--webhook", receiver_url, "--name", name, *more)


# -- unit: the URL and the bodies ----------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://hooks.example.com/services/T/B/X", "ftp://127.0.0.1/x", "not a url", "https://",
    "http://user:pw@10.0.0.1:8080/x"])
def test_a_url_that_is_not_https_or_loopback_http_is_refused(url: str) -> None:
    with pytest.raises(UsageError) as refused:
        nt.check_url(url)
    assert "\n" not in str(refused.value)
    assert "pw" not in str(refused.value) and "services" not in str(refused.value)


@pytest.mark.parametrize("url", ["https://hooks.slack.com/services/T/B/X", "http://127.0.0.1:9/x",
                                 "http://[::1]:9/x", "http://localhost/x"])
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    assert nt.check_url(url) == url


def test_redaction_keeps_scheme_and_host_only() -> None:
    url = "https://bot:hunter2@hooks.example.com:8443/services/T0/B0/XyZsecret?token=abc"
    assert nt.redact(url) == "https://hooks.example.com:8443/…"
    said = nt.scrub(f"failed to post to {url}; path /services/T0/B0/XyZsecret token=abc", url)
    for secret in ("hunter2", "XyZsecret", "token=abc", "bot:"):
        assert secret not in said


def pending_event(reason: str = "INC-42 refund") -> nt.Event:
    return nt.Event(seq=7, audit_id=31, event="pending", database="app", profile="write",
                    requester="alice", actor="alice", reason=reason,
                    until=datetime(2026, 12, 5, 9, 30, tzinfo=UTC), grants=["app_write"],
                    detail={"request_id": 42, "approvers": "jit_leads", "approvals": 1,
                            "ttl_asked": 900})


def test_bodies_carry_who_what_why_until_and_the_line_to_type() -> None:
    slack = json.loads(nt.render(pending_event(), "slack"))
    assert set(slack) == {"text"}
    for part in ("alice", "write", "app_write", "INC-42 refund", "2026-12-05 09:30:00 UTC",
                 "\\jit approve 42", "jit_leads"):
        assert part in slack["text"]
    teams = json.loads(nt.render(pending_event(), "teams"))
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert "alice" in card["content"]["body"][0]["text"]
    body = json.loads(nt.render(pending_event(), "json"))
    assert body["approve_command"] == "\\jit approve 42" and body["grants"] == ["app_write"]
    assert body["approvable_until"] == "2026-12-05 09:30:00 UTC" and body["event_id"] == 31


def test_a_reason_cannot_ping_a_channel_or_make_a_link() -> None:
    slack = json.loads(nt.render(pending_event("<!channel> see <https://evil|here>"), "slack"))
    assert "<!channel>" not in slack["text"] and "&lt;!channel&gt;" in slack["text"]
    teams = json.loads(nt.render(pending_event("[click](https://evil)"), "teams"))
    assert "[click](https" not in teams["attachments"][0]["content"]["body"][0]["text"]


def test_a_reason_cannot_pass_for_the_message_or_the_command_to_type() -> None:
    """What a requester typed comes after the real command, inside a quote it cannot close:
    inline code in Slack and Teams (no bold, link or mention renders there)."""
    fake = 'db down". Approvable by 1 member(s): \\jit approve 7 *URGENT* https://evil.example `x`'
    slack = json.loads(nt.render(pending_event(fake), "slack"))["text"]
    facts, typed = slack.split("Reason given by alice: ", 1)
    assert "approve 42" in facts and "approve 7" not in facts
    assert typed.startswith("`") and typed.endswith("`") and typed.count("`") == 2
    assert "*URGENT*" in typed and "\\*" not in typed  # inline code: shown as typed, not rendered
    teams = json.loads(nt.render(pending_event(fake + " [runbook](https://evil.example) _now_"), "teams"))
    facts, typed = teams["attachments"][0]["content"]["body"][0]["text"].split("Reason given by alice: ", 1)
    assert "approve 42" in facts and "approve 7" not in facts
    # a card renders no inline code: the typed text is escaped like the rest, quoted
    assert "\\*URGENT\\*" in typed and "\\[runbook\\]" in typed and "\\_now\\_" in typed
    assert typed.startswith('"') and typed.endswith('"')
    plain = json.loads(nt.render(pending_event(fake), "json"))["text"]
    assert plain.endswith('"') and plain.split("Reason given by alice: ", 1)[1].count('"') == 2


def test_a_long_reason_is_cut_and_the_body_bounded() -> None:
    body = nt.render(pending_event("x" * 5000), "json")
    assert len(body) <= nt.MAX_BODY and len(json.loads(body)["reason"]) == nt.REASON_CHARS


def test_no_byte_of_the_answers_body_is_read_however_big() -> None:
    """A receiver that answers 2 GB (Content-Length) and one that streams for ever: the post
    returns with the status, and the receiver's writes stop once the connection is closed."""
    written: list[int] = []

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(2 * 1024 ** 3))
        handler.end_headers()
        total = 0
        try:
            while total < 2 * 1024 ** 3:
                handler.wfile.write(b"x" * 65536)
                total += 65536
        except OSError:
            pass
        written.append(total)

    def streaming(handler: BaseHTTPRequestHandler) -> None:
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        total = 0
        try:
            while total < 2 * 1024 ** 3:
                handler.wfile.write(b"10000\r\n" + b"y" * 65536 + b"\r\n")
                total += 65536
        except OSError:
            pass
        written.append(total)

    r = Receiver()
    try:
        r.queue += [endless, streaming]
        target = nt.Receiver(r.url, read_timeout=5)
        assert target.post(b"{}", 1).ok
        assert target.post(b"{}", 2).ok
        wait_for(lambda: len(written) == 2)
        # what the kernel's socket buffers took before the close, not 2 GB
        assert all(total < 64 * 1024 ** 2 for total in written), written
    finally:
        r.close()


def test_a_slow_receiver_is_cut_off_by_the_read_timeout() -> None:
    release = threading.Event()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        release.wait(30)
        ok(handler)

    r = Receiver()
    try:
        r.queue.append(slow)
        posted = nt.Receiver(r.url, read_timeout=0.5).post(b"{}", 1)
        release.set()
        assert not posted.ok and not posted.permanent
        assert posted.why == "no answer within 0.5s"
    finally:
        r.close()


def test_a_redirect_is_not_followed() -> None:
    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(307)
        handler.send_header("Location", "http://example.com/elsewhere")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    r = Receiver()
    try:
        r.queue.append(redirect)
        posted = nt.Receiver(r.url).post(b"{}", 1)
        assert not posted.ok and posted.permanent and posted.why == "answered HTTP 307"
        assert len(r.posts) == 1
    finally:
        r.close()


# -- against the server --------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["slack", "teams", "json"])
def test_a_request_and_its_decision_are_posted_once(cluster: Cluster, ops: str, receiver: Receiver,
                                                    form: str) -> None:
    name = f"t-deliver-{form}"
    first = notify_once(ops, receiver.url, name, "--format", form)
    assert first.exit_code == 0, first.output
    assert "first run, starting at the end of the audit chain" in first.output
    assert receiver.posts == []
    rid = ask(cluster)
    decide(cluster, "deny", rid, "not during the freeze")
    done = notify_once(ops, receiver.url, name, "--format", form)
    assert done.exit_code == 0, done.output
    assert "posted pending (audit " in done.output and f"request {rid})" in done.output
    bodies = receiver.bodies()
    assert len(bodies) == 2, bodies
    if form == "json":
        asked, denied = bodies
        assert asked["event"] == "pending" and asked["request_id"] == rid
        assert asked["requester"] == "ntf_dave" and asked["profile"] == "ntf-4eyes"
        assert asked["grants"] == ["ntf_read"] and asked["reason"] == "INC-42 refund"
        assert asked["approve_command"] == f"\\jit approve {rid}" and asked["database"] == DB
        assert asked["approvable_until"].endswith(" UTC") and asked["approvers"] == "ntf_leads"
        assert denied["event"] == "denied" and denied["by"] == "ntf_lena"
        assert denied["note"] == "not during the freeze"
    else:
        texts = (" ".join(b["text"] for b in bodies) if form == "slack" else
                 " ".join(b["attachments"][0]["content"]["body"][0]["text"] for b in bodies)
                 .replace("\\", ""))
        for part in ("ntf_dave", "ntf-4eyes", "ntf_read", "INC-42 refund", f"jit approve {rid}",
                     "denied by ntf_lena", "not during the freeze"):
            assert part in texts, part
    # every header names the audit row, the key a receiver drops a repeat by
    ids = [headers["X-Pgcli-Jit-Event"] for headers, _ in receiver.posts]
    assert len(set(ids)) == 2
    # a verifier is never sent: the body is built from named fields only
    assert "SCRAM" not in json.dumps(bodies)
    again = notify_once(ops, receiver.url, name, "--format", form)
    assert again.exit_code == 0 and "going on after audit seq" in again.output
    assert len(receiver.posts) == 2  # nothing twice


def test_an_approval_is_posted_once_with_the_comment(cluster: Cluster, ops: str,
                                                     receiver: Receiver) -> None:
    """One approval of one needed: the ``approved`` post says it (the ``approve`` row that
    made it is not posted as well)."""
    notify_once(ops, receiver.url, "t-approve")
    rid = ask(cluster)
    decide(cluster, "approve", rid, "checked")
    assert notify_once(ops, receiver.url, "t-approve").exit_code == 0
    events = [(b["event"], b["request_id"]) for b in receiver.bodies()]
    assert events == [("pending", rid), ("approved", rid)]
    approved = receiver.bodies()[1]
    assert approved["by"] == "ntf_lena" and approved["comment"] == "checked"
    assert receiver.bodies()[0]["ttl_seconds"] == 900  # the profile's (15m), none was asked


def test_500s_are_retried_and_a_permanent_refusal_is_given_up(cluster: Cluster, ops: str,
                                                             receiver: Receiver,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nt, "FIRST_PAUSE", 0.05)
    notify_once(ops, receiver.url, "t-500")
    first, second = ask(cluster), ask(cluster, "second one")
    receiver.queue += [status(500), status(503), ok, *[status(404)] * nt.PERMANENT_TRIES]
    result = notify_once(ops, receiver.url, "t-500")
    assert result.exit_code == 0, result.output
    ids = [b["request_id"] for b in receiver.bodies()]
    # the first: 500, 503, then delivered; the second: 404 three times, given up; the cursor
    # moved past it
    assert ids == [first] * 3 + [second] * nt.PERMANENT_TRIES, ids
    assert "answered HTTP 500; retrying in 0.05s" in result.output
    assert "after 3 tries" in result.output
    assert "gave up on pending" in result.output and "answered HTTP 404 3 times" in result.output
    assert notify_once(ops, receiver.url, "t-500").exit_code == 0
    assert len(receiver.posts) == 3 + nt.PERMANENT_TRIES


def test_a_slow_receiver_is_retried_and_the_repeat_carries_the_same_event_id(
        cluster: Cluster, ops: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nt, "FIRST_PAUSE", 0.05)
    monkeypatch.setattr(nt, "READ_TIMEOUT", 0.5)
    monkeypatch.setattr(nt.Receiver.__init__, "__defaults__", (nt.CONNECT_TIMEOUT, 0.5))
    release = threading.Event()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        release.wait(30)
        with contextlib.suppress(OSError):
            ok(handler)

    notify_once(ops, receiver.url, "t-slow")
    rid = ask(cluster)
    receiver.queue.append(slow)
    result = notify_once(ops, receiver.url, "t-slow")
    release.set()
    assert result.exit_code == 0, result.output
    assert "no answer within 0.5s; retrying" in result.output and "after 2 tries" in result.output
    events = [h["X-Pgcli-Jit-Event"] for h, _ in receiver.posts]
    assert len(events) == 2 and events[0] == events[1]
    assert [b["request_id"] for b in receiver.bodies()] == [rid, rid]


def test_a_receiver_down_then_up_gets_the_request_once_and_credentials_are_never_shown(
        cluster: Cluster, ops: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """notify --watch against a port nobody listens on, with a user, a password and a secret
    path in the URL: it says it retries, names the receiver by host only, and once the
    receiver starts on that port, posts the request there, once."""
    monkeypatch.setattr(nt, "FIRST_PAUSE", 0.1)
    monkeypatch.setattr(nt, "MAX_PAUSE", 0.2)
    port = free_port()
    url = f"http://hookuser:hunter2@127.0.0.1:{port}/hook/T000/B000/s3cr3tpath?token=abc"
    stop = threading.Event()
    lines: list[str] = []
    receiver = nt.Receiver(url)

    def open_conn() -> Conn:
        return psycopg.connect(ops, autocommit=True)

    def make(conn: Conn) -> nt.Notifier:
        return nt.Notifier(conn, receiver, "json", "t-down", lines.append, lines.append, stop)

    watcher = threading.Thread(target=nt.run_watch,
                               args=(open_conn, make, stop, None, lines.append, lines.append))
    watcher.start()
    up: Receiver | None = None
    try:
        wait_for(lambda: any("first run" in line for line in lines))
        rid = ask(cluster)
        wait_for(lambda: any("not delivered" in line for line in lines))
        up = Receiver(port)
        wait_for(lambda: any("posted pending" in line for line in lines))
        time.sleep(0.5)  # a second post, if there were one, would come now
        assert [b["request_id"] for b in up.bodies()] == [rid]
    finally:
        stop.set()
        watcher.join(30)
        if up is not None:
            up.close()
    said = "\n".join(lines)
    assert "cannot connect" in said and f"http://127.0.0.1:{port}/…" in said
    for secret in ("hunter2", "hookuser", "s3cr3tpath", "token=abc"):
        assert secret not in said


def test_the_command_never_prints_the_url_secret(ops: str) -> None:
    url = f"http://hookuser:hunter2@127.0.0.1:{free_port()}/hook/s3cr3tpath"
    refused = run("notify", "--dsn", ops, "--webhook", url.replace("127.0.0.1", "hooks.example.com"))
    assert refused.exit_code == 2
    assert "plain http is allowed only to a loopback address" in refused.output
    assert "hunter2" not in refused.output and "s3cr3tpath" not in refused.output


def test_notify_needs_an_operator(cluster: Cluster, ops: str, receiver: Receiver) -> None:
    result = notify_once(dsn(cluster, "ntf_dave"), receiver.url, "t-notop")
    assert result.exit_code == 1
    assert "needs a login in jit_admin" in result.output


def test_notify_watch_posts_at_the_doorbell_and_stops_on_sigterm(cluster: Cluster, ops: str,
                                                                 receiver: Receiver) -> None:
    """The command as an operator runs it beside the reaper: timestamped lines, a post soon
    after the request (the doorbell), a clean stop on SIGTERM."""
    import os
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    admin = Path(sys.executable).with_name("pgcli-jit-admin")
    proc = subprocess.Popen([str(admin), "notify", "--watch", "--name", "t-watch", "--dsn", ops],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PGCLI_JIT_WEBHOOK": receiver.url})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # its cursor is set: a request from now on is posted
        assert "first run, starting at the end of the audit chain" in first, first
        rid = ask(cluster)
        wait_for(lambda: [b["request_id"] for b in receiver.bodies()] == [rid])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d notify t-watch: ")
    lines = [*err.splitlines(), first.rstrip("\n"), *out.splitlines()]
    assert all(stamp.match(line) for line in lines), lines
    assert err.splitlines()[0].endswith(f"posting to http://127.0.0.1:{receiver.port}/… as json "
                                        "(Ctrl-C or SIGTERM to stop)")
    assert err.splitlines()[-1].endswith("notify t-watch: stopped")
    assert any("posted pending (audit " in line and f"request {rid})" in line for line in lines)
    assert "s3cr3tpath" not in out + err


def test_notify_watch_as_a_requester_exits_at_once(cluster: Cluster, ops: str, receiver: Receiver) -> None:
    result = run("notify", "--watch", "--name", "t-watch-no", "--webhook", receiver.url,
                 "--dsn", dsn(cluster, "ntf_dave"))
    assert result.exit_code == 1
    assert "permission denied: notify needs a login in jit_admin" in result.output
