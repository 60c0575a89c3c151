"""``pgcli-jit-admin notify``: tell approvers in chat that a request waits, and how it ended.

It runs beside the reaper as an operator login (``jit_admin``), reads the chained audit trail
(the rows about requests: ``pending``, ``approve``, ``approved``, ``denied``, ``cancelled``,
``timed_out``, and the break-glass and auto-approval rows), and posts each to one webhook, in
chain order, one at a time.  ``--watch`` sleeps until the broker's doorbell (``NOTIFY
jit_requests``) rings, at most :data:`MAX_SLEEP`.

Nothing is lost or posted twice across restarts: the cursor is the chain position (``seq``)
of the last row delivered, kept by the server (``jit.notify_cursor``/``jit.notify_advance``,
one per ``--name``) and advanced after each delivery.  A crash between the receiver's answer
and the advance posts that one row again; every body carries the audit row's id
(``event_id``, and the ``X-Pgcli-Jit-Event`` header) for a receiver that wants to drop a repeat.

What is posted is built field by field from the audit row: who, which profile, what it grants,
the reason, until when it can be approved, and the line an approver types.  A verifier or a
password is never in the audit trail, and the client address and role names are not sent.
Delivery never holds up the broker: the broker only rings a doorbell, and this process reads
its doorbells even while it waits to retry, so the server's notification queue never waits on
it.  Each post has a connect and a read timeout, reads the answer's status and headers and
not one byte of its body, follows no redirect, and verifies TLS; plain ``http`` is allowed
to a loopback address only.  A webhook URL's path and query (Slack's and Teams'
hold the secret there) and any user or password in it are never printed: messages name the
receiver as ``scheme://host/…``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import click
import psycopg
import requests

from pgcli_jit.admin import fmt
from pgcli_jit.admin.connect import Conn, check_dsn, connect, dsn_option, error_text, open_conn
from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.errors import JitError, UsageError
from pgcli_jit.core.sanitize import printable
from pgcli_jit.server import statements

log = logging.getLogger(__name__)

#: the audit events a notifier posts
EVENTS = ("pending", "approve", "approved", "denied", "cancelled", "timed_out",
          "auto_approved", "break_glass")
FORMATS = ("slack", "teams", "json")
#: what ``pg_stat_activity.application_name`` shows for the notifier's connection
APPLICATION_NAME = "pgcli-jit notify"
#: wake at least this often: a doorbell is not rung while the cluster's NOTIFY queue is half
#: full, and rows the reaper chains are only seen once chained
MAX_SLEEP = 5.0
#: seconds to connect to the receiver, and to wait for each read of its answer
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
#: no body posted is larger (the reason is cut first)
MAX_BODY = 16 * 1024
REASON_CHARS = 500
#: the pause before each retry doubles from the first to the last
FIRST_PAUSE = 1.0
MAX_PAUSE = 60.0
#: an answer that retrying cannot change (a 4xx other than 408 and 429, a redirect) is tried
#: this often, then that message is given up with one line, and the next one goes
PERMANENT_TRIES = 3
#: rows read from the chain at a time
BATCH = 100


# -- the receiver's URL ------------------------------------------------------------------------

def redact(url: str) -> str:
    """The URL as messages may show it: scheme and host (and port), never user, password,
    path or query (a Slack or Teams webhook's secret is its path)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<the webhook URL>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme or '?'}://{host}{port}/…"


def scrub(text: str, url: str) -> str:
    """``text`` with the URL and each secret part of it replaced by :func:`redact`'s form."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        secrets = [url, parts.path + (f"?{parts.query}" if parts.query else ""), parts.path,
                   parts.query, parts.netloc, parts.username or "", parts.password or ""]
    except ValueError:
        secrets = [url]
    for secret in sorted((s for s in secrets if len(s) > 1), key=len, reverse=True):
        text = text.replace(secret, shown)
    return text


def check_url(url: str) -> str:
    """The URL if it may be posted to: https, or http to a loopback address.  One line if not."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"--webhook {shown} is not a URL: https://host/path") from None
    if parts.scheme not in ("https", "http") or not host:
        raise UsageError(f"--webhook {shown} is not an https:// URL")
    if parts.scheme == "http" and not _loopback(host):
        raise UsageError(f"--webhook {shown}: plain http is allowed only to a loopback address "
                         "(127.0.0.1, ::1, localhost); use https://")
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- what is posted ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One audit row about a request, as a message may carry it."""

    seq: int
    audit_id: int
    event: str
    database: str
    profile: str
    requester: str
    actor: str
    reason: str
    until: datetime | None
    grants: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: tuple[Any, ...], database: str) -> Event:
        seq, audit_id, event, profile, requester, actor, reason, until, detail, grants, ttl = row
        detail = dict(detail or {})
        if detail.get("ttl_asked") is None and ttl is not None:
            detail["ttl_asked"] = float(ttl)  # none asked: the profile's
        return cls(int(seq), int(audit_id), str(event), database, str(profile or ""),
                   str(requester or ""), str(actor or ""), str(reason or ""), until,
                   [str(g) for g in (grants or [])][:20], detail)

    @property
    def said_by_the_next(self) -> bool:
        """The last approval a request needed: the ``approved`` row that follows says it."""
        approvals, needed = _int(self.detail.get("approvals")), _int(self.detail.get("needed"))
        return self.event == "approve" and None not in (approvals, needed) \
            and approvals >= needed  # type: ignore[operator]

    @property
    def request_id(self) -> int | None:
        value = self.detail.get("request_id")
        return int(value) if isinstance(value, (int, str)) and str(value).isdigit() else None

    def fields(self) -> dict[str, Any]:
        """The JSON body's fields: a whitelist, each value text a person may read."""
        rid = self.request_id
        body: dict[str, Any] = {
            "source": "pgcli-jit", "event_id": self.audit_id, "event": self.event,
            "database": _text(self.database, 63), "request_id": rid,
            "requester": _text(self.requester, 63), "profile": _text(self.profile, 63),
            "grants": [_text(g, 63) for g in self.grants], "reason": _text(self.reason, REASON_CHARS),
            "by": _text(self.actor, 63) if self.event not in ("pending", "timed_out", "break_glass",
                                                                 "auto_approved") else None,
        }
        if self.event == "pending":
            body["approvable_until"] = _iso(self.until)
            body["approvers"] = _text(self.detail.get("approvers"), 63)
            body["approvals_needed"] = _int(self.detail.get("approvals"))
            body["ttl_seconds"] = _int(self.detail.get("ttl_asked"))
            if rid is not None:
                body["approve_command"] = f"\\jit approve {rid}"
                body["deny_command"] = f"\\jit deny {rid} --reason TEXT"
        elif self.event == "approve":
            body["approvals"] = _int(self.detail.get("approvals"))
            body["approvals_needed"] = _int(self.detail.get("needed"))
            body["comment"] = _text(self.detail.get("comment"), REASON_CHARS)
        elif self.event == "approved":
            body["comment"] = _text(self.detail.get("comment"), REASON_CHARS)
        elif self.event in ("denied", "cancelled", "timed_out"):
            body["note"] = _text(self.detail.get("note"), REASON_CHARS)
        elif self.event in ("break_glass", "auto_approved"):
            body["rule"] = _text(self.detail.get("rule"), 63)
            body["lease_until"] = _iso(self.until)
        body["text"] = self.line()
        return body

    def line(self, quote: Callable[[str], str] | None = None) -> str:
        """The one line a person reads.  What people typed (a reason, a comment, a note) is
        passed through ``quote`` and comes after the facts and the command to type, so it can
        never read as the message's own words (a reason that says "\\jit approve 7")."""
        quoted = quote or _plain_quote
        rid = self.request_id
        who = _text(self.requester, 63)
        profile = _text(self.profile, 63)
        grants = ", ".join(_text(g, 63) for g in self.grants) or "nothing any more"
        reason = _text(self.reason, REASON_CHARS)
        why = f" Reason given by {who}: {quoted(reason)}" if reason else f" {who} gave no reason."
        on = f" on {_text(self.database, 63)}"
        name = f"Request {rid}" if rid is not None else "A request"
        if self.event == "pending":
            needed = _int(self.detail.get("approvals")) or 1
            approvers = _text(self.detail.get("approvers"), 63)
            ttl = _int(self.detail.get("ttl_asked"))
            span = f" for {format_duration(ttl)}" if ttl else ""
            return (f"{name}: {who} asks for {profile}{on}{span} (grants {grants}). "
                    f"Approvable until {_iso(self.until)} by {needed} member(s) of {approvers}: "
                    f"\\jit approve {rid}   (or \\jit deny {rid} --reason TEXT).{why}")
        head = f"{name} ({who}, {profile}{on})"
        note = _text(self.detail.get("note"), REASON_CHARS)
        comment = _text(self.detail.get("comment"), REASON_CHARS)
        by = _text(self.actor, 63)
        said = f", saying {quoted(comment)}" if comment else ""
        if self.event == "approve":
            return (f"{head}: approved by {by}, {_int(self.detail.get('approvals'))} of "
                    f"{_int(self.detail.get('needed'))}{said}")
        if self.event == "approved":
            return f"{head}: approved by {by}{said}"
        if self.event == "denied":
            return f"{head}: denied by {by}: {quoted(note)}"
        if self.event == "cancelled":
            return f"{head}: cancelled: {quoted(note)}"
        if self.event == "timed_out":
            return f"{head}: timed out: {quoted(note)}"
        if self.event == "break_glass":
            return (f"BREAK-GLASS: {who} took {profile}{on} (grants {grants}) without approval "
                    f"until {_iso(self.until)}.{why}")
        if self.event == "auto_approved":
            rule = _text(self.detail.get("rule"), 63)
            return (f"{who} was granted {profile}{on} (grants {grants}) at once as a member of "
                    f"{rule} until {_iso(self.until)}.{why}")
        return f"{head}: {_text(self.event, 30)}"


def _plain_quote(text: str) -> str:
    """Typed text in double quotes it cannot close: its own become single ones."""
    return '"' + text.replace('"', "'") + '"'


def _code_quote(text: str) -> str:
    """Typed text as inline code, where Slack renders no bold, link or mention and which it
    cannot close: its own backticks become single quotes.  (A Teams card renders no inline
    code, so there typed text is quoted and escaped like the rest.)"""
    return "`" + text.replace("`", "'") + "`"


def _text(value: object, limit: int) -> str:
    text = printable(value) if value is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: object) -> int | None:
    try:
        return int(float(str(value))) if value is not None else None
    except ValueError:
        return None


