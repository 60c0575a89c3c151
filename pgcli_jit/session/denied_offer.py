"""After "permission denied": the profile that grants it, asked for and switched to, once.

The shell hands over a failed statement's SQLSTATE, message and text; this module reads it
(:mod:`pgcli_jit.session.denied`), asks the broker which profiles the login may request
would allow it (a backend that ``says_what_grants``; any other is skipped quietly), and
offers the smallest one, through the questions the shell asks for it (:class:`Asker`: pgcli's
own prompts).  Yes: the reason if the profile needs one, the request by the same path as
``\\jit request``, and the statement back to the shell to run once more as the new role.

What is never done: an offer inside an open transaction (it is aborted, and pgcli-jit never
ends a transaction for the user: the offer says so and names the command), a question under
``-c``/``-f`` (the hint line only), a second offer for the statement being run again, an
offer for a profile the server did not name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.errors import ConfigError, JitError
from pgcli_jit.core.sanitize import printable
from pgcli_jit.session.catalog import LISTING
from pgcli_jit.session.config import server_side_profile
from pgcli_jit.session.denied import Denial, read_denial

if TYPE_CHECKING:
    from pgcli_jit.backends.base import Backend, GrantingProfile, Privilege, SessionQuery
    from pgcli_jit.core.lease import Lease
    from pgcli_jit.session.controller import Controller
    from pgcli_jit.session.denied_rerun import Rerun
    from pgcli_jit.session.manager import LeaseManager

log = logging.getLogger(__name__)


class Asker(Protocol):
    """How the shell asks (pgcli's own prompts, a line of stdin each) and says."""

    def confirm(self, question: str) -> bool: ...

    def text(self, question: str) -> str: ...

    def say(self, line: str) -> None: ...


@dataclass(frozen=True)
class Offer:
    """Profiles that grant what a statement lacked, smallest first, and the object as the
    server names it."""

    denial: Denial
    profiles: tuple[GrantingProfile, ...]
    target: str


def asking_backend(manager: LeaseManager) -> Backend:
    """The broker asked: the current lease's, else the default profile's, else the server's
    profile listing (as ``\\jit profiles`` asks it)."""
    config = manager.config
    lease = manager.lease
    try:
        profile = config.requestable(lease.profile if lease is not None else None)
    except ConfigError:
        profile = server_side_profile(LISTING)
    return manager.backend_for(profile)


def find_offer(manager: LeaseManager, denial: Denial, on_session: SessionQuery | None) -> Offer | None:
    """The profiles that hold every privilege the statement lacked, in the broker's order;
    for an UPDATE, failing that, those that grant each column it sets.  Without the
    session's connection (a transaction is open, and aborted) the broker asks as the user's
    own login, whose search_path is not the session's: only an object the statement named
    with its schema is asked about then."""
    backend = asking_backend(manager)
    if not backend.says_what_grants or (on_session is None and not denial.qualified):
        return None
    found = _holding_all(backend, denial.needed, on_session)
    if found:
        return Offer(denial, tuple(found), printable(found[0].target))
    found = _holding_all(backend, denial.by_column, on_session) if denial.by_column else []
    if found:
        return Offer(denial, tuple(found), printable(f"{denial.target} ({', '.join(denial.columns)})"))
    return None


def _holding_all(backend: Backend, needed: tuple[Privilege, ...],
                 on_session: SessionQuery | None) -> list[GrantingProfile]:
    found: list[GrantingProfile] | None = None
    for wanted in needed:
        rows = backend.profiles_granting(wanted, on_session)
        if found is None:
            found = rows
        else:
            holding = {p.name for p in rows}
            found = [p for p in found if p.name in holding]
        if not found:
            return []
    return found or []


def details(p: GrantingProfile, *, longest: bool = False) -> str:
    """``15m, reason required``: what a request for ``p`` gives and needs (``longest``: with
    how long it may be renewed to)."""
    ttl = format_duration(p.ttl) if p.ttl else ""
    if longest and p.max_ttl and p.ttl and p.max_ttl > p.ttl:
        ttl += f" (up to {format_duration(p.max_ttl)})"
    needs = ("reason required" if p.reason_required else "",
             "approval required" if p.approval_required else "")
    return ", ".join(filter(None, (ttl, *needs)))


def grants_line(p: GrantingProfile, offer: Offer) -> str:
    """``write grants UPDATE on public.orders (15m, reason required)``"""
    return f"{p.name} grants {offer.denial.privilege} on {offer.target} ({details(p)})"


def request_command(p: GrantingProfile) -> str:
    """What the user types for ``p``."""
    return f"\\jit request {p.name}" + (' --reason "..."' if p.reason_required else "")


class DeniedOffers:
    """The offer after a denied statement, for one session."""

    def __init__(self, jit: Controller, ask: Asker, on_session: SessionQuery | None = None,
                 rerun: Rerun | None = None, rerun_key: str = "") -> None:
        self.jit = jit
        self.ask = ask
        #: the session's own connection, where the statement was denied (see find_offer)
        self.on_session = on_session
        #: where a statement waits while its request waits for approval, and the key that
        #: runs it again once granted (None: the user runs it again by hand)
        self.rerun = rerun
        self.rerun_key = rerun_key

    def after_failure(self, sqlstate: str | None, message: str | None, statement: str, *,
                      in_transaction: bool) -> str | None:
        """Offer what would allow ``statement``; the statement to run again as the new role
        (once, by the shell), or None."""
        if not self.jit.config.offer_on_denied:
            return None
        denial = read_denial(sqlstate, message, statement)
        if denial is None:
            return None
        try:
            offer = find_offer(self.jit.manager, denial, None if in_transaction else self.on_session)
        except JitError as exc:  # an offer is a convenience: one quiet line in the log
            log.info("no offer after permission denied: %s", exc)
            return None
        if offer is None:
            return None
        if self.jit.access.unattended:
            self.ask.say(f"{grants_line(offer.profiles[0], offer)}: {request_command(offer.profiles[0])}")
            return None
        if in_transaction:
            self._say_aborted(offer)
            return None
        chosen = self._choose(offer)
        return None if chosen is None else self._request(chosen, statement)

    def _say_aborted(self, offer: Offer) -> None:
        p = offer.profiles[0]
        self.ask.say(f"{grants_line(p, offer)}. The transaction is aborted: after ROLLBACK, "
                     f"{request_command(p)} and run the statement again.")

    def _choose(self, offer: Offer) -> GrantingProfile | None:
        if len(offer.profiles) == 1:
            p = offer.profiles[0]
            yes = self.ask.confirm(f"{grants_line(p, offer)}: request it and run the statement again?")
            return p if yes else None
        self.ask.say(f"These profiles grant {offer.denial.privilege} on {offer.target}, smallest first:")
        for p in offer.profiles:
            self.ask.say(f"  {p.name}: {details(p, longest=True)}")
        by_name = {p.name: p for p in offer.profiles}
        name = self.ask.text("Request one and run the statement again (its name, or Enter to skip)").strip()
        if name and name not in by_name:
            self.ask.say(f"{printable(name)} is not one of them: nothing was requested.")
        return by_name.get(name)

    def _request(self, p: GrantingProfile, statement: str) -> str | None:
        reason = ""
        if p.reason_required:
            reason = self.ask.text(f"Reason for {p.name}").strip()
            if not reason:
                self.ask.say(f"{p.name} requires a reason: nothing was requested.")
                return None
        before = self.jit.lease
        try:
            line = self.jit.request(p.name, None, reason)
        except JitError as exc:
            self.ask.say(str(exc))
            return None
        self.ask.say(line)
        lease = self.jit.lease
        if lease is None or lease is before or lease.profile != p.name:
            self._keep_for_approval(p, statement, before)
            return None
        return statement

    def _keep_for_approval(self, p: GrantingProfile, statement: str, before: Lease | None) -> None:
        waiting = self.jit.approvals.waiting if self.rerun is not None else None
        if self.rerun is None or waiting is None or waiting.profile.name != p.name:
            self.ask.say("Run the statement again once the session has switched.")
            return
        self.rerun.keep(statement, p.name, before)
        self.ask.say(f"When it is granted, {self.rerun_key} runs the statement again "
                     "(until you run another one).")
