"""Files whose content decides where credentials go must be the user's own.

The rule ssh applies to ``~/.ssh/config`` and keys: refuse a file that a
group or other users can write (or that another user owns), because whoever
can edit it can point a profile, or a ``command`` backend, at a program or a
server of theirs and collect a fresh password.  Root-owned files are trusted,
as ssh trusts them.

The directories above the file matter as much as the file: whoever can write
in one can rename the file (or a directory on the way) aside and put their own
in its place, whatever the file's mode.  So, as ssh's ``safe_path`` does, every
directory from the file up to ``/`` must belong to the user or root and be
writable by nobody else.  Unlike ssh, which stops at the home directory, the
walk goes on to ``/`` (a config or a broker can live anywhere), so one
exception is needed: a directory with the sticky bit (``/tmp``) lets others add
entries but not rename or remove ours, and the entry below it is checked in
turn.  The walk covers the path as named *and* as resolved: a symlink's
directory decides which file is used, the target's directories what it holds.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def ownership_problem(st: os.stat_result) -> str | None:
    """What is wrong with a file's owner and mode, as a phrase, or None if it is fine."""
    if st.st_uid not in (os.geteuid(), 0):
        return f"is owned by another user (uid {st.st_uid})"
    if stat.S_IMODE(st.st_mode) & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def fix_hint(path: object) -> str:
    """The one command that fixes it."""
    return f"whoever can edit it can redirect your credentials: run chmod go-w {path}"


def parent_problem(path: str | os.PathLike[str], *, also_trust: int | None = None) -> tuple[str, str] | None:
    """The first directory above ``path`` through which others could swap the file:
    ``(phrase, hint)`` for a one-line error, or None when every one is safe.

    A directory is safe when the user or root owns it (or ``also_trust``: for a
    program, whoever owns the program itself, e.g. a Homebrew user, can replace it
    anyway) and neither group nor others can write it, unless its sticky bit is set.
    A directory that cannot be examined is skipped: the file was reached through it.
    """
    trusted = {os.geteuid(), 0} | ({also_trust} if also_trust is not None else set())
    for directory in _directories(path):
        try:
            st = os.stat(directory)
        except OSError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in trusted:
            return (f"is in {directory}, which is owned by another user (uid {st.st_uid})",
                    f"whoever owns {directory} can replace the file: move it to a directory of your own")
        if mode & 0o022 and not mode & stat.S_ISVTX:
            return (f"is in {directory}, which group or others can write (mode {mode:04o})",
                    f"whoever can write in {directory} can swap the file and redirect your credentials:"
                    f" run chmod go-w {directory}")
    return None


def _directories(path: str | os.PathLike[str]) -> list[Path]:
    """Every directory above ``path`` as named, then those of its resolved path, nearest
    first, each once."""
    named = Path(os.path.abspath(path)).parents
    resolved = Path(os.path.realpath(path)).parents
    seen: dict[Path, None] = {}
    for directory in (*named, *resolved):
        seen.setdefault(directory)
    return list(seen)
