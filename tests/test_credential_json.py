"""The credential JSON shared by the command and http backends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgcli_jit.backends.credential_json import CredentialFormatError, parse_object, parse_text
from pgcli_jit.core.clock import parse_timestamp
from pgcli_jit.core.lease import Credentials

NOW = parse_timestamp("2026-03-01T12:00:00Z")
SECRET = "s3cr3t-Pa55word"


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"version": 1, "username": "jit_alice", "password": SECRET, "ttl": 900}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def parse(data: Any, **kwargs: Any) -> Any:
    return parse_text(json.dumps(data), now=NOW, **kwargs)


def test_minimal_document_with_ttl() -> None:
    parsed = parse(doc())
    assert parsed.credentials == Credentials("jit_alice", SECRET)
    assert parsed.expires_at == NOW + 900
    assert parsed.lease_id == "" and parsed.renewable and parsed.max_expires_at is None


def test_every_field() -> None:
    parsed = parse(doc(ttl=..., expires_at="2026-03-01T13:00:00.123456789Z", lease_id="L-1",
                       renewable=False, max_ttl=7200, warnings=["capped\nsecond line", " "]))
    assert parsed.expires_at == pytest.approx(NOW + 3600.123456)
    assert (parsed.lease_id, parsed.renewable, parsed.max_expires_at) == ("L-1", False, NOW + 7200)
    assert parsed.warnings == ("capped",)


def test_expires_at_wins_over_ttl_and_offsets_are_honoured() -> None:
    parsed = parse(doc(expires_at="2026-03-01T14:30:00+02:00", ttl=5))
    assert parsed.expires_at == NOW + 1800


@pytest.mark.parametrize(("text", "message"), [
    ("", "printed nothing"),
    (f"password={SECRET}", "not JSON"),
    (f'{{"version": 1, "password": "{SECRET}"', "not JSON"),
    ("[1, 2]", "expected a JSON object, got array"),
    ('"just a string"', "got string"),
])
def test_unreadable_output_is_one_line_without_the_raw_text(text: str, message: str) -> None:
    with pytest.raises(CredentialFormatError, match=message) as info:
        parse_text(text, now=NOW)
    assert SECRET not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("changes", "message"), [
    ({"version": ...}, '"version" is missing'),
    ({"version": 2}, '"version" is 2'),
    ({"version": True}, '"version" is True'),
    ({"version": "1"}, '"version" is string'),
    ({"username": ...}, '"username" is missing'),
    ({"username": ""}, '"username" is empty'),
    ({"password": ...}, '"password" is missing'),
    ({"password": 1234}, '"password" is a number'),
    ({"ttl": ...}, 'neither "expires_at"'),
    ({"ttl": 0}, '"ttl" must be a positive number'),
    ({"ttl": True}, '"ttl" must be a positive number'),
    ({"ttl": ..., "expires_at": 1893456000}, '"expires_at" must be an ISO-8601 string'),
    ({"ttl": ..., "expires_at": "tomorrow"}, '"expires_at" is not an ISO-8601 time'),
    ({"ttl": ..., "expires_at": "2026-03-01T11:59:59Z"}, "already in the past"),
    ({"renewable": "yes"}, '"renewable" must be true or false'),
    ({"lease_id": 7}, '"lease_id" must be a string'),
    ({"warnings": "w"}, '"warnings" must be a list'),
])
def test_invalid_documents(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CredentialFormatError, match=message) as info:
        parse(doc(**changes))
    assert SECRET not in str(info.value)


def test_password_of_the_wrong_type_is_not_echoed() -> None:
    with pytest.raises(CredentialFormatError) as info:
        parse_object(doc(password=[SECRET]), now=NOW)
    assert SECRET not in str(info.value)


def test_renewal_may_omit_username_and_password() -> None:
    current = Credentials("jit_alice", "old-password")
    parsed = parse({"version": 1, "ttl": 60}, current=current)
    assert parsed.credentials == current
    rotated = parse({"version": 1, "ttl": 60, "password": "new-password"}, current=current)
    assert rotated.credentials == Credentials("jit_alice", "new-password")
    with pytest.raises(CredentialFormatError, match='"password" is empty'):
        parse({"version": 1, "ttl": 60, "password": ""}, current=current)
