"""Renewal windows and the countdown segment: pure functions of a lease and the time."""

from __future__ import annotations

import pytest

from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.policy import Phase, phase, windows
from pgcli_jit.devtools.testing import FakeClock
from pgcli_jit.shell.toolbar import STYLES, prompt_text, segment

T0 = 1_800_000_000.0


def make_lease(ttl: float = 900, issued: float = T0, user: str = "jit_alice_x7f2",
               profile: str = "demo") -> Lease:
    return Lease(profile=profile, backend="fake", credentials=Credentials(user, "s3cret-pw"),
                 issued_at=issued, expires_at=issued + ttl, lease_id="fake/1")


# -- windows --------------------------------------------------------------------------


def test_default_window_is_the_last_third() -> None:
    w = windows(make_lease(900), None)
    assert w.renew_at == T0 + 600
    assert w.final_at == T0 + 840  # the last minute
    assert w.expires_at == T0 + 900


def test_renew_before_sets_the_window() -> None:
    w = windows(make_lease(900), 120)
    assert w.renew_at == T0 + 780
    assert w.final_at == T0 + 840


def test_renew_before_is_capped_at_two_thirds() -> None:
    w = windows(make_lease(900), 3600)
    assert w.renew_at - T0 == pytest.approx(300)


def test_final_part_is_at_most_half_the_window() -> None:
    w = windows(make_lease(90), None)  # window 30 s, final part 15 s
    assert w.renew_at == T0 + 60
    assert w.final_at == T0 + 75


def test_phase_over_time_with_a_fake_clock() -> None:
    clock = FakeClock(T0)
    lease = make_lease(900)
    seen = []
    for step in (0, 599, 1, 239, 1, 59, 1, 1000):
        clock.advance(step)
        seen.append(phase(lease, None, clock()))
    assert seen == [Phase.FRESH, Phase.FRESH, Phase.WINDOW, Phase.WINDOW, Phase.FINAL, Phase.FINAL,
                    Phase.EXPIRED, Phase.EXPIRED]


def test_phase_with_renew_before() -> None:
    lease = make_lease(900)
    assert phase(lease, 120, T0 + 779) is Phase.FRESH
    assert phase(lease, 120, T0 + 780) is Phase.WINDOW


def test_window_after_renewals_is_a_third_of_the_new_term() -> None:
    lease = make_lease(900)
    now = T0
    for _ in range(4):  # renew each time the window opens, for another 15 minutes
        now = windows(lease, None).renew_at
        lease = lease.extended(now + 900, renewed_at=now)
    # a fresh 15-minute term: renewal should not be due again before 10 minutes have passed
    assert phase(lease, None, now + 1) is Phase.FRESH
    assert windows(lease, None).renew_at - now == pytest.approx(600, abs=1)


# -- toolbar ---------------------------------------------------------------------------


def test_no_lease_no_segment() -> None:
    assert segment(None, None, T0) == []


@pytest.mark.parametrize("word", ["expired", "revoked"])
def test_ended_word_without_a_lease(word: str) -> None:
    assert segment(None, None, T0, ended=word) == [(STYLES["expired"], f"  JIT {word} ")]


def test_fresh_segment_text_and_style() -> None:
    lease = make_lease(900)
    assert segment(lease, None, T0 + 1) == [(STYLES["fresh"], "  JIT demo as jit_alice_x7f2 14:59 ")]


def test_warning_style_inside_the_window() -> None:
    [(style, text)] = segment(make_lease(900), None, T0 + 700)
    assert style == STYLES["warning"] and text.endswith(" 3:20 ")


def test_alarm_style_in_the_last_minute() -> None:
    [(style, text)] = segment(make_lease(900), None, T0 + 841)
    assert style == STYLES["alarm"] and text.endswith(" 0:59 ")
    [(style, _)] = segment(make_lease(900), None, T0 + 839)
    assert style == STYLES["warning"]


def test_short_lease_stages_follow_the_windows() -> None:
    """A 90 s lease: window opens at 0:30 left (a third), final part at 0:15 (half the window).
    The old fixed 60 s alarm turned it red at 1:00, before anything was asked."""
    lease = make_lease(90)
    stages = {t: segment(lease, None, T0 + t)[0][0] for t in (1, 40, 59, 61, 74, 76, 89)}
    assert stages == {1: STYLES["fresh"], 40: STYLES["fresh"], 59: STYLES["fresh"],
                      61: STYLES["warning"], 74: STYLES["warning"],
                      76: STYLES["alarm"], 89: STYLES["alarm"]}


def test_stages_follow_renew_before() -> None:
    lease = make_lease(150)  # renew_before 100s: window at 1:40 left, final at 0:50 left
    assert segment(lease, 100, T0 + 45)[0][0] == STYLES["fresh"]
    assert segment(lease, 100, T0 + 55)[0][0] == STYLES["warning"]
    assert segment(lease, 100, T0 + 99)[0][0] == STYLES["warning"]
    assert segment(lease, 100, T0 + 101)[0][0] == STYLES["alarm"]


def test_prompt_token_text() -> None:
    lease = make_lease(900)
    assert prompt_text(lease, T0 + 1) == "JIT demo 14:59 "
    assert prompt_text(lease, T0 + 900) == "JIT expired "
    assert prompt_text(None, T0) == ""
    assert prompt_text(None, T0, ended="revoked") == "JIT revoked "


def test_expired_segment() -> None:
    assert segment(make_lease(900), None, T0 + 900) == [(STYLES["expired"], "  JIT expired ")]
    assert segment(make_lease(900), None, T0 + 5000) == [(STYLES["expired"], "  JIT expired ")]


def test_hours_are_shown_for_long_leases() -> None:
    [(_, text)] = segment(make_lease(8 * 3600), None, T0 + 1)
    assert text == "  JIT demo as jit_alice_x7f2 7:59:59 "


def test_toolbar_ticks_with_the_clock() -> None:
    clock = FakeClock(T0)
    lease = make_lease(900)
    texts = []
    for _ in range(3):
        clock.advance(1)
        texts.append(segment(lease, None, clock())[0][1].split()[-1])
    assert texts == ["14:59", "14:58", "14:57"]


def test_segment_never_shows_the_password() -> None:
    for now in (T0, T0 + 700, T0 + 880, T0 + 1000):
        assert "s3cret-pw" not in str(segment(make_lease(900), None, now))
