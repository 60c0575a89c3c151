"""Shared fixtures: one real scram-sha-256 cluster per test session, and a broker in it.

Nothing here fakes PostgreSQL: backends and the shell are exercised against a
server that really checks passwords and ``VALID UNTIL``.

Every test is sorted by what it needs (``pytest -m unit``, ``-m integration``, ``-m pty``):
:func:`pytest_collection_modifyitems` reads the fixtures it uses, so a new test is sorted
without a marker of its own; ``security`` and ``faults`` are module-level ``pytestmark``.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from pgcli_jit import server
from pgcli_jit.backends.postgres.scram import scram_verifier
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.cluster import Cluster, start_cluster

if TYPE_CHECKING:
    from tests.openbao import Vault
    from tests.shell_fixtures import Session

#: the session-log tests' cluster (logging_collector, jsonlog) is a fixture any test module may use
pytest_plugins = ["tests.session_logs"]

BROKER = "jit_broker"
BROKER_PW_ENV = "PGCLI_JIT_TEST_BROKER_PW"
#: the requester login the postgres backend's tests ask as (member of jit_requester)
REQUESTER = "alice"
#: grant roles scoped to the app database's public schema (never pg_read_all_data)
GRANT_ROLES = """
CREATE ROLE jit_read NOLOGIN;
GRANT USAGE ON SCHEMA public TO jit_read;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO jit_read;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO jit_read;
CREATE ROLE jit_write NOLOGIN IN ROLE jit_read;
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO jit_write;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT INSERT, UPDATE, DELETE ON TABLES TO jit_write;
GRANT jit_read, jit_write TO jit_owner WITH ADMIN OPTION;
"""

#: fixtures that start a PostgreSQL cluster or an OpenBao server: a test that uses one,
#: directly or through another fixture, is an integration test
SERVER_FIXTURES = frozenset({"cluster", "tls_cluster", "vault", "logs_cluster"})
#: markers whose tests need a server whatever their fixtures: OpenBao of their own, or the
#: real shell (always against a server here; ``--demo`` starts its own)
SERVER_MARKERS = ("vault", "pty")
#: fixtures that drive the real pgcli-jit in a pseudo-terminal
PTY_FIXTURES = frozenset({"session"})
#: where a unit test would look for the PostgreSQL server binaries: nowhere
NO_BINDIR = "/nonexistent/unit-tests-start-no-cluster"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``unit`` or ``integration`` on every test (never both), ``pty`` on those with a terminal.

    Runs before ``-m`` deselects, so ``-m unit`` and ``-m "not unit"`` split the suite."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & PTY_FIXTURES:
            item.add_marker(pytest.mark.pty)
        needs_server = bool(used & SERVER_FIXTURES) or any(item.get_closest_marker(m) for m in SERVER_MARKERS)
        item.add_marker(pytest.mark.integration if needs_server else pytest.mark.unit)


@pytest.fixture(autouse=True)
def _held_to_its_group(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """What sorts a test is also what it may do: a unit test finds no PostgreSQL binaries
    (a cluster it starts fails, in every run, not only under ``tox -e unit``), and a test
    without the ``pty`` marker cannot open a terminal."""
    if request.node.get_closest_marker("unit"):
        monkeypatch.setenv("PGCLI_JIT_PG_BINDIR", NO_BINDIR)
    terminal = sys.modules.get("tests.terminal")
    if terminal is not None and not request.node.get_closest_marker("pty"):
        def refuse(*_args: object, **_kwargs: object) -> None:
            raise AssertionError(f"{request.node.nodeid} opens a terminal: mark it pytest.mark.pty")

        monkeypatch.setattr(terminal.Terminal, "__init__", refuse)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster with the jit schema in database ``app``, grant roles, and a requester login
    whose password libpq finds in a pgpass file (as a user's would)."""
    c = start_cluster()
    try:
        c.execute("CREATE DATABASE app")
        c.execute(
            "CREATE TABLE accounts (id int primary key, owner text, balance numeric);"
            "INSERT INTO accounts VALUES (1, 'alice', 100), (2, 'bob', 250);",
            dbname="app",
        )
        with c.connect("app") as conn:
            server.apply(conn)
            conn.execute(GRANT_ROLES.encode())
        passfile = tmp_path_factory.mktemp("pgpass") / "pgpass"
        passfile.touch(mode=0o600)
        os.environ["PGPASSFILE"] = str(passfile)
        make_login(c, REQUESTER, member_of="jit_requester")
        yield c
    finally:
        c.stop()


