"""An approver's session hears of break-glass uses: each said once above the prompt, shown in the
toolbar while it lasts, with a fake approver, a fake clock and no database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pgcli_jit.backends.base import BreakGlassUse
from pgcli_jit.session.approvals import break_glass_line
from pgcli_jit.shell import toolbar
from tests.test_approvals_controller import T0, World


class GlassApprover:
    """Approves something; the break-glass uses are what the test puts in ``uses``."""

    def __init__(self) -> None:
        self.uses: list[BreakGlassUse] = []
        self.asked = 0

    def waiting_for_me(self) -> list[Any]:
        return []

    def approves_any(self) -> bool:
        return True

    def decide(self, request_id: int, approve: bool, text: str) -> dict[str, Any]:
        raise AssertionError("not decided here")

    def break_glass_uses(self) -> list[BreakGlassUse]:
        self.asked += 1
        return list(self.uses)


def use(lease_id: str, until: float, reason: str = "INC-7 db down", who: str = "alice") -> BreakGlassUse:
    return BreakGlassUse(lease_id, who, "write", reason, datetime.fromtimestamp(until, UTC))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def count(world: World) -> None:
    """One count: started on the worker, its answer taken on the main thread."""
    flow = world.controller.approvals
    flow._next_count = 0.0
    flow.count_tick()
    world.controller.submit(lambda: None).result()
    flow.count_tick()


def test_each_use_is_said_once_and_shown_while_it_lasts(world: World) -> None:
    flow = world.controller.approvals
    approver = GlassApprover()
    flow._counted = (approver, world.manager.backend_for(world.manager.config.profiles["fake"]))
    approver.uses = [use("41", T0 + 600)]
    count(world)
    count(world)
    glass = [line for line in world.said if line.startswith("BREAK-GLASS:")]
    assert glass == [break_glass_line(approver.uses[0], 200)] and approver.asked == 2
    assert glass[0].startswith("BREAK-GLASS: alice took write until ")
    assert glass[0].endswith(": \"INC-7 db down\"")
    notice = flow.glass_notice(world.clock())
    assert notice == glass[0]
    assert toolbar.glass_segment(notice) == [(toolbar.STYLES["alarm"], f"  {notice} ")]
    approver.uses.append(use("42", T0 + 900, who="bob"))
    count(world)
    assert len([line for line in world.said if line.startswith("BREAK-GLASS:")]) == 2
    assert (flow.glass_notice(world.clock()) or "").startswith("BREAK-GLASS: bob took write")
    assert (flow.glass_notice(world.clock()) or "").endswith(" +1 more")
    world.clock.advance(1000)  # both have expired: the toolbar drops them without a new count
    assert flow.glass_notice(world.clock()) is None and toolbar.glass_segment(None) == []


def test_text_typed_by_the_requester_is_made_printable_and_cut() -> None:
    line = break_glass_line(use("7", T0 + 60, reason="x" * 300 + "\x1b[2J", who="eve\nroot"), 40)
    assert "\x1b" not in line and "\n" not in line
    assert line.endswith('..."') and len(line.split(': "', 1)[1]) == 41


def test_a_reason_cannot_read_as_more_of_the_line() -> None:
    """The reason is the requester's text: last, in quotes it cannot close."""
    reason = 'INC-7") - already withdrawn by "oncall", no action'
    line = break_glass_line(use("7", T0 + 60, reason=reason), 80)
    assert line.endswith(': "INC-7\') - already withdrawn by \'oncall\', no action"')
    assert line.count('"') == 2


def test_an_approver_without_break_glass_is_still_counted(world: World) -> None:
    class Plain(GlassApprover):
        break_glass_uses = None  # type: ignore[assignment]

    flow = world.controller.approvals
    flow._counted = (Plain(), world.manager.backend_for(world.manager.config.profiles["fake"]))
    count(world)
    assert flow.glass == [] and flow.glass_notice(world.clock()) is None
