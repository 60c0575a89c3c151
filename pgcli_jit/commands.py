"""Parsing ``\\jit`` lines: raw text in, a :class:`JitCommand` out.

pgcli 4.5+ strips ``--`` comments from special-command arguments, so
``--ttl 15m`` would never reach a pgspecial handler: the shell hands this
module the raw line instead.  ``shlex`` keeps quoted reasons together.
No argument ever carries a secret: pgcli writes every line to its history.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass

from pgcli_jit.durations import option_duration
from pgcli_jit.errors import UsageError

SUBCOMMANDS = ("request", "status", "renew", "revoke", "cancel", "profiles", "pending", "approve", "deny",
               "help")
OPTIONS = {"request": ("--ttl", "--reason"), "renew": ("--ttl",), "approve": ("--comment",),
           "deny": ("--reason",)}
#: subcommands whose one argument is a request id
DECIDING = ("approve", "deny")
_JIT = re.compile(r"^\s*\\jit(?:\s|;|$)", re.IGNORECASE)

#: (subcommand, synopsis, one line) for the usage table; aligned by code, not by hand
SYNOPSES = (
    ("request", "\\jit request [PROFILE] [--ttl DUR] [--reason TEXT]",
     "obtain credentials and reconnect as them"),
    ("status", "\\jit status", "the current lease (or how the last one ended)"),
    ("renew", "\\jit renew [--ttl DUR]", "extend the lease (or rotate to new credentials)"),
    ("revoke", "\\jit revoke", "end access now, back to the identity used before \\jit request"),
    ("cancel", "\\jit cancel", "withdraw your request that waits for approval"),
    ("profiles", "\\jit profiles", "what can be requested"),
    ("pending", "\\jit pending", "requests you may approve (never your own)"),
    ("approve", "\\jit approve ID [--comment TEXT]", "approve someone's request"),
    ("deny", "\\jit deny ID --reason TEXT", "deny someone's request, saying why"),
    ("help", "\\jit help [SUBCOMMAND]", "this text, or one subcommand's"),
)
FOOTER = 'Durations: 90s, 15m, 1h30m or seconds. Quote a reason with spaces: --reason "INC-123 hotfix".'
DETAILS = {
    "request": ("PROFILE defaults to the config's default_profile. --ttl asks for a lease length "
                "(the profile's max_ttl caps it, and the reply says so); "
                "--reason is recorded in the audit log. "
                "Refused inside an open transaction."),
    "status": "Profile, backend, database user, times (local, with zone), renewals, lease id; "
              "after access ended: what ended, when, and what to do.",
    "renew": ("--ttl asks for a new length, counted from now, capped at max_ttl; later renewals keep it. "
              "When the backend cannot extend, new credentials are issued and the session reconnects "
              "after the open transaction ends."),
    "revoke": "Revokes at the backend and returns to the login used before \\jit request; after expiry "
              "it only returns to that login.",
    "profiles": ("Every profile with its backend, ttl, max ttl and renew mode; "
                 "Vault profiles list their roles."),
    "help": "\\jit help SUBCOMMAND shows one subcommand's options.",
    "cancel": "On a profile that needs approval, \\jit request answers at once and the session switches "
              "when the request is approved; \\jit cancel withdraws it (credentials already granted but "
              "not yet switched to are revoked).",
    "pending": "Requests that wait for your approval: id, requester, profile, ttl, reason, waiting since. "
               "The toolbar shows how many while you may decide some.",
    "approve": "The server checks that you are a member of the profile's approvers role and not the "
               "requester; the comment goes to the audit trail.",
    "deny": "The reason is shown to the requester and recorded in the audit trail.",
}


def _usage_table(rows: tuple[tuple[str, str, str], ...]) -> list[str]:
    width = max(len(synopsis) for _, synopsis, _ in rows) + 3
    return [f"{synopsis:<{width}}{what}" for _, synopsis, what in rows]


USAGE = "\n".join([*_usage_table(SYNOPSES), FOOTER])


def usage(subcommand: str | None = None) -> str:
    """All subcommands, or one (``\\jit help request``): its synopsis, then the details."""
    if not subcommand:
        return USAGE
    name = subcommand.lower()
    rows = tuple(row for row in SYNOPSES if row[0] == name)
    if not rows:
        raise UsageError(f"\\jit help: unknown subcommand {subcommand!r}",
                         f"use one of: {', '.join(SUBCOMMANDS)}")
    return "\n".join([*_usage_table(rows), *textwrap.wrap(DETAILS[name], 78)])


@dataclass(frozen=True)
class JitCommand:
    action: str
    profile: str | None = None  # for "help": the subcommand asked about
    ttl: float | None = None
    reason: str = ""
    request_id: int | None = None  # approve, deny
    comment: str = ""


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
        return JitCommand("help")
    action, rest = words[0].lower(), words[1:]
    if action not in SUBCOMMANDS:
        raise UsageError(f"\\jit: unknown subcommand {words[0]!r}", f"use one of: {', '.join(SUBCOMMANDS)}")
    cmd = _parse_args(action, rest)
    if action == "help" and cmd.profile is not None:
        usage(cmd.profile)  # an unknown subcommand is a usage error here, not at display
    return cmd


def _parse_args(action: str, words: list[str]) -> JitCommand:
    allowed = OPTIONS.get(action, ())
    profile: str | None = None
    opts: dict[str, str] = {}
    it = iter(words)
    for word in it:
        name, eq, inline = word.partition("=")
        if word.startswith("--"):
            if name.lower() not in allowed:
                raise UsageError(f"\\jit {action}: unknown option {name}",
                                 f"options: {', '.join(allowed) or 'none'}")
            value = inline if eq else next(it, None)
            if value is None or (not eq and value.startswith("--")):
                raise UsageError(f"\\jit {action}: {name} needs a value")
            opts[name.lower()] = value
        elif action in ("request", "help") and profile is None:
            profile = word
        elif action in DECIDING and profile is None:
            profile = _request_id(action, word)
        else:
            raise UsageError(f"\\jit {action}: unexpected argument {word!r}", "see \\jit help")
    if action in DECIDING:
        return _deciding(action, profile, opts)
    return JitCommand(action, profile, _ttl(opts.get("--ttl")), opts.get("--reason", ""))


def _request_id(action: str, word: str) -> str:
    if not word.isdigit() or len(word) > 18:
        raise UsageError(f"\\jit {action}: {word!r} is not a request id", "\\jit pending lists them")
    return word


def _deciding(action: str, rid: str | None, opts: dict[str, str]) -> JitCommand:
    if rid is None:
        raise UsageError(f"\\jit {action}: which request?", f"\\jit {action} ID (\\jit pending lists them)")
    if action == "deny" and not opts.get("--reason", "").strip():
        raise UsageError("\\jit deny: --reason is required", 'the requester reads it: --reason "why"')
    return JitCommand(action, request_id=int(rid), reason=opts.get("--reason", ""),
                      comment=opts.get("--comment", ""))


def _ttl(text: str | None) -> float | None:
    return option_duration(text, "--ttl")


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
        action = words[1].lower()
        if words[position - 1].lower() in ("--ttl", "--reason", "--comment"):
            return []
        given = {w.split("=", 1)[0].lower() for w in words[2:position]}
        pool = [o for o in OPTIONS.get(action, ()) if o not in given]
        if action == "request" and not _has_profile(words[2:position]):
            pool = profiles + pool
        if action == "help" and position == 2:
            pool = list(SUBCOMMANDS)
    return [c for c in pool if c.lower().startswith(current.lower())]


def _has_profile(words: list[str]) -> bool:
    """Whether a profile name already stands among ``request``'s arguments (option values aside)."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("--"):
            skip = "=" not in word
        else:
            return True
    return False
