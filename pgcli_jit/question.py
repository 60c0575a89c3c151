"""The renewal question on the terminal: answered, refused, or withdrawn when time runs out.

``input()`` cannot be interrupted: an unanswered ``Renew? [Y/n]`` held the
event loop (and the expired lease) for as long as nobody typed, its countdown
frozen, and Ctrl-C was swallowed by prompt_toolkit's signal handler so that the
next Enter meant yes.  This reader polls the terminal in raw mode instead:

- the question is redrawn when its text changes (the countdown keeps running);
- ``render()`` returning None withdraws it (the lease expired: the clock never
  stops for a question);
- Ctrl-C and Ctrl-D mean no (ISIG is off, so Ctrl-C is a byte, not a signal).
"""

from __future__ import annotations

import enum
import os
import select
import termios
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

POLL = 0.2
CTRL_C, CTRL_D = "\x03", "\x04"
ERASE = ("\x7f", "\x08")


class Answer(enum.Enum):
    YES = "yes"
    NO = "no"
    WITHDRAWN = "withdrawn"


@contextmanager
def raw_input_mode(fd: int) -> Iterator[None]:
    """No echo, no line buffering, no signals from keys: we read and draw every key ourselves."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:  # not a terminal: read as is
        yield
        return
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
    attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def decide(typed: str) -> Answer | None:
    """``[Y/n]``: Enter or y/yes is yes, n/no is no, anything else asks again."""
    word = typed.strip().lower()
    if word in ("", "y", "yes"):
        return Answer.YES
    if word in ("n", "no"):
        return Answer.NO
    return None


class Reader:
    """Keys in, an answer out; no I/O of its own, so it is tested with plain strings."""

    def __init__(self) -> None:
        self.typed = ""
        self.echo = ""  # what to leave on the answered line: the answer, or ^C

    def feed(self, keys: str) -> Answer | None:
        for key in keys:
            if key in (CTRL_C, CTRL_D):
                self.echo = "^C" if key == CTRL_C else "^D"
                return Answer.NO
            if key in ("\r", "\n"):
                answer, self.echo, self.typed = decide(self.typed), self.typed, ""
                if answer is not None:
                    return answer
            elif key in ERASE:
                self.typed = self.typed[:-1]
            elif key.isprintable():
                self.typed += key
        return None


def ask(render: Callable[[], str | None], fd: int, out: TextIO, poll: float = POLL) -> Answer:
    """Ask ``render()`` on the terminal until answered or until ``render()`` returns None."""
    reader, shown = Reader(), None
    with raw_input_mode(fd):
        while True:
            text = render()
            if text is None:
                _line(out, "")
                return Answer.WITHDRAWN
            line = f"{text} {reader.typed}"
            if line != shown:
                _line(out, line, end="")
                shown = line
            if not select.select([fd], [], [], poll)[0]:
                continue
            answer = reader.feed(os.read(fd, 256).decode("utf-8", "replace"))
            if answer is not None:
                _line(out, f"{text} {reader.echo}")
                return answer


def _line(out: TextIO, text: str, end: str = "\r\n") -> None:
    """Redraw the current terminal line (carriage return, erase to end of line)."""
    out.write(f"\r\x1b[K{text}{end}")
    out.flush()
