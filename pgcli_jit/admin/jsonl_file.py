"""Archive files, written and read the one safe way: JSON lines, created new, linked into place.

Both archives (audit rows, and sessions' log lines) are evidence that leaves the database, so
they are written the same way: next to the file asked for, created new (``O_EXCL``, never
through a symbolic link: a link planted at the temporary name truncated its target once),
owner-only (they hold reasons and statements), fsynced, verified as read back from disk, and
only then linked (not renamed) to the name asked for, so an existing file of either name is
never opened for writing or replaced, and the folder is fsynced.  The name asked for is
either absent or a whole archive that verifies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from pgcli_jit.core.errors import JitError

T = TypeVar("T")
#: how an archive says what is wrong with a file: the file, the line (0: the whole file), what
Problem = Callable[[Path, int, str], Exception]


def write_linked(path: Path, write: Callable[[TextIO], bool], verify: Callable[[Path], T]) -> T | None:
    """``write`` the archive's lines (True when it wrote any record), verify what is on disk,
    link it to ``path``.  None when there was nothing to archive (nothing is left on disk)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise JitError(f"{partial} exists: another archive to {path.name} is being written, or one "
                       "stopped", "remove it once no archive runs") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as out:
            wrote = write(out)
            out.flush()
            os.fsync(out.fileno())
        if not wrote:
            return None
        found = verify(partial)
        try:
            os.link(partial, path)
        except FileExistsError:
            raise JitError(f"{path} exists: an archive never overwrites a file",
                           "choose another file") from None
        _fsync_folder(path.parent)
        return found
    finally:
        partial.unlink(missing_ok=True)


def line(obj: dict[str, Any]) -> str:
    """One record as the file holds it (ASCII: anything else is escaped)."""
    return json.dumps(obj) + "\n"


def read(path: Path, problem: Problem) -> list[tuple[int, dict[str, Any]]]:
    """Every line of the file as (line number, JSON object); ``problem`` at the first that is
    not one, or when the file cannot be read."""
    try:
        with open(path, encoding="ascii", newline="\n") as fh:
            return list(_objects(path, fh, problem))
    except (OSError, UnicodeDecodeError) as exc:
        raise problem(path, 0, f"cannot be read: {getattr(exc, 'strerror', None) or exc}") from None


def _objects(path: Path, lines: TextIO, problem: Problem) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in enumerate(lines, 1):
        try:
            obj = json.loads(text)
        except ValueError:
            raise problem(path, number, "is not JSON") from None
        if not isinstance(obj, dict):
            raise problem(path, number, "is not a JSON object")
        yield number, obj


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder or Path("."), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
