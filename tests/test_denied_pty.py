"""After "permission denied", the profile that grants it, as a user sees it: the real
pgcli-jit in a pseudo-terminal against the real cluster.

alice holds a ``dnread`` lease (SELECT on ``dn.dn_orders``); ``dnwrite`` (reason required)
grants UPDATE on it; ``dnhidden`` grants the same and more, but only to ``dn_team``, which
alice is not in: it is never named.  Nothing grants UPDATE on ``dn.dn_locked`` to alice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import declare_server_profile, end_jit_roles, make_login
from tests.shell_fixtures import Session
from tests.terminal import Terminal

pytestmark = pytest.mark.pty

SETUP = """
CREATE SCHEMA dn;
CREATE TABLE dn.dn_orders (id int PRIMARY KEY, status text, changed_by text);
INSERT INTO dn.dn_orders VALUES (1, 'new', NULL), (2, 'new', NULL), (3, 'new', NULL);
CREATE TABLE dn.dn_locked (id int, x int);
CREATE TABLE dn.dn_secret (s text);
CREATE TABLE dn.dn_appr_t (id int PRIMARY KEY, x int);
CREATE TABLE dn.dn_cols (id int PRIMARY KEY, status text, secret text);
INSERT INTO dn.dn_cols VALUES (1, 'new', 's');
INSERT INTO dn.dn_appr_t VALUES (1, 1);
CREATE ROLE dn_read NOLOGIN; CREATE ROLE dn_write NOLOGIN IN ROLE dn_read;
CREATE ROLE dn_team NOLOGIN; CREATE ROLE dn_all NOLOGIN;
CREATE ROLE dn_appr NOLOGIN IN ROLE dn_read; CREATE ROLE dn_leads NOLOGIN;
GRANT SELECT, UPDATE ON dn.dn_appr_t TO dn_appr;
CREATE ROLE dn_colw NOLOGIN IN ROLE dn_read;
GRANT SELECT ON dn.dn_cols TO dn_read; GRANT UPDATE (status) ON dn.dn_cols TO dn_colw;
GRANT USAGE ON SCHEMA dn TO dn_read, dn_all;
-- inside a transaction the lookup asks as alice's own login: she can name the schema
GRANT USAGE ON SCHEMA dn TO jit_requester;
GRANT SELECT ON dn.dn_orders, dn.dn_locked TO dn_read;
GRANT UPDATE ON dn.dn_orders TO dn_write;
GRANT ALL ON ALL TABLES IN SCHEMA dn TO dn_all;
GRANT dn_read, dn_write, dn_team, dn_all, dn_appr, dn_colw TO jit_owner WITH ADMIN OPTION;
"""
UPDATE = "update dn.dn_orders set status = 'refunded', changed_by = current_user where id = {id};"
PROFILES = ("dnread", "dnwrite", "dnhidden", "dnappr", "dncol")
QUESTION = r"request it and run the statement again\? \[y/N\]"
DESTRUCTIVE = r"Do you want to proceed\? \[y/N\]"


@pytest.fixture(scope="module")
def world(cluster: Cluster) -> Iterator[None]:
    with cluster.connect("app") as conn:
        conn.execute(SETUP.encode())
    declare_server_profile(cluster, "dnhidden", grant=["dn_all"], max_ttl="15m", requesters="dn_team")
    declare_server_profile(cluster, "dnappr", grant=["dn_appr"], max_ttl="15m")
    declare_server_profile(cluster, "dncol", grant=["dn_colw"], max_ttl="15m")
    with cluster.connect("app") as conn:
        conn.execute("SELECT jit.profile_set('dnappr', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                     " 'dn_leads', 1, interval '10 min')")
    make_login(cluster, "dnbob", member_of="dn_leads")
    yield
    with cluster.connect("app") as conn:
        conn.execute("UPDATE jit_data.requests SET status = 'cancelled', verifier = NULL"
                     " WHERE status IN ('pending', 'approved') AND profile = 'dnappr'")
    for name in PROFILES:
        end_jit_roles(cluster, name)
    with cluster.connect("app") as conn:   # other modules list alice's server profiles
        for name in PROFILES:
            conn.execute("SELECT jit.profile_drop(%s)", (name,))


def setup_profiles(session: Session) -> None:
    session.profile("dnread", grant=["dn_read"], renew="never")
    session.profile("dnwrite", grant=["dn_write"], reason_required=True, ttl="15m", max_ttl="1h",
                    renew="never")


def start(session: Session, *args: str) -> Terminal:
    setup_profiles(session)
    term = session.open("--jit", "dnread", *args)
    term.wait_for(r"app>")
    return term


def run_denied(term: Terminal, line: str, expect: str) -> str:
    """Run a statement that pgcli may ask about first (destructive_warning), up to ``expect``
    written after it (the screen may hold the same words from before)."""
    mark = len(term.transcript)
    term.child.send(line + "\r")
    term.wait_for(lambda _: re.search(rf"{DESTRUCTIVE}|{expect}", since(term, mark)) is not None)
    if re.search(DESTRUCTIVE, since(term, mark)) and not re.search(expect, since(term, mark)):
        term.child.send("y\r")
        term.wait_for(lambda _: re.search(expect, since(term, mark)) is not None)
    return term.text()


def since(term: Terminal, mark: int) -> str:
    """What the program wrote after ``mark``, as text without terminal escapes."""
    raw = term.transcript[mark:].decode("utf-8", "replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", raw)


def answer_destructive(term: Terminal) -> None:
    """pgcli asks before an UPDATE without WHERE, -c or not (its destructive_warning)."""
    screen = term.wait_for(rf"{DESTRUCTIVE}|permission denied")
    if re.search(DESTRUCTIVE, screen):
        term.type("y\r")


def order(cluster: Cluster, order_id: int) -> tuple[str, str | None]:
    with cluster.connect("app") as conn:
        row = conn.execute("SELECT status, changed_by FROM dn.dn_orders WHERE id = %s",
                           (order_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_yes_requests_the_write_profile_and_runs_the_update_as_it(session: Session, cluster: Cluster,
                                                                   world: None) -> None:
    term = start(session)
    screen = run_denied(term, UPDATE.format(id=1), QUESTION)
    assert "permission denied for table dn_orders" in screen
    assert re.search(r"dnwrite grants UPDATE on dn\.dn_orders \(15m, reason required\): " + QUESTION, screen)
    assert "dnhidden" not in screen
    term.run("y", r"Reason for dnwrite")
    screen = term.run("INC-42 fix", r"UPDATE 1")
    assert re.search(r"Connected as jit_alice_\w+ until \d\d:\d\d:\d\d \(dnwrite\)", screen)
    status, changed_by = order(cluster, 1)
    assert status == "refunded" and changed_by is not None
    with cluster.connect("app") as conn:
        lease = conn.execute("SELECT profile, reason FROM jit_data.leases WHERE rolname = %s",
                             (changed_by,)).fetchone()
        audited = conn.execute("SELECT count(*) FROM jit_data.audit WHERE event = 'request'"
                               " AND rolname = %s AND reason = 'INC-42 fix'", (changed_by,)).fetchone()
    assert lease == ("dnwrite", "INC-42 fix") and audited == (1,)
    assert screen.count(QUESTION.replace("\\", "")[:20]) <= 1


def test_no_runs_nothing_and_requests_nothing(session: Session, cluster: Cluster, world: None) -> None:
    term = start(session)
    run_denied(term, UPDATE.format(id=2), QUESTION)
    term.type("n\r")
    term.run("select current_user as who;", r"SELECT 1")
    assert order(cluster, 2) == ("new", None)
    assert "Reason for" not in term.text()


def test_inside_a_transaction_it_says_aborted_and_asks_nothing(session: Session, cluster: Cluster,
                                                               world: None) -> None:
    term = start(session)
    term.run("begin;", r"BEGIN")
    screen = run_denied(term, UPDATE.format(id=3), r"The transaction is aborted")
    said = " ".join(screen.split())
    assert ('dnwrite grants UPDATE on dn.dn_orders (15m, reason required). The transaction is aborted: '
            'after ROLLBACK, \\jit request dnwrite --reason "..." and run the statement again.') in said
    assert not re.search(QUESTION, screen)
    term.run("rollback;", r"ROLLBACK")
    assert order(cluster, 3) == ("new", None)


def test_a_table_no_requestable_profile_grants_gets_no_offer(session: Session, world: None) -> None:
    """dn_locked: UPDATE is granted only by dnhidden, which alice may not request."""
    term = start(session)
    screen = run_denied(term, "update dn.dn_locked set x = 1;", r"permission denied for table dn_locked")
    term.run("select 1 as after;", r"SELECT 1")
    screen = term.text()
    assert "grants UPDATE" not in screen and "dnhidden" not in screen and not re.search(QUESTION, screen)


def test_a_second_denial_of_the_same_statement_gets_no_second_offer(session: Session, cluster: Cluster,
                                                                    world: None) -> None:
    """dnwrite grants UPDATE on dn_orders, not SELECT on dn_secret: the statement, run again as
    dnwrite, is denied again and nothing more is offered."""
    term = start(session)
    line = "update dn.dn_orders set status = (select s from dn.dn_secret) where id = 2;"
    run_denied(term, line, QUESTION)
    term.run("y", r"Reason for dnwrite")
    screen = term.run("second", r"permission denied for table dn_secret")
    term.run("select 2 as after;", r"SELECT 1")
    assert len(re.findall(QUESTION, term.text())) == 1
    assert "(dnwrite)" in screen


def test_a_command_line_run_prints_the_hint_only_and_exits_as_before(session: Session, world: None) -> None:
    setup_profiles(session)
    term = session.open("--jit", "dnread", "-c", "update dn.dn_orders set status = 'x';")
    answer_destructive(term)
    screen = term.wait_for(r'dnwrite grants UPDATE on dn\.dn_orders \(15m, reason required\): '
                           r'\\jit request dnwrite --reason "\.\.\."')
    assert not re.search(QUESTION, screen)
    with_hint = term.close()
    body = session.config.read_text(encoding="utf-8")
    session.config.write_text("offer_on_denied = false\n" + body, encoding="utf-8")
    term = session.open("--jit", "dnread", "-c", "update dn.dn_orders set status = 'x';")
    answer_destructive(term)
    term.wait_for(r"permission denied for table dn_orders")
    without = term.close()
    assert "grants UPDATE" not in term.text()
    assert with_hint == without  # pgcli's own: 0 after a failed -c statement (pgcli 4.7.1)


F7 = "\x1b[18~"   # what a terminal sends for F7
KEPT = r"When it is granted, F7 runs the statement again \(until you run another one\)\."


def approver(session: Session) -> Terminal:
    """dnbob's own pgcli-jit session in a second terminal: an approver of dnappr."""
    config = session.home / "dnbob.toml"
    config.write_text(session.config.read_text().replace('user = "alice"', 'user = "dnbob"'))
    cluster = session.cluster
    term = session.open("-h", cluster.host, "-p", str(cluster.port), "-U", "dnbob", "app",
                        PGCLI_JIT_CONFIG=str(config))
    term.wait_for(r"app>")
    return term


