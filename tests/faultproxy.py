"""A TCP proxy in front of a real PostgreSQL that loses one answer on purpose.

It forwards bytes both ways.  The first time a client sends a statement holding
``trigger`` (e.g. ``b"jit.request("``), the proxy waits for the server's whole answer
(up to ReadyForQuery: by then the server has committed), drops it, and closes both
sides: the client sees its connection break after the server acted, the one fault
that a retry can turn into a second role.  Later connections pass untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

READY_FOR_QUERY = b"Z\x00\x00\x00\x05"


class LosingProxy:
    def __init__(self, host: str, port: int, trigger: bytes) -> None:
        self.target = (host, port)
        self.trigger = trigger
        self.armed = True
        self.lost = threading.Event()  # set once an answer was swallowed
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            swallow = threading.Event()
            threading.Thread(target=self._up, args=(client, server, swallow), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, swallow), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, swallow: threading.Event) -> None:
        """Client to server: everything goes through; the trigger arms the swallowing."""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.armed and self.trigger in data:
                    self.armed = False
                    swallow.set()
                server.sendall(data)

    def _down(self, server: socket.socket, client: socket.socket, swallow: threading.Event) -> None:
        """Server to client: forwarded, except the answer to the triggering statement."""
        held = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if not swallow.is_set():
                    client.sendall(data)
                    continue
                held += data
                if READY_FOR_QUERY in held:  # the server is done (committed): lose it all
                    self.lost.set()
                    break
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@contextmanager
def losing_proxy(host: str, port: int, trigger: bytes) -> Iterator[LosingProxy]:
    proxy = LosingProxy(host, port, trigger)
    try:
        yield proxy
    finally:
        proxy.close()
