"""The ``\\jit`` subcommands: one table, and the parsing, completion, help and dispatch read from it.

Each :class:`Subcommand` row says everything about one subcommand (its synopsis, help,
options, argument and handler); nothing here lists subcommands a second time, so a new
one is one row and one handler.  Handlers take the session's
:class:`~pgcli_jit.session.controller.Controller` and return pgspecial-style results, so the
table needs no pgcli.

pgcli 4.5+ strips ``--`` comments from special-command arguments, so ``--ttl 15m``
would never reach a pgspecial handler: the shell hands this module the raw line instead.
``shlex`` keeps quoted reasons together.  No argument ever carries a secret: pgcli
writes every line to its history.
"""

from __future__ import annotations

import enum
import re
import shlex
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from pgcli_jit.core.durations import option_duration
from pgcli_jit.core.errors import UsageError

if TYPE_CHECKING:
    from pgcli_jit.backends.base import ProfileGrants, RoleInfo
    from pgcli_jit.core.profile import Profile
    from pgcli_jit.session.controller import Controller

_JIT = re.compile(r"^\s*\\jit(?:\s|;|$)", re.IGNORECASE)
#: what a bare ``\jit`` runs
DEFAULT = "help"
FOOTER = 'Durations: 90s, 15m, 1h30m or seconds. Quote a reason with spaces: --reason "INC-123 hotfix".'
#: the one line pgspecial's ``\?`` shows for ``\jit``
MENU_DESCRIPTION = "Just-in-time credentials and approvals (\\jit help)."


@dataclass(frozen=True)
class JitCommand:
    action: str
    profile: str | None = None  # for "help": the subcommand asked about
    ttl: float | None = None
    reason: str = ""
    request_id: int | None = None  # approve, deny
    comment: str = ""
    rotate: bool = False  # renew: take new credentials even when the reconnect costs something
    break_glass: bool = False  # request: granted without approval where the server allows it


#: pgspecial-style (title, rows, headers, status): what the shell prints for a subcommand
Result: TypeAlias = tuple[str | None, Sequence[Sequence[Any]] | None, Sequence[str] | None, str | None]
Handler: TypeAlias = "Callable[[Controller, JitCommand], Result]"


class Argument(enum.Enum):
    """The one positional word a subcommand takes: how it is parsed and completed."""

    NONE = "none"
    #: optional; a profile name, completed from the config's profiles
    PROFILE = "profile"
    #: optional; a subcommand's name (checked at parse time), completed from this table
    SUBCOMMAND = "subcommand"
    #: required; a request id as ``\jit pending`` lists them
    REQUEST_ID = "request id"


@dataclass(frozen=True)
class Option:
    """A ``--name VALUE`` option (``--name=VALUE`` too), or a ``--name`` flag."""

    name: str
    #: the :class:`JitCommand` field the value fills
    field: str
    #: turns the text into the field's value; a bad value raises UsageError naming the option
    value: Callable[[str], object] = str
    #: when not empty the option is required, and this is the hint given when it is missing
    required: str = ""
    #: a flag takes no value: given, its field is True
    flag: bool = False


@dataclass(frozen=True)
class Subcommand:
    """One row of the table: everything parsing, completion, help, ``\\?`` and dispatch need."""

    name: str
    synopsis: str
    #: one line in the ``\jit help`` table
    summary: str
    #: the paragraph ``\jit help NAME`` adds under the synopsis
    details: str
    handler: Handler
    options: tuple[Option, ...] = ()
    argument: Argument = Argument.NONE
    #: False when the subcommand still works while the config file cannot be read
    needs_config: bool = True
    #: False when a ``\i`` file may not run it: pgcli strips ``--`` options there, and the
    #: file runs on the very connection the subcommand would switch or act as
    from_file: bool = True


# -- handlers: what each subcommand does to the session ------------------------------------


def _help(jit: Controller, cmd: JitCommand) -> Result:
    return (None, None, None, usage(cmd.profile, terminal_columns()))


