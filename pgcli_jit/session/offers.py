"""What the live lease offers the user, and when it says so.

Nothing here reads the terminal: an offer is a word in the toolbar (``[F6] renew``,
``[F6] new credentials``) and a line said once above the prompt.  This module keeps what
was offered and said for which lease, and whether the running statement has already been
kept alive; the controller decides what to do and calls :meth:`Offers.say_due` etc. with
the facts it holds.  Plain values in, sentences out: tested without a server.
"""

from __future__ import annotations

from pgcli_jit.core.clock import local_time
from pgcli_jit.core.durations import format_clock, format_duration
from pgcli_jit.core.lease import Lease
from pgcli_jit.session.manager import Renewal


class Offers:
    def __init__(self) -> None:
        #: new credentials the lease needs, not minted: they would drop session state or add
        #: little, so they wait for a clear yes (F6, or \jit renew --rotate)
        self._rotation: Renewal | None = None
        self._said: dict[str, Lease] = {}  # which lease each once-per-lease notice was said for
        #: the lease renewed because the running statement ran into its end (once a statement)
        self.kept_alive: Lease | None = None
        self.kept_alive_this_statement = False
        #: while a statement runs (not while its output is paged)
        self.statement_running = False

    # -- statements -------------------------------------------------------------------

    def begin_statement(self) -> None:
        """The shell runs a statement: a ``prompt`` lease may be renewed once for it."""
        self.kept_alive_this_statement = False
        self.statement_running = True

    def end_statement(self) -> None:
        """The statement is over (its output may still be paged)."""
        self.statement_running = False

    def kept(self, lease: Lease | None) -> None:
        """A renewal was started to keep the running statement alive."""
        self.kept_alive, self.kept_alive_this_statement = lease, True

    def kept_note(self, renewal: Renewal, message: str) -> str:
        """The ``Renewed`` line, saying why when it kept a statement alive."""
        if renewal.kind == "extended" and renewal.base is self.kept_alive:
            return message.rstrip(".") + " (a statement was running into the lease's end)."
        return message

    # -- new credentials offered ------------------------------------------------------

    def rotation(self, lease: Lease | None) -> Renewal | None:
        """The rotation offered for ``lease`` (the current one); an offer for an older one is void."""
        offer = self._rotation
        return offer if offer is not None and offer.lease is lease else None

    def take_rotation(self, lease: Lease | None) -> Renewal | None:
        """F6 or --rotate: the offer is taken (and so gone)."""
        offer, self._rotation = self.rotation(lease), None
        return offer

    def offer_rotation(self, renewal: Renewal, cost: list[str], explicit: bool) -> str:
        """Keep the offer; the line that says what it would add and cost, once per lease
        (again when asked)."""
        self._rotation = renewal
        lease = renewal.lease
        if not explicit and self._said.get("offer") is lease:
            return ""
        self._said["offer"] = lease
        drops = f" and drop {', '.join(cost)}" if cost else ""
        return (f"{lease.username} cannot be extended ({renewal.reason}). New credentials would add "
                f"{format_duration(renewal.gain)} but reconnect{drops}: F6 or \\jit renew --rotate takes "
                f"them; otherwise access ends at {local_time(lease.expires_at)}.")

    # -- the renewal window -----------------------------------------------------------

    def window_line(self, lease: Lease, profile: str, now: float, in_transaction: bool) -> str:
        """The window opened on a ``prompt`` lease: said once per lease, "" after."""
        if self._said.get("window") is lease:
            return ""
        self._said["window"] = lease
        until = local_time(lease.expires_at)
        return (f"Lease for {profile} ends at {until} (in {format_clock(lease.remaining(now))}): "
                f"F6 or \\jit renew extends it.{_commit(until) if in_transaction else ''}")

    def said_final(self, lease: Lease) -> bool:
        return self._said.get("final") is lease

    def final_line(self, lease: Lease) -> str:
        """The final part began with a transaction open: its deadline, once per lease."""
        self._said["final"] = lease
        until = local_time(lease.expires_at)
        return f"{lease.username} ends at {until}.{_commit(until)}"


def _commit(until: str) -> str:
    return f" A transaction is open: COMMIT before {until} or it is lost."
