"""``health``'s reaper check counts only passes that say they are a reaper: ``reap``,
``reap --watch`` and the pg_cron job, never an operator's one-off ``jit.expire_due()``."""

from __future__ import annotations

import json

import psycopg
from click.testing import CliRunner

from pgcli_jit import server
from pgcli_jit.admin import cron, main, reaper
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import make_login

DB = "rh_db"


def dsn(cluster: Cluster) -> str:
    return f"host={cluster.host} port={cluster.port} dbname={DB} user=rh_ops"


def reaper_check(cluster: Cluster) -> dict[str, object]:
    out = CliRunner().invoke(main, ["health", "--json", "--dsn", dsn(cluster)])
    return next(c for c in json.loads(out.output)["checks"] if c["check"] == "reaper")


def test_an_operators_own_expire_due_is_not_a_reaper_run(cluster: Cluster) -> None:
    cluster.execute(f"CREATE DATABASE {DB}")
    with cluster.connect(DB) as conn:
        server.apply(conn)
    make_login(cluster, "rh_ops", member_of="jit_admin")
    with psycopg.connect(dsn(cluster), autocommit=True, application_name="psql") as conn:
        conn.execute("SELECT * FROM jit.expire_due()")
    check = reaper_check(cluster)
    assert check["ok"] is False and check["message"] == "the reaper has never run in this database"
    assert CliRunner().invoke(main, ["reap", "--dsn", dsn(cluster)]).exit_code == 0
    check = reaper_check(cluster)
    assert check["ok"] is True, check
    assert check["detail"]["application_name"] == reaper.APPLICATION_NAME  # type: ignore[index]
    # the same login from psql afterwards leaves the reaper's row as it was
    with psycopg.connect(dsn(cluster), autocommit=True, application_name="psql") as conn:
        conn.execute("SELECT * FROM jit.expire_due()")
    check = reaper_check(cluster)
    assert check["detail"]["application_name"] == reaper.APPLICATION_NAME  # type: ignore[index]
    assert check["detail"]["passes"] == 1  # type: ignore[index]


def test_the_server_knows_every_name_a_reaper_gives() -> None:
    text = next(f.text for f in server.sql_files() if f.name == "functions/40_operators.sql")
    for name in (reaper.APPLICATION_NAME, cron.APPLICATION_NAME):
        assert f"'{name}'" in text
