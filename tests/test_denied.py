"""Reading "permission denied" (``session/denied.py``) and the offer made of it
(``session/denied_offer.py``), without a server.

The messages are PostgreSQL's own words (the same from 15 to 18;
``tests/test_privilege_lookup_server.py`` reads them from the real server of the run too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pgcli_jit.backends.base import GrantingProfile, Privilege
from pgcli_jit.core.errors import JitError
from pgcli_jit.session import denied_offer
from pgcli_jit.session.denied import read_denial
from pgcli_jit.session.denied_offer import DeniedOffers

D = "42501"


def needed(message: str, statement: str) -> list[tuple[str, str, str, str | None]] | None:
    denial = read_denial(D, message, statement)
    return None if denial is None else [(p.privilege, p.kind, p.obj, p.column) for p in denial.needed]


@pytest.mark.parametrize(("message", "statement", "expected"), [
    ("permission denied for table orders", "update orders set status = 'x'",
     [("UPDATE", "table", "orders", None)]),
    ("permission denied for table orders", "UPDATE orders SET status = 'x' WHERE id = 3",
     [("UPDATE", "table", "orders", None), ("SELECT", "table", "orders", None)]),
    ("permission denied for table orders", "update public.orders set status = 'x'",
     [("UPDATE", "table", "public.orders", None)]),
    ("permission denied for table orders", "delete from only sales.orders",
     [("DELETE", "table", "sales.orders", None)]),
    ("permission denied for table orders", "insert into orders values (1)",
     [("INSERT", "table", "orders", None)]),
    ("permission denied for table orders", "insert into orders select * from old returning id",
     [("INSERT", "table", "orders", None), ("SELECT", "table", "orders", None)]),
    ("permission denied for table customers", "update orders set c = 1 from customers where true",
     [("SELECT", "table", "customers", None)]),
    ("permission denied for table orders", "select * from orders o join x on true",
     [("SELECT", "table", "orders", None)]),
    ("permission denied for table orders", "TABLE orders", [("SELECT", "table", "orders", None)]),
    ("permission denied for table orders", "truncate table orders", [("TRUNCATE", "table", "orders", None)]),
    ("permission denied for table orders", "copy orders from stdin", [("INSERT", "table", "orders", None)]),
    ("permission denied for table orders", "copy orders to stdout", [("SELECT", "table", "orders", None)]),
    ("permission denied for view v_orders", "select * from v_orders", [("SELECT", "view", "v_orders", None)]),
    ("permission denied for materialized view mv", "select * from app.mv",
     [("SELECT", "materialized view", "app.mv", None)]),
    ('permission denied for table we ird "t ä', 'select * from lk."we ird ""t ä"',
     [("SELECT", "table", 'lk."we ird ""t ä"', None)]),
    ("permission denied for table Orders", 'select * from "Orders"', [("SELECT", "table", '"Orders"', None)]),
    ("permission denied for sequence orders_id_seq", "select nextval('orders_id_seq')",
     [("USAGE", "sequence", "orders_id_seq", None)]),
    ("permission denied for sequence s", "select setval('app.s', 3)",
     [("UPDATE", "sequence", "app.s", None)]),
    ("permission denied for schema public", "create table t (id int)",
     [("CREATE", "schema", "public", None)]),
    ("permission denied for function f", "select lk.f(1)", [("EXECUTE", "function", "lk.f", None)]),
    ("permission denied for procedure p", "call p()", [("EXECUTE", "procedure", "p", None)]),
    ("permission denied for database app", "create schema s", [("CREATE", "database", "app", None)]),
    ("permission denied for column secret of relation orders", "update orders set secret = 'x'",
     [("UPDATE", "table", "orders", "secret")]),
])
def test_real_messages_are_read(message: str, statement: str, expected: list[Any]) -> None:
    assert needed(message, statement) == expected


@pytest.mark.parametrize(("sqlstate", "message", "statement"), [
    (D, 'permission denied to set role "jit_write"', "set role jit_write"),
    (D, "must be owner of table orders", "alter table orders add c int"),
    (D, "permission denied to create temporary tables in database \"app\"", "create temp table t ()"),
    (D, "permission denied for large object 16390", "select lo_get(16390)"),
    (D, "only the owner may do this, sorry", "select do_things()"),             # a function's own 42501
    (D, "permission denied for table orders", "select do_things()"),            # not named: inside a function
    (D, "permission denied for table orders", "select * from v_orders"),        # behind a view
    (D, "permission denied for sequence orders_id_seq", "insert into orders (x) values (1)"),  # a default
    (D, "permission denied for table orders", "select * from a.orders join b.orders on true"),  # which one?
    (D, "permission denied for table orders", "merge into orders using x on true when matched then delete"),
    (D, "permission denied for table orders", "select $q$orders$q$ from orders"),
    (D, "permission denied for table orders", "lock table orders"),
    (D, "permission denied for database app", "select 1"),
    (D, "permission denied for schema secret", "select * from secret.t"),   # USAGE: the table is unnamed
    (D, "permission denied for table orders\x01", "select * from orders"),
    (D, "permission denied for table " + "x" * 2000, "select 1"),
    ("42P01", "relation \"orders\" does not exist", "select * from orders"),
    (None, "permission denied for table orders", "select * from orders"),
    (D, None, "select * from orders"),
    (D, "permission denied for table orders", ""),
    (D, "permission denied for table orders", "select * from orders where x = '\x00'"),
])
def test_anything_else_gives_no_denial(sqlstate: str | None, message: str | None, statement: str) -> None:
    assert read_denial(sqlstate, message, statement) is None


# -- the offer ---------------------------------------------------------------------------


def granting(name: str, *, roles: int = 1, reason: bool = False, approval: bool = False,
             target: str = "public.orders") -> GrantingProfile:
    return GrantingProfile(name, target, 900.0, 3600.0, reason, approval, roles)


@dataclass
class FakeBackend:
    answers: dict[str, list[GrantingProfile]]
    says_what_grants: bool = True
    asked: list[Privilege] = field(default_factory=list)
    sessions: list[Any] = field(default_factory=list)

    def profiles_granting(self, wanted: Privilege, on_session: Any = None) -> list[GrantingProfile]:
        self.asked.append(wanted)
        self.sessions.append(on_session)
        return self.answers.get(wanted.privilege, [])


@dataclass
class FakeLease:
    profile: str


@dataclass
class FakeConfig:
    offer_on_denied: bool = True

    def requestable(self, name: str | None) -> Any:
        return name


@dataclass
class FakeManager:
    backend: FakeBackend
    config: FakeConfig = field(default_factory=FakeConfig)
    lease: FakeLease | None = None

    def backend_for(self, profile: Any) -> FakeBackend:
        return self.backend


@dataclass
class FakeJit:
    manager: FakeManager
    unattended: bool = False
    requested: list[tuple[str, str]] = field(default_factory=list)
    refuse: str = ""
    grant: bool = True

    @property
    def config(self) -> FakeConfig:
        return self.manager.config

    @property
    def access(self) -> FakeJit:  # whether access stands, and -c/-f: read as jit.access.unattended
        return self

    @property
    def lease(self) -> FakeLease | None:
        return self.manager.lease

    def request(self, name: str, ttl: float | None, reason: str) -> str:
        if self.refuse:
            raise JitError(self.refuse)
        self.requested.append((name, reason))
        if self.grant:
            self.manager.lease = FakeLease(name)
            return f"Connected as jit_x until 12:00 ({name})."
        return f"Request 7 for {name} is waiting for approval by leads"


@dataclass
class FakeAsker:
    answers: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def confirm(self, question: str) -> bool:
        self.asked.append(question)
        return self.answers.pop(0) == "y"

    def text(self, question: str) -> str:
        self.asked.append(question)
        return self.answers.pop(0)

    def say(self, line: str) -> None:
        self.said.append(line)


UPDATE = "update orders set status = 'x'"


def after(jit: FakeJit, ask: FakeAsker, statement: str, *, in_transaction: bool) -> str | None:
    """The offer after ``statement`` was denied with MESSAGE, the session's connection at hand."""
    return DeniedOffers(jit, ask, ON_SESSION).after_failure(  # type: ignore[arg-type]
        D, MESSAGE, statement, in_transaction=in_transaction)


