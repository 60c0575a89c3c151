"""The backend test kit at the import path backend authors use: :mod:`pgcli_jit.devtools.testing`."""

from pgcli_jit.devtools.testing import BackendContract, FakeClock

__all__ = ["BackendContract", "FakeClock"]
