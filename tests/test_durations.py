"""Durations as users write them, and the two ways they are shown."""

from __future__ import annotations

import pytest

from pgcli_jit.core.durations import format_clock, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90), ("15m", 900), ("1h30m", 5400), ("1h", 3600), ("2d", 172800),
        ("1h30m15s", 5415), ("90", 90), ("  15m  ", 900), ("15M", 900), ("1.5h", 5400),
        ("0.5", 0.5), (90, 90), (2.5, 2.5),
    ],
)
def test_parse_duration_accepts(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


GARBAGE = ["", "abc", "15x", "m15", "15 m", "1h 30m", "15m30", "h", "-5m", "1e3", "inf", "nan"]


@pytest.mark.parametrize("text", GARBAGE)
def test_parse_duration_rejects_garbage_and_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="write 90s, 15m, 1h30m or seconds"):
        parse_duration(text)


@pytest.mark.parametrize("value", ["0", "0s", "0m0s", 0, 0.0, -5, -0.5])
def test_parse_duration_rejects_zero_and_negative(value: str | int | float) -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_bool(value: bool) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_parse_duration_rejects_non_finite(value: float | str) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5400, "1h30m"), (900, "15m"), (45, "45s"), (3600, "1h"), (3661, "1h1m1s"), (0, "0s"),
     (-10, "0s"), (59.6, "1m"), (172800, "48h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_round_trips_through_parse() -> None:
    for seconds in (1, 59, 60, 61, 899, 5400, 86399):
        assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0:00"), (5, "0:05"), (59.9, "0:59"), (60, "1:00"), (899, "14:59"), (3599, "59:59"),
     (3600, "1:00:00"), (3661, "1:01:01"), (36000, "10:00:00"), (-3, "0:00")],
)
def test_format_clock(seconds: float, text: str) -> None:
    assert format_clock(seconds) == text
