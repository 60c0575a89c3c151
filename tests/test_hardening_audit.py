"""The audit file: 0600, no symlinks, loose modes tightened, and fail closed:
credentials that could not be audited are revoked and never handed out."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

from pgcli_jit.core.errors import AuditError, BackendError
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.session.audit import AuditLog
from pgcli_jit.session.config import Config, parse_profile
from pgcli_jit.session.manager import LeaseManager

pytestmark = pytest.mark.security

T0 = 1_800_000_000.0
PY = sys.executable


def lease(expires_at: float = T0 + 900) -> Lease:
    return Lease(profile="p", backend="command", credentials=Credentials("u1", "pw-secret-1"),
                 issued_at=T0, expires_at=expires_at, lease_id="l1", reason="r", requester="alice")


def test_a_symlink_at_the_audit_path_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(AuditError, match="symbolic link"):
        AuditLog(link).record("request", lease(), required=True)
    assert target.read_text() == ""


def test_an_existing_loose_file_is_tightened_to_0600(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="pgcli_jit.session.audit"):
        AuditLog(path).record("request", lease())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "tightened to 0600" in caplog.text


def test_a_directory_at_the_audit_path_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="not written"):
        AuditLog(tmp_path).record("request", lease(), required=True)


def test_a_time_that_cannot_be_recorded_fails_closed_not_with_a_traceback(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(AuditError, match="a time cannot be recorded"):
        log.ensure_writable(lease(expires_at=1e12 * 1000))
    with pytest.raises(AuditError):
        log.record("request", lease(expires_at=1e15), required=True)
    log.record("expire", lease(expires_at=1e15))  # ending access only warns


def test_ensure_writable_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).ensure_writable(lease())
    assert path.read_text() == "" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ensure_writable_not_required_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pgcli_jit.session.audit"):
        AuditLog(tmp_path).ensure_writable(lease(), required=False)
    assert "audit_required = false" in caplog.text


# -- manager.mint: fail closed, with real programs ---------------------------------------------

def program(code: str) -> list[str]:
    return [PY, "-c", code]


def manager(tmp_path: Path, audit: Path, ttl: object = 60, **extra: object) -> LeaseManager:
    revoked = tmp_path / "revoked"
    issue = (f"import json; print(json.dumps({{'version': 1, 'username': 'u1', 'password': 'pw-secret-1',"
             f" 'ttl': {ttl!r}}}))")
    record = f"import os; open({str(revoked)!r}, 'a').write(os.environ['PGCLI_JIT_USERNAME'] + '\\n')"
    body = {"backend": "command", "command": program(issue), "revoke_command": program(record), **extra}
    profile = parse_profile("p", body, tmp_path / "config.toml")
    cfg = Config(tmp_path / "config.toml", MappingProxyType({"p": profile}), "p", audit)
    return LeaseManager(cfg, AuditLog(audit), "alice")


def test_mint_revokes_and_refuses_when_the_audit_trail_cannot_be_written(tmp_path: Path) -> None:
    m = manager(tmp_path, audit=tmp_path)  # a directory: no file can be opened there
    with pytest.raises(AuditError) as info:
        m.mint(m.config.profile("p"), None, "INC-1")
    assert "audit_required = false" in str(info.value) and "pw-secret-1" not in str(info.value)
    assert (tmp_path / "revoked").read_text() == "u1\n"  # the minted credentials were ended
    assert m.lease is None


def test_mint_goes_on_when_the_profile_says_audit_is_not_required(tmp_path: Path) -> None:
    m = manager(tmp_path, audit=tmp_path, audit_required=False)
    assert m.mint(m.config.profile("p"), None, "INC-1").username == "u1"
    assert not (tmp_path / "revoked").exists()


def test_mint_with_a_writable_trail_works_and_leaves_it_0600(tmp_path: Path) -> None:
    audit = tmp_path / "state" / "audit.jsonl"
    m = manager(tmp_path, audit=audit)
    lease_ = m.mint(m.config.profile("p"), None, "INC-1")
    m.adopt(lease_, m.config.profile("p"))
    [entry] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert entry["event"] == "request" and stat.S_IMODE(os.stat(audit).st_mode) == 0o600


def test_a_ttl_of_1e12_is_refused_before_any_connection(tmp_path: Path) -> None:
    """Refused before any connection: a TTL past year 9999 cannot be written to the audit line."""
    audit = tmp_path / "audit.jsonl"
    m = manager(tmp_path, audit=audit, ttl=1e12)
    with pytest.raises(BackendError, match='"ttl" is longer than 366 days') as info:
        m.mint(m.config.profile("p"), None, "INC-1")
    assert "\n" not in str(info.value)
    assert json.loads(audit.read_text())["event"] == "failure"
