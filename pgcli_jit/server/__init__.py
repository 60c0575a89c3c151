"""The server side of the ``postgres`` backend: the ``jit`` schema, as SQL files.

The SQL is kept as SQL (``sql/NNN_*.sql``, then ``sql/functions/*.sql``) so an operator
can read exactly what runs in their database.  :func:`apply` runs every numbered
file newer than the recorded version, then re-creates the functions, all in one
transaction: a failure changes nothing, a second run upgrades in place.  :func:`script`
prints the same as one psql script for review, each numbered file guarded by the
version table inside the script, so it may be run twice; :func:`up_to_date` says when a
database needs nothing (its version is the newest and it ran these very functions).
"""

from __future__ import annotations

import hashlib
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
#: the schema version that records which functions a database ran (jit_data.functions_applied)
FUNCTIONS_DIGEST_SINCE = 7


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


def functions_digest() -> str:
    """SHA-256 of the function files' names and texts, in the order they run."""
    digest = hashlib.sha256()
    for f in sql_files():
        if f.version is None:
            digest.update(f"{f.name}\0{f.text}\0".encode())
    return digest.hexdigest()


def applied_digest(conn: Conn) -> str | None:
    """The functions digest this database recorded; None before version 7 or never recorded."""
    if installed_version(conn) < FUNCTIONS_DIGEST_SINCE:
        return None
    row = conn.execute(statements.FUNCTIONS_APPLIED).fetchone()
    return str(row[0]) if row else None


def up_to_date(conn: Conn) -> bool:
    """Whether setup would change nothing here: the newest version, and these functions."""
    return (installed_version(conn) == latest_version()
            and applied_digest(conn) == functions_digest())


def _precondition(current: int) -> str:
    """Refuse a database older than the one the script was printed for: it lacks files."""
    return (f"DO $check$ BEGIN IF pg_temp.jit_setup_version() < {current} THEN RAISE EXCEPTION "
            f"'this script upgrades a jit schema at version {current} or later; this database is at "
            f"version %', pg_temp.jit_setup_version() USING HINT = 'print it for this database: "
            f"pgcli-jit-admin setup --dsn ...'; END IF; END $check$;")


def _guarded(f: SqlFile) -> list[str]:
    """A numbered file that runs only where its version is not recorded yet (psql's \\if)."""
    assert f.version is not None
    flag = f"jit_run_{f.version:03d}"
    return [f"SELECT pg_temp.jit_setup_version() < {f.version} AS {flag} \\gset",
            f"\\if :{flag}", f.text.rstrip(),
            f"INSERT INTO {version_table(f.version)} (version) VALUES ({f.version});",
            "\\endif"]


def script(current: int = 0) -> str:
    """What setup runs on a database at version ``current``, as one psql script (``psql -f``).

    Every numbered file is skipped where the version table inside the transaction already
    records it, so a second run (or a run racing ``setup --apply``) changes nothing twice;
    the functions are ``CREATE OR REPLACE`` and run every time."""
    parts = ["-- pgcli-jit: the jit schema. Run as a superuser in the database to protect:",
             "--   psql -v ON_ERROR_STOP=1 -f THIS_FILE   (psql: the numbered files are guarded by \\if)",
             "\\set ON_ERROR_STOP on",
             "BEGIN;",
             statements.PIN_SEARCH_PATH_LOCAL + ";",
             statements.SETUP_LOCK + ";",
             statements.SCRIPT_VERSION_FUNCTION]
    if current:
        parts.append(_precondition(current))
    for f in pending(current):
        parts.append(f"-- ==== {f.name} ====")
        parts += _guarded(f) if f.version is not None else [f.text.rstrip()]
    parts += ["-- the functions this database now runs, for setup --dsn's review",
              statements.SCRIPT_RECORD_FUNCTIONS.format(digest=functions_digest()),
              "DROP FUNCTION pg_temp.jit_setup_version();",
              "COMMIT;"]
    return "\n".join(parts)


def apply(conn: Conn) -> list[str]:
    """Install or upgrade the schema in one transaction; returns what was done, one line each."""
    done: list[str] = []
    with conn.transaction():
        conn.execute(statements.PIN_SEARCH_PATH_LOCAL)
        conn.execute(statements.SETUP_LOCK)
        current = installed_version(conn)
        for f in pending(current):
            conn.execute(f.text.encode())
            if f.version is not None:
                conn.execute(statements.record_version(version_table(f.version)), (f.version,))
            done.append(f"applied {f.name}")
        conn.execute(statements.RECORD_FUNCTIONS, (functions_digest(),))
    return done
