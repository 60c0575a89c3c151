"""The ``jit`` schema's answers, checked as strictly as any broker's.

The schema is ours, but the server that answers may not be: a profile's ``host``
can point anywhere, and an older or newer schema answers differently.  A jsonb
answer is data from the network, so every field is checked for its type and its
bounds before a :class:`~pgcli_jit.core.lease.Lease` is built from it, and a field that
is wrong is one line naming it (never a ``KeyError`` traceback, never a lease that
expires in the year 33715).  The checks are the answer toolkit's
(:mod:`pgcli_jit.backends.answers`), as for every broker's answer; what is the
schema's own (its role names, its server clock) is here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pgcli_jit.backends import answers
from pgcli_jit.backends.answers import AnswerError
from pgcli_jit.core.errors import BackendError
from pgcli_jit.core.limits import MAX_REASON
from pgcli_jit.core.sanitize import clean

#: what the server's role names look like (``jit_<requester>_<hex>``): a PostgreSQL name
ROLE_NAME = re.compile(r"[a-z0-9_]{1,63}")
_HINT = "is the server's jit schema current? an operator runs pgcli-jit-admin setup --apply"
T = TypeVar("T")


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

    def _read(self, read: Callable[[], T]) -> T:
        """One field read with the answer toolkit; what is wrong with it, as a BackendError."""
        try:
            return read()
        except AnswerError as exc:
            raise self.malformed(f"{exc.key} {exc.why}") from None

    def seconds(self, key: str, default: float | None = None) -> float:
        """A number of seconds (an epoch or a pause), finite."""
        return self._read(lambda: answers.number(self.data, key, default=default))

    def length(self, key: str) -> float:
        """A length of time: more than zero, at most MAX_DURATION."""
        return self._read(lambda: answers.seconds(self.data, key))

    def when(self, key: str) -> float:
        """A server time on this client's clock (so the countdown ends when the server
        says), within MAX_DURATION of now."""
        at = self.seconds(key) + self.now - self.seconds("server_now")
        return self._read(lambda: answers.near(at, key, now=self.now, past_too=True))

    def text(self, key: str, limit: int = MAX_REASON) -> str:
        """Text shown to the user or recorded (reason, requester): printable, bounded."""
        return self._read(lambda: answers.text(self.data, key, limit=limit, optional=True))

    def role(self) -> str:
        value = self._read(lambda: answers.text(self.data, "rolname", limit=63))
        if not ROLE_NAME.fullmatch(value):
            raise self.malformed("rolname is not a role name the server makes")
        return value

    def count(self, key: str, *, low: int = 0, high: int = 1_000_000) -> int:
        return self._read(lambda: answers.whole(self.data, key, low=low, high=high, default=0))

    def identifier(self, key: str) -> str:
        """A lease or request id: a positive integer (as the server's identity columns)."""
        return str(self._read(lambda: answers.whole(self.data, key, low=1, high=2**63 - 1)))

    def names(self, key: str) -> list[str]:
        """Who approved: informational, so what is not a name is left out, not refused."""
        return answers.names(self.data, key, strict=False)

    def message(self, key: str, default: str = "") -> str:
        """Server-written prose (an error, a hint, a note): one clean line whatever it holds."""
        value = self.data.get(key)
        return clean(value) if isinstance(value, str) and value.strip() else default
