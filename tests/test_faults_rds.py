"""Faults of the aws-rds-iam backend at request, renew and revoke, through the Controller.

Real parts throughout: boto3 signs every token (offline, with fake AWS credentials from the
environment, or from a real ``credential_process`` program for an ``aws_profile``: nothing
reaches AWS), and every login is checked by a PostgreSQL cluster of this module's own with
TLS (``tls_cluster``; the lease's ``sslmode=require`` is needed there, as on RDS), where
``IamDatabase`` plays RDS: the last token signed is the user's password, and when IAM says
no, no token is.  Only the clock that places the lease in its renewal windows is fake.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psycopg
import pytest

from pgcli_jit.backends.rds import RdsIamBackend, boto3_client
from pgcli_jit.core.clock import local_time
from pgcli_jit.core.errors import ConnectionSwitchError, JitError
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session.audit import AuditLog, iso
from pgcli_jit.session.config import Config, parse_profile
from pgcli_jit.session.controller import Controller
from pgcli_jit.session.manager import LeaseManager
from tests.conftest import RDS_USER
from tests.instrument.sitecustomize import IamDatabase
from tests.test_controller import PsycopgConnector
from tests.test_faults_brokers import one_line, renew_fails_in_window_then_final

pytestmark = pytest.mark.faults

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "faults-aws-secret-key/0123456789abcdefXYZ"
PREFIX = "aws-rds-iam backend (profile rds): "


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Fake static credentials, and nothing else to fall back on (no ~/.aws, no instance
    metadata); the AWS config file a test may write is returned."""
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path / "aws-config"


@pytest.fixture
def iam(tls_cluster: Cluster) -> Iterator[IamDatabase]:
    db = IamDatabase(tls_cluster.conninfo("app"))
    yield db
    db.refuse(RDS_USER)  # no token of one test logs in during the next
    with tls_cluster.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                     (RDS_USER,))


class World:
    """A Controller over one aws-rds-iam profile on the TLS cluster, a plain psycopg
    connector, a fake clock; the backend's own boto3 client, its tokens accepted by ``iam``."""

    def __init__(self, cluster: Cluster, tmp_path: Path, iam: IamDatabase, **keys: Any) -> None:
        body = {"backend": "aws-rds-iam", "host": cluster.host, "port": cluster.port, "dbname": "app",
                "region": "eu-west-1", "username": RDS_USER, "ttl": "10m", **keys}
        self.profile = parse_profile("rds", body, tmp_path / "config.toml")
        self.audit_path = tmp_path / "audit.jsonl"
        config = Config(tmp_path / "config.toml", MappingProxyType({"rds": self.profile}), None,
                        self.audit_path)
        self.clock = FakeClock(time.time())

        def backend(profile: Any, clock: Any) -> RdsIamBackend:
            return RdsIamBackend(profile, clock=clock, client_factory=lambda p: iam.client(boto3_client(p)))

        self.manager = LeaseManager(config, AuditLog(self.audit_path, clock=self.clock), "faults",
                                    clock=self.clock, backend_factory=backend)
        self.connector = PsycopgConnector(None, {"host": cluster.host, "port": str(cluster.port),
                                                 "dbname": "app"})
        self.said: list[str] = []
        self.controller = Controller(self.manager, self.connector, self.said.append)

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def tls(self) -> bool:
        return bool(self.connector.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))

    def close(self) -> None:
        self.controller.jobs.shutdown()
        self.connector.close()


@pytest.fixture
def world(tls_cluster: Cluster, tmp_path: Path, iam: IamDatabase) -> Iterator[World]:
    w = World(tls_cluster, tmp_path, iam)
    yield w
    w.close()


def logs_in(cluster: Cluster, token: str) -> bool:
    """Whether the database accepts ``token`` for a new session now (a real login over TLS)."""
    try:
        psycopg.connect(cluster.conninfo("app", user=RDS_USER, password=token, sslmode="require"),
                        connect_timeout=10).close()
    except psycopg.OperationalError:
        return False
    return True


def next_second() -> None:
    """A token is a pure function of the credentials, the user, the endpoint and the second it
    is signed in: wait for the wall clock's next second, so the next token is a new one."""
    now = time.time()
    time.sleep(1.01 - (now - int(now)))