def ask_approval(session: Session, term: Terminal, line: str) -> str:
    """The denied statement, yes to the approval profile: the request id that waits."""
    screen = run_denied(term, line, QUESTION)
    assert re.search(r"dnappr grants UPDATE on dn\.dn_appr_t \(15m, approval required\): " + QUESTION, screen)
    screen = term.run("y", KEPT)
    rid = re.findall(r"Request (\d+) for dnappr is waiting for approval by dn_leads", screen)
    assert rid, screen
    return rid[-1]


def approve_from_shell(bob: Terminal, rid: str) -> None:
    pending = bob.run("\\jit pending", rf"\|\s*{rid}\s*\|")
    assert re.search(rf"\|\s*{rid}\s*\|\s*alice\s*\|\s*dnappr\s*\|", pending), pending
    bob.run(f"\\jit approve {rid}", rf"Approved request {rid} \(alice, dnappr\)")


def appr_x(cluster: Cluster) -> int:
    with cluster.connect("app") as conn:
        row = conn.execute("SELECT x FROM dn.dn_appr_t WHERE id = 1").fetchone()
    assert row is not None
    return int(row[0])


def test_an_approval_profile_is_submitted_and_f7_runs_the_statement_once_approved(
        session: Session, cluster: Cluster, world: None) -> None:
    """dnappr (a server profile, not in the config) needs one approval by dn_leads: the offer
    submits the request; dnbob approves it from his own pgcli-jit; alice's session switches,
    says once that F7 runs the statement again and shows it in the toolbar; F7 runs it, once."""
    term = start(session)
    bob = approver(session)
    before = appr_x(cluster)
    line = f"update dn.dn_appr_t set x = {before + 1} where id = 1;"
    rid = ask_approval(session, term, line)
    term.type("select 4")   # typing when the approval lands: the line is kept, nothing runs
    approve_from_shell(bob, rid)
    term.wait_for(r"Approved by dnbob: connected as jit_alice_\w+", timeout=10)
    term.wait_for(r"F7 runs the denied statement again as dnappr: update dn\.dn_appr_t", timeout=5)
    term.wait_toolbar(r"\[F7\] run again as dnappr")
    assert appr_x(cluster) == before
    term.type(F7)   # a line is being typed: F7 keeps it and says so
    term.wait_for(r"F7 runs the denied statement on an empty input line; yours is kept\.")
    term.run("0 as typed;", r"\b40\b")   # the user's own statement ran: the denied one is
    term.type(F7)                           # never run after it unasked
    term.run("select 'after' as mark;", r"after")
    assert appr_x(cluster) == before
    assert "[F7]" not in term.toolbar()


