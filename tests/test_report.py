"""Times as \\jit status shows them: local, with the zone, with a date when not today."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from pgcli_jit.core.clock import local_time
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.session.report import status_rows
from tests.fakes import faulty_profile


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()




def test_status_time_today_has_the_zone(berlin: None) -> None:
    now = datetime(2026, 11, 24, 12, 0, 0).astimezone().timestamp()
    assert local_time(now + 3600, zone=True, now=now) == "13:00:00 CET"


def test_status_time_on_another_day_has_the_date(berlin: None) -> None:
    now = datetime(2026, 11, 24, 23, 0, 0).astimezone().timestamp()
    assert local_time(now + 7200, zone=True, now=now) == "2026-11-25 01:00:00 CET"


def test_messages_keep_the_short_form(berlin: None) -> None:
    now = datetime(2026, 7, 1, 9, 30, 0).astimezone().timestamp()
    assert local_time(now, now=now) == "09:30:00"
    assert local_time(now, zone=True, now=now) == "09:30:00 CEST"


def test_status_rows_show_zones(berlin: None) -> None:
    now = datetime(2026, 11, 24, 12, 0, 0).astimezone().timestamp()
    lease = Lease(profile="fake", backend="faulty", credentials=Credentials("jit_u", "pw"),
                  issued_at=now - 60, expires_at=now + 86400, max_expires_at=now + 2 * 86400)
    rows = dict(status_rows(lease, faulty_profile(), now, "backend"))
    assert rows["issued"] == "11:59:00 CET"
    assert rows["expires"] == "2026-11-25 12:00:00 CET"
    assert rows["hard limit"] == "2026-11-26 12:00:00 CET"


def test_status_at_the_hard_limit_is_not_renewable_and_shows_the_real_window() -> None:
    """A lease at its hard limit cannot be extended (only rotated), and a 2-minute lease
    with renew_before = 2m has the window it really gets (two thirds), not the setting."""
    t0 = 1_800_000_000.0
    lease = Lease(profile="fake", backend="faulty", credentials=Credentials("jit_u", "pw"), issued_at=t0,
                  expires_at=t0 + 120, max_expires_at=t0 + 120)
    rows = dict(status_rows(lease, faulty_profile(renew="auto", renew_before=120.0), t0 + 10, "server"))
    assert rows["renewable"].startswith("no: at the hard limit") and "--rotate" in rows["renewable"]
    assert rows["renew mode"] == "auto (window: the last 1m20s)"
    longer = Lease(profile="fake", backend="faulty", credentials=Credentials("jit_u", "pw"), issued_at=t0,
                   expires_at=t0 + 120, max_expires_at=t0 + 3600)
    assert dict(status_rows(longer, faulty_profile(), t0 + 10, "server"))["renewable"] == "yes"


def test_a_long_status_value_is_wrapped_so_the_table_fits_80_columns() -> None:
    """A long reason (or a waiting rotation's line) would make \\jit status wider than the
    terminal, and pgcli would page it: the value goes on over the next rows instead."""
    from pgcli_jit.session.commands import fit_rows

    rows = [("profile", "write"), ("pending reason", "INC-123 " + "backfill the orders table " * 12)]
    fitted = fit_rows(rows, 80)
    field = max(len(name) for name, _ in fitted)
    assert all(len(f"| {name:<{field}} | {value} |") <= 80 for name, value in fitted)
    assert fitted[0] == ("profile", "write") and fitted[1][0] == "pending reason"
    assert all(name == "" for name, _ in fitted[2:]) and len(fitted) > 3
    assert " ".join(v for _, v in fitted[1:]) == rows[1][1].strip()
