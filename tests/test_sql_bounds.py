"""Bounds the client and the server both enforce are the same numbers and patterns.

The server's are read from the SQL text itself (``sql/NNN_*.sql`` and ``sql/functions/``,
the files ``pgcli-jit-admin setup`` applies), so changing one side without the other fails
here, not in production.
"""

from __future__ import annotations

import re
from pathlib import Path

from pgcli_jit import server
from pgcli_jit.core.limits import MAX_REASON, PROFILE_NAME_PATTERN

SQL = Path(server.__file__).parent / "sql"


def sql(name: str) -> str:
    """One SQL file, or (``functions``) every file of the functions, in the order setup applies them."""
    if name == "functions":
        return "\n".join(f.text for f in server.sql_files() if f.version is None)
    return (SQL / name).read_text()


def test_the_reason_bound_is_the_servers() -> None:
    """``jit.request`` refuses a longer reason; the client refuses it first, with the same number."""
    found = re.findall(r"length\(reason\)\s*>\s*(\d+)", sql("functions"))
    assert found and {int(n) for n in found} == {MAX_REASON}


def test_the_approvers_note_bound_is_the_reasons() -> None:
    """An approval comment or a denial reason is held to the same bound as a request's reason."""
    found = re.findall(r"length\(coalesce\(note,\s*''\)\)\s*>\s*(\d+)", sql("functions"))
    assert found and {int(n) for n in found} == {MAX_REASON}


def test_the_profile_name_pattern_is_the_servers() -> None:
    """Both places the server checks a profile name: the table's CHECK and ``jit.request``."""
    table = re.findall(r"name\s+text PRIMARY KEY CHECK \(name ~ '([^']+)'\)", sql("001_schema.sql"))
    request = re.findall(r"p_profile !~ '([^']+)'", sql("functions"))
    assert table == [PROFILE_NAME_PATTERN]
    assert request and set(request) == {PROFILE_NAME_PATTERN}


def test_the_pattern_means_what_the_docs_say() -> None:
    """The control: the pattern read back is a working regular expression of that meaning."""
    name = re.compile(PROFILE_NAME_PATTERN)
    assert name.match("read") and name.match("db1.write-2") and name.match("a" * 63)
    assert not name.match("a" * 64) and not name.match("-x") and not name.match("x y")


def test_the_unsafe_characters_are_the_clients() -> None:
    """Reasons and approval notes: the server refuses exactly the characters the client does
    (control characters, line and paragraph separators, bidirectional overrides)."""
    from pgcli_jit.core import sanitize

    (server_class,) = re.findall(r"SELECT '(\[[^']+\])'::text", sql("functions"))
    server_re = re.compile(re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), server_class))
    differ = [hex(c) for c in range(1, 0x30000)
              if bool(server_re.search(chr(c))) != bool(sanitize._UNSAFE.search(chr(c)))]
    assert differ == []   # (NUL cannot be in a PostgreSQL text, so the server's class starts at 1)