def terminal_columns() -> int:
    """The terminal's width (``COLUMNS``, else the terminal's own, else 80)."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def _request(jit: Controller, cmd: JitCommand) -> Result:
    if cmd.ttl is not None:
        check_ttl(jit.config.requestable(cmd.profile), cmd.ttl)
    if cmd.break_glass:
        return (None, None, None, _break_glass(jit, cmd))
    try:
        return (None, None, None, jit.request(cmd.profile, cmd.ttl, cmd.reason))
    finally:  # what the server offers may have changed since: completion reads it again
        jit.catalog.refresh()


def _break_glass(jit: Controller, cmd: JitCommand) -> str:
    r"""``\jit request PROFILE --break-glass --reason TEXT``: as a request, but the server grants
    it at once or refuses it (never pending), where the server profile allows it.  Granted, it
    takes the place of this session's request for the same profile that waits."""
    from pgcli_jit.core.errors import JitError
    from pgcli_jit.session.ending import IN_TRANSACTION

    jit.settle()
    if jit.connector.in_transaction():
        raise JitError(f"\\jit request refused: {IN_TRANSACTION}")
    profile = jit.config.requestable(cmd.profile)
    if not jit.manager.backend_for(profile).offers_break_glass:
        raise UsageError(f"--break-glass is for server profiles; {profile.name} uses the "
                         f"{profile.backend} backend", "ask as usual: \\jit request " + profile.name)
    if not cmd.reason.strip():
        raise UsageError("break-glass needs a reason", '--reason "INC-... what is on fire"')
    try:
        lease = jit.manager.mint(profile, cmd.ttl, cmd.reason, break_glass=True)
    finally:
        jit.catalog.refresh()
    line = "Break-glass: " + jit.adopt_new(lease, profile, cmd.ttl)
    # a request for the same profile that waited is superseded, not a reason to refuse
    return " ".join(filter(None, [line, jit.approvals.superseded(profile.name)]))


def check_ttl(profile: Profile, ttl: float) -> None:
    """A TTL inside the profile's renewal window (``renew_before``) makes a lease that is due
    for renewal from its first second and ends before it can be renewed: refused before
    anything is asked of the backend (and before the current lease is replaced)."""
    window = profile.renew_before
    if window and ttl < window:
        from pgcli_jit.core.durations import format_duration

        raise UsageError(f"\\jit request: --ttl {format_duration(ttl)} is shorter than the renewal "
                         f"window of {profile.name} (renew_before {format_duration(window)})",
                         f"ask for at least --ttl {format_duration(window)}")


def _renew(jit: Controller, cmd: JitCommand) -> Result:
    return (None, None, None, jit.renew(cmd.ttl, rotate=cmd.rotate))


def _revoke(jit: Controller, cmd: JitCommand) -> Result:
    return (None, None, None, jit.revoke())


def _cancel(jit: Controller, cmd: JitCommand) -> Result:
    return (None, None, None, jit.cancel())


def _status(jit: Controller, cmd: JitCommand) -> Result:
    """The lease as the backend sees it now (the client's view when the lookup fails), plus a
    rotation waiting for the transaction and a request waiting for approval."""
    from pgcli_jit.core.errors import JitError
    from pgcli_jit.session.report import status_rows
    from pgcli_jit.session.switching import incoming_rows

    manager = jit.manager
    lease, profile = manager.lease, manager.profile
    waiting, incoming = jit.approvals.waiting, jit.handover.incoming
    rows: list[tuple[str, str]] = []
    if lease is not None and profile is not None:
        source = "backend"
        try:
            lease = manager.backend_for(profile).lookup(lease)
        except JitError as exc:
            source = f"client (lookup failed: {exc})"
        rows = status_rows(lease, profile, manager.clock(), source)
    elif waiting is None and incoming is None:
        return (None, None, None, jit.status_after_end())
    if incoming is not None:
        rows += incoming_rows(incoming, lease)
    if waiting is not None:
        from pgcli_jit.session import approvals as pending

        rows += [(f"pending {k}" if rows else k, v) for k, v in pending.status_rows(waiting, manager.clock())]
    return (None, fit_rows(rows, terminal_columns()), ["field", "value"], None)


def fit_rows(rows: list[tuple[str, str]], columns: int) -> list[tuple[str, str]]:
    """A two-column table that fits the terminal: a long value (a reason, an error) goes on
    over the next rows, wrapped at words, so the table never opens the pager for its width."""
    import textwrap

    field = max((len(name) for name, _ in rows), default=0)
    room = max(20, columns - field - 7)  # "| " + field + " | " + value + " |"
    out: list[tuple[str, str]] = []
    for name, value in rows:
        parts = textwrap.wrap(value, room, break_on_hyphens=False) or [value]
        out += [(name if i == 0 else "", part) for i, part in enumerate(parts)]
    return out


