"""``\\jit profiles``: the config's profiles merged with what the server lets this login
request, within 80 columns."""

from __future__ import annotations

from types import MappingProxyType
from typing import ClassVar

from pgcli_jit.backends.base import ProfileGrants, RoleInfo
from pgcli_jit.session.config import Config
from pgcli_jit.session.report import (
    PROFILE_HEADERS,
    fit_profile_rows,
    profile_rows,
    profile_table,
    table_width,
    vertical,
)
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
    assert rows == [("read (default)", "5m", "30m", "", "read-only, asks before it ends"),
                    ("shortw (server)", "2m", "10m", "", "reason required; short writes")]
    assert table_width(rows, PROFILE_HEADERS) <= 80


def test_a_table_too_wide_for_the_terminal_is_shown_one_profile_a_line() -> None:
    rows = [("shortw (server)", "2m", "10m", "", "reason required; " + "a long note " * 8)]
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
    assert rows == [("read (default)", "5m", "30m", "", "approval by jit_leads; read-only"),
                    ("hotfix (server)", "2m", "10m", "", "reason required; 2 approvals by jit_leads"),
                    ("old (server)", "1m", "1m", "", "approval unknown"),
                    ("open (server)", "1m", "1m", "", "")]
    fitted = fit_profile_rows(rows, 80)
    assert fitted is not None and table_width(fitted, PROFILE_HEADERS) <= 80
    assert "2 approvals by jit_leads" in " ".join(vertical(rows, 40).split())  # narrower: one a line


GRANTS = [ProfileGrants("read", ("SELECT on public.*",)),
          ProfileGrants("shortw", ("SELECT on public.*", "UPDATE on public.orders, public.order_lines",
                                   "CREATE on schema scratch"), break_glass=True, auto_approved=True),
          ProfileGrants("huge", listed=False)]


def test_what_each_server_profile_grants_has_its_column_and_fits_80() -> None:
    """The grants from the server beside each of its profiles; break-glass and an
    auto-approval that applies to this login in the note; the table wraps within 80."""
    config = _config()
    server = [*SERVER[:1], RoleInfo("shortw", 120.0, 600.0, "short writes", kind="server profile",
                                    reason_required=True, approvers="jit_leads", logged=True),
              RoleInfo("huge", 60.0, 60.0, "", kind="server profile", approvers="")]
    rows = profile_rows(config, {"read": ServerBackend(config.profiles["read"], clock=lambda: 0.0)},
                        server, GRANTS)
    assert rows[0][3] == "SELECT on public.*"
    assert rows[1] == ("shortw (server)", "2m", "10m",
                       "SELECT on public.*; UPDATE on public.orders, public.order_lines;"
                       " CREATE on schema scratch",
                       "reason required; approval by jit_leads (auto-approved for you); break-glass; logged;"
                       " short writes")
    assert rows[2][3] == "too many objects to list"
    fitted = fit_profile_rows(rows, 80)
    assert fitted is not None and table_width(fitted, PROFILE_HEADERS) <= 80
    assert [r[0] for r in fitted if r[0]] == [r[0] for r in rows]   # one row each, continued
    assert "".join("".join(r[3] for r in fitted).split()) == "".join(
        "".join(r[3] for r in rows).split())   # nothing of the grants is lost
    assert fit_profile_rows(rows, 40) is None   # too narrow to wrap: one a line
    text = vertical(rows, 40)
    assert all(len(line) <= 40 for line in text.splitlines())
    assert "grants SELECT on public.*" in text


def test_a_profile_the_server_does_not_describe_has_an_empty_grants_cell() -> None:
    config = _config()
    rows = profile_rows(config, {"read": ServerBackend(config.profiles["read"], clock=lambda: 0.0)},
                        SERVER, [])
    assert [r[3] for r in rows] == ["", ""]
    assert ProfileGrants("x", ("A on b",), more=3).summary() == "A on b; 3 more"

    table = profile_table(rows, 80)   # nothing described: the listing is as it was before
    assert table is not None and table[1] == ["profile", "ttl", "max ttl", "note"]
    assert table[0] == [(r[0], r[1], r[2], r[4]) for r in rows]
    described_rows = profile_rows(config, {}, SERVER, GRANTS)
    table = profile_table(described_rows, 80)
    assert table is not None and table[1] == PROFILE_HEADERS
