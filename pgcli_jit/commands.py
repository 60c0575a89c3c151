"""Parsing ``\\jit`` lines: raw text in, a :class:`JitCommand` out.

pgcli 4.5+ strips ``--`` comments from special-command arguments, so
``--ttl 15m`` would never reach a pgspecial handler: the shell hands this
module the raw line instead.  ``shlex`` keeps quoted reasons together.
No argument ever carries a secret: pgcli writes every line to its history.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from pgcli_jit.durations import parse_duration
from pgcli_jit.errors import UsageError

SUBCOMMANDS = ("request", "status", "renew", "revoke", "profiles", "help")
OPTIONS = {"request": ("--ttl", "--reason"), "renew": ("--ttl",)}
_JIT = re.compile(r"^\s*\\jit(?:\s|;|$)", re.IGNORECASE)

USAGE = """\
\\jit request [PROFILE] [--ttl DUR] [--reason TEXT]   obtain credentials and reconnect as them
\\jit status                                        the current lease
\\jit renew [--ttl DUR]                             extend the lease (or rotate to new credentials)
\\jit revoke                                        end access now, back to the previous identity
\\jit profiles                                      what can be requested
Durations: 90s, 15m, 1h30m or seconds. Quote a reason with spaces: --reason "INC-123 hotfix"."""


@dataclass(frozen=True)
class JitCommand:
    action: str
    profile: str | None = None
    ttl: float | None = None
    reason: str = ""


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
    return _parse_args(action, rest)


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
        elif action == "request" and profile is None:
            profile = word
        else:
            raise UsageError(f"\\jit {action}: unexpected argument {word!r}", "see \\jit help")
    return JitCommand(action, profile, _ttl(opts.get("--ttl")), opts.get("--reason", ""))


def _ttl(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from None


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
        if words[position - 1].lower() in ("--ttl", "--reason"):
            return []
        pool = list(OPTIONS.get(action, ()))
        if action == "request" and not _has_profile(words[2:position]):
            pool = profiles + pool
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
