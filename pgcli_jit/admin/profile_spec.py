"""A server profile as data: the shape ``profile list --json`` prints and ``apply`` reads.

One shape for both directions, so what ``list --json`` printed applies back as a no-op.  A
key left out of a file means its default, never "keep the server's value": the file is the
whole profile.  Durations are whole seconds (the server rounds every duration it keeps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgcli_jit.admin.connect import Conn
from pgcli_jit.core.durations import format_duration, parse_duration
from pgcli_jit.core.errors import UsageError
from pgcli_jit.server import statements

DURATIONS = ("ttl", "max_ttl", "approval_timeout", "break_glass_max_ttl")
ROLES = ("grants", "requesters", "owner", "approvers", "auto_approve")
#: integer keys and the range the server accepts
BOUNDED = {"max_live": (1, 1000), "approvals": (1, 10), "break_glass_per_day": (1, 100)}
FLAGS = ("reason_required", "break_glass")
TEXTS = ("requesters", "owner", "description", "approvers", "log_statements", "auto_approve")
#: the fields ``jit.profile_approval_rules`` keeps, apart from ``jit.profile_set``'s
RULES = ("auto_approve", "break_glass", "break_glass_max_ttl", "break_glass_per_day")


@dataclass(frozen=True)
class Profile:
    """Every field ``jit.profile_set`` and ``jit.profile_approval_rules`` keep; '' for no owner,
    no approvers and no auto-approve role."""

    grants: tuple[str, ...]
    ttl: int = 900
    max_ttl: int = 3600
    max_live: int = 5
    requesters: str = "jit_requester"
    reason_required: bool = False
    owner: str = ""
    description: str = ""
    approvers: str = ""
    approvals: int = 1
    approval_timeout: int = 3600
    log_statements: str = "all"
    auto_approve: str = ""
    break_glass: bool = False
    break_glass_max_ttl: int = 3600
    break_glass_per_day: int = 1

    def rules(self) -> tuple[object, ...]:
        """The approval rules alone: ``apply`` calls ``jit.profile_approval_rules`` only when
        they differ, so a change elsewhere writes one audit row, not two."""
        return tuple(getattr(self, k) for k in RULES)

    def to_doc(self) -> dict[str, Any]:
        """The file's form: durations as ``15m``, grants as a list."""
        doc = dataclasses.asdict(self)
        doc["grants"] = list(self.grants)
        doc.update({k: format_duration(getattr(self, k)) for k in DURATIONS})
        return doc

    def changes(self, new: Profile) -> list[tuple[str, str, str]]:
        """(field, old, new) for each field that differs, both shown as the file writes them."""
        old_doc, new_doc = self.to_doc(), new.to_doc()
        return [(k, shown(old_doc[k]), shown(new_doc[k])) for k in old_doc if old_doc[k] != new_doc[k]]


FIELDS = tuple(f.name for f in dataclasses.fields(Profile))


def shown(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(value) or "''"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if value != "" else "''"


def on_server(conn: Conn) -> dict[str, Profile]:
    """Every profile of the database, by name."""
    rows = conn.execute(statements.PROFILE_STATE).fetchall()
    return {n: Profile(tuple(g), round(t), round(m), live, r, bool(need), o, d, a, k, round(w), log,
                       auto, bool(glass), round(glass_ttl), per_day)
            for n, g, t, m, live, r, need, o, d, a, k, w, log, auto, glass, glass_ttl, per_day in rows}


def document(profiles: Mapping[str, Profile]) -> dict[str, Any]:
    """What ``profile list --json`` prints and ``apply`` reads back."""
    return {"profiles": {name: p.to_doc() for name, p in sorted(profiles.items())}}


def from_document(doc: object, source: str) -> dict[str, Profile]:
    """The profiles a file declares; anything wrong is a UsageError naming profile and key."""
    if not isinstance(doc, dict) or set(doc) != {"profiles"} or not isinstance(doc["profiles"], dict):
        raise UsageError(f"{source}: the file holds one table, [profiles.NAME] per profile "
                         "(an empty [profiles] removes every profile)")
    return {str(name): _profile(body, f"{source}: profile {name}")
            for name, body in doc["profiles"].items()}


def _profile(body: object, where: str) -> Profile:
    if not isinstance(body, dict):
        raise UsageError(f"{where}: is not a table of keys")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]}", f"keys: {', '.join(FIELDS)}")
    if "grants" not in body:
        raise UsageError(f"{where}: grants: at least one grant role is needed")
    values: dict[str, Any] = {k: _value(k, v, f"{where}: {k}") for k, v in body.items()}
    values.setdefault("max_ttl", max(values.get("ttl", 900), 3600))
    return Profile(**values)


def _value(key: str, value: object, where: str) -> object:
    if key == "grants":
        if not isinstance(value, list) or not value or not all(isinstance(g, str) and g for g in value):
            raise UsageError(f"{where}: a list of one or more role names, e.g. [\"app_read\"]")
        return tuple(value)
    if key in DURATIONS:
        try:
            return round(parse_duration(value))
        except ValueError as exc:
            raise UsageError(f"{where}: {exc}") from None
    if key in BOUNDED:
        low, high = BOUNDED[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UsageError(f"{where}: {value!r} is not a whole number from {low} to {high}")
        return value
    if key in FLAGS:
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {value!r} is not true or false")
        return value
    if not isinstance(value, str):
        raise UsageError(f"{where}: {value!r} is not a string")
    return value


def role_keys(profiles: Mapping[str, Profile]) -> dict[str, tuple[str, str]]:
    """Each role name the profiles use, with the first (profile, key) that names it."""
    found: dict[str, tuple[str, str]] = {}
    for name, p in sorted(profiles.items()):
        for key in ROLES:
            value = getattr(p, key)
            for role in value if isinstance(value, tuple) else (value,):
                if role:
                    found.setdefault(role, (name, key))
    return found
