"""``\\jit help`` within the terminal's width, and a TTL the renewal window cannot serve."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

import pytest

from pgcli_jit.core.errors import UsageError
from pgcli_jit.session.commands import FOOTER, TABLE, parse, run, usage
from pgcli_jit.session.config import Config
from tests.fakes import faulty_profile


@pytest.mark.parametrize("width", [40, 60, 80, 100])
def test_help_wraps_at_words_within_the_width(width: int) -> None:
    """At 80 columns every line was cut mid-word by the terminal."""
    text = usage(None, width)
    assert all(len(line) <= width for line in text.splitlines()), text
    words = set(text.split())
    for row in TABLE:
        assert set(row.summary.split()) <= words and set(row.synopsis.split()) <= words
    assert set(FOOTER.split()) <= words
    assert not re.search(r"\\jit\s*\n", text)  # "\jit NAME" is never split


def test_help_for_one_subcommand_wraps_too() -> None:
    assert all(len(line) <= 50 for line in usage("request", 50).splitlines())


def test_help_takes_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    _, _, _, text = run(Any, parse("\\jit help"))  # type: ignore[arg-type]
    assert text is not None and max(len(line) for line in text.splitlines()) <= 60


class Refreshes:
    """The completion cache's side of a request: how often it was asked to read again."""

    def __init__(self) -> None:
        self.count = 0

    def refresh(self) -> None:
        self.count += 1


class Requests:
    """Just enough controller for the request handler: the config, and what was asked."""

    def __init__(self) -> None:
        profile = faulty_profile("read", renew_before=60.0)
        self.config = Config(None, MappingProxyType({"read": profile}), "read", None)  # type: ignore[arg-type]
        self.asked: list[tuple[str | None, float | None]] = []
        self.catalog = Refreshes()

    def request(self, profile: str | None, ttl: float | None, reason: str) -> str:
        self.asked.append((profile, ttl))
        return "Connected"


def test_a_ttl_inside_the_renewal_window_is_refused_before_anything_is_asked() -> None:
    """``--ttl 1s`` replaced a 30-minute lease with one that had expired at once."""
    jit = Requests()
    with pytest.raises(UsageError) as refused:
        run(jit, parse("\\jit request read --ttl 1s"))  # type: ignore[arg-type]
    assert str(refused.value) == ("\\jit request: --ttl 1s is shorter than the renewal window of read "
                                  "(renew_before 1m) (ask for at least --ttl 1m)")
    with pytest.raises(UsageError, match="at least --ttl 1m"):
        run(jit, parse("\\jit request --ttl 59s"))  # type: ignore[arg-type]
    assert jit.asked == []
    run(jit, parse("\\jit request read --ttl 1m"))  # type: ignore[arg-type]
    run(jit, parse("\\jit request read"))  # type: ignore[arg-type]
    assert jit.asked == [("read", 60.0), ("read", None)]
    assert jit.catalog.count == 2  # each request asked made completion read the server's list again
