"""Text from outside, made safe to show and to record; names and reasons, checked.

Two directions, one module, so there is exactly one definition of "safe" (and
:func:`printable` for tables of names and reasons others typed):

* :func:`check_text` refuses *input* (a reason, a profile or grant name) that
  holds control characters or is too long, with one line saying so.  A NUL
  truncates C strings (libpq, role names), an escape sequence repaints the
  terminal of whoever reads the audit log, and megabytes of reason make
  every later step slow.
* :func:`clean` tames *output* of brokers (stderr, HTTP error bodies) before it
  reaches the terminal or the audit trail: control characters become spaces,
  the text is capped, and whatever looks like a secret is replaced by
  ``***``: the exact secrets the caller knows of (the password just issued,
  the bearer token) and anything shaped like a token or a password assignment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pgcli_jit.core.errors import UsageError
from pgcli_jit.core.limits import MAX_MESSAGE

REDACTED = "***"
#: Unicode's control characters (category Cc), line/paragraph separators, and the
#: format characters that reorder or hide text on a terminal ("Trojan Source").
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: Shapes of secrets, most specific first; each match (or its group 2) becomes ***.
_SECRET_SHAPES = (
    re.compile(r"(?i)(bearer\s+)(\S+)"),
    re.compile(r"(?i)((?:x-vault-token|authorization)\s*[:=]\s*)(\S+)"),
    re.compile(r"(?i)(\"?\b(?:password|passwd|pwd|secret|token|api[_-]?key|client_secret)\"?\s*[:=]\s*)"
               r"(\"[^\"]*\"|'[^']*'|\S+)"),
    re.compile(r"(?i)(\bpgpassword\s*=\s*)(\S+)"),
    re.compile(r"(://[^/\s:@]*:)([^@\s/]+)(?=@)"),  # URL user:password@
    re.compile(r"()(\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{20,})"),  # Vault / OpenBao tokens
    re.compile(r"()(\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"),  # JWTs
    re.compile(r"()(\bAKIA[0-9A-Z]{16}\b)"),  # AWS access key ids
)


def first_unsafe(text: str) -> str | None:
    """The first control, separator or bidi-override character in ``text``, if any."""
    found = _UNSAFE.search(text)
    return found.group(0) if found else None


def check_text(value: str, what: str, *, limit: int, allow_empty: bool = True) -> str:
    """``value`` if it is safe input, else UsageError naming ``what`` (never quoting megabytes)."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text, not {type(value).__name__}")
    if len(value) > limit:
        raise UsageError(f"{what} is {len(value):,} characters long; the limit is {limit:,}",
                         "shorten it: a ticket reference and a sentence are enough")
    bad = first_unsafe(value)
    if bad is not None:
        raise UsageError(f"{what} contains a control character (U+{ord(bad):04X})",
                         "use plain printable text, on one line")
    if not allow_empty and not value:
        raise UsageError(f"{what} is empty")
    return value


def printable(value: object) -> str:
    """``str(value)`` with every non-printable character (ESC, newline ...) shown as ``?``:
    a crafted name or reason in a table cannot move the cursor or rewrite earlier lines."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


def clean(text: str, secrets: Iterable[str | None] = (), *, limit: int = MAX_MESSAGE) -> str:
    """One safe line: known secrets and secret-shaped words redacted, controls out, capped.

    Redaction runs before the cap, so a secret cut in half is still never shown.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for shape in _SECRET_SHAPES:
        text = shape.sub(lambda m: m.group(1) + REDACTED, text)
    text = _UNSAFE.sub(" ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
