"""How ``pgcli-jit-admin`` shows rows: a plain table for people, JSON for scripts.

Reasons and names were typed by requesters: control characters are replaced
before anything reaches the operator's terminal, so a crafted reason cannot
move the cursor or rewrite earlier lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pgcli_jit.core import clock
from pgcli_jit.core.sanitize import printable as printable  # the admin tables use it as fmt.printable

REASON_WIDTH = 40


def local_time(value: datetime | None) -> str:
    """With date and zone: an operator compares these with logs from other machines."""
    return clock.local_time(value, zone=True, date=True) if value else "-"


def stamp() -> str:
    """Now as ISO 8601 with the zone's offset, to the millisecond: a long-running process's
    lines (the reaper's) are read in a log next to the server's."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def clip(text: str, width: int = REASON_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return local_time(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return printable(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart."""
    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *text_rows, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in (list(headers), *text_rows))


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=_json_default)


def json_line(row: dict[str, Any]) -> str:
    """One object on one line (a stream's line), with ``to_json``'s conversions."""
    return json.dumps(row, default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)
