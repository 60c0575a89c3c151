"""A real HTTP broker for the tests, speaking the protocol of docs/backends/http.md.

``http.server`` in a thread on a free 127.0.0.1 port, backed by the same role
logic as :mod:`tests.brokers.pg_broker`, so leases it hands out really log in.
Tests can force an answer for a path (``broker.force["/credentials"] = (500,
{...})``) to see how the backend reports it, and read ``broker.requests`` to
check what was sent.
"""

from __future__ import annotations

import json
import threading
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
            if path in broker.force:
                self._send(*broker.force[path])
            elif self.headers.get("Authorization") != f"Bearer {broker.token}":
                self._send(401, {"errors": ["missing or invalid bearer token"]})
            else:
                self._send(*broker.answer(self.path, body))

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


@contextmanager
def running(dsn: str, token: str) -> Iterator[Broker]:
    broker = Broker(dsn, token)
    thread = threading.Thread(target=broker.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield broker
    finally:
        broker.server.shutdown()
        broker.server.server_close()
