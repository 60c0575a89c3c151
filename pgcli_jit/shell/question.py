"""The renewal question on the terminal: answered, refused, or withdrawn when time runs out.

``input()`` cannot be interrupted: an unanswered ``Renew? [Y/n]`` held the
event loop (and the expired lease) for as long as nobody typed, its countdown
frozen, and Ctrl-C was swallowed by prompt_toolkit's signal handler so that the
next Enter meant yes.  This reader polls the terminal in raw mode instead:

- the question is redrawn when its text changes (the countdown keeps running);
- ``render()`` returning None withdraws it (the lease expired: the clock never
  stops for a question);
- Ctrl-C and Ctrl-D mean no (ISIG is off, so Ctrl-C is a byte, not a signal).

A question wider than the terminal wraps onto more rows; each redraw goes back
up over all of them, so a narrow terminal does not fill with copies of it.
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
    reader, shown, line = Reader(), None, Line(out, fd)
    with raw_input_mode(fd):
        while True:
            text = render()
            if text is None:
                line.draw("", end="\r\n")
                return Answer.WITHDRAWN
            asked = f"{text} {reader.typed}"
            if asked != shown:
                line.draw(asked)
                shown = asked
            if not select.select([fd], [], [], poll)[0]:
                continue
            answer = reader.feed(os.read(fd, 256).decode("utf-8", "replace"))
            if answer is not None:
                line.draw(f"{text} {reader.echo}", end="\r\n")
                return answer


class Line:
    """The question's place on the terminal: redrawn in place, however many rows it wraps to."""

    def __init__(self, out: TextIO, fd: int) -> None:
        self.out, self.fd = out, fd
        self.rows_above = 0  # rows the last draw wrapped onto above the cursor's row

    def draw(self, text: str, end: str = "") -> None:
        """Back to the first row of the last draw, erase to the end of the screen, write."""
        up = f"\x1b[{self.rows_above}A" if self.rows_above else ""
        self.out.write(f"\r{up}\x1b[J{text}{end}")
        self.out.flush()
        width = _columns(self.fd)
        # a row filled exactly leaves the cursor on it (the wrap is pending), hence len - 1
        self.rows_above = (len(text) - 1) // width if width and text and not end else 0


def _columns(fd: int) -> int:
    """The width of the terminal the answer is read from (``out`` may be a proxy of
    prompt_toolkit's, with no size), or 0 when it is not a terminal."""
    try:
        return os.get_terminal_size(fd).columns
    except OSError:
        return 0
