"""The audit trail: one JSON line per event, append-only, never a secret.

Lines are built from :meth:`Lease.audit_fields` and plain strings the caller
passes, so a password has no way in: ``Lease`` keeps it inside ``Credentials``,
which this module never reads.

The file is the user's record of who had access and why, so it is opened the
way a secret would be: created ``0600``, never through a symbolic link
(``O_NOFOLLOW``: a link planted at the path must not redirect the trail), and
an existing file that group or others may read is tightened to ``0600``.

Fail closed, as Vault refuses requests when no audit device can record them:
:meth:`AuditLog.ensure_writable` (called after minting, before the credentials
are handed out) raises :class:`AuditError` when the entry for a lease cannot be
built or the file cannot be opened, and ``record(..., required=True)`` raises
when the line cannot be written.  Events that end access (revoke, expire) and
failure reports only warn: a broken disk must never keep access open.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgcli_jit.core.clock import Clock, system_clock
from pgcli_jit.core.errors import AuditError

if TYPE_CHECKING:
    from pgcli_jit.core.lease import Lease

log = logging.getLogger(__name__)
EVENTS = frozenset({"request", "renew", "rotate", "revoke", "expire", "failure", "pending",
                    "cancel", "approval_closed"})
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_HINT = "fix the audit_log path, or set audit_required = false in the profile to go on without it"


def iso(ts: float) -> str:
    """A time as the audit log writes it (UTC, to the second)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


class AuditLog:
    def __init__(self, path: Path | None, *, clock: Clock = system_clock) -> None:
        self.path = path
        self.clock = clock

    def record(self, event: str, lease: Lease | None = None, *, required: bool = False,
               **fields: Any) -> dict[str, Any]:
        """Append one event.  A failure raises AuditError when ``required``, else warns."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        entry: dict[str, Any] = {"event": event}
        try:
            entry = self._entry(event, lease, fields)
            self._append(entry)
        except AuditError as exc:
            if required:
                raise
            log.warning("%s", exc.message)
        return entry

    def ensure_writable(self, lease: Lease, *, required: bool = True) -> None:
        """Refuse (AuditError) a lease whose request could not be audited: its entry cannot
        be built (times out of range) or the file cannot be opened.  Writes nothing."""
        try:
            self._entry("request", lease, {})
            if self.path is not None:
                os.close(self._open())
        except AuditError as exc:
            if required:
                raise
            log.warning("%s (audit_required = false: going on)", exc)

    def _entry(self, event: str, lease: Lease | None, fields: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"time": self._time(self.clock()), "event": event}
        if lease is not None:
            data = lease.audit_fields()
            data["issued_at"] = self._time(data["issued_at"])
            data["expires_at"] = self._time(data["expires_at"])
            data["requester"] = lease.requester
            data["reason"] = lease.reason
            entry.update(data)
        entry.update({k: v for k, v in fields.items() if v is not None})
        return entry

    def _time(self, ts: float) -> str:
        try:
            return iso(ts)
        except (OverflowError, ValueError, OSError):
            raise AuditError(f"audit log {self.path}: a time cannot be recorded ({ts!r})",
                             "the backend answered with an impossible expiry") from None

    def _append(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
        fd = self._open()
        try:
            os.write(fd, line)
        except OSError as exc:
            raise AuditError(f"audit log {self.path} not written: {exc.strerror}", _HINT) from None
        finally:
            os.close(fd)

    def _open(self) -> int:
        """The file, for appending: created 0600, never through a link, tightened if loose."""
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, _FLAGS, 0o600)
        except OSError as exc:
            why = "it is a symbolic link" if _is_link(self.path) else exc.strerror
            raise AuditError(f"audit log {self.path} not written: {why}", _HINT) from None
        try:
            _tighten(fd, self.path)
        except AuditError:
            os.close(fd)
            raise
        return fd


def _is_link(path: Path) -> bool:
    try:
        return path.is_symlink()
    except OSError:
        return False


def _tighten(fd: int, path: Path) -> None:
    """A regular file only the user can read: chmod 0600 if group/others had any access."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise AuditError(f"audit log {path} is not a regular file", _HINT)
    if stat.S_IMODE(st.st_mode) & 0o077:
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise AuditError(f"audit log {path} is readable by others and cannot be made 0600: "
                             f"{exc.strerror}", f"run chmod 600 {path}") from None
        log.warning("audit log %s was mode %04o; tightened to 0600", path, stat.S_IMODE(st.st_mode))
