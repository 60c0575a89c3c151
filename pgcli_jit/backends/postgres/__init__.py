"""The postgres backend: the ``jit`` schema asked over the requester's own login."""

from pgcli_jit.backends.postgres.backend import JIT_CONNINFO, NeedsPassword, PostgresBackend

__all__ = ["JIT_CONNINFO", "NeedsPassword", "PostgresBackend"]
