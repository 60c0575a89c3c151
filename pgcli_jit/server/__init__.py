"""The server side of the ``postgres`` backend: the ``jit`` schema, as SQL files.

The SQL is kept as SQL (``sql/NNN_*.sql``, then ``sql/functions/*.sql``) so an operator
can read exactly what runs in their database.  :func:`apply` runs every numbered
file newer than the recorded version, then re-creates the functions, all in one
transaction: a failure changes nothing, a second run upgrades in place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from pgcli_jit.server import statements

Conn = psycopg.Connection[tuple[Any, ...]]
#: the functions, one file per section, re-applied in name order by every setup
FUNCTIONS = "functions"
_NUMBERED = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
#: the schema version whose file moved the tables from ``jit`` to ``jit_data``
DATA_SCHEMA_SINCE = 6


@dataclass(frozen=True)
class SqlFile:
    name: str
    version: int | None  # None: re-applied every time (CREATE OR REPLACE)
    text: str


def sql_files() -> list[SqlFile]:
    """The numbered schema files in order, then the functions."""
    folder = resources.files(__package__).joinpath("sql")
    numbered = sorted((int(m.group(1)), entry.name) for entry in folder.iterdir()
                      if (m := _NUMBERED.match(entry.name)))
    files = [SqlFile(name, version, folder.joinpath(name).read_text(encoding="utf-8"))
             for version, name in numbered]
    functions = sorted((entry for entry in folder.joinpath(FUNCTIONS).iterdir()
                        if entry.name.endswith(".sql")), key=lambda entry: entry.name)
    return [*files, *(SqlFile(f"{FUNCTIONS}/{entry.name}", None, entry.read_text(encoding="utf-8"))
                      for entry in functions)]


def latest_version() -> int:
    return max(f.version for f in sql_files() if f.version is not None)


def installed_version(conn: Conn) -> int:
    """0 when the schema is not installed in this database."""
    row = conn.execute(statements.VERSION_TABLE).fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute(statements.max_version(row[0])).fetchone()
    return int(found[0]) if found else 0


def version_table(version: int) -> str:
    """Where schema version ``version`` is recorded: its tables moved to ``jit_data`` in 6."""
    return "jit_data.schema_version" if version >= DATA_SCHEMA_SINCE else "jit.schema_version"


def pending(current: int) -> list[SqlFile]:
    """What a database at version ``current`` still needs: newer schema files, then functions."""
    return [f for f in sql_files() if f.version is None or f.version > current]


def script(current: int = 0) -> str:
    """The whole setup as one psql script (``psql -v ON_ERROR_STOP=1 -f``)."""
    parts = ["-- pgcli-jit: the jit schema. Run as a superuser in the database to protect.",
             "BEGIN;"]
    for f in pending(current):
        parts += [f"-- ==== {f.name} ====", f.text.rstrip()]
        if f.version is not None:
            parts.append(f"INSERT INTO {version_table(f.version)} (version) VALUES ({f.version});")
    parts.append("COMMIT;")
    return "\n".join(parts)


def apply(conn: Conn) -> list[str]:
    """Install or upgrade the schema in one transaction; returns what was done, one line each."""
    done: list[str] = []
    with conn.transaction():
        conn.execute(statements.SETUP_LOCK)
        current = installed_version(conn)
        for f in pending(current):
            conn.execute(f.text.encode())
            if f.version is not None:
                conn.execute(statements.record_version(version_table(f.version)), (f.version,))
            done.append(f"applied {f.name}")
    return done
