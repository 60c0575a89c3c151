"""Session state that a reconnect would drop: carried where it can be, said where it cannot.

A switch to new credentials opens a new server session.  Settings the user made
with ``SET`` (``pg_settings.source = 'session'``, e.g. ``statement_timeout``,
``search_path``) are re-applied on the new connection with ``set_config``; what
lives only in the old session (temp tables, prepared statements, ``LISTEN``
channels) cannot be moved, so the user is told instead of finding out later.
Plain psycopg: the connector calls it with the old and the new connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

log = logging.getLogger(__name__)

#: settings not copied silently: the client sets them, or they belong to one transaction
SKIP = frozenset({"application_name", "is_superuser", "transaction_read_only", "transaction_isolation",
                  "transaction_deferrable"})
#: settings not copied and said: they name the old identity, which the new login may not hold
IDENTITY = frozenset({"role", "session_authorization"})
#: psycopg prepares statements by itself under these names; they are not the user's
DRIVER_PREPARED = "_pg3_"

# Every name is pg_catalog's: these run on the user's own connection, with the user's
# search_path, where a closer match planted in a schema on that path must not be called.
SETTINGS_SQL = ("select name, setting from pg_catalog.pg_settings"
                " where source operator(pg_catalog.=) 'session' order by name")
TEMP_SQL = ("select c.relname from pg_catalog.pg_class c"
            " where c.relnamespace operator(pg_catalog.=) pg_catalog.pg_my_temp_schema()"
            " and c.relkind operator(pg_catalog.=) any ('{r,p,v,m,S}'::pg_catalog.\"char\"[]) order by 1")
PREPARED_SQL = "select name from pg_catalog.pg_prepared_statements order by 1"
LISTEN_SQL = "select pg_catalog.pg_listening_channels() order by 1"
#: all of the above in one round trip: a switch reads the old session on the user's time
STATE_SQL = f"""select
  array(select array[name, setting] from ({SETTINGS_SQL}) s),
  current_user, session_user,
  array({TEMP_SQL}),
  array({PREPARED_SQL}),
  array({LISTEN_SQL})"""


@dataclass(frozen=True)
class SessionState:
    settings: tuple[tuple[str, str], ...] = ()
    temp_tables: tuple[str, ...] = ()
    prepared: tuple[str, ...] = ()
    listens: tuple[str, ...] = ()
    unread: tuple[str, ...] = field(default=())  # what could not even be read


def capture(conn: psycopg.Connection[Any] | None) -> SessionState:
    """What the old session holds; empty when it is closed or broken (never raises)."""
    if conn is None or conn.closed:
        return SessionState()
    try:
        with conn.cursor() as cur:
            [(pairs, user, session_user, temp_rows, prepared_rows, listen_rows)] = _rows(cur, STATE_SQL)
        settings = tuple((str(n), str(v)) for n, v in pairs if n not in SKIP)
        settings += (("role", str(user)),) if user != session_user else ()  # SET ROLE hides from pg_settings
        temp = _strings(temp_rows)
        prepared = tuple(p for p in _strings(prepared_rows) if not p.startswith(DRIVER_PREPARED))
        listens = _strings(listen_rows)
    except Exception as exc:  # never let reading state stop a switch: say it could not be read
        log.warning("could not read session state before reconnecting: %s", type(exc).__name__)
        return SessionState(unread=("session settings (could not read them)",))
    return SessionState(settings, temp, prepared, listens)


def _rows(cur: psycopg.Cursor[Any], query: str) -> list[Any]:
    """pgcli's cursor class returns None from ``execute``: never chain on it."""
    cur.execute(query)
    return cur.fetchall()


def _strings(values: list[Any] | None) -> tuple[str, ...]:
    return tuple(str(v) for v in values or ())


def apply(conn: psycopg.Connection[Any], state: SessionState) -> list[str]:
    """Re-apply ``state``'s settings on ``conn``; returns one note per kind of thing lost or kept."""
    carried: list[str] = []
    failed = [f"{name} {value} (belongs to the previous login)" for name, value in state.settings
              if name in IDENTITY]
    for name, value in state.settings:
        if name in IDENTITY:
            continue
        try:
            with conn.cursor() as cur:
                cur.execute("select pg_catalog.set_config(%s, %s, false)", (name, value))
            carried.append(name)
        except Exception:  # one refused setting must not stop the others, nor the switch
            failed.append(name)
    return notes(carried, failed, state)


def lost_on_reconnect(state: SessionState) -> list[str]:
    """What a new session would not have, one short phrase each (``temp table t``)."""
    return [f"{what} {', '.join(names)}" for what, names in (
        ("temp table" if len(state.temp_tables) == 1 else "temp tables", state.temp_tables),
        ("prepared statement" if len(state.prepared) == 1 else "prepared statements", state.prepared),
        ("LISTEN", state.listens)) if names]


def notes(carried: list[str], failed: list[str], state: SessionState) -> list[str]:
    """Sentences for the user: what came along, what did not (and why it could not)."""
    lost = [*failed, *state.unread]
    out = [f"Session settings carried over: {', '.join(carried)}."] if carried else []
    if lost:
        out.append(f"Not carried over: {', '.join(lost)}.")
    for what, names in (("temp tables", state.temp_tables), ("prepared statements", state.prepared),
                        ("LISTEN channels", state.listens)):
        if names:
            out.append(f"Left behind in the old session: {what} {', '.join(names)}.")
    return out