#: logins made so far (roles are cluster-wide): a second test module asking for one shares it
_LOGINS: dict[tuple[int, str], str] = {}


def make_login(cluster: Cluster, name: str, member_of: str = "") -> str:
    """A LOGIN role with a random password (sent as a SCRAM verifier), its line added to the
    pgpass file that ``$PGPASSFILE`` names, as a user's own ``~/.pgpass`` would hold it."""
    if (cluster.port, name) in _LOGINS:
        if member_of:
            with cluster.connect() as conn:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of),
                                                             sql.Identifier(name)))
        return _LOGINS[cluster.port, name]
    password = secrets.token_urlsafe(18)
    with cluster.connect() as conn:
        stmt = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(scram_verifier(conn, password)))
        if member_of:
            stmt += sql.SQL(" IN ROLE {}").format(sql.Identifier(member_of))
        conn.execute(stmt)
    with open(os.environ["PGPASSFILE"], "a", encoding="utf-8") as fh:
        fh.write(f"{cluster.host}:{cluster.port}:*:{name}:{password}\n")
    _LOGINS[cluster.port, name] = password
    return password


@pytest.fixture(scope="session")
def broker_password(cluster: Cluster) -> str:
    """The test suite's *external* broker (behind the command and http backends): a
    CREATEROLE login with ADMIN OPTION on the grant roles, as a third-party service has."""
    password = secrets.token_urlsafe(18)
    with cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
            sql.Identifier(BROKER), sql.Literal(scram_verifier(conn, password))))
        conn.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(BROKER)))
        conn.execute(sql.SQL("GRANT jit_read, jit_write TO {} WITH ADMIN OPTION").format(
            sql.Identifier(BROKER)))
    os.environ[BROKER_PW_ENV] = password
    return password


