"""The aws-rds-iam backend: real boto3 signing with fake AWS credentials (nothing reaches AWS)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.rds import RdsIamBackend
from pgcli_jit.core.errors import BackendUnavailable, ConfigError, NotRenewable
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.testing import BackendContract, FakeClock
from pgcli_jit.session.config import parse_profile

HOST = "mydb.abc123xyz.eu-west-1.rds.amazonaws.com"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake static credentials, and no ~/.aws files or instance metadata to fall back on."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def ticking(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's signing clock moves one second per signature, so tokens differ without sleeping.

    A token is a pure function of (credentials, user, endpoint, second): two
    signed within the same second are identical, which is harmless for RDS.
    """
    import botocore.auth

    start = dt.datetime(2026, 3, 1, 12, 0, 0)
    ticks = iter(range(10_000))
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda remove_tzinfo=True: start + dt.timedelta(seconds=next(ticks)))


def profile(**options: Any) -> Any:
    body = {"backend": "aws-rds-iam", "host": HOST, "port": 5432, "region": "eu-west-1",
            "username": "app_reader", **options}
    return parse_profile("rds", {k: v for k, v in body.items() if v is not None}, Path("config.toml"))


def ask(b: RdsIamBackend, ttl: float = 60) -> Lease:
    return b.request(LeaseRequest(ttl=ttl, reason="INC-9", requester="alice"))


class TestContract(BackendContract):
    @pytest.fixture(autouse=True)
    def _tick(self, ticking: None) -> None:
        pass

    def make_backend(self) -> RdsIamBackend:
        return RdsIamBackend(profile())

    def can_login(self, lease: Lease) -> None:
        return None  # signed offline: only a real RDS endpoint could check it


def test_token_has_the_rds_shape() -> None:
    lease = ask(RdsIamBackend(profile()))
    token = lease.credentials.password
    assert token.startswith(f"{HOST}:5432/?")
    query = parse_qs(urlsplit("https://" + token).query)
    assert query["Action"] == ["connect"] and query["DBUser"] == ["app_reader"]
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Credential"][0].startswith(f"{KEY_ID}/")
    assert query["X-Amz-Credential"][0].endswith("/eu-west-1/rds-db/aws4_request")
    assert len(query["X-Amz-Signature"][0]) == 64
    assert SECRET_KEY not in token
    assert lease.username == "app_reader" and token not in repr(lease)


@pytest.mark.parametrize(("profile_ttl", "asked", "expected"), [
    (None, 3600, 900), (None, 300, 300), ("5m", None, 300), (None, None, 900),
])
def test_lease_lasts_at_most_the_token_lifetime(profile_ttl: str | None, asked: float | None,
                                                expected: float) -> None:
    clock = FakeClock()
    b = RdsIamBackend(profile(ttl=profile_ttl), clock=clock)
    lease = b.request(LeaseRequest(ttl=asked or 0, reason="", requester="alice"))
    assert lease.expires_at - lease.issued_at == expected


@pytest.mark.parametrize(("sslmode", "expected"), [
    (None, "require"), ("disable", "require"), ("prefer", "require"),
    ("verify-ca", "verify-ca"), ("verify-full", "verify-full"),
])
def test_tls_is_insisted_on(sslmode: str | None, expected: str) -> None:
    assert dict(ask(RdsIamBackend(profile(sslmode=sslmode))).conninfo) == {"sslmode": expected}


def test_renew_signs_a_new_token_for_the_same_user(ticking: None) -> None:
    clock = FakeClock()
    b = RdsIamBackend(profile(), clock=clock)
    lease = ask(b, ttl=900)
    clock.advance(600)
    renewed = b.renew(lease, None)
    assert renewed.username == lease.username and renewed.renewals == 1
    assert renewed.credentials.password != lease.credentials.password
    assert renewed.expires_at == clock() + 900
    assert dict(renewed.conninfo) == {"sslmode": "require"}
    shorter = b.renew(renewed, 60)
    assert shorter.expires_at == renewed.expires_at  # a renewal never shortens the lease
    b.revoke(renewed)  # nothing to call, nothing raised


