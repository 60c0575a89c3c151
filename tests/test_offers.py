"""What the live lease offers and says, once per lease: plain values, no server."""

from __future__ import annotations

from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.session.manager import Renewal
from pgcli_jit.session.offers import Offers

T0 = 1_800_000_000.0


def lease(name: str = "jit_u") -> Lease:
    return Lease(profile="p", backend="faulty", credentials=Credentials(name, "pw"), issued_at=T0,
                 expires_at=T0 + 60, max_expires_at=T0 + 60)


def test_the_window_is_said_once_per_lease_with_the_transaction_deadline() -> None:
    offers, first = Offers(), lease()
    line = offers.window_line(first, "p", T0 + 45, in_transaction=True)
    assert line.startswith("Lease for p ends at ") and "(in 0:15): F6 or \\jit renew extends it." in line
    assert "A transaction is open: COMMIT before" in line
    assert offers.window_line(first, "p", T0 + 46, in_transaction=True) == ""
    assert offers.window_line(lease("jit_v"), "p", T0 + 46, in_transaction=False).endswith("extends it.")


def test_a_rotation_offer_is_void_for_another_lease_and_gone_once_taken() -> None:
    offers, current = Offers(), lease()
    offer = Renewal("offer", current, current, "max TTL reached", gain=30.0)
    line = offers.offer_rotation(offer, ["temp table t"], explicit=False)
    assert "would add 30s but reconnect and drop temp table t" in line and "--rotate" in line
    assert offers.offer_rotation(offer, ["temp table t"], explicit=False) == ""  # said once
    assert offers.offer_rotation(offer, [], explicit=True) != ""  # asked again: said again
    assert offers.rotation(lease("jit_other")) is None
    assert offers.take_rotation(current) is offer and offers.rotation(current) is None


def test_a_statement_is_kept_alive_once_and_the_line_says_why() -> None:
    offers, current = Offers(), lease()
    offers.begin_statement()
    assert offers.statement_running and not offers.kept_alive_this_statement
    offers.kept(current)
    assert offers.kept_alive_this_statement
    renewed = Renewal("extended", lease(), current)
    assert offers.kept_note(renewed, "Renewed jit_u until 12:00:00.").endswith(
        "(a statement was running into the lease's end).")
    offers.end_statement()
    offers.begin_statement()
    assert not offers.kept_alive_this_statement  # a new statement may be kept alive again