def credential_process(tmp_path: Path, config: Path) -> Path:
    """An ``aws_profile`` whose credentials come from a real ``credential_process`` program
    (as SSO or an assumed role's do): they expire in 5 minutes, so botocore runs it again for
    every signature.  Touching the returned path makes it fail, as an expired SSO session does."""
    expired = tmp_path / "sso-expired"
    program = tmp_path / "aws-creds"
    program.write_text(
        f"#!{sys.executable}\nimport datetime, json, os, sys\n"
        f"if os.path.exists({str(expired)!r}):\n"
        "    sys.stderr.write('\\x1b[31mthe SSO session has expired\\x1b[0m: run aws sso login\\n')\n"
        "    sys.exit(1)\n"
        "until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': 'ASIAIOSFODNN7EXAMPLE',\n"
        f"                  'SecretAccessKey': {SECRET_KEY!r}, 'SessionToken': 'faults-session-token',\n"
        "                  'Expiration': until.strftime('%Y-%m-%dT%H:%M:%SZ')}))\n", encoding="utf-8")
    program.chmod(stat.S_IRWXU)
    config.write_text(f"[profile sso]\ncredential_process = {program}\n", encoding="utf-8")
    return expired


# -- request -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["no credentials", "unknown aws_profile"])
def test_aws_credentials_missing_at_request(cluster: Cluster, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Nothing is signed, so no database is reached: the session cluster (no TLS) will do."""
    iam = IamDatabase(cluster.conninfo("app"))
    if kind == "no credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        w = World(cluster, tmp_path, iam)
    else:
        w = World(cluster, tmp_path, iam, aws_profile="nosuch")
    with pytest.raises(JitError) as caught:
        w.controller.request(None, None, "INC-1")
    text = one_line(caught.value)
    expected = ("Unable to locate credentials" if kind == "no credentials"
                else "The config profile (nosuch) could not be found")
    assert text.startswith(f"{PREFIX}cannot sign a token: {expected}"), text
    assert "aws sts get-caller-identity" in text
    assert w.controller.lease is None and w.connector.conn is None and iam.signed == []
    (entry,) = w.audit()
    assert (entry["event"], entry["action"]) == ("failure", "request")
    assert SECRET_KEY not in w.audit_path.read_text()
    w.close()


def test_token_refused_by_the_database_at_request(world: World, iam: IamDatabase, tls_cluster: Cluster,
                                                  tmp_path: Path) -> None:
    """IAM says no (RDS refuses the token): one line; nothing connected, or the old connection kept."""
    iam.allow = False
    with pytest.raises(ConnectionSwitchError) as caught:
        world.controller.request(None, None, "")
    text = one_line(caught.value)
    assert text == (f'could not connect as {RDS_USER}: connection failed: connection to server at '
                    f'"127.0.0.1", port {tls_cluster.port} failed: FATAL:  password authentication '
                    f'failed for user "{RDS_USER}" (the current connection was kept)'), text
    assert world.controller.lease is None and world.connector.conn is None
    assert iam.signed and iam.signed[-1] not in text + world.audit_path.read_text()

    iam.allow = True
    world.controller.request(None, None, "")
    first = world.controller.lease
    assert first is not None and world.connector.query("select current_user") == RDS_USER
    assert world.tls()
    iam.allow = False
    with pytest.raises(ConnectionSwitchError) as caught:
        world.controller.request(None, None, "again")
    assert one_line(caught.value).endswith("(the current connection was kept)")
    assert world.controller.lease is first
    assert world.connector.query("select count(*) from accounts") == 2  # the open session goes on
    assert SECRET_KEY not in world.audit_path.read_text()


# -- renew ---------------------------------------------------------------------------------


def test_aws_credentials_gone_at_renew_keep_the_lease_then_end_access(
        tls_cluster: Cluster, tmp_path: Path, iam: IamDatabase, fake_aws: Path) -> None:
    """The SSO session behind ``aws_profile`` expires mid-lease: the renewal cannot sign."""
    expired = credential_process(tmp_path, fake_aws)
    w = World(tls_cluster, tmp_path, iam, aws_profile="sso")
    w.controller.request(None, None, "")
    assert w.connector.query("select current_user") == RDS_USER
    expired.touch()
    renew_fails_in_window_then_final(w)
    failures = [s for s in w.said if s.startswith("Renewal failed")]
    assert len(failures) == 2, w.said
    for line in failures:
        assert "\n" not in line and "\x1b" not in line and len(line) < 600
        assert line.startswith(f"Renewal failed: {PREFIX}cannot sign a token: Error when retrieving "
                               "credentials from custom-process: [31mthe SSO session has expired"), line
        assert "run aws sso login" in line, line
    assert len(iam.signed) == 1  # the failed renewals signed nothing
    w.close()


def test_token_refused_by_the_database_at_renew(world: World, iam: IamDatabase, tls_cluster: Cluster) -> None:
    """IAM takes access away mid-lease.  A renewal signs offline, so it cannot know: it says
    Renewed; the open session goes on (RDS checks a token only at login); a reconnect with
    the fresh token is refused; at the lease's end the connection is closed."""
    world.controller.request(None, None, "")
    lease = world.controller.lease
    assert lease is not None
    iam.allow = False
    world.clock.set(lease.expires_at - 100)
    next_second()
    world.controller.accept_offer()
    world.controller.settle()
    renewed = world.controller.lease
    assert renewed is not None and renewed.username == RDS_USER, world.said
    assert world.said[-1].startswith(f"Renewed {RDS_USER} until "), world.said
    assert world.connector.params["password"] == renewed.credentials.password != lease.credentials.password
    assert world.connector.query("select current_user") == RDS_USER
    assert not logs_in(tls_cluster, renewed.credentials.password)
    world.clock.set(renewed.expires_at + 1)
    assert (world.controller.gate() or "").startswith("JIT access expired")
    assert world.connector.conn is not None and world.connector.conn.closed
    assert "password" not in world.connector.params


def test_renew_at_max_ttl_rotates_to_a_fresh_lease(tls_cluster: Cluster, tmp_path: Path,
                                                  iam: IamDatabase) -> None:
    """At max_ttl a token cannot extend the lease: renew makes a new lease (same user, new
    token) and the session switches to it."""
    w = World(tls_cluster, tmp_path, iam, ttl="10m", max_ttl="12m")
    w.controller.request(None, None, "")
    first = w.controller.lease
    assert first is not None and first.max_expires_at == first.issued_at + 720
    w.clock.set(first.issued_at + 500)
    assert w.controller.renew(None).endswith("(renewal capped at max_ttl).")
    w.clock.set(first.max_expires_at - 0.5)
    message = w.controller.renew(None)
    new = w.controller.lease
    assert new is not None and new is not first and new.lease_id != first.lease_id, message
    assert message.startswith(f"Rotated to {RDS_USER} until "), message
    assert new.expires_at > first.max_expires_at
    assert w.connector.query("select current_user") == RDS_USER and w.tls()
    assert [e["event"] for e in w.audit()][-2:] == ["rotate", "revoke"]
    w.close()


def test_a_late_release_of_a_replaced_lease_leaves_the_new_one(world: World) -> None:
    """Every lease is for the same user: the worker's late release of the lease a new request
    replaced must not end the new one (they are told apart by lease id)."""
    world.controller.request(None, None, "")
    first = world.controller.lease
    world.controller.request(None, None, "second look")
    second = world.controller.lease
    assert first is not None and second is not None and second.lease_id != first.lease_id
    assert world.manager.release("expire", expected=first) is None
    assert world.controller.lease is second and world.controller.gate() is None
    assert world.connector.query("select current_user") == RDS_USER


# -- revoke --------------------------------------------------------------------------------


def test_revoke_closes_the_connection_and_the_token_stays_valid(world: World, iam: IamDatabase,
                                                                tls_cluster: Cluster) -> None:
    """Nothing to call: the connection is closed and the lease forgotten; the last token
    still logs in (until its 15 minutes are up: only IAM takes access away)."""
    world.controller.request(None, None, "")
    lease = world.controller.lease
    assert lease is not None
    signed = len(iam.signed)
    message = world.controller.revoke()
    assert message.startswith(f"Closed {RDS_USER} (rds); its token stays valid until ")
    assert message.endswith("(a signed token cannot be withdrawn); no identity to return to: "
                            "\\jit request to continue.")
    assert world.controller.lease is None
    assert world.connector.conn is not None and world.connector.conn.closed
    assert (world.controller.gate() or "").startswith("JIT access revoked")
    assert len(iam.signed) == signed  # nothing signed, nothing called
    assert logs_in(tls_cluster, lease.credentials.password)


def test_revoke_says_the_token_stays_valid(world: World) -> None:
    """A signed token cannot be withdrawn: the user and the audit trail are told so, with
    the time it stops working, instead of "Revoked"."""
    world.controller.request(None, None, "")
    lease = world.controller.lease
    assert lease is not None
    message = world.controller.revoke()
    assert f"valid until {local_time(lease.issued_at + 900)}" in message
    last = world.audit()[-1]
    assert last["revoked"] is False and last["valid_until"] == iso(lease.issued_at + 900)