def test_renew_stops_at_max_ttl() -> None:
    clock = FakeClock()
    b = RdsIamBackend(profile(max_ttl="20m"), clock=clock)
    lease = ask(b, ttl=900)
    clock.advance(600)
    capped = b.renew(lease, None)
    assert capped.expires_at == lease.issued_at + 1200 and capped.warnings
    clock.advance(600)
    with pytest.raises(NotRenewable, match="max TTL reached"):
        b.renew(capped, None)


def test_missing_boto3_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    b = RdsIamBackend(profile())
    with pytest.raises(BackendUnavailable, match="boto3 is not installed") as info:
        ask(b)
    assert "pip install 'pgcli-jit[aws]'" in str(info.value)


def test_missing_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(BackendUnavailable, match="cannot sign a token: Unable to locate credentials"):
        ask(RdsIamBackend(profile()))


def test_unknown_aws_profile() -> None:
    with pytest.raises(BackendUnavailable, match=r"cannot sign a token: .*nosuch.*could not be found"):
        ask(RdsIamBackend(profile(aws_profile="nosuch")))


def test_every_request_is_a_lease_of_its_own(ticking: None) -> None:
    """The user is always the same, so the lease id tells leases apart: the controller matches
    a rotation at max_ttl (and a late expiry) by id and user."""
    b = RdsIamBackend(profile())
    first, second = ask(b), ask(b)
    assert first.username == second.username and first.lease_id != second.lease_id
    assert first.lease_id.startswith(f"rds-iam:app_reader@{HOST}#")
    assert not first.same_grant(second)
    renewed = b.renew(first, None)
    assert renewed.lease_id == first.lease_id and renewed.same_grant(first)


def test_aws_errors_are_one_clean_line() -> None:
    """botocore's message carries a credential_process program's stderr as it is: escapes,
    several lines, an access key id."""
    def factory(p: Any) -> Any:
        raise RuntimeError("Error when retrieving credentials from custom-process: \x1b[31mexpired\x1b[0m\n"
                           f"key {KEY_ID}\x07 second line")

    with pytest.raises(BackendUnavailable) as info:
        ask(RdsIamBackend(profile(aws_profile="sso"), client_factory=factory))
    text = str(info.value)
    assert text == ("aws-rds-iam backend (profile rds): cannot sign a token: Error when retrieving "
                    "credentials from custom-process: [31mexpired [0m key *** second line "
                    "(check the AWS credentials: aws sts get-caller-identity --profile sso)"), text


def test_the_client_factory_is_injectable() -> None:
    calls: list[dict[str, Any]] = []

    class Client:
        def generate_db_auth_token(self, **kwargs: Any) -> str:
            calls.append(kwargs)
            return f"token-{len(calls)}"

    made: list[str] = []

    def factory(p: Any) -> Client:
        made.append(p.name)
        return Client()

    b = RdsIamBackend(profile(port=6432, region="us-east-2"), client_factory=factory)
    b.renew(ask(b), None)
    assert made == ["rds"]  # one client, reused
    assert calls == [{"DBHostname": HOST, "Port": 6432, "DBUsername": "app_reader",
                      "Region": "us-east-2"}] * 2


@pytest.mark.parametrize(("changes", "message"), [
    ({"region": None}, "region: missing"),
    ({"username": None}, "username: missing"),
    ({"host": None}, "host: missing"),
    ({"port": None}, "port: missing"),
    ({"username": ""}, "username: must be a non-empty string"),
    ({"aws_profile": 3}, "aws_profile: must be a non-empty string"),
    ({"password": "x"}, "unknown key"),
])
def test_bad_profiles_are_refused_at_config_time(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        profile(**changes)

