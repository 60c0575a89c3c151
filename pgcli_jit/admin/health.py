"""``pgcli-jit-admin health``: what a monitoring system asks, answered by the server.

``jit.health`` runs the checks where the facts are: when a reaper last ran a pass
(``jit_data.reaper_runs``, written by every ``jit.expire_due``), leases that ended but
still have their role, the audit hash chain, and whether every profile's grant roles are
still fit; and whether the session-log collector read the server's log lately, when some
profile logs statements (``jit.session_log_health``: each pass stamps the files it reads).
This prints one line per check (``ok`` or ``FAIL``) and exits 1 when any
failed, so a cron job, a systemd timer or a Nagios-style probe can act on the status alone;
``--json`` gives the same for a monitoring system to parse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click
import psycopg

from pgcli_jit.admin import fmt
from pgcli_jit.admin.connect import connect, dsn_option
from pgcli_jit.core.errors import JitError
from pgcli_jit.server import statements

#: the default age past which the reaper counts as stopped: a one-pass ``reap`` from cron
#: runs every minute, ``reap --watch`` passes at least every 5 s
MAX_REAPER_AGE = 120
#: the same for the session-log collector: ``sessions collect --watch`` reads every 5 s, a
#: one-pass ``sessions collect`` from cron every minute
MAX_COLLECTOR_AGE = 120


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str
    detail: dict[str, Any]

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {fmt.printable(self.message)}"

    def as_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "message": self.message, "detail": self.detail}


def run_checks(dsn: str, max_reaper_age: float, max_collector_age: float = MAX_COLLECTOR_AGE) -> list[Check]:
    """The server's checks, one per row (the grant check one row per unfit role), then the
    session-log collector's."""
    with connect(dsn) as conn:
        try:
            rows = conn.execute(statements.HEALTH, (max_reaper_age,)).fetchall()
            rows += conn.execute(statements.SESSION_LOG_HEALTH, (max_collector_age,)).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            raise JitError("health needs a login in jit_admin",
                           "as a superuser: GRANT jit_admin TO <the monitoring login>") from None
    return [Check(str(name), bool(ok), str(message), dict(detail or {}))
            for name, ok, message, detail in rows]


@click.command()
@dsn_option
@click.option("--max-reaper-age", type=click.FloatRange(min=1), default=MAX_REAPER_AGE,
              show_default=True, metavar="SECONDS",
              help="Fail when no reaper pass ran within this long, or a lease ended longer "
                   "ago than this still has its role.")
@click.option("--max-collector-age", type=click.FloatRange(min=1), default=MAX_COLLECTOR_AGE,
              show_default=True, metavar="SECONDS",
              help="Fail when some profile logs statements and the session-log collector has "
                   "not read the server's log within this long.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def health(dsn: str, max_reaper_age: float, max_collector_age: float, as_json: bool) -> None:
    """Exit 1, saying why, when the reaper is not running, ended leases are not reaped, the
    audit chain is broken, a grant role has become dangerous, or statements are logged and
    the session-log collector is not reading them."""
    checks = run_checks(dsn, max_reaper_age, max_collector_age)
    healthy = all(c.ok for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": healthy, "checks": [c.as_json() for c in checks]}, indent=2))
    else:
        for check in checks:
            click.echo(check.line())
    if not healthy:
        raise click.exceptions.Exit(1)


COMMANDS = [health]
