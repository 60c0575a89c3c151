"""A real HTTP broker for the tests, speaking the protocol of docs/backends/http.md.

``http.server`` in a thread on a free 127.0.0.1 port, backed by the same role
logic as :mod:`tests.brokers.pg_broker`, so leases it hands out really log in.
Tests can force an answer for a path (``broker.force["/credentials"] = (500,
{...})``) to see how the backend reports it, make a path hang (``broker.hang["/renew"]
= 30``: the request is read, then nothing is sent for that many seconds, or until the
broker stops) or dribble (``broker.drip["/renew"] = "headers"`` or ``"body"``: one byte
every half second, each well within any per-read timeout, for as long as the client
listens), and read ``broker.requests`` to check what was sent.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.brokers import pg_broker


class Broker:
    def __init__(self, dsn: str, token: str) -> None:
        self.dsn = dsn
        self.token = token
        self.force: dict[str, tuple[int, Any]] = {}
        #: path -> seconds to stay silent after reading a request there (a hung broker)
        self.hang: dict[str, float] = {}
        #: set when the server stops: a hung handler gives up at once (no thread left behind)
        self.stopping = threading.Event()
        #: path -> "headers" (a header line that never ends) or "body" (a long body), a byte a time
        self.drip: dict[str, str] = {}
        #: the longest a hang or a drip lasts, whatever the client does
        self.hang_limit = 60.0
        #: (path, seconds) of each hang or drip that ended, with whether the client had gone by then
        self.hung: list[tuple[str, float, bool]] = []
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        #: four eyes: when set, /credentials answers 202 and the request waits here; a test
        #: decides it by setting its state ("approved", "denied", "timed_out")
        self.need_approval = False
        self.waiting: dict[str, dict[str, Any]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Route one request to the role logic: (status, JSON body or None)."""
        with pg_broker.connect(self.dsn) as conn:
            if path == "/v1/credentials" and self.need_approval:
                rid = f"r{len(self.waiting) + 1}"
                self.waiting[rid] = {"state": "pending", "body": body}
                return 202, {"request_id": rid, "poll_after": 0.2, "approvers": "leads"}
            if path == "/v1/credentials":
                return 200, self._mint(conn, body)
            if path in ("/v1/request-status", "/v1/cancel"):
                return self._decided(conn, path, str(body.get("request_id")))
            if path == "/v1/renew":
                try:
                    return 200, pg_broker.renew(conn, username=body["username"], ttl=float(body["ttl"]))
                except pg_broker.RoleGone as exc:
                    return 410, {"errors": [str(exc)]}
            if path == "/v1/revoke":
                pg_broker.revoke(conn, username=body["username"])
                return 204, None
        return 404, {"errors": [f"no route {path}"]}

    def _mint(self, conn: Any, body: dict[str, Any]) -> Any:
        return pg_broker.mint(conn, ttl=float(body["ttl"]), requester=body["requester"],
                              reason=body["reason"], profile=body["profile"])

    def _decided(self, conn: Any, path: str, rid: str) -> tuple[int, Any]:
        """The protocol's pending states: 202 waiting, 200 granted (once), 403 denied,
        410 timed out, 404 no such (or a cancelled / collected) request."""
        item = self.waiting.get(rid)
        if item is None or item["state"] in ("cancelled", "issued"):
            return 404, {"errors": [f"no request {rid}"]}
        if path == "/v1/cancel":
            item["state"] = "cancelled"
            return 204, None
        answers: dict[str, tuple[int, Any]] = {
            "pending": (202, {"request_id": rid, "poll_after": 0.2}),
            "denied": (403, {"errors": ["denied by bob: not during the freeze"]}),
            "timed_out": (410, {"errors": ["not decided within 1h"]})}
        if item["state"] == "approved":
            item["state"] = "issued"
            return 200, self._mint(conn, item["body"])
        return answers[item["state"]]


def _handler(broker: Broker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            broker.requests.append((self.path, dict(self.headers), body))
            path = self.path.removeprefix("/v1")
            if path in broker.hang:
                self._hang(path, broker.hang[path])
                return
            if path in broker.drip:
                self._drip(path, broker.drip[path])
                return
            if path in broker.force:
                self._send(*broker.force[path])
            elif self.headers.get("Authorization") != f"Bearer {broker.token}":
                self._send(401, {"errors": ["missing or invalid bearer token"]})
            else:
                self._send(*broker.answer(self.path, body))

        def _hang(self, path: str, seconds: float) -> None:
            """Say nothing for ``seconds``, then close without an answer; note whether the
            client was still waiting (it should have given up at its timeout)."""
            started = time.monotonic()
            broker.stopping.wait(min(seconds, broker.hang_limit))
            gone = _peer_closed(self.connection)
            broker.hung.append((path, time.monotonic() - started, gone))
            self.close_connection = True

        def _drip(self, path: str, part: str) -> None:
            """Answer a byte every half second until the client goes (a send fails), the
            broker stops, or ``hang_limit`` passes."""
            if part == "headers":
                data = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"x" * 100_000
            else:
                body = b'{"version": 1, "username": "jit_drip", "ttl": 60' + b" " * 100_000 + b"}"
                data = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body)) + body
                head = data.index(b"\r\n\r\n") + 4
                self.wfile.write(data[:head])  # the headers at once: only the body is slow
                data = data[head:]
            started, gone = time.monotonic(), False
            for byte in data:
                if broker.stopping.wait(0.5) or time.monotonic() - started > broker.hang_limit:
                    break
                try:
                    self.wfile.write(bytes([byte]))
                except OSError:
                    gone = True
                    break
            broker.hung.append((path, time.monotonic() - started, gone or _peer_closed(self.connection)))
            self.close_connection = True

        def _send(self, status: int, body: Any) -> None:
            data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler


def _peer_closed(sock: socket.socket) -> bool:
    """True when the other end has closed the connection (a read would see EOF or a reset)."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
        return bool(ready) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@contextmanager
def running(dsn: str, token: str) -> Iterator[Broker]:
    broker = Broker(dsn, token)
    thread = threading.Thread(target=broker.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield broker
    finally:
        broker.stopping.set()
        broker.server.shutdown()
        broker.server.server_close()
