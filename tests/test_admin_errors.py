"""``pgcli-jit-admin`` says what to do, against a real cluster: the privilege a login lacks
(one line naming the role to grant, or that a superuser is needed), how a dropped lease
ended, the JSON field names the operator guide uses, the audit cursor for shipping, and a
command table in the guide that lists every command.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner, Result

from pgcli_jit import server
from pgcli_jit.admin import main
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import make_login

DB = "admin_errors_db"
GUIDE = Path(__file__).parents[1] / "docs" / "operator-guide.md"


@pytest.fixture(scope="module")
def db(cluster: Cluster) -> Cluster:
    """A database of its own with the schema, a grant role, an operator and a requester."""
    cluster.execute(f"CREATE DATABASE {DB}")
    cluster.execute("CREATE TABLE t (x int)", dbname=DB)
    with cluster.connect(DB) as conn:
        server.apply(conn)
        conn.execute("CREATE ROLE err_read NOLOGIN; GRANT SELECT ON t TO err_read;"
                     "GRANT err_read TO jit_owner WITH ADMIN OPTION")
    make_login(cluster, "err_ops", member_of="jit_admin")
    make_login(cluster, "err_carol", member_of="jit_requester")
    make_login(cluster, "err_nobody")
    result = run("profile", "add", "err-read", "--grant", "err_read", "--ttl", "1m",
                 "--dsn", dsn(cluster, "err_ops"))
    assert result.exit_code == 0, result.output
    return cluster


def dsn(cluster: Cluster, user: str) -> str:
    return f"host={cluster.host} port={cluster.port} dbname={DB} user={user}"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def error_line(result: Result) -> str:
    """The one line an expected failure prints, with exit 1 and no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("login", ["err_ops", "err_nobody"])
def test_setup_apply_as_a_non_superuser_says_a_superuser_is_needed(db: Cluster, login: str) -> None:
    line = error_line(run("setup", "--apply", "--dsn", dsn(db, login)))
    assert line.startswith("Error: permission denied: setup --apply needs a superuser; "
                           f"{login} is not one"), line
    assert "user=postgres" in line and "psql" in line


@pytest.mark.parametrize("args", [("leases",), ("leases", "--all", "--json"), ("audit",),
                                  ("profile", "add", "err-x", "--grant", "err_read"),
                                  ("profile", "list")])
def test_a_command_without_jit_admin_names_the_grant(db: Cluster, args: tuple[str, ...]) -> None:
    line = error_line(run(*args, "--dsn", dsn(db, "err_carol")))
    command = " ".join(a for a in args if not a.startswith("-") and a not in ("err-x", "err_read"))
    assert line == (f"Error: permission denied: {command} needs a login in jit_admin; "
                    "err_carol is not a member "
                    "(as a superuser: GRANT jit_admin TO err_carol)"), line


def test_an_operator_refused_for_another_reason_gets_the_servers_words(db: Cluster) -> None:
    """A login in jit_admin that is refused is not told to join jit_admin."""
    db.execute("CREATE ROLE err_unowned NOLOGIN", dbname=DB)
    try:
        result = run("profile", "add", "err-unowned", "--grant", "err_unowned",
                     "--dsn", dsn(db, "err_ops"))
        assert result.exit_code == 1, result.output
        assert "GRANT jit_admin" not in result.output
    finally:
        db.execute("DROP ROLE err_unowned", dbname=DB)


def request_lease(db: Cluster) -> str:
    from pgcli_jit.backends.postgres.scram import new_password, scram_verifier

    with psycopg.connect(db.conninfo(DB, user="err_carol"), autocommit=True) as conn:
        row = conn.execute("SELECT jit.request(%s, make_interval(secs => 3600), %s, %s)",
                           ("err-read", "INC-9", scram_verifier(conn, new_password()))).fetchone()
    assert row is not None
    return str(row[0]["rolname"])


