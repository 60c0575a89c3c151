"""The ``jit`` schema's answers, checked as strictly as any broker's.

The schema is ours, but the server that answers may not be: a profile's ``host``
can point anywhere, and an older or newer schema answers differently.  A jsonb
answer is data from the network, so every field is checked for its type and its
bounds before a :class:`~pgcli_jit.core.lease.Lease` is built from it, and a field that
is wrong is one line naming it (never a ``KeyError`` traceback, never a lease that
expires in the year 33715).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pgcli_jit.core.errors import BackendError
from pgcli_jit.core.limits import MAX_DURATION, MAX_NAME, MAX_REASON
from pgcli_jit.core.sanitize import clean, first_unsafe

#: what the server's role names look like (``jit_<requester>_<hex>``): a PostgreSQL name
ROLE_NAME = re.compile(r"[a-z0-9_]{1,63}")
_HINT = "is the server's jit schema current? an operator runs pgcli-jit-admin setup --apply"


@dataclass(frozen=True)
class Answer:
    """One ``jit.*`` answer; ``now`` is this client's clock when it arrived."""

    data: Mapping[str, Any]
    now: float
    error: Callable[[str, str], BackendError]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def malformed(self, what: str) -> BackendError:
        return self.error(f"the server's answer is malformed: {what}", _HINT)

    def seconds(self, key: str) -> float:
        """A number of seconds (an epoch or a length), finite."""
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.malformed(f"{key} is not a number")
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise self.malformed(f"{key} is out of range")
        return seconds

    def when(self, key: str) -> float:
        """A server time on this client's clock (so the countdown ends when the server
        says), within MAX_DURATION of now."""
        at = self.seconds(key) + self.now - self.seconds("server_now")
        if abs(at - self.now) > MAX_DURATION:
            raise self.malformed(f"{key} is more than 366 days from now")
        return at

    def text(self, key: str, limit: int = MAX_REASON) -> str:
        """Text shown to the user or recorded (reason, requester): printable, bounded."""
        value = self.data.get(key)
        if value is None:
            return ""
        if not isinstance(value, str) or len(value) > limit or first_unsafe(value) is not None:
            raise self.malformed(f"{key} is not a short line of text")
        return value

    def role(self) -> str:
        value = self.data.get("rolname")
        if not isinstance(value, str) or not ROLE_NAME.fullmatch(value):
            raise self.malformed("rolname is not a role name the server makes")
        return value

    def count(self, key: str, *, low: int = 0, high: int = 1_000_000) -> int:
        value = self.data.get(key) or 0
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.malformed(f"{key} is not a whole number from {low} to {high}")
        return value

    def identifier(self, key: str) -> str:
        """A lease or request id: a positive integer (as the server's identity columns)."""
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
            raise self.malformed(f"{key} is not an id")
        return str(value)

    def names(self, key: str) -> list[str]:
        """Who approved: informational, so what is not a name is left out, not refused."""
        value = self.data.get(key)
        if not isinstance(value, list):
            return []
        return [v for v in value if isinstance(v, str) and 0 < len(v) <= MAX_NAME and first_unsafe(v) is None]

    def message(self, key: str, default: str = "") -> str:
        """Server-written prose (an error, a hint, a note): one clean line whatever it holds."""
        value = self.data.get(key)
        return clean(value) if isinstance(value, str) and value.strip() else default
