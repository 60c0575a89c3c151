"""The session-log archive file: sealed leases' lines as JSON lines that prove themselves.

Line 1 is the header (format, database, cut-off).  Then, for each lease, one ``lease`` line
with its seal (``seal_audit_id``: the ``session`` row of the audit chain, and that row's
``lines`` and ``digest``), followed by its ``line`` lines in the order the digest covers, each
with its fields and ``hashed``: the exact text the server hashed (``jit._session_line_text``).
The last line is the end: how many leases and lines.

:func:`verify` recomputes each lease's digest (SHA-256 of its ``hashed`` texts joined by
newlines) and count against its seal, and each line's fields against ``hashed``: an edited,
deleted, added or moved line fails.  The seal itself is proven by the audit chain (in the table
or in an audit archive): its ``detail`` holds the same count and digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pgcli_jit.admin import jsonl_file
from pgcli_jit.core.errors import JitError

FORMAT = "pgcli-jit session log archive"
VERSION = 1
#: a line's fields, in the order of the array the server hashes (jit._session_line_text)
FIELDS = ("session_id", "line_num", "lease_id", "rolname", "logged_at", "dbname", "pid", "remote",
          "severity", "ps", "message", "detail")
#: the one field the server hashes only when a line has it (a message raised inside a function)
CONTEXT = "context"


class SessionArchiveError(JitError):
    """A file that is not an intact session-log archive: where, and what is wrong."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}: line {line}: {problem}")
        self.path, self.line, self.problem = path, line, problem


@dataclass
class Summary:
    """What an intact archive holds: each lease with the digest of its lines."""

    path: Path
    leases: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0


def header(**about: Any) -> dict[str, Any]:
    return {"archive": FORMAT, "format": VERSION, **about}


def records(rows: Iterable[Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """The file's lease and line records from the server's rows (``lease_id, rolname,
    requester, profile, seal_id, lines, digest, hashed``), ordered by lease."""
    current = None
    for lease_id, rolname, requester, profile, seal_id, lines, digest, hashed in rows:
        if lease_id != current:
            current = lease_id
            yield {"type": "lease", "lease_id": lease_id, "rolname": rolname, "requester": requester,
                   "profile": profile, "seal_audit_id": seal_id, "lines": lines, "digest": digest}
        yield {"type": "line", **_fields(json.loads(hashed)), "hashed": hashed}


def _fields(values: list[Any]) -> dict[str, Any]:
    """A hashed line's values by name: the fixed fields, and its context when it has one."""
    names = FIELDS if len(values) == len(FIELDS) else (*FIELDS, CONTEXT)
    return dict(zip(names, values, strict=True))


def _values(obj: dict[str, Any]) -> list[Any]:
    """What the server hashed for a line record: the same fields, in the same order."""
    values = [obj.get(name) for name in FIELDS]
    return [*values, obj[CONTEXT]] if CONTEXT in obj else values


def digest_of(texts: Sequence[str]) -> str:
    """As ``jit._session_digest``: SHA-256 of the hashed texts joined by newlines."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def write(path: Path, head: dict[str, Any], recs: Iterable[dict[str, Any]]) -> Summary | None:
    """Write the archive the one safe way (:func:`jsonl_file.write_linked`: created new beside
    ``path``, owner-only since statements may hold personal data, verified on disk, then
    linked).  None when there was nothing to archive (nothing left on disk)."""

    def lines(out: TextIO) -> bool:
        leases = count = 0
        out.write(jsonl_file.line(head))
        for rec in recs:
            out.write(jsonl_file.line(rec))
            leases += rec["type"] == "lease"
            count += rec["type"] == "line"
        out.write(jsonl_file.line({"end": True, "leases": leases, "lines": count}))
        return leases > 0

    found = jsonl_file.write_linked(path, lines, verify)
    if found is not None:
        found.path = path
    return found


def verify(path: Path) -> Summary:
    """Check one archive file; raise :class:`SessionArchiveError` at the first thing wrong."""
    objs = jsonl_file.read(path, SessionArchiveError)
    if not objs or objs[0][1].get("archive") != FORMAT or objs[0][1].get("format") != VERSION:
        raise SessionArchiveError(path, 1, f"is not a {FORMAT} (format {VERSION}) header")
    found = Summary(path)
    lease: tuple[int, dict[str, Any]] | None = None
    texts: list[str] = []
    for number, obj in objs[1:]:
        if obj.get("type") == "line":
            if lease is None:
                raise SessionArchiveError(path, number, "a line before any lease")
            texts.append(_check_line(path, number, obj, lease[1]["lease_id"]))
            continue
        if lease is not None:
            _check_lease(path, *lease, texts)
            found.leases.append((lease[1]["lease_id"], lease[1]["digest"]))
            found.lines += len(texts)
        lease, texts = None, []
        if obj.get("type") == "lease":
            lease = (number, obj)
        elif obj.get("end") is True:
            if (obj.get("leases"), obj.get("lines")) != (len(found.leases), found.lines):
                raise SessionArchiveError(path, number, f"the end line says {obj.get('leases')} leases and "
                                          f"{obj.get('lines')} lines, the file holds {len(found.leases)} "
                                          f"and {found.lines}: leases were deleted or added")
            if number != len(objs):
                raise SessionArchiveError(path, number + 1, "a line after the end: something was added")
            return found
        else:
            raise SessionArchiveError(path, number, "is neither a lease, a line nor the end")
    raise SessionArchiveError(path, len(objs), "the file stops before its end line: it was cut off")


def _check_line(path: Path, number: int, obj: dict[str, Any], lease_id: object) -> str:
    hashed = obj.get("hashed")
    if not isinstance(hashed, str):
        raise SessionArchiveError(path, number, "a line without the text its seal covers")
    try:
        values = json.loads(hashed)
    except ValueError:
        values = None
    if values != _values(obj):
        raise SessionArchiveError(path, number, "has fields other than the text its seal covers: "
                                                "the line was edited")
    if obj.get("lease_id") != lease_id:
        raise SessionArchiveError(path, number, f"belongs to lease {obj.get('lease_id')}, under lease "
                                                f"{lease_id}: lines were moved")
    return hashed


def _check_lease(path: Path, number: int, lease: dict[str, Any], texts: list[str]) -> None:
    said = (lease.get("lines"), lease.get("digest"))
    if said != (len(texts), digest_of(texts)):
        what = "a line was edited" if said[0] == len(texts) else "lines were deleted or added"
        raise SessionArchiveError(path, number, f"lease {lease.get('lease_id')}: its seal says {said[0]} "
                                                f"lines, and the {len(texts)} in the file do not match "
                                                f"its digest: {what}")
