"""How ``pgcli-jit-admin`` shows JIT roles: a plain table for people, JSON for scripts.

Everything shown comes from the role's comment, which the *requester* wrote
(the reason is free text): control characters are replaced before anything
reaches the operator's terminal, so a crafted reason cannot move the cursor
or rewrite earlier lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pgcli_jit.backends.pg_roles import JitRole
from pgcli_jit.durations import format_duration

HEADERS = ("ROLE", "REQUESTER", "PROFILE", "REASON", "ISSUED", "EXPIRES", "REMAINING", "SESSIONS",
           "LOGIN")
REASON_WIDTH = 40


def printable(value: object) -> str:
    """``str(value)`` with every non-printable character (ESC, newline ...) shown as ``?``."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


def local_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _parse_iso(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


def remaining(role: JitRole, now: datetime) -> str:
    """Time left by the server's clock, or why there is none."""
    if role.valid_until is None:
        return "no expiry"
    if role.expired(now):
        return "expired"
    return format_duration((role.valid_until - now).total_seconds())


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table_row(role: JitRole, now: datetime) -> tuple[str, ...]:
    meta = role.metadata
    return (
        printable(role.name), printable(meta.get("requester") or "-"),
        printable(meta.get("profile") or "-"),
        _clip(printable(meta.get("reason") or "-"), REASON_WIDTH),
        local_time(_parse_iso(meta.get("issued"))), local_time(role.valid_until),
        remaining(role, now), str(role.sessions), "yes" if role.can_login else "no",
    )


def render_table(rows: Sequence[Sequence[str]], headers: Sequence[str] = HEADERS) -> str:
    """Left-aligned columns two spaces apart, like ``psql``'s unaligned-but-readable output."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in (headers, *rows)]
    return "\n".join(lines)


def leases_table(roles: Sequence[JitRole], now: datetime) -> str:
    if not roles:
        return "No JIT roles."
    return render_table([table_row(role, now) for role in roles])


def lease_json(role: JitRole, now: datetime) -> dict[str, Any]:
    """One role for scripts: ISO-8601 UTC times, seconds left (negative once expired)."""
    meta = role.metadata
    left = (role.valid_until - now).total_seconds() if role.valid_until else None
    return {
        "role": role.name, "requester": meta.get("requester"), "profile": meta.get("profile"),
        "reason": meta.get("reason"), "issued": meta.get("issued"),
        "expires": role.valid_until.isoformat() if role.valid_until else None,
        "remaining_seconds": round(left) if left is not None else None,
        "expired": role.expired(now), "sessions": role.sessions, "can_login": role.can_login,
        "renewals": meta.get("renewals"), "max_expires": meta.get("max_expires"),
    }


def leases_json(roles: Sequence[JitRole], now: datetime) -> str:
    return json.dumps([lease_json(role, now) for role in roles], indent=2)


def why_reaped(role: JitRole, now: datetime) -> str:
    """The reason ``reap`` picked this role, for its one line of output."""
    if not role.can_login:
        return "NOLOGIN: left by an unfinished revoke"
    if role.valid_until is None:
        return "no expiry"
    return f"expired {format_duration((now - role.valid_until).total_seconds())} ago"


def sessions_text(count: int, verb: str = "") -> str:
    noun = "session" if count == 1 else "sessions"
    return f"{count} {noun}{' ' + verb if verb else ''}"


def error_text(exc: BaseException) -> str:
    """The server's own words (message and first line of detail), never psycopg internals."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc)
    lines = [line.strip() for line in primary.splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    detail = getattr(diag, "message_detail", None)
    return f"{text}: {detail.splitlines()[0]}" if detail else text
