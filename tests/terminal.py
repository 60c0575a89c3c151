"""Drive the real ``pgcli-jit`` in a pseudo-terminal and read the screen a person would see.

pexpect runs the program on a pty; every byte it writes is fed to a ``pyte``
terminal emulator, so assertions are about the rendered screen (prompt_toolkit
redraws the toolbar with partial diffs, so the raw stream is not enough).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pyte

ROWS, COLS = 40, 160
LIBPQ_VARS = {"PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE",
              "PGPASSFILE", "PGSSLMODE", "PGOPTIONS", "PGAPPNAME", "PGCLI_JIT_CONFIG"}


def pgcli_jit_executable() -> str:
    """The console script next to the running interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).parent / "pgcli-jit"
    found = str(local) if local.exists() else shutil.which("pgcli-jit")
    if not found:
        raise RuntimeError("pgcli-jit is not installed: pip install -e .")
    return found


class Terminal:
    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        cols = int(env.get("COLUMNS", COLS))  # session.open(..., COLUMNS="80") for a narrow terminal
        self.screen = pyte.Screen(cols, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.transcript = b""
        self.child = pexpect.spawn(
            pgcli_jit_executable(), args, env=env, cwd=str(cwd), dimensions=(ROWS, cols), timeout=10,
        )

    # -- reading ------------------------------------------------------------

    def pump(self, seconds: float = 0.05) -> None:
        """Read whatever the program wrote within ``seconds`` into the emulator."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                data = self.child.read_nonblocking(65536, timeout=max(0.01, deadline - time.monotonic()))
            except pexpect.TIMEOUT:
                data = b""
            except pexpect.EOF:
                return
            if data:
                self.transcript += data
                self.stream.feed(data)
                self._answer_cursor_queries(data)
            if time.monotonic() >= deadline:
                return

    def _answer_cursor_queries(self, data: bytes) -> None:
        """Answer ``ESC[6n`` as a terminal does: prompt_toolkit shows the toolbar only once it knows."""
        for _ in range(data.count(b"\x1b[6n")):
            cursor = self.screen.cursor
            self.child.send(f"\x1b[{cursor.y + 1};{cursor.x + 1}R")

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def toolbar(self) -> str:
        """The bottom toolbar line: the JIT segment first, then pgcli's F2... items."""
        lines = [line.rstrip() for line in self.screen.display if "[F2]" in line or line.startswith("  JIT ")]
        return lines[-1] if lines else ""

    def style_of(self, text: str) -> tuple[str, bool] | None:
        """(background colour, bold) of the first character of ``text`` on screen, if shown."""
        for y, line in enumerate(self.screen.display):
            x = line.find(text)
            if x >= 0:
                char = self.screen.buffer[y][x]
                return char.bg, char.bold
        return None

    def wait_for(self, what: str | Callable[[str], bool], timeout: float = 15.0) -> str:
        """Wait until the screen contains ``what`` (a regex) or satisfies it; return the screen."""
        test = what if callable(what) else (lambda s: re.search(what, s) is not None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            screen = self.text()
            if test(screen):
                return screen
            if not self.child.isalive():
                self.pump(0.2)
                break
        raise AssertionError(f"never saw {what!r}:\n{self.text()}\n--- exit {self.child.exitstatus}")

    def wait_toolbar(self, pattern: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            match = re.search(pattern, self.toolbar())
            if match:
                return match.group(0)
        raise AssertionError(f"toolbar never matched {pattern!r}: {self.toolbar()!r}")

    # -- typing ---------------------------------------------------------------

    def type(self, text: str) -> None:
        self.child.send(text)
        self.pump(0.1)

    def run(self, line: str, expect: str | None = None, timeout: float = 15.0) -> str:
        """Type a line, press Enter, and wait for ``expect`` (default: the next prompt)."""
        marker = self.screen_lines_count()
        self.child.send(line + "\r")
        if expect is not None:
            return self.wait_for(expect, timeout)
        return self.wait_for(lambda s: self._prompt_after(marker), timeout)

    def screen_lines_count(self) -> int:
        return len(self.transcript)

    def _prompt_after(self, offset: int) -> bool:
        tail = self.transcript[offset:]
        return re.search(rb"\n[^\n]*> (\x1b\[[0-9;?]*[A-Za-z])*\Z", tail) is not None or (
            tail.count(b"> ") >= 2)

    def close(self) -> int | None:
        if self.child.isalive():
            self.child.sendcontrol("d")
            try:
                self.child.expect(pexpect.EOF, timeout=10)
            except pexpect.TIMEOUT:
                self.child.terminate(force=True)
        self.child.close()
        return self.child.exitstatus


def isolated_env(home: Path, config: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: private HOME/XDG dirs, no PG* variables, a pager that never waits."""
    env = {k: v for k, v in os.environ.items() if k not in LIBPQ_VARS and not k.startswith("XDG_")}
    env.update(
        HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_STATE_HOME=str(home / "state"),
        TERM="xterm-256color", PAGER="cat", LESS="", COLUMNS=str(COLS), LINES=str(ROWS),
    )
    if config is not None:
        env["PGCLI_JIT_CONFIG"] = str(config)
    env.update(extra or {})
    return env


def pgpass_plus(home: Path, host: str, port: int, user: str, password: str) -> str:
    """A pgpass file: the test run's (which holds the requester's own password) plus one more
    login.  ``PGPASSWORD`` would not do: libpq would use it for the requester's login too."""
    shared = os.environ.get("PGPASSFILE")
    base = Path(shared).read_text(encoding="utf-8") if shared and Path(shared).exists() else ""
    path = home / "pgpass-plus"
    path.write_text(base + f"{host}:{port}:*:{user}:{password}\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)
