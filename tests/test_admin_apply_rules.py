"""Profiles as code carry the approval rules: ``profile list --json`` gives back auto-approve and
break-glass in the shape ``apply`` reads, and ``apply`` diffs and applies them, audited, in its
one transaction, against a real cluster.

A database of its own (``apr_db``) keeps these profiles and audit rows apart from the rest of the
suite.  ``apr_plain`` is a grant role with no privilege, ``apr_leads`` approves, ``apr_oncall`` is
the on-call group, ``apr_ops`` an operator login.
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

DB = "apr_db"

FILE = """\
[profiles.apr-write]
grants = ["apr_plain"]
approvers = "apr_leads"
auto_approve = "apr_oncall"
break_glass = true
break_glass_max_ttl = "30m"
break_glass_per_day = 2

[profiles.apr-read]
grants = ["apr_plain"]
"""


@pytest.fixture(scope="module")
def dsn(cluster: Cluster) -> str:
    with cluster.connect() as conn:
        conn.execute("CREATE ROLE apr_plain NOLOGIN; CREATE ROLE apr_leads NOLOGIN;"
                     "CREATE ROLE apr_oncall NOLOGIN; CREATE ROLE apr_pager NOLOGIN;"
                     "GRANT apr_plain TO jit_owner WITH ADMIN OPTION")
    cluster.execute(f"CREATE DATABASE {DB}")
    with cluster.connect(DB) as conn:
        server.apply(conn)
    make_login(cluster, "apr_ops", member_of="jit_admin")
    return f"host={cluster.host} port={cluster.port} dbname={DB} user=apr_ops"


@pytest.fixture(autouse=True)
def _empty(cluster: Cluster, dsn: str) -> None:
    cluster.execute("DELETE FROM jit_data.profiles", dbname=DB)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "profiles.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def rules(cluster: Cluster) -> dict[str, tuple[object, ...]]:
    with cluster.connect(DB) as conn:
        rows = conn.execute("SELECT name, auto_approve, break_glass,"
                            " extract(epoch FROM break_glass_max_ttl)::int, break_glass_per_day"
                            " FROM jit_data.profiles").fetchall()
    return {str(r[0]): tuple(r[1:]) for r in rows}


def audited(cluster: Cluster) -> list[tuple[object, ...]]:
    with cluster.connect(DB) as conn:
        return conn.execute("SELECT event, profile, detail FROM jit_data.audit ORDER BY id").fetchall()


def test_apply_sets_the_rules_and_list_json_gives_them_back(
        cluster: Cluster, dsn: str, tmp_path: Path) -> None:
    before = len(audited(cluster))
    out = run("apply", write(tmp_path, FILE), "--dsn", dsn)
    assert out.exit_code == 0, out.output
    assert ("auto_approve apr_oncall; break_glass true; break_glass_max_ttl 30m; "
            "break_glass_per_day 2") in out.output
    assert rules(cluster) == {"apr-write": ("apr_oncall", True, 1800, 2), "apr-read": (None, False, 3600, 1)}
    # profile_set for each, the rules call only for the profile that has rules
    events = [(e, p) for e, p, _ in audited(cluster)[before:]]
    assert sorted(events) == [("profile_rules", "apr-write"), ("profile_set", "apr-read"),
                              ("profile_set", "apr-write")]
    listed = json.loads(run("profile", "list", "--json", "--dsn", dsn).output)["profiles"]
    assert {k: listed["apr-write"][k] for k in ("auto_approve", "break_glass", "break_glass_max_ttl",
                                                 "break_glass_per_day")} == {
        "auto_approve": "apr_oncall", "break_glass": True, "break_glass_max_ttl": "30m",
        "break_glass_per_day": 2}
    assert listed["apr-read"]["auto_approve"] == "" and listed["apr-read"]["break_glass"] is False


def test_list_json_to_file_to_apply_is_no_diff(cluster: Cluster, dsn: str, tmp_path: Path) -> None:
    """Rules set by ``profile set`` (not by a file) survive the round trip unchanged."""
    assert run("apply", write(tmp_path, FILE), "--dsn", dsn).exit_code == 0
    out = run("profile", "set", "apr-read", "--break-glass", "--break-glass-max-ttl", "45m",
              "--break-glass-per-day", "3", "--auto-approve", "apr_pager", "--dsn", dsn)
    assert out.exit_code == 0, out.output
    state, count = rules(cluster), len(audited(cluster))
    listed = run("profile", "list", "--json", "--dsn", dsn)
    again = run("apply", write(tmp_path, listed.output, "listed.json"), "--dsn", dsn)
    assert again.exit_code == 0 and again.output.strip() == "no changes", again.output
    assert rules(cluster) == state and len(audited(cluster)) == count


def test_a_rule_change_is_one_audited_call_and_shows_old_and_new(
        cluster: Cluster, dsn: str, tmp_path: Path) -> None:
    assert run("apply", write(tmp_path, FILE), "--dsn", dsn).exit_code == 0
    count = len(audited(cluster))
    edited = FILE.replace('break_glass_per_day = 2', 'break_glass_per_day = 4').replace(
        'auto_approve = "apr_oncall"\n', '')
    out = run("apply", write(tmp_path, edited), "--dsn", dsn)
    assert out.exit_code == 0, out.output
    assert "~ apr-write: auto_approve apr_oncall → ''; break_glass_per_day 2 → 4" in out.output
    new = audited(cluster)[count:]
    assert [(e, p) for e, p, _ in new] == [("profile_rules", "apr-write")]
    detail = new[0][2]
    assert isinstance(detail, dict)
    assert detail["auto_approve"] is None and detail["break_glass_per_day"] == 4
    assert rules(cluster)["apr-write"] == (None, True, 1800, 4)


def test_a_file_without_the_rules_turns_them_off(cluster: Cluster, dsn: str, tmp_path: Path) -> None:
    """The file is the whole profile: rules it leaves out are the defaults (no break-glass)."""
    assert run("apply", write(tmp_path, FILE), "--dsn", dsn).exit_code == 0
    plain = '[profiles.apr-write]\ngrants = ["apr_plain"]\napprovers = "apr_leads"\n' \
            '[profiles.apr-read]\ngrants = ["apr_plain"]\n'
    out = run("apply", write(tmp_path, plain), "--dsn", dsn)
    assert out.exit_code == 0 and "break_glass true → false" in out.output, out.output
    assert rules(cluster)["apr-write"] == (None, False, 3600, 1)


@pytest.mark.parametrize(("text", "says", "code"), [
    ('break_glass = "yes"\n', "profile apr-x: break_glass: 'yes' is not true or false", 2),
    ('break_glass_per_day = 0\n', "profile apr-x: break_glass_per_day: 0 is not a whole number", 2),
    ('break_glass_max_ttl = "soon"\n', "profile apr-x: break_glass_max_ttl: 'soon' is not a duration", 2),
    ('auto_approve = "apr_nobody"\n', "profile apr-x: auto_approve: role apr_nobody does not exist", 2),
    ('auto_approve = "apr_plain"\n', "apr_plain cannot be the auto-approve role", 2),
])
def test_bad_rules_are_one_line_and_nothing_applied(
        cluster: Cluster, dsn: str, tmp_path: Path, text: str, says: str, code: int) -> None:
    assert run("apply", write(tmp_path, FILE), "--dsn", dsn).exit_code == 0
    state, count = rules(cluster), len(audited(cluster))
    body = FILE + '[profiles.apr-x]\ngrants = ["apr_plain"]\n' + text
    out = run("apply", write(tmp_path, body), "--dsn", dsn)
    assert out.exit_code == code and says in out.output, out.output
    assert "Traceback" not in out.output
    assert rules(cluster) == state and len(audited(cluster)) == count