def _profiles(jit: Controller, cmd: JitCommand) -> Result:
    """Every profile with what its backend offers; a backend that cannot load still gets its line."""
    import contextlib

    from pgcli_jit.core.errors import JitError
    from pgcli_jit.session.report import profile_rows, profile_table, vertical

    manager = jit.manager
    cfg = manager.config
    server, grants, unlisted = server_profiles(jit)
    if not cfg.profiles and not server:
        return (None, None, None, f"No profiles: add [profiles.NAME] to {cfg.path}{unlisted}")
    backends = {}
    for name, profile in cfg.profiles.items():
        with contextlib.suppress(JitError):
            backends[name] = manager.backend_for(profile)
    rows = profile_rows(cfg, backends, server, grants)
    width = terminal_columns()
    table = profile_table(rows, width)
    if table is None:
        return (None, None, None, vertical(rows, width) + unlisted)
    return (None, table[0], table[1], unlisted.strip() or None)


def server_profiles(jit: Controller) -> tuple[list[RoleInfo], list[ProfileGrants], str]:
    """What the connected server lets this login request by name (``\\jit request NAME``
    with no config entry) and what each grants (empty when it cannot say), and a line saying
    why they are missing when they cannot be asked."""
    from pgcli_jit.core.errors import JitError
    from pgcli_jit.session.catalog import ask_grants, listing_backend

    try:
        backend = listing_backend(jit.manager)
        server = backend.requestable()
    except JitError as exc:
        return [], [], f"\nThe server's profiles are not listed: {exc}"
    grants = ask_grants(backend)
    jit.catalog.store(server, grants)  # completion offers what was just read
    return server, grants or [], ""


def _pending(jit: Controller, cmd: JitCommand) -> Result:
    from datetime import UTC, datetime

    from pgcli_jit.session import approvals as approval

    rows = jit.approvals.pending()
    if not rows:
        return (None, None, None, "No requests are waiting for your approval.")
    return (None, approval.pending_rows(rows, datetime.now(UTC)), list(approval.PENDING_HEADERS), None)


def _approve(jit: Controller, cmd: JitCommand) -> Result:
    assert cmd.request_id is not None  # Argument.REQUEST_ID is required
    return (None, None, None, jit.approvals.decide(cmd.request_id, True, cmd.comment))


def _deny(jit: Controller, cmd: JitCommand) -> Result:
    assert cmd.request_id is not None  # Argument.REQUEST_ID is required
    return (None, None, None, jit.approvals.decide(cmd.request_id, False, cmd.reason))


def _ttl(text: str) -> float | None:
    return option_duration(text, "--ttl")


# -- the table -------------------------------------------------------------------------------

TTL = Option("--ttl", "ttl", _ttl)
REASON = Option("--reason", "reason")

TABLE: tuple[Subcommand, ...] = (
    Subcommand(
        "request", "\\jit request [PROFILE] [--ttl DUR] [--reason TEXT] [--break-glass]",
        "obtain credentials and reconnect as them",
        "PROFILE defaults to the config's default_profile. --ttl asks for a lease length "
        "(the profile's max ttl caps it, the server's for a server profile, and the reply says so); "
        "--reason is recorded in the audit log. "
        "--break-glass (with --reason): granted at once without approval where the server "
        "profile allows it, loudly audited and announced to its approvers, a few times a day. "
        "Refused inside an open transaction.",
        _request, (TTL, REASON, Option("--break-glass", "break_glass", flag=True)),
        Argument.PROFILE, from_file=False),
    Subcommand(
        "status", "\\jit status", "the current lease (or how the last one ended)",
        "Profile, backend, database user, times (local, with zone), renewals, lease id; "
        "after access ended: what ended, when, and what to do.",
        _status, needs_config=False),
    Subcommand(
        "renew", "\\jit renew [--ttl DUR] [--rotate]", "extend the lease (never shortens it)",
        "--ttl asks for a new length, counted from now, capped by the profile's max ttl; later "
        "renewals keep it. A renewal that would end sooner renews nothing. When the lease cannot "
        "be extended (the hard limit, or a backend that never extends), new credentials are taken "
        "only when the reconnect loses nothing (temp tables, prepared statements, LISTENs) and adds "
        "at least half a term; otherwise their cost is said and --rotate (or F6) takes them. The "
        "session reconnects after the open transaction ends.",
        _renew, (TTL, Option("--rotate", "rotate", flag=True)), from_file=False),
    Subcommand(
        "revoke", "\\jit revoke", "end access now, back to the identity used before \\jit request",
        "Revokes at the backend and returns to the login used before \\jit request; after expiry "
        "it only returns to that login.",
        _revoke, from_file=False),
    Subcommand(
        "cancel", "\\jit cancel", "withdraw your request that waits for approval",
        "On a profile that needs approval, \\jit request answers at once and the session switches "
        "when the request is approved; \\jit cancel withdraws it (credentials already granted but "
        "not yet switched to are revoked).",
        _cancel),
    Subcommand(
        "profiles", "\\jit profiles", "what can be requested",
        "Every profile with its backend, ttl, max ttl and renew mode; Vault profiles list their roles.",
        _profiles),
    Subcommand(
        "pending", "\\jit pending", "requests you may approve (never your own)",
        "Requests that wait for your approval: id, requester, profile, ttl, reason, waiting since. "
        "The toolbar shows how many while you may decide some.",
        _pending),
    Subcommand(
        "approve", "\\jit approve ID [--comment TEXT]", "approve someone's request",
        "The server checks that you are a member of the profile's approvers role and not the "
        "requester; the comment goes to the audit trail.",
        _approve, (Option("--comment", "comment"),), Argument.REQUEST_ID, from_file=False),
    Subcommand(
        "deny", "\\jit deny ID --reason TEXT", "deny someone's request, saying why",
        "The reason is shown to the requester and recorded in the audit trail.",
        _deny, (Option("--reason", "reason", required='the requester reads it: --reason "why"'),),
        Argument.REQUEST_ID, from_file=False),
    Subcommand(
        "help", "\\jit help [SUBCOMMAND]", "this text, or one subcommand's",
        "\\jit help SUBCOMMAND shows one subcommand's options.",
        _help, argument=Argument.SUBCOMMAND, needs_config=False),
)