def ON_SESSION(statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The session's connection, as the shell hands it over (the fake backend never calls it)."""
    raise AssertionError("not called by the fake backend")

MESSAGE = "permission denied for table orders"


def offers(answers: dict[str, list[GrantingProfile]], **jit: Any) -> tuple[FakeJit, FakeBackend]:
    backend = FakeBackend(answers)
    return FakeJit(FakeManager(backend, lease=FakeLease("read")), **jit), backend


def test_yes_with_a_reason_requests_and_hands_the_statement_back() -> None:
    jit, backend = offers({"UPDATE": [granting("write", reason=True)]})
    ask = FakeAsker(["y", "INC-1 fix"])
    again = after(jit, ask, UPDATE, in_transaction=False)
    assert again == UPDATE
    assert ask.asked == ["write grants UPDATE on public.orders (15m, reason required): request it and run "
                         "the statement again?", "Reason for write"]
    assert jit.requested == [("write", "INC-1 fix")]
    assert backend.asked == [Privilege("UPDATE", "table", "orders")]


def test_no_requests_nothing() -> None:
    jit, _ = offers({"UPDATE": [granting("write")]})
    assert after(jit, FakeAsker(["n"]), UPDATE, in_transaction=False) is None  # type: ignore[arg-type]
    assert jit.requested == []


def test_an_empty_reason_requests_nothing() -> None:
    jit, _ = offers({"UPDATE": [granting("write", reason=True)]})
    ask = FakeAsker(["y", "  "])
    assert after(jit, ask, UPDATE, in_transaction=False) is None  # type: ignore[arg-type]
    assert jit.requested == [] and ask.said == ["write requires a reason: nothing was requested."]


def test_several_are_listed_smallest_first_and_picked_by_name() -> None:
    jit, _ = offers({"UPDATE": [granting("write"), granting("admin", roles=3)]})
    ask = FakeAsker(["admin"])
    assert after(jit, ask, UPDATE, in_transaction=False) == UPDATE  # type: ignore[arg-type]
    assert ask.said[:3] == ["These profiles grant UPDATE on public.orders, smallest first:",
                            "  write: 15m (up to 1h)", "  admin: 15m (up to 1h)"]
    assert jit.requested == [("admin", "")]
    jit, _ = offers({"UPDATE": [granting("write"), granting("admin", roles=3)]})
    ask = FakeAsker(["root"])
    assert after(jit, ask, UPDATE, in_transaction=False) is None  # type: ignore[arg-type]
    assert ask.said[-1] == "root is not one of them: nothing was requested." and jit.requested == []


def test_every_privilege_needed_must_be_held_by_the_same_profile() -> None:
    statement = UPDATE + " where id = 3"
    jit, _ = offers({"UPDATE": [granting("upd-only"), granting("write")], "SELECT": [granting("write")]})
    ask = FakeAsker(["y"])
    assert after(jit, ask, statement, in_transaction=False) == statement  # type: ignore[arg-type]
    assert jit.requested == [("write", "")]
    jit, _ = offers({"UPDATE": [granting("upd-only")], "SELECT": [granting("read")]})
    ask = FakeAsker()
    assert after(jit, ask, statement, in_transaction=False) is None  # type: ignore[arg-type]
    assert ask.asked == ask.said == []


def test_the_session_connection_is_used_outside_a_transaction_only() -> None:
    def on_session(statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise AssertionError("the fake backend never calls it")

    jit, backend = offers({"UPDATE": [granting("write")]})
    DeniedOffers(jit, FakeAsker(["n"]), on_session).after_failure(D, MESSAGE, UPDATE, in_transaction=False)  # type: ignore[arg-type]
    assert backend.sessions == [on_session]
    jit, backend = offers({"UPDATE": [granting("write")]})
    ask = FakeAsker()
    # in a transaction, an unqualified name is not asked about as the user's own login
    DeniedOffers(jit, ask, on_session).after_failure(D, MESSAGE, UPDATE, in_transaction=True)  # type: ignore[arg-type]
    assert backend.sessions == [] and ask.said == []
    DeniedOffers(jit, ask, on_session).after_failure(D, MESSAGE, "update public.orders set a = 1",  # type: ignore[arg-type]
                                                     in_transaction=True)
    assert backend.sessions == [None] and ask.said


def test_inside_a_transaction_it_says_so_and_asks_nothing() -> None:
    jit, _ = offers({"UPDATE": [granting("write", reason=True)]})
    ask = FakeAsker()
    statement = "update public.orders set status = 'x'"
    assert after(jit, ask, statement, in_transaction=True) is None  # type: ignore[arg-type]
    assert ask.said == ['write grants UPDATE on public.orders (15m, reason required). The transaction is '
                        'aborted: after ROLLBACK, \\jit request write --reason "..." and run the statement '
                        'again.']
    assert ask.asked == [] and jit.requested == []


def test_unattended_gets_the_hint_line_only() -> None:
    jit, _ = offers({"UPDATE": [granting("write")]}, unattended=True)
    ask = FakeAsker()
    assert after(jit, ask, UPDATE, in_transaction=False) is None  # type: ignore[arg-type]
    assert ask.said == ["write grants UPDATE on public.orders (15m): \\jit request write"] and ask.asked == []


def test_approval_submits_and_says_how_to_run_it() -> None:
    jit, _ = offers({"UPDATE": [granting("write", approval=True)]}, grant=False)
    ask = FakeAsker(["y"])
    assert after(jit, ask, UPDATE, in_transaction=False) is None  # type: ignore[arg-type]
    assert ask.asked[0].startswith("write grants UPDATE on public.orders (15m, approval required)")
    assert ask.said == ["Request 7 for write is waiting for approval by leads",
                        "Run the statement again once the session has switched."]


def test_a_refused_request_is_one_line() -> None:
    jit, _ = offers({"UPDATE": [granting("write")]}, refuse="\\jit request refused: nope")
    ask = FakeAsker(["y"])
    assert after(jit, ask, UPDATE, in_transaction=False) is None  # type: ignore[arg-type]
    assert ask.said == ["\\jit request refused: nope"]


def test_off_in_the_config_a_backend_that_cannot_say_or_nothing_found_is_silent() -> None:
    jit, _ = offers({"UPDATE": [granting("write")]})
    jit.manager.config.offer_on_denied = False
    cases = [jit]
    jit, backend = offers({"UPDATE": [granting("write")]})
    backend.says_what_grants = False
    cases.append(jit)
    cases.append(offers({})[0])
    for jit in cases:
        ask = FakeAsker()
        assert after(jit, ask, UPDATE, in_transaction=False) is None  # type: ignore[arg-type]
        assert ask.said == ask.asked == [] and jit.requested == []


def test_a_broker_error_gives_no_offer(monkeypatch: pytest.MonkeyPatch) -> None:
    jit, backend = offers({})

    def broken(wanted: Privilege, on_session: Any = None) -> list[GrantingProfile]:
        raise JitError("no answer from alice@db within 10s")

    monkeypatch.setattr(backend, "profiles_granting", broken)
    ask = FakeAsker()
    assert after(jit, ask, UPDATE, in_transaction=False) is None  # type: ignore[arg-type]
    assert ask.said == []


def test_the_server_target_is_shown_printable() -> None:
    jit, _ = offers({"UPDATE": [granting("write", target="public.\x1b[31morders")]})
    ask = FakeAsker(["n"])
    after(jit, ask, UPDATE, in_transaction=False)
    assert "\x1b" not in ask.asked[0]
    assert denied_offer.request_command(granting("w", reason=True)) == '\\jit request w --reason "..."'


@pytest.mark.parametrize(("statement", "expected"), [
    ("update orders set status = 'x'", [("UPDATE", "status")]),
    ("update orders set status = 'x', note = now()::text where id = 3",
     [("UPDATE", "status"), ("UPDATE", "note"), ("SELECT", None)]),
    ('update orders set "Note" = status', [("UPDATE", "Note"), ("SELECT", None)]),
    ("update orders set status = coalesce(null, 'x'), n = default", [("UPDATE", "status"), ("UPDATE", "n")]),
    ("update orders set (a, b) = (1, 2)", []),
    ("update orders set a[1] = 2", []),
    ("update orders set status = 'x' from other where true", [("UPDATE", "status"), ("SELECT", None)]),
])
def test_an_update_names_the_columns_it_sets(statement: str, expected: list[Any]) -> None:
    denial = read_denial(D, "permission denied for table orders", statement)
    assert denial is not None
    assert [(p.privilege, p.column) for p in denial.by_column] == expected


def test_a_column_grant_is_offered_when_no_profile_grants_the_table() -> None:
    cols = [granting("status-only", target="public.orders.status")]
    jit, backend = offers({"UPDATE": []})
    backend.answers = {}

    def by_column(wanted: Privilege, on_session: Any = None) -> list[GrantingProfile]:
        backend.asked.append(wanted)
        return cols if wanted.column == "status" else []

    backend.profiles_granting = by_column  # type: ignore[method-assign]
    ask = FakeAsker(["n"])
    after(jit, ask, UPDATE, in_transaction=False)
    assert ask.asked == ["status-only grants UPDATE on orders (status) (15m): request it and run the "
                         "statement again?"]
    ask = FakeAsker()
    after(jit, ask, "update orders set secret = 'x'", in_transaction=False)
    assert ask.asked == ask.said == []
