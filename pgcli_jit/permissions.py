"""Files whose content decides where credentials go must be the user's own.

The rule ssh applies to ``~/.ssh/config`` and keys: refuse a file that a
group or other users can write (or that another user owns), because whoever
can edit it can point a profile, or a ``command`` backend, at a program or a
server of theirs and collect a fresh password.  Root-owned files are trusted,
as ssh trusts them.
"""

from __future__ import annotations

import os
import stat


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
