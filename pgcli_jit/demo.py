"""``pgcli-jit --demo``: the whole product on a throwaway cluster, torn down on exit.

It starts a scram-sha-256 cluster, loads a little demo data, creates the
least-privilege broker and two grant roles exactly as ``pgcli-jit-admin setup``
would, writes a config with two profiles (no secret in it: the broker's
password stays in this process's environment), and opens pgcli-jit with
``--jit demo``: the session starts as a temporary role.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import click

from pgcli_jit.backends import pg_roles
from pgcli_jit.cluster import Cluster, start_cluster

BROKER = "jit_broker"
PASSWORD_ENV = "PGCLI_JIT_DEMO_BROKER_PASSWORD"  # noqa: S105 - the name of an env var
GRANTS = {"jit_read": ["pg_read_all_data"], "jit_write": ["jit_read", "pg_write_all_data"]}
DATA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, country text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2),
                     placed_at timestamptz DEFAULT now());
INSERT INTO customers VALUES (1, 'Ada', 'UK'), (2, 'Grace', 'US'), (3, 'Edsger', 'NL');
INSERT INTO orders (id, customer_id, total) VALUES (1, 1, 42.00), (2, 2, 99.50), (3, 1, 7.25);
"""
BANNER = """\
pgcli-jit demo: a throwaway PostgreSQL on 127.0.0.1:{port}, removed when you quit.
You are connected as a temporary role minted by the `demo` profile (read-only, 5 minutes).
Try:  \\jit status      select * from orders;      \\jit profiles
      \\jit request demo-write --ttl 2m --reason "fix order 3"
      \\jit renew --ttl 10m      \\jit revoke      \\q
Config: {config}   Audit log: {audit}
"""


def prepare(cluster: Cluster) -> dict[str, str]:
    """Demo database, broker and grant roles; returns the env the session needs."""
    cluster.execute("CREATE DATABASE demo")
    cluster.execute(DATA, dbname="demo")
    password = secrets.token_urlsafe(24)
    with cluster.connect() as conn:
        for stmt in pg_roles.setup_statements(BROKER, GRANTS):
            conn.execute(stmt)
        pg_roles.set_password(conn, BROKER, password)
    config = cluster.base / "config.toml"
    config.write_text(demo_config(cluster, config.parent), encoding="utf-8")
    return {"PGCLI_JIT_CONFIG": str(config), PASSWORD_ENV: password}


def demo_config(cluster: Cluster, base: Any) -> str:
    admin = f"host={cluster.host} port={cluster.port} dbname=demo user={BROKER}"
    common = (f'backend = "postgres"\nadmin_dsn = "{admin}"\nadmin_password_env = "{PASSWORD_ENV}"\n'
              f'host = "{cluster.host}"\nport = {cluster.port}\ndbname = "demo"\n')
    return (
        f'default_profile = "demo"\naudit_log = "{base}/audit.jsonl"\n\n'
        f'[profiles.demo]\n{common}grant = ["jit_read"]\nttl = "5m"\nmax_ttl = "30m"\n'
        'renew = "prompt"\nrenew_before = "1m"\ndescription = "read-only, asks before it ends"\n\n'
        f'[profiles.demo-write]\n{common}grant = ["jit_write"]\nttl = "2m"\nmax_ttl = "10m"\n'
        'renew = "auto"\nrenew_before = "30s"\ndescription = "read-write, renews itself"\n'
    )


def run(pgcli_kwargs: dict[str, Any]) -> None:
    from pgcli_jit.cli import run_pgcli

    click.echo("Starting a throwaway PostgreSQL cluster...", err=True)
    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        os.environ.update(prepare(cluster))
        click.echo(BANNER.format(port=cluster.port, config=os.environ["PGCLI_JIT_CONFIG"],
                                 audit=cluster.base / "audit.jsonl"), err=True)
        pgcli_kwargs.update(host=None, port=None, dbname=None, dbname_opt=None, username=None,
                            username_opt=None)
        run_pgcli(pgcli_kwargs, "demo", reason="pgcli-jit demo")
    finally:
        cluster.stop()
        click.echo("Demo cluster removed.", err=True)