def test_a_dropped_lease_shows_how_it_ended_not_the_time_it_had_left(db: Cluster) -> None:
    ops = dsn(db, "err_ops")
    role = request_lease(db)
    live = run("leases", "--dsn", ops)
    assert re.search(rf"{role}\s.*\s(59m\d+s|1h)\s", live.output), live.output
    assert run("revoke", role, "--reason", "INC-9 done", "--dsn", ops).exit_code == 0
    line = next(row for row in run("leases", "--all", "--dsn", ops).output.splitlines()
                if row.startswith(role))
    assert re.search(r"\srevoked\s+0\s+dropped$", line), line
    assert not re.search(r"\d+m\d+s", line.split("INC-9")[1]), line
    rows = json.loads(run("leases", "--all", "--json", "--dsn", ops).output)
    mine = next(r for r in rows if r["rolname"] == role)
    assert mine["end_event"] == "revoke" and mine["state"] == "dropped"


def documented_fields(command: str) -> set[str]:
    """The ``--json`` field names the guide lists for a command (its "`--json` fields" line)."""
    match = re.search(rf"`{command} --json` fields:\s+([^.]+)\.", GUIDE.read_text(encoding="utf-8"))
    assert match, f"the operator guide lists no --json fields for {command}"
    names = re.sub(r"\([^)]*\)", "", match.group(1))   # what a field means is in parentheses
    return set(re.findall(r"`(\w+)`", names))


def test_json_fields_are_named_as_in_the_guide(db: Cluster) -> None:
    ops = dsn(db, "err_ops")
    request_lease(db)
    leases = json.loads(run("leases", "--all", "--json", "--dsn", ops).output)
    audit = json.loads(run("audit", "--json", "--dsn", ops).output)
    assert leases and audit
    assert set(leases[0]) == documented_fields("leases")
    assert set(audit[0]) == documented_fields("audit")
    assert "client_addr" in audit[0] and "host" not in audit[0]


def test_audit_after_id_is_a_cursor_that_ships_every_row_once(db: Cluster) -> None:
    ops = dsn(db, "err_ops")
    shipped: list[dict[str, object]] = []
    cursor = 0
    for _ in range(100):
        page = json.loads(run("audit", "--json", "--after-id", str(cursor), "--limit", "2",
                              "--dsn", ops).output)
        if not page:
            break
        shipped += page
        cursor = int(page[-1]["id"])  # type: ignore[call-overload]
    everything = json.loads(run("audit", "--json", "--limit", "10000", "--dsn", ops).output)
    assert sorted(r["id"] for r in shipped) == sorted(r["id"] for r in everything)  # type: ignore[type-var]
    request_lease(db)   # new rows: the same cursor picks up exactly those
    new = json.loads(run("audit", "--json", "--after-id", str(cursor), "--dsn", ops).output)
    assert new and all(r["id"] not in {s["id"] for s in shipped} for r in new)
    assert [r["event"] for r in new] == ["request"]


def test_audit_after_id_refuses_an_unknown_row_and_since(db: Cluster) -> None:
    ops = dsn(db, "err_ops")
    line = error_line(run("audit", "--after-id", "999999999", "--dsn", ops))
    assert "audit row 999999999 is not in the table" in line
    result = run("audit", "--after-id", "0", "--since", "1h", "--dsn", ops)
    assert result.exit_code == 2 and "--after-id" in result.output


def command_paths(group: click.Group, prefix: str = "") -> list[str]:
    paths = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                paths.append(prefix + name)
            paths += command_paths(command, f"{prefix}{name} ")
        else:
            paths.append(prefix + name)
    return paths


def test_the_guides_command_table_lists_every_command() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    table = text.split("| command | does |", 1)[1].split("\n\n", 1)[0]
    listed = {m.group(1).strip() for m in re.finditer(r"`pgcli-jit-admin ([a-z -]+?)(?: [A-Z\[-]|`)",
                                                      table)}
    missing = [path for path in command_paths(main) if path not in listed]
    assert not missing, f"docs/operator-guide.md's command table lacks: {missing}"
