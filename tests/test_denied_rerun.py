"""A denied statement kept while its request waits for approval: offered once the approved
lease is switched in, dropped when the request ends otherwise or another statement runs, and
handed out at most once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgcli_jit.session.denied_offer import DeniedOffers
from pgcli_jit.session.denied_rerun import Rerun, Stage, stage
from tests.test_denied import MESSAGE, ON_SESSION, UPDATE, D, FakeAsker, granting, offers


@dataclass
class Lease:
    profile: str


@dataclass
class Profile:
    name: str


@dataclass
class Waiting:
    profile: Profile


@dataclass
class Approvals:
    waiting: Waiting | None = None


@dataclass
class Handover:
    granted: Any = None

    def approval(self) -> Any:
        return self.granted


@dataclass
class Jit:
    lease: Lease | None = None
    approvals: Approvals = field(default_factory=Approvals)
    handover: Handover = field(default_factory=Handover)


def waiting_for(profile: str, before: Lease | None = None) -> tuple[Jit, Rerun]:
    jit = Jit(before, Approvals(Waiting(Profile(profile))))
    rerun = Rerun()
    rerun.keep(UPDATE, profile, before)
    return jit, rerun


def test_ready_once_a_lease_of_its_profile_is_switched_in_and_said_once() -> None:
    read = Lease("read")
    jit, rerun = waiting_for("write", read)
    assert rerun.ready(jit) is None and rerun.announce(jit) is None  # type: ignore[arg-type]
    jit.handover.granted = object()     # approved, waiting for COMMIT: still waiting
    jit.approvals.waiting = None
    assert stage(rerun._kept, jit) is Stage.WAITING  # type: ignore[arg-type]
    jit.lease, jit.handover.granted = Lease("write"), None
    kept = rerun.announce(jit)  # type: ignore[arg-type]
    assert kept is not None and kept.statement == UPDATE
    assert rerun.announce(jit) is None  # type: ignore[arg-type]   # said once
    assert rerun.ready(jit) is kept  # type: ignore[arg-type]      # still offered


def test_taken_once() -> None:
    jit, rerun = waiting_for("write", Lease("read"))
    jit.lease = Lease("write")
    assert rerun.take(jit) == UPDATE  # type: ignore[arg-type]
    assert rerun.take(jit) is None and rerun.ready(jit) is None  # type: ignore[arg-type]


def test_not_before_the_switch_and_never_for_the_same_lease() -> None:
    read = Lease("read")
    jit, rerun = waiting_for("read", read)   # a request for the profile already held
    assert rerun.take(jit) is None  # type: ignore[arg-type]
    assert rerun.ready(jit) is None  # type: ignore[arg-type]


def test_dropped_when_the_request_ends_without_a_switch_or_another_statement_runs() -> None:
    jit, rerun = waiting_for("write", Lease("read"))
    jit.approvals.waiting = None   # denied, cancelled or expired
    assert rerun.ready(jit) is None  # type: ignore[arg-type]
    jit.lease = Lease("write")       # a later lease of it (asked by hand) offers nothing
    assert rerun.take(jit) is None  # type: ignore[arg-type]
    jit, rerun = waiting_for("write", Lease("read"))
    rerun.drop()                     # the user ran another statement
    jit.lease = Lease("write")
    assert rerun.take(jit) is None  # type: ignore[arg-type]


def test_the_offer_keeps_the_statement_when_the_request_waits() -> None:
    jit, _ = offers({"UPDATE": [granting("write", approval=True)]}, grant=False)
    jit.approvals = Approvals(Waiting(Profile("write")))  # type: ignore[attr-defined]
    ask, rerun = FakeAsker(["y"]), Rerun()
    offer = DeniedOffers(jit, ask, ON_SESSION, rerun, "F7")  # type: ignore[arg-type]
    assert offer.after_failure(D, MESSAGE, UPDATE, in_transaction=False) is None
    assert ask.said[-1] == "When it is granted, F7 runs the statement again (until you run another one)."
    assert rerun._kept is not None and rerun._kept.statement == UPDATE and rerun._kept.profile == "write"
