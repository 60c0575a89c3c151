"""The JSONL audit trail."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.session.audit import EVENTS, AuditLog

T0 = 1_800_000_000.0
PASSWORD = "pw-never-logged-7Q2x"


def lease() -> Lease:
    return Lease(profile="demo", backend="postgres", credentials=Credentials("jit_alice_x7f2", PASSWORD),
                 issued_at=T0, expires_at=T0 + 900, lease_id="jit_alice_x7f2", reason="INC-123 hotfix",
                 requester="alice", backend_data={"token": PASSWORD})


def test_one_json_object_per_line_with_the_contract_fields(tmp_path: Path) -> None:
    path = tmp_path / "state" / "pgcli-jit" / "audit.jsonl"
    log = AuditLog(path, clock=FakeClock(T0 + 5))
    log.record("request", lease(), ttl=900)
    log.record("revoke", lease(), revoked=True, error=None)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["time"] == "2027-01-15T08:00:05+00:00"
    assert first["event"] == "request"
    assert first["profile"] == "demo" and first["backend"] == "postgres"
    assert first["db_user"] == "jit_alice_x7f2" and first["lease_id"] == "jit_alice_x7f2"
    assert first["requester"] == "alice" and first["reason"] == "INC-123 hotfix"
    assert first["expires_at"] == "2027-01-15T08:15:00+00:00" and first["ttl"] == 900
    assert second["event"] == "revoke" and second["revoked"] is True and "error" not in second


def test_no_password_in_any_event(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for event in sorted(EVENTS):
        log.record(event, lease())
    assert PASSWORD not in path.read_text()
    assert len(path.read_text().splitlines()) == len(EVENTS)


def test_event_without_a_lease(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    entry = AuditLog(path).record("failure", None, action="request", profile="demo", error="refused")
    assert json.loads(path.read_text()) == entry
    assert entry["profile"] == "demo" and "db_user" not in entry


def test_file_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).record("request", lease())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"event": "old"}\n')
    path.chmod(0o600)
    AuditLog(path).record("expire", lease())
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == ["old", "expire"]


def test_unwritable_path_is_a_warning_not_an_exception(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    log = AuditLog(blocker / "audit.jsonl")
    with caplog.at_level(logging.WARNING, logger="pgcli_jit.session.audit"):
        entry = log.record("request", lease())
    assert entry["event"] == "request"
    assert any("audit log" in r.getMessage() and "not written" in r.getMessage() for r in caplog.records)
    assert PASSWORD not in caplog.text


def test_unknown_event_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with pytest.raises(ValueError, match="unknown audit event 'login'"):
        AuditLog(path).record("login", lease())
    assert not path.exists()


def test_no_path_writes_nothing(tmp_path: Path) -> None:
    assert AuditLog(None).record("request", lease())["event"] == "request"
    assert list(tmp_path.iterdir()) == []
