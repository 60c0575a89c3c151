"""Reading session logs back, without a server: statements paired with their durations, shown
as safe single lines, and the collector's watch loop that says each failure and retries."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import psycopg

from pgcli_jit.admin.sessions import attempt_entries, entries, gap_entries, shown_statement, watch_loop
from pgcli_jit.server import statements

AT = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def row(sid: str, n: int, message: str, severity: str = "LOG", detail: str | None = None,
        context: str | None = None) -> tuple[Any, ...]:
    return (sid, n, AT, "app", "10.0.0.7", severity, "", message, detail, context)


def test_each_duration_goes_to_the_statement_of_its_session() -> None:
    found = entries([
        row("a", 1, "connection authorized: user=jit_x database=app"),
        row("a", 2, "statement: SELECT 1"),
        row("b", 1, "statement: SELECT 2"),
        row("a", 3, "duration: 0.500 ms"),
        row("a", 4, "duration: 0.100 ms"),            # a parse or bind: the statement has one
        row("b", 2, "execute <unnamed>: SELECT $1", detail="parameters: $1 = '5'"),
        row("b", 3, "duration: 2.000 ms"),
        row("b", 4, "division by zero", severity="ERROR"),
        row("b", 5, "some other LOG line"),
        row("a", 5, "disconnection: session time: 0:00:01.000 user=jit_x"),
    ])
    assert [(e.kind, e.session_id, e.duration_ms) for e in found] == [
        ("connect", "a", None), ("statement", "a", 0.5), ("statement", "b", None),
        ("statement", "b", 2.0), ("error", "b", None), ("disconnect", "a", None)]
    assert found[0].text.endswith("from 10.0.0.7")


def test_a_line_raised_from_plpgsql_is_a_message_never_a_statement() -> None:
    raised = "PL/pgSQL function inline_code_block line 1 at RAISE"
    found = entries([
        row("a", 1, "statement: SELECT balance FROM accounts WHERE id = 2", context=raised),
        row("a", 2, "duration: 0.001 ms", context=raised),
        row("a", 3, 'fastpath function call: "query_to_xml" (OID 2924)'),
        row("a", 4, "duration: 1.500 ms"),
        row("a", 5, "AUDIT: SESSION,1,1,READ,SELECT,,,x,<not logged>", context=raised),
        row("a", 6, "statement: SELECT 1", severity="WARNING"),
    ])
    # a raised "duration:" is a message too: it gives no statement a duration
    assert [(e.kind, e.duration_ms) for e in found] == [
        ("message", None), ("message", None), ("statement", 1.5), ("message", None)]
    assert shown_statement(found[0]) == ("message from the lease: "
                                         "statement: SELECT balance FROM accounts WHERE id = 2")
    assert shown_statement(found[2]) == 'fastpath function call: "query_to_xml" (OID 2924)'


def test_a_gap_and_a_failed_login_say_what_they_are() -> None:
    [gap] = gap_entries([(None, "postgresql.json", 4096, 17_825_812)], AT)
    assert gap.at == AT and gap.kind == "gap"
    assert shown_statement(gap).startswith("NOT COLLECTED: a line of 17,825,812 bytes")
    [tried] = attempt_entries([(AT, "10.0.0.9", "statement: DROP TABLE accounts", "FATAL",
                                'password authentication failed for user "jit_x"', None)])
    assert shown_statement(tried).startswith("failed login claiming this name, not the lease: password")
    assert "10.0.0.9" in tried.text


def test_a_statement_is_one_safe_line_and_a_long_one_is_cut() -> None:
    [hostile, long] = entries([row("a", 1, "statement: SELECT 'x\n\x1b[2J\u202e'"),
                               row("a", 2, "statement: SELECT '" + "y" * 5000 + "'")])
    assert shown_statement(hostile) == "statement: SELECT 'x??[2J?'"
    cut = shown_statement(long)
    assert len(cut) < 250 and cut.endswith("(5,020 characters)")


class FlakyConn:
    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.closed = False

    def execute(self, query: str) -> FlakyConn:
        if query == statements.COLLECT_TIMEOUT:
            return self
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        self.answer = answer
        return self

    def fetchone(self) -> tuple[object]:
        return (self.answer,)

    def close(self) -> None:
        self.closed = True


def test_the_watch_loop_says_a_failure_once_and_keeps_collecting() -> None:
    stop = threading.Event()
    said: list[tuple[str, bool]] = []
    answers: list[object] = [psycopg.OperationalError("server closed the connection"),
                             {"lines": 3, "files": 1, "kept": 2, "sealed": 1, "late": 0}]
    opened: list[FlakyConn] = []

    def open_conn() -> FlakyConn:
        conn = FlakyConn(answers)
        opened.append(conn)
        return conn

    def say(text: str, err: bool = False) -> None:
        said.append((text, err))
        if "sealed 1" in text:
            stop.set()

    watch_loop(open_conn, stop, 0.0, say)  # type: ignore[arg-type]
    assert said[0][1] and said[0][0].startswith("collect failed:") and "retrying" in said[0][0]
    assert said[1] == ("read 3 line(s) from 1 file(s): kept 2, sealed 1 lease(s)", False)
    assert len(opened) == 2 and opened[0].closed
