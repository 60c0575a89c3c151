"""The renewal question's reader: keys in, an answer out; and the terminal loop on a real pty."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import termios
import threading
import time

import pyte
import pytest

from pgcli_jit.shell.question import Answer, Reader, ask


@pytest.mark.parametrize(("keys", "answer"), [
    ("\r", Answer.YES), ("y\r", Answer.YES), ("YES\r", Answer.YES), ("n\r", Answer.NO),
    ("no\n", Answer.NO), ("\x03", Answer.NO), ("\x04", Answer.NO), ("x\x7fn\r", Answer.NO),
    ("maybe\ry\r", Answer.YES),
])
def test_keys_to_answer(keys: str, answer: Answer) -> None:
    assert Reader().feed(keys) is answer


def test_ctrl_c_is_no_even_after_typing_yes() -> None:
    reader = Reader()
    assert reader.feed("ye") is None
    assert reader.feed("\x03") is Answer.NO and reader.echo == "^C"


def test_nothing_decided_without_enter() -> None:
    assert Reader().feed("y") is None


def _pty_ask(render, keys: bytes | None, delay: float = 0.3) -> tuple[Answer, str]:  # type: ignore[no-untyped-def]
    leader, follower = pty.openpty()
    out = io.StringIO()
    if keys is not None:
        threading.Timer(delay, lambda: os.write(leader, keys)).start()
    try:
        return ask(render, follower, out, poll=0.05), out.getvalue()
    finally:
        os.close(leader)
        os.close(follower)


def test_ctrl_c_on_a_terminal_is_no_not_a_signal() -> None:
    answer, shown = _pty_ask(lambda: "Renew? [Y/n]", b"\x03")
    assert answer is Answer.NO and shown.endswith("Renew? [Y/n] ^C\r\n")


def test_the_question_is_withdrawn_when_time_runs_out() -> None:
    deadline = time.monotonic() + 0.5

    def render() -> str | None:
        left = deadline - time.monotonic()
        return f"ends in {left:.1f}. Renew? [Y/n]" if left > 0 else None

    started = time.monotonic()
    answer, shown = _pty_ask(render, None)
    assert answer is Answer.WITHDRAWN and time.monotonic() - started < 1.5
    assert shown.count("Renew?") >= 2  # the countdown was redrawn while waiting


@pytest.mark.parametrize("columns", [80, 40, 29])
def test_a_question_wider_than_the_terminal_is_redrawn_in_place(columns: int) -> None:
    """A question that wraps onto several rows, redrawn as its countdown ticks, stays one
    question on the screen (a real terminal emulation, pyte, reads what was written)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    screen = pyte.Screen(columns, 24)
    stream = pyte.ByteStream(screen)
    ticks = iter(range(20, 0, -1))
    question = "Lease for read ends in 0:{:02d}. Renew (new credentials: reconnects)? [Y/n]"
    threading.Timer(1.0, lambda: os.write(leader, b"y\r")).start()
    with os.fdopen(os.dup(follower), "w") as out:
        answer = ask(lambda: question.format(next(ticks, 1)), follower, out, poll=0.05)
    received = b""
    while True:
        if not select.select([leader], [], [], 0.2)[0]:
            break
        received += os.read(leader, 65536)
    os.close(leader)
    os.close(follower)
    stream.feed(received)
    shown = "\n".join(line.rstrip() for line in screen.display).strip()
    assert answer is Answer.YES
    assert received.count(b"Renew") >= 3  # it was redrawn, wrapping each time
    assert shown.count("Lease for") == 1, shown
    assert shown.replace("\n", "").endswith("[Y/n] y")