@pytest.fixture
def admin_dsn(cluster: Cluster, broker_password: str) -> str:
    return f"host={cluster.host} port={cluster.port} dbname=app user={BROKER}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and XDG tree, so no test reads or writes the real user's files."""
    home = tmp_path / "home"
    for sub in ("config", "state", "data", "cache"):
        (home / sub).mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("PGCLI_JIT_CONFIG", raising=False)
    for var in ("PGPASSWORD", "PGUSER", "PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def vault(cluster: Cluster) -> Iterator[Vault]:
    """One real OpenBao dev server for the session, its database engine on the test cluster."""
    from tests import openbao

    with openbao.running_vault(cluster) as vault:
        yield vault


@pytest.fixture
def session(home: Path, cluster: Cluster, admin_dsn: str) -> Iterator[Session]:
    """A pgcli-jit user's world: HOME, a config file, terminals that are closed afterwards."""
    from tests.shell_fixtures import Session

    world = Session(home, cluster, admin_dsn)
    try:
        yield world
    finally:
        for term in world.terminals:
            term.close()


def can_login(cluster: Cluster, lease: Lease, dbname: str = "app") -> bool:
    """Whether the lease's credentials open a session now (scram: a real password check)."""
    try:
        psycopg.connect(cluster.conninfo(dbname, user=lease.username,
                                         password=lease.credentials.password)).close()
    except psycopg.OperationalError:
        return False
    return True


#: keys that describe the server profile (declared with jit.profile_set), not the client's
SERVER_KEYS = ("grant", "ttl", "max_ttl", "reason_required", "owner", "requesters")


def postgres_profile_toml(name: str, _unused: object, cluster: Cluster, **extra: object) -> str:
    """A [profiles.NAME] table for the postgres backend against the test cluster, asking as
    ``alice``.  The server profile of the same name is declared (or changed) to match:
    ``grant`` (default jit_read), ``ttl`` and ``max_ttl`` (default 1 day) go to the server,
    everything else stays on the client."""
    declare_server_profile(cluster, name, **{k: extra[k] for k in SERVER_KEYS if k in extra})
    keys: dict[str, object] = {"backend": "postgres", "host": cluster.host, "port": cluster.port,
                               "dbname": "app", "user": REQUESTER}
    keys.update({k: v for k, v in extra.items() if k not in ("grant", "reason_required", "owner",
                                                           "requesters")})
    return f"[profiles.{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())


def declare_server_profile(cluster: Cluster, name: str, *, grant: list[str] | None = None,
                           ttl: object = "15m", max_ttl: object = "1d", reason_required: bool = False,
                           owner: str | None = None, requesters: str = "jit_requester") -> None:
    from pgcli_jit.core.durations import parse_duration

    seconds = parse_duration(ttl)  # type: ignore[arg-type]
    longest = max(seconds, parse_duration(max_ttl))  # type: ignore[arg-type]
    with cluster.connect("app") as conn:
        conn.execute(
            "SELECT jit.profile_set(%s, %s, make_interval(secs => %s), make_interval(secs => %s),"
            " %s, %s, %s, '')",
            (name, grant or ["jit_read"], seconds, longest, requesters, reason_required, owner or ""))


def live_jit_roles(cluster: Cluster, profile: str | None = None) -> list[str]:
    """Temporary roles that still exist, by the server's own lease table."""
    with cluster.connect("app") as conn:
        rows = conn.execute("SELECT rolname FROM jit_data.leases WHERE dropped_at IS NULL"
                            " AND (%s::text IS NULL OR profile = %s) ORDER BY id", (profile, profile))
        return [name for (name,) in rows.fetchall()]


def end_jit_roles(cluster: Cluster, profile: str | None = None) -> None:
    """Revoke and drop what a test left behind (the superuser is a member of jit_admin)."""
    with cluster.connect("app") as conn:
        for name in live_jit_roles(cluster, profile):
            conn.execute("SELECT jit.revoke(%s)", (name,))
            conn.execute("SELECT jit.finish(%s)", (name,))


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


#: the database user the aws-rds-iam tests sign tokens for, on ``tls_cluster``
RDS_USER = "app_iam"


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[Cluster]:
    """A cluster of the module's own with ``ssl = on``, for the aws-rds-iam backend: its leases
    insist on ``sslmode=require`` (RDS refuses IAM logins without TLS).  The self-signed
    certificate is made by the ``openssl`` command in the cluster's own directory and removed
    with it.  Database ``app`` with the ``accounts`` table; ``RDS_USER`` may log in only over
    TLS (``hostnossl ... reject``) and has no password until a token is accepted
    (``tests.instrument.sitecustomize.IamDatabase``).  Skipped on a server built without SSL."""
    import shutil
    import subprocess
    import tempfile

    from pgcli_jit.devtools.cluster import SERVER_USER, find_bindir

    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed for the TLS test cluster's certificate "
                           "(Debian: apt-get install openssl)")
    base = Path(tempfile.mkdtemp(prefix="pgcli-jit-tls-"))
    try:
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout", str(base / "server.key"),
                        "-out", str(base / "server.crt")], check=True, capture_output=True)
        for name in ("server.key", "server.crt"):
            (base / name).chmod(0o600)
            if os.geteuid() == 0:
                shutil.chown(base / name, SERVER_USER)
        c = start_cluster(base=base, settings={"ssl": "on", "ssl_cert_file": f"'{base / 'server.crt'}'",
                                               "ssl_key_file": f"'{base / 'server.key'}'"})
    except BaseException as exc:
        shutil.rmtree(base, ignore_errors=True)
        if "SSL is not supported by this build" in str(exc):
            pytest.skip(f"the PostgreSQL server in {find_bindir()} is built without SSL support "
                        "(the aws-rds-iam backend connects only over TLS)")
        raise
    try:
        c.execute("CREATE DATABASE app")
        c.execute("CREATE TABLE accounts (id int primary key, owner text, balance numeric);"
                  "INSERT INTO accounts VALUES (1, 'alice', 100), (2, 'bob', 250);"
                  f"CREATE ROLE {RDS_USER} LOGIN; GRANT SELECT ON accounts TO {RDS_USER};", dbname="app")
        hba = c.datadir / "pg_hba.conf"
        hba.write_text(f"hostnossl all {RDS_USER} all reject\n" + hba.read_text(), encoding="utf-8")
        c.execute("SELECT pg_reload_conf()")
        yield c
    finally:
        c.stop()