def test_f7_runs_the_approved_statement_once_on_an_empty_line(session: Session, cluster: Cluster,
                                                             world: None) -> None:
    term = start(session)
    bob = approver(session)
    before = appr_x(cluster)
    line = f"update dn.dn_appr_t set x = {before + 1} where id = 1;"
    rid = ask_approval(session, term, line)
    approve_from_shell(bob, rid)
    term.wait_toolbar(r"\[F7\] run again as dnappr", timeout=10)
    mark = len(term.transcript)
    term.type(F7)
    term.wait_for(lambda _: re.search(rf"{DESTRUCTIVE}|UPDATE 1", since(term, mark)) is not None)
    if re.search(DESTRUCTIVE, since(term, mark)) and "UPDATE 1" not in since(term, mark):
        term.type("y\r")
        term.wait_for(lambda _: "UPDATE 1" in since(term, mark))
    assert appr_x(cluster) == before + 1
    term.wait_toolbar(r"JIT dnappr as jit_alice_\w+")
    assert "[F7]" not in term.toolbar()
    term.type(F7)   # taken: a second F7 does nothing
    term.run("select 'after' as mark;", r"after")
    assert since(term, mark).count("UPDATE 1") == 1 and appr_x(cluster) == before + 1


def test_a_column_level_grant_is_offered_for_the_columns_it_covers(session: Session, cluster: Cluster,
                                                                   world: None) -> None:
    """dncol grants UPDATE (status) on dn_cols only, and no profile grants the whole table."""
    term = start(session)
    screen = run_denied(term, "update dn.dn_cols set secret = 'x' where id = 1;", r"permission denied")
    term.run("select 1 as after;", r"SELECT 1")
    assert "grants UPDATE" not in term.text()
    line = "update dn.dn_cols set status = 'done' where id = 1;"
    screen = run_denied(term, line, QUESTION)
    assert re.search(r"dncol grants UPDATE on dn\.dn_cols \(status\) \(15m\): " + QUESTION, screen)
    term.run("y", r"UPDATE 1")
    with cluster.connect("app") as conn:
        assert conn.execute("SELECT status, secret FROM dn.dn_cols WHERE id = 1").fetchone() == ("done", "s")


def test_jit_profiles_shows_what_each_profile_grants(session: Session, world: None) -> None:
    """The grants column as the server describes it to alice, within the terminal's width:
    dnwrite (dn_write, a member of dn_read) and never dnhidden, which alice may not request."""
    term = start(session)
    mark = len(term.transcript)
    term.type("\\jit profiles\r")
    term.wait_for(lambda _: re.search(r"\| dnwrite[^\n]*\n(?:\|[^\n]*\n)*\+-[-+]*\+", since(term, mark))
                  is not None)
    table = since(term, mark)
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert rows, table
    start_at = next(i for i, line in enumerate(rows) if line.startswith("| dnwrite"))
    cell = []
    for line in rows[start_at:]:
        if line != rows[start_at] and not line.startswith("|   "):
            break
        cell.append(line.split("|")[4].strip())
    assert " ".join(cell) == "SELECT on dn.dn_cols, dn.dn_locked; SELECT, UPDATE on dn.dn_orders", table
    assert "dnhidden" not in table
