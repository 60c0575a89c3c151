"""``\\jit profiles``: the config's profiles merged with what the server lets this login
request, within 80 columns."""

from __future__ import annotations

from types import MappingProxyType
from typing import ClassVar

from pgcli_jit.backends.base import RoleInfo
from pgcli_jit.session.config import Config
from pgcli_jit.session.report import PROFILE_HEADERS, profile_rows, table_width, vertical
from tests.fakes import FaultyBackend, faulty_profile


class ServerBackend(FaultyBackend):
    server_policy: ClassVar[bool] = True


SERVER = [RoleInfo("read", 300.0, 1800.0, "read-only", kind="server profile", approvers=""),
          RoleInfo("shortw", 120.0, 600.0, "short writes", kind="server profile", reason_required=True,
                   approvers="")]


def _config() -> Config:
    read = faulty_profile("read", description="read-only, asks before it ends")
    return Config(None, MappingProxyType({"read": read}), "read", None)  # type: ignore[arg-type]


def test_server_only_profiles_are_listed_with_the_servers_terms() -> None:
    """``\\jit request shortw`` worked, but \\jit profiles listed only the config's profiles."""
    config = _config()
    rows = profile_rows(config, {"read": ServerBackend(config.profiles["read"], clock=lambda: 0.0)}, SERVER)
    assert rows == [("read (default)", "5m", "30m", "read-only, asks before it ends"),
                    ("shortw (server)", "2m", "10m", "reason required; short writes")]
    assert table_width(rows, PROFILE_HEADERS) <= 80


def test_a_table_too_wide_for_the_terminal_is_shown_one_profile_a_line() -> None:
    rows = [("shortw (server)", "2m", "10m", "reason required; " + "a long note " * 8)]
    assert table_width(rows, PROFILE_HEADERS) > 80
    text = vertical(rows, 80)
    assert text.splitlines()[0] == "shortw (server): ttl 2m, max ttl 10m"
    assert all(len(line) <= 80 for line in text.splitlines())


def test_the_approval_a_server_profile_needs_is_in_its_note() -> None:
    """Whether a request waits for a second person, whom and how many; unknown (not an
    error) when the server's schema does not say; nothing when nobody must approve."""
    config = Config(None, MappingProxyType({"read": faulty_profile("read")}), "read", None)  # type: ignore[arg-type]
    server = [RoleInfo("read", 300.0, 1800.0, "read-only", kind="server profile", approvers="jit_leads"),
              RoleInfo("hotfix", 120.0, 600.0, "", kind="server profile", reason_required=True,
                       approvers="jit_leads", approvals=2),
              RoleInfo("old", 60.0, 60.0, "", kind="server profile"),
              RoleInfo("open", 60.0, 60.0, "", kind="server profile", approvers="")]
    rows = profile_rows(config, {"read": ServerBackend(config.profiles["read"], clock=lambda: 0.0)}, server)
    assert rows == [("read (default)", "5m", "30m", "approval by jit_leads; read-only"),
                    ("hotfix (server)", "2m", "10m", "reason required; 2 approvals by jit_leads"),
                    ("old (server)", "1m", "1m", "approval unknown"),
                    ("open (server)", "1m", "1m", "")]
    assert table_width(rows, PROFILE_HEADERS) <= 80
    assert "2 approvals by jit_leads" in " ".join(vertical(rows, 40).split())  # narrower: one a line
