"""The renewal question's reader: keys in, an answer out; and the terminal loop on a real pty."""

from __future__ import annotations

import io
import os
import pty
import threading
import time

import pytest

from pgcli_jit.question import Answer, Reader, ask


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
