"""What the benchmarks share: per-round ratios, their median and spread, and plain-text tables.

The benchmarks run on shared, noisy machines, so an absolute time on its own
says little.  Each one measures a baseline and its candidates in the same
round (alternating which goes first) and reports, per round, candidate time
divided by baseline time: the median of those ratios and their min..max.
Absolute times are printed only as context.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Summary:
    """The median of a series and its spread (min and max)."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no samples")
        return cls(statistics.median(values), min(values), max(values))

    def ratio(self) -> str:
        return f"{self.median:.2f}x"

    def ratio_spread(self) -> str:
        return f"{self.low:.2f}x .. {self.high:.2f}x"


def per_round_ratios(candidate: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Candidate/baseline for each round: both were measured in the same round, under the same noise."""
    if len(candidate) != len(baseline):
        raise ValueError("candidate and baseline need one sample per round each")
    return [c / b for c, b in zip(candidate, baseline, strict=True)]


def rotated(items: Sequence[T], shift: int) -> list[T]:
    """``items`` starting at ``shift``: who goes first changes every round, so warm-up favours no one."""
    k = shift % len(items)
    return [*items[k:], *items[:k]]


def format_seconds(seconds: float) -> str:
    """``812 ns``, ``3.41 µs``, ``6.20 ms``, ``1.05 s``: the unit that keeps 3 significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; plain text that survives any terminal or log."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Figure:
    """One row of the results: a ratio (or a value) against a target, with how it was measured."""

    name: str
    value: Summary
    unit: str  # "x" for ratios, else the unit of the value ("µs", "% of a core", "ms/lease")
    target: str
    met: bool | None
    command: str
    detail: dict[str, object]

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "median": self.value.median, "low": self.value.low,
                "high": self.value.high, "unit": self.unit, "target": self.target, "met": self.met,
                "command": self.command, "detail": self.detail}

    def row(self) -> list[str]:
        fmt = (lambda v: f"{v:.2f}x") if self.unit == "x" else (lambda v: f"{v:.3g} {self.unit}")
        met = {True: "met", False: "NOT met", None: "-"}[self.met]
        return [self.name, fmt(self.value.median), f"{fmt(self.value.low)} .. {fmt(self.value.high)}",
                self.target, met]
