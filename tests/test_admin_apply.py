"""``pgcli-jit-admin apply``: profiles as code against a real cluster, in two databases.

Roles are cluster-wide, so both databases share the grant role ``apl_plain``: a NOLOGIN group
with no privilege anywhere (a grant role with privileges in one database is refused in the
other).  The operator ``apl_ops`` is a login in ``jit_admin``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pgcli_jit import server
from pgcli_jit.admin import main
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import make_login

DBS = ("apply_a", "apply_b")

FILE = """\
[profiles.apl-read]
grants = ["apl_plain"]
ttl = "10m"
description = "read"

[profiles.apl-slow]
grants = ["apl_plain"]
ttl = "2h"
max_live = 2
reason_required = true
approvers = "apl_leads"
approvals = 2
approval_timeout = "30m"
"""


@pytest.fixture(scope="module")
def dsns(cluster: Cluster) -> list[str]:
    """Two databases with the schema; an operator login; the grant and approver roles."""
    with cluster.connect() as conn:
        conn.execute("CREATE ROLE apl_plain NOLOGIN; CREATE ROLE apl_leads NOLOGIN;"
                     "CREATE ROLE apl_login LOGIN;"
                     "GRANT apl_plain, apl_login TO jit_owner WITH ADMIN OPTION")
    for name in DBS:
        cluster.execute(f"CREATE DATABASE {name}")
        with cluster.connect(name) as conn:
            server.apply(conn)
    make_login(cluster, "apl_ops", member_of="jit_admin")
    return [f"host={cluster.host} port={cluster.port} dbname={name} user=apl_ops" for name in DBS]


@pytest.fixture(autouse=True)
def _empty(cluster: Cluster, dsns: list[str]) -> None:
    """Each test starts from no profiles in either database."""
    for name in DBS:
        cluster.execute("DELETE FROM jit_data.profiles", dbname=name)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "profiles.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def query(cluster: Cluster, sql: str, dbname: str = DBS[0]) -> list[tuple[object, ...]]:
    with cluster.connect(dbname) as conn:
        return conn.execute(sql.encode()).fetchall()


def state(cluster: Cluster, dbname: str = DBS[0]) -> dict[str, tuple[object, ...]]:
    rows = query(cluster, "SELECT name, grants, ttl, max_ttl, max_live, reason_required, approvers,"
                           " approvals, approval_timeout, description FROM jit_data.profiles", dbname)
    return {str(r[0]): tuple(r[1:]) for r in rows}


def audit_rows(cluster: Cluster, dbname: str = DBS[0]) -> int:
    return int(str(query(cluster, "SELECT count(*) FROM jit_data.audit", dbname)[0][0]))


def test_dry_run_prints_the_diff_and_changes_nothing(
        cluster: Cluster, dsns: list[str], tmp_path: Path) -> None:
    before = audit_rows(cluster)
    out = run("apply", write(tmp_path, FILE), "--dry-run", "--dsn", dsns[0])
    assert out.exit_code == 0, out.output
    assert "2 added, 0 changed, 0 removed" in out.output
    assert "+ apl-slow: grants apl_plain; ttl 2h; max_ttl 2h; max_live 2" in out.output
    assert "dry run: nothing applied" in out.output
    assert state(cluster) == {} and audit_rows(cluster) == before


def test_apply_then_again_is_a_no_op_and_changes_show_old_and_new(
        cluster: Cluster, dsns: list[str], tmp_path: Path) -> None:
    first = run("apply", write(tmp_path, FILE), "--dsn", dsns[0])
    assert first.exit_code == 0 and first.output.rstrip().endswith("applied"), first.output
    applied = state(cluster)
    assert set(applied) == {"apl-read", "apl-slow"} and applied["apl-slow"][3] == 2
    audited = audit_rows(cluster)
    again = run("apply", write(tmp_path, FILE), "--dsn", dsns[0])
    assert again.exit_code == 0 and again.output.strip() == "no changes", again.output
    assert state(cluster) == applied and audit_rows(cluster) == audited
    edited = FILE.replace('ttl = "10m"', 'ttl = "20m"')
    changed = run("apply", write(tmp_path, edited), "--dsn", dsns[0])
    assert "~ apl-read: ttl 10m → 20m" in changed.output, changed.output
    assert audit_rows(cluster) == audited + 1


def test_a_profile_left_out_is_removed(cluster: Cluster, dsns: list[str], tmp_path: Path) -> None:
    assert run("apply", write(tmp_path, FILE), "--dsn", dsns[0]).exit_code == 0
    only_read = FILE.split("[profiles.apl-slow]")[0]
    out = run("apply", write(tmp_path, only_read), "--dsn", dsns[0])
    assert out.exit_code == 0 and "- apl-slow" in out.output, out.output
    assert set(state(cluster)) == {"apl-read"}
    events = query(cluster, "SELECT event FROM jit_data.audit WHERE profile = 'apl-slow'"
                            " ORDER BY id DESC LIMIT 1")
    assert events[0][0] == "profile_drop"


def test_what_list_json_printed_applies_back_as_a_no_op(
        cluster: Cluster, dsns: list[str], tmp_path: Path) -> None:
    assert run("apply", write(tmp_path, FILE), "--dsn", dsns[0]).exit_code == 0
    listed = run("profile", "list", "--json", "--dsn", dsns[0])
    doc = json.loads(listed.output)
    assert doc["profiles"]["apl-slow"]["max_ttl"] == "2h" and doc["profiles"]["apl-read"]["owner"] == ""
    out = run("apply", write(tmp_path, listed.output, "listed.json"), "--dsn", dsns[0])
    assert out.exit_code == 0 and out.output.strip() == "no changes", out.output


@pytest.mark.parametrize(("text", "says"), [
    ('[profiles.p]\ngrants = ["apl_plain"]\nttl_max = "1h"\n', "profile p: unknown key ttl_max"),
    ('[profiles.p]\ngrants = ["apl_plain"]\nttl = "soon"\n', "profile p: ttl: 'soon' is not a duration"),
    ('[profiles.p]\ngrants = ["apl_nobody"]\n', "profile p: grants: role apl_nobody does not exist"),
    ('[profiles.p]\ngrants = ["apl_plain"]\nmax_live = 0\n', "profile p: max_live: 0 is not"),
    ('[profiles.p]\nttl = "1h"\n', "profile p: grants: at least one grant role"),
    ('[p]\ngrants = ["apl_plain"]\n', "one table, [profiles.NAME]"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_applied(
        cluster: Cluster, dsns: list[str], tmp_path: Path, text: str, says: str) -> None:
    assert run("apply", write(tmp_path, FILE), "--dsn", dsns[0]).exit_code == 0
    before, audited = state(cluster), audit_rows(cluster)
    out = run("apply", write(tmp_path, text), "--dsn", dsns[0])
    assert out.exit_code == 2 and says in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1 or "Error:" in out.output.splitlines()[-1]
    assert state(cluster) == before and audit_rows(cluster) == audited


def test_a_refusal_midway_rolls_back_everything(cluster: Cluster, dsns: list[str], tmp_path: Path) -> None:
    assert run("apply", write(tmp_path, FILE), "--dsn", dsns[0]).exit_code == 0
    before, audited = state(cluster), audit_rows(cluster)
    # apl-aaa is added and apl-read changed before apl-zzz (a login, refused by the server)
    text = (FILE.split("[profiles.apl-slow]")[0].replace('"10m"', '"5m"')
            + '[profiles.apl-aaa]\ngrants = ["apl_plain"]\n'
            + '[profiles.apl-zzz]\ngrants = ["apl_login"]\n')
    out = run("apply", write(tmp_path, text), "--dsn", dsns[0])
    assert out.exit_code == 2, out.output
    last = out.output.strip().splitlines()[-1]
    assert "profile apl-zzz: cannot grant apl_login" in last and "nothing applied" in last, last
    assert state(cluster) == before and audit_rows(cluster) == audited


def test_two_databases_both_converge(cluster: Cluster, dsns: list[str], tmp_path: Path) -> None:
    assert run("apply", write(tmp_path, '[profiles.apl-old]\ngrants = ["apl_plain"]\n'),
               "--dsn", dsns[1]).exit_code == 0
    out = run("apply", write(tmp_path, FILE), "--dsn", dsns[0], "--dsn", dsns[1])
    assert out.exit_code == 0, out.output
    assert f"{dsns[0]}: 2 added, 0 changed, 0 removed" in out.output
    assert f"{dsns[1]}: 2 added, 0 changed, 1 removed" in out.output
    assert state(cluster, DBS[0]) == state(cluster, DBS[1])
    assert set(state(cluster, DBS[1])) == {"apl-read", "apl-slow"}
    again = run("apply", write(tmp_path, FILE), "--dsn", dsns[0], "--dsn", dsns[1])
    assert again.output.count("no changes") == 2, again.output


def test_a_refusal_in_the_second_database_rolls_back_the_first(
        cluster: Cluster, dsns: list[str], tmp_path: Path) -> None:
    # a grant role with a privilege in apply_b: fit there (changed first), refused in apply_a
    if not query(cluster, "SELECT 1 FROM pg_roles WHERE rolname = 'apl_only_b'"):
        cluster.execute("CREATE ROLE apl_only_b NOLOGIN; GRANT CREATE ON SCHEMA public TO apl_only_b;"
                        "GRANT apl_only_b TO jit_owner WITH ADMIN OPTION", dbname=DBS[1])
    text = FILE + '[profiles.apl-b]\ngrants = ["apl_only_b"]\n'
    out = run("apply", write(tmp_path, text), "--dsn", dsns[1], "--dsn", dsns[0])
    assert out.exit_code == 2 and "nothing applied" in out.output, out.output
    assert "cannot grant apl_only_b" in out.output and "dbname=apply_a" in out.output.splitlines()[-1]
    assert state(cluster, DBS[0]) == {} and state(cluster, DBS[1]) == {}


def test_connection_error_is_exit_1(dsns: list[str], tmp_path: Path) -> None:
    out = run("apply", write(tmp_path, FILE), "--dsn", dsns[0].replace("dbname=apply_a", "dbname=apply_none"))
    assert out.exit_code == 1 and "cannot connect" in out.output
