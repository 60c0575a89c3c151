"""The benchmarks' world: one throwaway cluster with the jit schema, logins and a config file.

Set up the way tests/conftest.py sets up the suite's cluster: ``server.apply``, grant
roles scoped to ``app``'s public schema, a requester login (``alice``, member of
``jit_requester``) whose password libpq finds in a pgpass file, and a server profile
declared with ``jit.profile_set``.  ``bench_user`` is a plain login with a static
password: the baseline pgcli connects as it.  Loopback only; everything is removed
in :meth:`World.close`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgcli_jit import server
from pgcli_jit.backends.postgres.scram import scram_verifier
from pgcli_jit.devtools.cluster import Cluster, start_cluster

Conn = psycopg.Connection[tuple[Any, ...]]
REQUESTER = "alice"
STATIC_USER = "bench_user"
PROFILE = "bench"
GRANT_ROLES = """
CREATE ROLE jit_read NOLOGIN;
GRANT USAGE ON SCHEMA public TO jit_read;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO jit_read;
GRANT jit_read TO jit_owner WITH ADMIN OPTION;
"""
#: a server as one would run it: no per-statement logging; room for 50 requesters x 2 connections
SETTINGS = {"log_statement": "'none'", "log_connections": "off", "max_connections": "150"}


class World:
    """A cluster, a private HOME with a pgcli-jit config, and the passwords the run made."""

    def __init__(self) -> None:
        self.cluster: Cluster = start_cluster(settings=SETTINGS)
        self.home = Path(tempfile.mkdtemp(prefix="pgcli-jit-bench-home-"))
        self.passwords: dict[str, str] = {}
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        c = self.cluster
        c.execute("CREATE DATABASE app")
        c.execute("CREATE TABLE accounts (id int primary key, owner text);"
                  "INSERT INTO accounts VALUES (1, 'alice');", dbname="app")
        with c.connect("app") as conn:
            server.apply(conn)
            conn.execute(GRANT_ROLES.encode())
        for sub in ("config", "state", "data", "cache"):
            (self.home / sub).mkdir(parents=True)
        self.passfile.touch(mode=0o600)
        self.make_login(REQUESTER, member_of="jit_requester")
        self.make_login(STATIC_USER)
        self.declare_profile(PROFILE)
        self.config.write_text(
            f'audit_log = "{self.home / "state" / "audit.jsonl"}"\n\n'
            + self.profile_toml(PROFILE), encoding="utf-8")

    # -- paths and connections ---------------------------------------------------------

    @property
    def passfile(self) -> Path:
        return self.home / "pgpass"

    @property
    def config(self) -> Path:
        return self.home / "config.toml"

    def connect(self, user: str | None = None, dbname: str = "app") -> Conn:
        """A fresh autocommit connection (a full SCRAM login) as ``user`` (default: superuser)."""
        if user is None:
            return self.cluster.connect(dbname)
        return psycopg.connect(self.cluster.conninfo(dbname, user=user, password=self.passwords[user]),
                               autocommit=True)

    def make_login(self, name: str, member_of: str = "") -> str:
        password = secrets.token_urlsafe(18)
        with self.cluster.connect() as conn:
            stmt = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(scram_verifier(conn, password)))
            if member_of:
                stmt += sql.SQL(" IN ROLE {}").format(sql.Identifier(member_of))
            conn.execute(stmt)
        with open(self.passfile, "a", encoding="utf-8") as fh:
            fh.write(f"{self.cluster.host}:{self.cluster.port}:*:{name}:{password}\n")
        self.passwords[name] = password
        return password

    def declare_profile(self, name: str, ttl: float = 900.0, max_ttl: float = 86400.0) -> None:
        """The reaper's figures hold up to 1,000 live leases of one requester: max_live 1000."""
        with self.cluster.connect("app") as conn:
            conn.execute(
                "SELECT jit.profile_set(%s, %s, make_interval(secs => %s), make_interval(secs => %s),"
                " %s, %s, %s, '', NULL, NULL, NULL, 1000)",
                (name, ["jit_read"], ttl, max_ttl, "jit_requester", False, ""))

    def profile_toml(self, name: str, **extra: str) -> str:
        c = self.cluster
        keys = {"backend": '"postgres"', "host": f'"{c.host}"', "port": str(c.port), "dbname": '"app"',
                "user": f'"{REQUESTER}"', "renew": '"never"', **extra}
        return f"[profiles.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for a child pgcli or pgcli-jit: private HOME, this pgpass file.

        Bytecode is written and read (an installed package has its .pyc files; a source
        checkout run with PYTHONDONTWRITEBYTECODE would recompile pgcli_jit every start).
        """
        drop = ("PG", "XDG_", "PYTHONDONTWRITEBYTECODE", "PGCLI_JIT_CONFIG")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / "config"),
                   XDG_STATE_HOME=str(self.home / "state"), TERM="xterm-256color", PAGER="cat",
                   LESS="", PGPASSFILE=str(self.passfile), PGCLI_JIT_CONFIG=str(self.config),
                   PGCLI_JIT_PG_BINDIR=os.environ.get("PGCLI_JIT_PG_BINDIR", ""))
        if not env["PGCLI_JIT_PG_BINDIR"]:
            del env["PGCLI_JIT_PG_BINDIR"]
        env.update(extra)
        return env

    def live_roles(self) -> list[str]:
        with self.connect() as conn:
            rows = conn.execute("SELECT rolname FROM jit_data.leases WHERE dropped_at IS NULL").fetchall()
        return [str(name) for (name,) in rows]

    def end_all(self) -> None:
        """Revoke and drop every lease still alive (the superuser is a jit admin)."""
        with self.connect() as conn:
            for name in self.live_roles():
                conn.execute("SELECT jit.revoke(%s)", (name,))
                conn.execute("SELECT jit.finish(%s)", (name,))

    def close(self) -> None:
        self.cluster.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def executable(name: str) -> str:
    """A console script of this venv (``pgcli``, ``pgcli-jit``)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"bench: {name} is not installed in this environment")
    return found


def compile_bytecode() -> None:
    """Make sure pgcli_jit's .pyc files exist, as they do in an installed package."""
    import pgcli_jit

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(pgcli_jit.__file__).parent)],
                   check=True, env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
