"""Session state across a reconnect, against the real cluster: settings made
with SET are re-applied; temp tables, prepared statements and LISTENs are named as left behind."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.shell import session_state


def _open(cluster: Cluster) -> psycopg.Connection[Any]:
    return psycopg.connect(cluster.conninfo("app", user=cluster.superuser, password=cluster.superpassword),
                           autocommit=True)


def test_settings_carried_and_the_rest_named(cluster: Cluster) -> None:
    with _open(cluster) as old, _open(cluster) as new:
        old.execute("set statement_timeout = '7s'")
        old.execute("set search_path = pg_catalog, public")
        old.execute("create temp table scratch (x int)")
        old.execute("prepare by_id as select $1::int")
        old.execute("listen orders_changed")
        state = session_state.capture(old)
        notes = session_state.apply(new, state)
        assert new.execute("show statement_timeout").fetchone() == ("7s",)
        assert new.execute("show search_path").fetchone() == ("pg_catalog, public",)
        assert not new.info.transaction_status  # IDLE: nothing left open
    assert notes[0] == "Session settings carried over: search_path, statement_timeout."
    assert "Left behind in the old session: temp tables scratch." in notes
    assert "Left behind in the old session: prepared statements by_id." in notes
    assert "Left behind in the old session: LISTEN channels orders_changed." in notes


def test_nothing_to_say_for_a_plain_session(cluster: Cluster) -> None:
    with _open(cluster) as old, _open(cluster) as new:
        assert session_state.apply(new, session_state.capture(old)) == []


def test_a_setting_the_new_login_cannot_make_is_named(cluster: Cluster) -> None:
    with _open(cluster) as old, _open(cluster) as new:
        old.execute("set role pg_read_all_data")
        old.execute("set work_mem = '8MB'")
        state = session_state.capture(old)
        new.execute("create temp table t_block (x int)")  # unrelated state on the new side is untouched
        notes = session_state.apply(new, state)
    assert "Not carried over: role pg_read_all_data (belongs to the previous login)." in notes
    assert any("work_mem" in n for n in notes if n.startswith("Session settings carried over"))


@pytest.mark.parametrize("conn", [None])
def test_a_closed_or_missing_connection_has_no_state(conn: None) -> None:
    assert session_state.capture(conn) == session_state.SessionState()


def test_pgcli_cursor_class_is_supported(cluster: Cluster) -> None:
    """pgcli's connections use ProtocolSafeCursor, whose execute returns None: never chain on it."""
    from pgcli.pgexecute import ProtocolSafeCursor

    with _open(cluster) as old, _open(cluster) as new:
        old.cursor_factory = new.cursor_factory = ProtocolSafeCursor
        old.execute("set statement_timeout = '3s'")
        notes = session_state.apply(new, session_state.capture(old))
        new.cursor_factory = psycopg.Cursor
        assert new.execute("show statement_timeout").fetchone() == ("3s",)
    assert notes == ["Session settings carried over: statement_timeout."]
