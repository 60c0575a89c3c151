"""The audit trail: one JSON line per event, append-only, never a secret.

Lines are built from :meth:`Lease.audit_fields` and plain strings the caller
passes, so a password has no way in: ``Lease`` keeps it inside ``Credentials``,
which this module never reads.  The file is created ``0600`` because the reason
text and user names are still nobody else's business.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgcli_jit.clock import Clock, system_clock

if TYPE_CHECKING:
    from pgcli_jit.lease import Lease

log = logging.getLogger(__name__)
EVENTS = frozenset({"request", "renew", "rotate", "revoke", "expire", "failure"})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


class AuditLog:
    def __init__(self, path: Path | None, *, clock: Clock = system_clock) -> None:
        self.path = path
        self.clock = clock

    def record(self, event: str, lease: Lease | None = None, **fields: Any) -> dict[str, Any]:
        """Append one event; a log that cannot be written is reported, never fatal."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        entry: dict[str, Any] = {"time": _iso(self.clock()), "event": event}
        if lease is not None:
            data = lease.audit_fields()
            data["issued_at"] = _iso(data["issued_at"])
            data["expires_at"] = _iso(data["expires_at"])
            data["requester"] = lease.requester
            data["reason"] = lease.reason
            entry.update(data)
        entry.update({k: v for k, v in fields.items() if v is not None})
        self._append(entry)
        return entry

    def _append(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")
        except OSError as exc:
            log.warning("audit log %s not written: %s", self.path, exc.strerror)
