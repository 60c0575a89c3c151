"""The one seam through which the shell loads the JIT machinery: on first use, never at start-up.

``pgcli-jit -c ...`` must start as fast as pgcli itself (docs/performance.md), so the shell
module imports none of the session, the backends or its own helpers; it reads them here as
``later.NAME``, and each name is imported the first time it is read, then kept (PEP 562).
The ``TYPE_CHECKING`` block below says what each name is, so the types are checked and the
import graph (tests/test_layers.py) sees every edge.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # ``as NAME``: each is a name this module hands on
    from pgcli_jit.backends.base import ApprovalPending as ApprovalPending
    from pgcli_jit.backends.base import NeedsPassword as NeedsPassword
    from pgcli_jit.backends.login import Login as Login
    from pgcli_jit.backends.login import sever as sever
    from pgcli_jit.core.clock import local_time as local_time
    from pgcli_jit.session.approvals import wait_at_startup as wait_at_startup
    from pgcli_jit.session.audit import AuditLog as AuditLog
    from pgcli_jit.session.config import Config as Config
    from pgcli_jit.session.config import load_config as load_config
    from pgcli_jit.session.controller import Controller as Controller
    from pgcli_jit.session.denied_offer import DeniedOffers as DeniedOffers
    from pgcli_jit.session.denied_rerun import Rerun as Rerun
    from pgcli_jit.session.manager import LeaseManager as LeaseManager
    from pgcli_jit.session.manager import load_backend as load_backend
    from pgcli_jit.shell import session_state as session_state
    from pgcli_jit.shell import startup as startup
    from pgcli_jit.shell import toolbar as toolbar
    from pgcli_jit.shell.waiting import Waiting as Waiting
    from pgcli_jit.shell.watchdog import StatementWatchdog as StatementWatchdog
    from pgcli_jit.shell.watchdog import Watch as Watch

#: each name and the module that defines it (a module itself where the two are the same)
WHERE = {
    "ApprovalPending": "pgcli_jit.backends.base",
    "NeedsPassword": "pgcli_jit.backends.base",
    "Login": "pgcli_jit.backends.login",
    "sever": "pgcli_jit.backends.login",
    "local_time": "pgcli_jit.core.clock",
    "wait_at_startup": "pgcli_jit.session.approvals",
    "AuditLog": "pgcli_jit.session.audit",
    "Config": "pgcli_jit.session.config",
    "load_config": "pgcli_jit.session.config",
    "Controller": "pgcli_jit.session.controller",
    "DeniedOffers": "pgcli_jit.session.denied_offer",
    "Rerun": "pgcli_jit.session.denied_rerun",
    "LeaseManager": "pgcli_jit.session.manager",
    "load_backend": "pgcli_jit.session.manager",
    "session_state": "pgcli_jit.shell.session_state",
    "startup": "pgcli_jit.shell.startup",
    "toolbar": "pgcli_jit.shell.toolbar",
    "Waiting": "pgcli_jit.shell.waiting",
    "StatementWatchdog": "pgcli_jit.shell.watchdog",
    "Watch": "pgcli_jit.shell.watchdog",
}
__all__ = sorted(WHERE)


def __getattr__(name: str) -> Any:
    """Import ``name``'s module now, and keep the name so the next read costs a dict lookup."""
    try:
        where = WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module = importlib.import_module(where)
    value = module if where.endswith(f".{name}") else getattr(module, name)
    globals()[name] = value
    return value