BY_NAME: dict[str, Subcommand] = {row.name: row for row in TABLE}
SUBCOMMANDS = tuple(BY_NAME)
#: options that take a value: nothing is completed while one is being typed
_VALUED = frozenset(option.name for row in TABLE for option in row.options if not option.flag)
#: the syntax pgspecial's ``\?`` shows for ``\jit``: as narrow as pgcli's own rows, so the
#: descriptions stay on screen at 80 columns; the subcommands are listed by ``\jit help``
MENU_SYNTAX = "\\jit [command]"


def subcommand(name: str) -> Subcommand:
    """The row of a parsed :class:`JitCommand`'s action."""
    return BY_NAME[name]


def run(jit: Controller, cmd: JitCommand) -> Result:
    """Dispatch a parsed command to its row's handler."""
    return BY_NAME[cmd.action].handler(jit, cmd)


# -- help ------------------------------------------------------------------------------------


#: the narrowest summary column worth aligning; narrower, each summary goes under its synopsis
MIN_SUMMARY = 20


def _usage_table(rows: Sequence[Subcommand], width: int | None = None) -> list[str]:
    """Synopses aligned by code, not by hand; with a ``width``, summaries wrap at words within it."""
    column = max(len(row.synopsis) for row in rows) + 3
    if width is None:
        return [f"{row.synopsis:<{column}}{row.summary}" for row in rows]
    lines: list[str] = []
    for row in rows:
        if width - column >= MIN_SUMMARY:
            summary = _wrap(row.summary, width - column)
            lines.append(f"{row.synopsis:<{column}}{summary[0]}")
            lines += [" " * column + line for line in summary[1:]]
        else:
            lines += textwrap.wrap(row.synopsis, width, break_long_words=False, break_on_hyphens=False)
            lines += _wrap(row.summary, width, indent="    ")
    return lines


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    """Wrapped at words; ``\\jit NAME`` stays on one line."""
    glued = text.replace("\\jit ", "\\jit\xa0")
    return [line.replace("\xa0", " ") for line in
            textwrap.wrap(glued, width, initial_indent=indent, subsequent_indent=indent)]


USAGE = "\n".join([*_usage_table(TABLE), FOOTER])


def usage(name: str | None = None, width: int | None = None) -> str:
    """All subcommands, or one (``\\jit help request``): its synopsis, then the details;
    wrapped at words to ``width`` columns when given (the terminal's, for ``\\jit help``)."""
    if not name:
        if width is None:
            return USAGE
        return "\n".join([*_usage_table(TABLE, width), *_wrap(FOOTER, width)])
    row = BY_NAME.get(name.lower())
    if row is None:
        raise UsageError(f"\\jit help: unknown subcommand {name!r}",
                         f"use one of: {', '.join(SUBCOMMANDS)}")
    return "\n".join([*_usage_table((row,), width), *_wrap(row.details, width or 78)])


# -- parsing ---------------------------------------------------------------------------------


def is_jit(text: str) -> bool:
    return bool(_JIT.match(text))


