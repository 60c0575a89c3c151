"""The audit archive file: JSON lines that prove their own rows, with no server.

Line 1 is the header: where the archive starts in the chain (``after_seq``, ``after_hash``:
the checkpoint before it, null at the chain's start).  Then one line per audit row in chain
order, with its fields, its ``prev_hash`` and ``hash``, and ``hashed``: the exact text the
server hashed (``jit._audit_text``; the server's JSON, which Python cannot reproduce byte
for byte).  The last line is the end: how many rows, and the last one's seq and hash.

:func:`verify` recomputes every hash (``sha256(prev_hash || hashed)``), checks each row's
fields against ``hashed`` and each link, so an edited, deleted or inserted line fails, the
first row included (the header names its predecessor) and the last (the end names it).
What it cannot tell is a file rewritten end to end, header and hashes included: the
server's checkpoint and its chained ``archive`` row record the last hash for that.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pgcli_jit.admin import jsonl_file
from pgcli_jit.core.errors import JitError

FORMAT = "pgcli-jit audit archive"
VERSION = 1
#: the fields of a row, in the order of the array the server hashes (jit._audit_text)
FIELDS = ("id", "at", "event", "profile", "rolname", "requester", "actor", "client_addr",
          "reason", "expires_at", "detail")


class ArchiveError(JitError):
    """A file that is not an intact archive: where, and what is wrong."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}: line {line}: {problem}")
        self.path, self.line, self.problem = path, line, problem


@dataclass(frozen=True)
class Summary:
    """What an intact archive holds."""

    path: Path
    rows: int
    after_seq: int | None
    after_hash: str | None
    first_seq: int | None
    through_seq: int | None
    through_hash: str | None


def header(after_seq: int | None, after_hash: bytes | None, **about: Any) -> dict[str, Any]:
    return {"archive": FORMAT, "format": VERSION, **about, "after_seq": after_seq,
            "after_hash": after_hash.hex() if after_hash is not None else None}


def row_line(seq: int, prev_hash: bytes | None, digest: bytes, hashed: str) -> dict[str, Any]:
    """One row as the file holds it: its fields read from the very text that was hashed."""
    values = json.loads(hashed)
    return {"seq": seq, **dict(zip(FIELDS, values, strict=True)),
            "prev_hash": prev_hash.hex() if prev_hash is not None else None,
            "hash": digest.hex(), "hashed": hashed}


def write(path: Path, head: dict[str, Any], rows: Iterable[dict[str, Any]]) -> Summary | None:
    """Write the archive the one safe way (:func:`jsonl_file.write_linked`: created new beside
    ``path``, owner-only since the rows hold requesters' reasons, verified on disk, then
    linked): ``path`` is either absent or a whole, intact archive.  None when there were no
    rows.  Raises :class:`ArchiveError` if the written file does not verify, :class:`JitError`
    if either name exists."""

    def lines(out: TextIO) -> bool:
        count, prev_seq, prev_hash = 0, head["after_seq"], head["after_hash"]
        out.write(jsonl_file.line(head))
        for row in rows:
            out.write(jsonl_file.line(row))
            count, prev_seq, prev_hash = count + 1, row["seq"], row["hash"]
        out.write(jsonl_file.line({"end": True, "rows": count, "through_seq": prev_seq,
                                   "through_hash": prev_hash}))
        return count > 0

    found = jsonl_file.write_linked(path, lines, verify)
    return None if found is None else dataclasses.replace(found, path=path)


def verify(path: Path) -> Summary:
    """Check one archive file; raise :class:`ArchiveError` at the first thing that is wrong."""
    lines = jsonl_file.read(path, ArchiveError)
    if not lines or lines[0][1].get("archive") != FORMAT or lines[0][1].get("format") != VERSION:
        raise ArchiveError(path, 1, f"is not a {FORMAT} (format {VERSION}) header")
    head = lines[0][1]
    prev, seq, first = _hex(path, 1, head.get("after_hash")), head.get("after_seq"), None
    for number, obj in lines[1:]:
        if obj.get("end") is True:
            _check_end(path, number, obj, number - 2, seq, prev)
            if number != len(lines):
                raise ArchiveError(path, number + 1, "a line after the end: a row was added")
            return Summary(path, number - 2, head.get("after_seq"), head.get("after_hash"), first, seq,
                           prev.hex() if prev is not None else None)
        prev, seq = _check_row(path, number, obj, prev, seq)
        first = first if first is not None else seq
    raise ArchiveError(path, len(lines), "the file stops before its end line: rows were cut off")


def _check_row(path: Path, number: int, row: dict[str, Any], prev: bytes | None,
               prev_seq: int | None) -> tuple[bytes, int]:
    """The row's link, hash, fields and order; returns its hash and seq."""
    where = f"(row id {row.get('id')}, seq {row.get('seq')})"
    hashed, seq = row.get("hashed"), row.get("seq")
    if not isinstance(hashed, str) or not isinstance(seq, int):
        raise ArchiveError(path, number, f"{where} is not an audit row")
    if _hex(path, number, row.get("prev_hash")) != prev:
        raise ArchiveError(path, number, f"{where} does not link to the line before: "
                                         "a row before it was deleted, or this one inserted")
    digest = hashlib.sha256((prev or b"") + hashed.encode("utf-8")).digest()
    if _hex(path, number, row.get("hash")) != digest:
        raise ArchiveError(path, number, f"{where} does not match its hash: the row was edited")
    try:
        values = json.loads(hashed)
    except ValueError:
        values = None
    if values != [row.get(name) for name in FIELDS]:
        raise ArchiveError(path, number, f"{where} has fields other than the text its hash covers: "
                                         "the row was edited")
    if prev_seq is not None and seq <= prev_seq:
        raise ArchiveError(path, number, f"{where} is out of chain order")
    return digest, seq


def _check_end(path: Path, number: int, end: dict[str, Any], rows: int, seq: int | None,
               prev: bytes | None) -> None:
    said = (end.get("rows"), end.get("through_seq"), _hex(path, number, end.get("through_hash")))
    if said != (rows, seq, prev):
        raise ArchiveError(path, number, f"the end line says {said[0]} rows through seq {said[1]}, the "
                                         f"file holds {rows} through seq {seq}: rows were deleted or added")


def _hex(path: Path, number: int, value: object) -> bytes | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return bytes.fromhex(value)
    except ValueError:
        pass
    raise ArchiveError(path, number, "holds a hash that is not hex")


def verify_all(paths: list[Path]) -> list[Summary]:
    """Each file on its own, then each after the one before it: the later continues the chain."""
    found = [verify(path) for path in paths]
    for before, after in itertools.pairwise(found):
        if (after.after_seq, after.after_hash) != (before.through_seq, before.through_hash):
            raise ArchiveError(after.path, 1, f"does not continue {before.path} (it starts after seq "
                                              f"{after.after_seq}, that one ends at seq "
                                              f"{before.through_seq})")
    return found
