"""The error tree at the import path backends use: :mod:`pgcli_jit.core.errors` defines it."""

from pgcli_jit.core.errors import (
    AuditError,
    BackendError,
    BackendUnavailable,
    ConfigError,
    ConnectionSwitchError,
    DurationError,
    JitError,
    LeaseExpired,
    NotRenewable,
    PermissionDenied,
    RequestClosed,
    UsageError,
)

__all__ = [
    "AuditError",
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "ConnectionSwitchError",
    "DurationError",
    "JitError",
    "LeaseExpired",
    "NotRenewable",
    "PermissionDenied",
    "RequestClosed",
    "UsageError",
]
