"""Four eyes, as both ends show it: the pending table and the line a decision prints.

Pure functions of what ``jit.pending_for_me()`` / ``jit.approve`` / ``jit.deny`` return,
shared by ``\\jit pending|approve|deny`` and ``pgcli-jit-admin pending|approve|deny`` so
the approver reads the same words in the shell and in a script.  Every name and reason
was typed by someone else: control characters are replaced before they reach a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pgcli_jit.core.durations import format_clock, format_duration

PENDING_HEADERS = ("id", "requester", "profile", "ttl", "reason", "waiting since", "approvals")
PENDING_SQL = ("SELECT id, requester, profile, ttl_seconds, reason, created_at, expires_at, approvals,"
               " needed FROM jit.pending_for_me()")
APPROVE_SQL = "SELECT jit.approve(%s, %s)"
DENY_SQL = "SELECT jit.deny(%s, %s)"


def printable(value: object) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


def pending_rows(rows: Sequence[Sequence[Any]], now: datetime) -> list[tuple[str, ...]]:
    """One line per request the caller may decide, with how long it has waited."""
    out: list[tuple[str, ...]] = []
    for rid, requester, profile, ttl, reason, created, _expires, got, needed in rows:
        waited = format_clock(max(0.0, (now - created).total_seconds()))
        since = created.astimezone().strftime("%H:%M:%S")
        out.append((str(rid), printable(requester), printable(profile), format_duration(float(ttl)),
                    printable(reason or "-"), f"{since} ({waited} ago)", f"{got} of {needed}"))
    return out


def decided_line(answer: Mapping[str, Any], verb: str) -> str:
    """``Approved request 17 (alice, write)``, or how many approvals are still missing."""
    rid, who, profile = answer.get("request_id"), answer.get("requester"), answer.get("profile")
    head = f"request {rid} ({printable(who)}, {printable(profile)})"
    state = answer.get("state")
    if verb == "deny":
        return f"Denied {head}: {printable(answer.get('note') or '')}"
    if state == "approved":
        return f"Approved {head}: {printable(who)}'s session switches when it collects the role."
    got, needed = len(answer.get("approved_by") or ()), answer.get("needed")
    return f"Approval recorded for {head}: {got} of {needed}; waiting for another member of " \
           f"{printable(answer.get('approvers'))}."

