"""``pgcli-jit-admin health``'s session-log check: it fails, in one line, when some profile
logs statements and the collector has not read the server's log within the limit.  Against
the session-log cluster, with the real collector."""

from __future__ import annotations

import json
import time

from tests.session_logs import COLLECTOR, OPERATOR, LogsCluster
from tests.test_session_logs_collect import run


def session_line(lc: LogsCluster, *args: str) -> tuple[int, str]:
    result = run(lc, OPERATOR, "health", *args)
    lines = [line for line in result.output.splitlines() if "session logs:" in line]
    assert len(lines) == 1, result.output
    return result.exit_code, lines[0]


def test_the_collector_must_have_read_the_log_while_profiles_log_statements(
        logs_cluster: LogsCluster) -> None:
    lc = logs_cluster
    code, line = session_line(lc)
    assert code == 1
    assert line == ("FAIL  session logs: the session-log collector has never read the log here, and 2 "
                    "profile(s) log statements (logs_read, logs_write): run pgcli-jit-admin sessions "
                    "collect --watch")
    assert run(lc, COLLECTOR, "sessions", "collect").exit_code == 0
    _, line = session_line(lc)
    assert line.startswith("ok    session logs: the session-log collector read the log ")
    assert line.endswith("s ago")
    time.sleep(1.2)
    code, line = session_line(lc, "--max-collector-age", "1")
    assert code == 1
    assert line.startswith("FAIL  session logs: the session-log collector last read the log ")
    assert line.endswith("s ago, more than 1s, and 2 profile(s) log statements (logs_read, logs_write)")
    facts = json.loads(run(lc, OPERATOR, "health", "--max-collector-age", "1", "--json").output)
    check = next(c for c in facts["checks"] if c["check"] == "session logs")
    assert check["ok"] is False and facts["ok"] is False
    assert check["detail"]["logging_profiles"] == ["logs_read", "logs_write"]
    assert check["detail"]["max_age_seconds"] == 1 and check["detail"]["age_seconds"] > 1


def test_no_profile_that_logs_needs_no_collector(logs_cluster: LogsCluster) -> None:
    lc = logs_cluster
    with lc.superuser() as conn:
        saved = conn.execute("SELECT name, log_statements FROM jit_data.profiles").fetchall()
        conn.execute("UPDATE jit_data.profiles SET log_statements = 'none'")
    try:
        _, line = session_line(lc, "--max-collector-age", "1")
        assert line == "ok    session logs: no profile logs statements: nothing to collect"
    finally:
        with lc.superuser() as conn:
            for name, mode in saved:
                conn.execute("UPDATE jit_data.profiles SET log_statements = %s WHERE name = %s", (mode, name))
