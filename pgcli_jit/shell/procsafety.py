"""Keep the lease password out of core dumps and away from same-user debuggers.

A core dump of a ``--jit`` process would hold the password in several copies.
Two switches, both set once at start-up and inherited by nothing that
``exec``\\s (the kernel resets dumpability on exec, so brokers run normally):

* ``RLIMIT_CORE = 0``: no core file is written on a crash;
* ``prctl(PR_SET_DUMPABLE, 0)`` on Linux: no core either way, and other
  processes of the same user cannot ``ptrace`` it or read its ``/proc/PID/mem``
  or ``environ`` (root still can; nothing stops root).

Elsewhere the second is a no-op.  Failures are logged, never fatal: a shell
that cannot harden itself still works, and says so in the debug log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import sys

log = logging.getLogger(__name__)
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def harden_process() -> None:
    """No core dumps, not dumpable: call once, before any credential exists."""
    disable_core_dumps()
    make_non_dumpable()


def disable_core_dumps() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        log.warning("could not disable core dumps: %s", exc)


def make_non_dumpable() -> None:
    libc = _libc()
    if libc is None:
        return
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %s", ctypes.get_errno())


def is_dumpable() -> bool | None:
    """The kernel's view (Linux), for tests and ``--debug``; None where unknown."""
    libc = _libc()
    return None if libc is None else bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    # glibc's soname first: ctypes.util.find_library runs ``ldconfig -p`` in a subprocess
    # (~3 ms of every start-up); it is only the fallback (musl and other libcs)
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        pass
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
