"""A ``\\jit`` command that waits on the server says so, and Ctrl-C ends the wait.

A server held by a lock made ``\\jit renew`` sit silent for many seconds, and the
Ctrl-C a user then types ended pgcli-jit (and the open transaction with it).  While
a command runs, :class:`Waiting` shows after :data:`AFTER` seconds one line, redrawn
in place every second (``\\jit renew: waiting for the server 3s (Ctrl-C cancels)``),
and erases it when the command returns; the shell turns Ctrl-C into "cancelled" for
that command only.  The line goes to the terminal only: nothing is drawn into a
file or a pipe.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

AFTER = 1.0
BEAT = 1.0


class Waiting:
    """``with Waiting("\\jit renew", sys.stderr): ...``: a live line while the body waits."""

    def __init__(self, label: str, out: TextIO, after: float = AFTER) -> None:
        self.label, self.out, self.after = label, out, after
        self._done = threading.Event()
        self._drawn = False
        self._thread = threading.Thread(target=self._run, name="pgcli-jit-waiting", daemon=True)

    def __enter__(self) -> Waiting:
        if _is_terminal(self.out):
            self._started = time.monotonic()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._drawn:
            self.out.write("\r\x1b[K")
            self.out.flush()

    def _run(self) -> None:
        if self._done.wait(self.after):
            return
        while not self._done.is_set():
            waited = int(time.monotonic() - self._started)
            self.out.write(f"\r\x1b[K{self.label}: waiting for the server {waited}s (Ctrl-C cancels)")
            self.out.flush()
            self._drawn = True
            self._done.wait(BEAT)


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
