"""A throwaway PostgreSQL cluster with real password authentication.

Used by ``pgcli-jit --demo`` and by the test suite, so both run against the same
thing a user has: ``scram-sha-256`` on every connection (with ``trust``,
``VALID UNTIL`` and wrong passwords are never checked), a free loopback port,
and every statement logged so a test can prove no password reaches the log.

``initdb`` refuses to run as root; as root the server commands run as the
``postgres`` system user through ``runuser``, in a directory it owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

SERVER_USER = "postgres"


BINDIR_ENV = "PGCLI_JIT_PG_BINDIR"


def find_bindir() -> Path:
    """Where initdb lives: ``$PGCLI_JIT_PG_BINDIR`` (to pick a version, as CI does for 18),
    else PATH, else ``pg_config --bindir``, else Debian's layout."""
    chosen = os.environ.get(BINDIR_ENV)
    if chosen:
        if not (Path(chosen) / "initdb").exists():
            raise RuntimeError(f"${BINDIR_ENV} is {chosen}, which has no initdb")
        return Path(chosen)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        if (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if debian:
        return Path(debian[-1]).parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: "
        "install them (Debian: apt-get install postgresql) or put them on PATH"
    )


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parts[-3])
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Cluster:
    """A running cluster; ``stop()`` ends it and removes every file it wrote."""

    base: Path
    port: int
    superuser: str
    superpassword: str
    bindir: Path
    host: str = "127.0.0.1"

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    @property
    def socket_dir(self) -> Path:
        return self.base

    def conninfo(self, dbname: str = "postgres", user: str | None = None,
                 password: str | None = None, **extra: str) -> str:
        """A libpq conninfo; the superuser's password is filled in only for the superuser."""
        user = user or self.superuser
        if password is None and user == self.superuser:
            password = self.superpassword
        return make_conninfo(
            host=self.host, port=str(self.port), dbname=dbname, user=user,
            password=password or None, **extra,
        )

    def connect(self, dbname: str = "postgres", **kwargs: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.conninfo(dbname, **kwargs), autocommit=True)

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        with self.connect(dbname) as conn:
            conn.execute(sql.encode())

    def server_log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        pg_ctl = str(self.bindir / "pg_ctl")
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(self.datadir), "-m", "immediate", "stop"]),
            capture_output=True, check=False,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def start_cluster(*, port: int | None = None, base: Path | None = None,
                  settings: dict[str, str] | None = None) -> Cluster:
    """initdb + start; raises RuntimeError with the server's own words on failure."""
    bindir = find_bindir()
    base = Path(base or tempfile.mkdtemp(prefix="pgcli-jit-cluster-"))
    password = secrets.token_urlsafe(24)
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(base, SERVER_USER)
        shutil.chown(pwfile, SERVER_USER)
    base.chmod(0o700)
    cluster = Cluster(base, port or free_port(), SERVER_USER, password, bindir)
    try:
        _run([str(bindir / "initdb"), "-D", str(cluster.datadir), "-U", SERVER_USER,
              "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions"])
    finally:
        pwfile.unlink(missing_ok=True)
    _write_settings(cluster, settings or {})
    _run([str(bindir / "pg_ctl"), "-D", str(cluster.datadir), "-l", str(cluster.logfile),
          "-w", "-t", "60", "start"], log=cluster.logfile)
    return cluster


def _write_settings(cluster: Cluster, extra: dict[str, str]) -> None:
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(cluster.port),
        "unix_socket_directories": f"'{cluster.socket_dir}'",
        "log_statement": "'all'",
        "log_connections": "on",
        "log_line_prefix": "'%m [%p] %u@%d '",
        "fsync": "off",
        "max_connections": "60",
        "shared_buffers": "16MB",
        **extra,
    }
    with open(cluster.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.writelines(f"{k} = {v}\n" for k, v in settings.items())


def _run(cmd: list[str], log: Path | None = None) -> None:
    proc = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        raise RuntimeError(f"{Path(cmd[0]).name} failed: {proc.stderr.strip()} {tail}".strip())
