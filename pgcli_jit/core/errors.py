"""The error tree of pgcli-jit.

Every error the user can see is a :class:`JitError`: ``str(err)`` is one line
that says what went wrong and, where there is one, what to do next.  The shell
prints that line and nothing else, so no traceback (and no psycopg exception
internals, which can carry a password) ever reaches the terminal.
"""

from __future__ import annotations


class JitError(Exception):
    """Base class: a message plus an optional hint on what to do next."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(JitError):
    """A ``\\jit`` command line that cannot be parsed."""


class ConfigError(JitError):
    """A configuration file, profile or key that is wrong."""

    def __init__(self, message: str, *, path: object = None, key: str = "", hint: str = "") -> None:
        where = ": ".join(str(p) for p in (path, key) if p)
        super().__init__(f"{where}: {message}" if where else message, hint)
        self.path = path
        self.key = key


class BackendError(JitError):
    """A backend failed to mint, renew, look up or revoke credentials."""

    def __init__(
        self, message: str, *, backend: str = "", profile: str = "", status: int | None = None,
        hint: str = "",
    ) -> None:
        prefix = f"{backend} backend" if backend else "backend"
        if profile:
            prefix += f" (profile {profile})"
        super().__init__(f"{prefix}: {message}", hint)
        self.reason = message  # without the backend/profile prefix, for composed messages
        self.backend = backend
        self.profile = profile
        self.status = status


class BackendUnavailable(BackendError):
    """The backend cannot be reached (refused, timed out, sealed, missing dependency)."""


class PermissionDenied(BackendError):
    """The backend answered, and said no."""


class NotRenewable(BackendError):
    """The lease cannot be extended (max TTL reached, lease gone): rotate instead."""


class RequestClosed(BackendError):
    """A request that waited for approval ended without credentials.

    ``state`` is ``denied``, ``timed_out`` or ``cancelled``; ``decided_by`` and ``note``
    (the denial's reason) come from the server, to be shown to the requester as they are.
    """

    def __init__(self, message: str, *, state: str, decided_by: str = "", note: str = "",
                 backend: str = "", profile: str = "") -> None:
        super().__init__(message, backend=backend, profile=profile)
        self.state = state
        self.decided_by = decided_by
        self.note = note


class LeaseExpired(JitError):
    """An operation needs a live lease and the lease is over."""


class ConnectionSwitchError(JitError):
    """The session could not be switched to new credentials; the old connection stays."""


def db_error_line(exc: BaseException, *, detail: bool = False) -> str:
    """The server's own message, one line: never ``repr`` of psycopg internals (they may hold a
    password).  ``detail`` adds the first line of the server's detail and hint (the operator's
    CLI shows them: they name the role or the grant that is missing)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc)
    lines = [line.strip() for line in primary.splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    extras = (getattr(diag, "message_detail", None), getattr(diag, "message_hint", None)) if detail else ()
    for extra in extras:
        if extra:
            text += f": {extra.splitlines()[0]}"
    return text


class DurationError(JitError, ValueError):
    """A duration or time that is not one, or is out of range.

    Also a ``ValueError``, so callers written against the old contract of
    :func:`~pgcli_jit.core.durations.parse_duration` keep catching it.
    """


class AuditError(JitError):
    """The audit trail cannot be written: new access is refused (fail closed)."""