def _iso(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _slack_escape(text: str) -> str:
    """Slack's three control characters: a reason of ``<!channel>`` must not ping anyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _markdown_escape(text: str) -> str:
    """Teams renders a little Markdown: a reason must not become a link or a heading."""
    for char in "\\`*_[]<>~":
        text = text.replace(char, "\\" + char)
    return text


def _rendered(event: Event, escape: Callable[[str], str], quote: Callable[[str], str]) -> str:
    """The line for a chat: its own words escaped by ``escape``, what people typed rendered
    by ``quote`` (each piece once, never escaped twice)."""
    typed: list[str] = []

    def hold(text: str) -> str:
        typed.append(text)
        return f"\x00{len(typed) - 1}\x00"

    line = escape(event.line(hold))
    return re.sub("\x00(\\d+)\x00", lambda m: quote(typed[int(m.group(1))]), line)


def render(event: Event, form: str) -> bytes:
    """The body posted for ``event`` in ``form``: at most :data:`MAX_BODY` bytes."""
    body: dict[str, Any]
    if form == "slack":
        body = {"text": _rendered(event, _slack_escape, lambda text: _code_quote(_slack_escape(text)))}
    elif form == "teams":
        body = {"type": "message", "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {"type": "AdaptiveCard", "version": "1.4",
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "body": [{"type": "TextBlock", "wrap": True,
                                  "text": _rendered(event, _markdown_escape,
                                                    lambda text: _markdown_escape(_plain_quote(text)))}]}}]}
    else:
        body = event.fields()
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_BODY:  # cannot happen with the cuts above; a receiver never gets more
        raise ValueError(f"message for audit row {event.audit_id} is {len(data)} bytes")
    return data


# -- posting -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Posted:
    ok: bool
    why: str = ""
    permanent: bool = False  # retrying cannot change the answer


class Receiver:
    """One webhook: posts a body and says how it went, in one line free of the URL's secrets."""

    def __init__(self, url: str, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT) -> None:
        self.url = check_url(url)
        self.shown = redact(url)
        self.timeouts = (connect_timeout, read_timeout)
        self.session = requests.Session()
        self.session.trust_env = False  # no ~/.netrc credentials, no proxy from the environment
        self.session.headers.update({"User-Agent": "pgcli-jit-notify", "Content-Type": "application/json"})

    def post(self, body: bytes, event_id: int) -> Posted:
        try:
            return self._post(body, event_id)
        except requests.exceptions.SSLError:
            return Posted(False, "TLS verification failed")
        except requests.exceptions.ConnectTimeout:
            return Posted(False, f"no connection within {self.timeouts[0]:g}s")
        except requests.exceptions.ReadTimeout:
            return Posted(False, f"no answer within {self.timeouts[1]:g}s")
        except requests.exceptions.ConnectionError:
            return Posted(False, "cannot connect (refused, unreachable, or the connection dropped)")
        except requests.exceptions.RequestException as exc:
            return Posted(False, scrub(f"{type(exc).__name__}", self.url))

    def _post(self, body: bytes, event_id: int) -> Posted:
        """The status decides, so no byte of the answer's body is read: the connection is
        closed once the status line and headers are in (a receiver that answers 2 GB, or
        never ends its body, costs nothing more)."""
        answer = self.session.post(self.url, data=body, timeout=self.timeouts, stream=True,
                                   allow_redirects=False, verify=True,
                                   headers={"X-Pgcli-Jit-Event": str(event_id)})
        status = answer.status_code
        answer.close()
        if 200 <= status < 300:
            return Posted(True)
        permanent = 300 <= status < 500 and status not in (408, 429)
        return Posted(False, f"answered HTTP {status}", permanent=permanent)


# -- the loop ----------------------------------------------------------------------------------

Say = Callable[[str], None]


@dataclass
class Notifier:
    """Posts what the chain holds after the cursor; ``wait`` sleeps between retries."""

    conn: Conn
    receiver: Receiver
    form: str
    name: str
    say: Say
    warn: Say
    stop: threading.Event
    database: str = ""

    @property
    def label(self) -> str:
        return "notify" if self.name == "notify" else f"notify {self.name}"

    def start(self, after_seq: int | None) -> int:
        """The cursor to go on from: ``after_seq`` if given, else the server's; a notifier that
        never ran starts at the end of the chain (what happened before it is not posted)."""
        self.database = str(self.conn.execute(statements.CURRENT_DATABASE).fetchone()[0])  # type: ignore[index]
        self.conn.execute(statements.CHAIN_AUDIT)
        if after_seq is None:
            row = self.conn.execute(statements.NOTIFY_CURSOR, (self.name,)).fetchone()
            after_seq = None if row is None or row[0] is None else int(row[0])
        if after_seq is None:
            after_seq = self._chain_end() or 0
            self._advance(after_seq)
            self.say(f"{self.label}: first run, starting at the end of the audit chain "
                     f"(seq {after_seq})")
        else:
            self.say(f"{self.label}: going on after audit seq {after_seq}")
        return after_seq

    def one_pass(self, cursor: int) -> int:
        """Post every request row after ``cursor``, in order; the new cursor.  Returns early
        (cursor where it stands) when ``stop`` is set during a retry."""
        self.conn.execute(statements.CHAIN_AUDIT)
        end = self._chain_end()
        while end is not None and cursor < end and not self.stop.is_set():
            rows = self.conn.execute(statements.NOTIFY_EVENTS,
                                     (cursor, end, list(EVENTS), BATCH)).fetchall()
            for row in rows:
                event = Event.from_row(row, self.database)
                if not event.said_by_the_next and not self._deliver(event):
                    return cursor
                cursor = self._advance(event.seq)
            if len(rows) < BATCH:
                cursor = self._advance(end)
        return cursor

    def _deliver(self, event: Event) -> bool:
        """Post until delivered (True), given up on a permanent answer (True: the next one
        goes), or ``stop`` (False)."""
        body = render(event, self.form)
        pause, tries = FIRST_PAUSE, 0
        while not self.stop.is_set():
            tries += 1
            posted = self.receiver.post(body, event.audit_id)
            what = f"{event.event} (audit {event.audit_id}" + (
                f", request {event.request_id})" if event.request_id is not None else ")")
            if posted.ok:
                self.say(f"{self.label}: posted {what} to {self.receiver.shown}"
                         + (f" after {tries} tries" if tries > 1 else ""))
                return True
            if posted.permanent and tries >= PERMANENT_TRIES:
                self.warn(f"{self.label}: gave up on {what}: {self.receiver.shown} "
                          f"{posted.why} {tries} times; check the webhook")
                return True
            self.warn(f"{self.label}: {what} not delivered: {self.receiver.shown} "
                      f"{posted.why}; retrying in {pause:g}s")
            self.wait(pause)
            pause = min(pause * 2, MAX_PAUSE)
        return False

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until ``stop``, reading doorbells all along (the server's queue
        never waits on this connection); True if one rang."""
        rang = False
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            rang = any(True for _ in self.conn.notifies(timeout=min(left, 0.5))) or rang
        return rang

    def _chain_end(self) -> int | None:
        row = self.conn.execute(statements.CHAIN_END).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _advance(self, seq: int) -> int:
        row = self.conn.execute(statements.NOTIFY_ADVANCE, (self.name, seq)).fetchone()
        return int(row[0]) if row else seq


def run_watch(open_conn: Callable[[], Conn], make: Callable[[Conn], Notifier], stop: threading.Event,
          after_seq: int | None, say: Say, warn: Say) -> None:
    """Run until ``stop``: a pass at every doorbell (at least every MAX_SLEEP); a lost
    connection is opened again with a growing pause, and the pass goes on from the cursor."""
    pause = 1.0
    while not stop.is_set():
        try:
            with open_conn() as conn:
                conn.execute(statements.LISTEN_REQUESTS)
                notifier = make(conn)
                cursor = notifier.start(after_seq)
                after_seq, pause = None, 1.0   # the server's cursor from now on
                while not stop.is_set():
                    cursor = notifier.one_pass(cursor)
                    _sleep_until_doorbell(conn, stop)
        except psycopg.errors.InsufficientPrivilege:
            raise  # a login that is no operator: reconnecting cannot change it
        except psycopg.Error as exc:
            if stop.is_set():
                return
            warn(f"notify: {error_text(exc)}; reconnecting in {pause:.0f}s")
            stop.wait(pause)
            pause = min(pause * 2, 30.0)


def _sleep_until_doorbell(conn: Conn, stop: threading.Event) -> None:
    deadline = time.monotonic() + MAX_SLEEP
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        if any(True for _ in conn.notifies(timeout=min(left, 1.0), stop_after=1)):
            return


# -- the command -------------------------------------------------------------------------------

def _stamped(text: str, err: bool = False) -> None:
    """A line of the long-running notifier: the time first, like the reaper's."""
    click.echo(f"{fmt.stamp()} {text}", err=err)


@click.command()
@dsn_option
@click.option("--webhook", required=True, metavar="URL", envvar="PGCLI_JIT_WEBHOOK",
              show_envvar=True,
              help="Where to post: https://..., or http:// to a loopback address.  Its path "
                   "usually holds a secret: prefer the environment variable to the command line.")
@click.option("--format", "form", type=click.Choice(FORMATS), default="json", show_default=True,
              help="slack: an incoming webhook; teams: a Workflows webhook (Adaptive Card); "
                   "json: every field, for your own receiver.")
@click.option("--watch", is_flag=True,
              help="Keep running: post at each doorbell, until SIGTERM or Ctrl-C.")
@click.option("--name", default="notify", show_default=True, metavar="NAME",
              help="Whose cursor: one per receiver, so two notifiers each post everything.")
@click.option("--after-seq", type=click.IntRange(0), metavar="SEQ",
              help="Start after this audit chain position instead of the saved cursor "
                   "(0: everything the table holds).")
def notify(dsn: str, webhook: str, form: str, watch: bool, name: str, after_seq: int | None) -> None:
    """Post requests that wait for approval, and their decisions, to a chat webhook.

    Needs a login in jit_admin.  Without --watch: post what happened since the last run,
    then exit (for cron).  Every line starts with the time (ISO 8601).
    """
    receiver = Receiver(webhook)
    check_dsn(dsn)
    if not (1 <= len(name) <= 63 and name.replace("_", "").replace(".", "").replace("-", "").isalnum()
            and name.isascii()):
        raise UsageError("--name is 1-63 letters, digits, '_', '.' or '-'")
    stop = threading.Event()

    def make(conn: Conn) -> Notifier:
        return Notifier(conn, receiver, form, name, _stamped,
                        lambda text: _stamped(text, err=True), stop)

    if not watch:
        with connect(dsn, APPLICATION_NAME) as conn:
            notifier = make(conn)
            notifier.one_pass(notifier.start(after_seq))
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def open_notifier() -> Conn:
        return open_conn(dsn, APPLICATION_NAME)

    _stamped(f"notify {name}: watching for requests, posting to {receiver.shown} as {form} "
             "(Ctrl-C or SIGTERM to stop)", err=True)
    try:
        run_watch(open_notifier, make, stop, after_seq, _stamped, lambda text: _stamped(text, err=True))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise JitError(f"permission denied: notify needs a login in jit_admin ({error_text(exc)})",
                       "as a superuser: GRANT jit_admin TO the notifier's login") from None
    _stamped(f"notify {name}: stopped", err=True)
    sys.stdout.flush()

COMMANDS = [notify]