def parse(text: str) -> JitCommand:
    """Parse one ``\\jit`` line; UsageError says what was wrong and how to write it."""
    body = _JIT.sub("", text, count=1).strip().rstrip(";").strip()
    try:
        words = shlex.split(body)
    except ValueError as exc:
        raise UsageError(f"\\jit: {exc}", "close the quote around --reason") from None
    if not words:
        return JitCommand(DEFAULT)
    row = BY_NAME.get(words[0].lower())
    if row is None:
        raise UsageError(f"\\jit: unknown subcommand {words[0]!r}", f"use one of: {', '.join(SUBCOMMANDS)}")
    return _parse_args(row, words[1:])


def _parse_args(row: Subcommand, words: list[str]) -> JitCommand:
    action = row.name
    allowed = {option.name: option for option in row.options}
    argument: str | None = None
    given: dict[str, str] = {}
    it = iter(words)
    after_duration = False   # the word before was a duration option's value
    for word in it:
        name, eq, inline = word.partition("=")
        if after_duration and not word.startswith("--") and _is_duration(word):
            raise UsageError(f"\\jit {action}: a duration has no spaces",
                             f"write it as one word: {TTL.name} {given[TTL.name]}{word}")
        after_duration = False
        if word.startswith("--"):
            if name.lower() not in allowed:
                raise UsageError(f"\\jit {action}: unknown option {name}",
                                 f"options: {', '.join(allowed) or 'none'}")
            if allowed[name.lower()].flag:
                if eq:
                    raise UsageError(f"\\jit {action}: {name} takes no value")
                given[name.lower()] = "yes"
                continue
            value = inline if eq else next(it, None)
            if value is None or (not eq and value.startswith("--")):
                raise UsageError(f"\\jit {action}: {name} needs a value")
            given[name.lower()] = value
            after_duration = name.lower() == TTL.name and not eq
        elif row.argument is not Argument.NONE and argument is None:
            argument = _request_id(action, word) if row.argument is Argument.REQUEST_ID else word
        else:
            raise UsageError(f"\\jit {action}: unexpected argument {word!r}", "see \\jit help")
    if row.argument is Argument.REQUEST_ID and argument is None:
        raise UsageError(f"\\jit {action}: which request?", f"\\jit {action} ID (\\jit pending lists them)")
    fields: dict[str, Any] = {}
    for option in row.options:
        if option.required and not given.get(option.name, "").strip():
            raise UsageError(f"\\jit {action}: {option.name} is required", option.required)
        if option.name in given:
            fields[option.field] = True if option.flag else option.value(given[option.name])
    if row.argument is Argument.REQUEST_ID:
        fields["request_id"] = int(str(argument))
    elif argument is not None:
        fields["profile"] = argument
    if row.argument is Argument.SUBCOMMAND and argument is not None:
        usage(argument)  # an unknown subcommand is a usage error here, not at display
    return JitCommand(action, **fields)


def _is_duration(word: str) -> bool:
    """Whether a word reads as a duration (``30m``), as the rest of ``--ttl 1h 30m`` does."""
    try:
        option_duration(word, TTL.name)
    except (UsageError, ValueError):
        return False
    return True


def _request_id(action: str, word: str) -> str:
    if not word.isdigit() or len(word) > 18:
        raise UsageError(f"\\jit {action}: {word!r} is not a request id", "\\jit pending lists them")
    return word


# -- completion ------------------------------------------------------------------------------


def completions(line: str, profiles: list[str]) -> list[str]:
    """Candidates for the word being typed after ``\\jit``; empty when not ours."""
    if not is_jit(line):
        return []
    words = line.split()
    current = "" if line.endswith((" ", "\t")) else words[-1]
    position = len(words) - (0 if current == "" else 1)
    if position == 0:
        return []  # still typing "\jit" itself: pgcli completes command names
    if position == 1:
        pool = list(SUBCOMMANDS)
    else:
        row = BY_NAME.get(words[1].lower())
        if words[position - 1].lower() in _VALUED:
            return []
        given = {w.split("=", 1)[0].lower() for w in words[2:position]}
        pool = [o.name for o in (row.options if row else ()) if o.name not in given]
        if row is not None and row.argument is Argument.PROFILE and not _has_argument(words[2:position]):
            pool = profiles + pool
        if row is not None and row.argument is Argument.SUBCOMMAND and position == 2:
            pool = list(SUBCOMMANDS)
    return [c for c in pool if c.lower().startswith(current.lower())]


def _has_argument(words: list[str]) -> bool:
    """Whether the positional word already stands among the arguments (option values aside)."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("--"):
            skip = "=" not in word and word.lower() in _VALUED
        else:
            return True
    return False
