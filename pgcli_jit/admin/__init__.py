"""``pgcli-jit-admin``: the operator's side of the ``postgres`` backend.

``setup`` installs the ``jit`` schema; ``profile`` declares what may be requested, and
``apply`` makes the profiles equal to a file;
``leases`` shows who holds access and ``revoke`` ends a lease for a reason;
``pending``/``approve``/``deny`` decide requests that wait for a second person; ``reap``
(``--watch``) ends access on the server's clock, ``cron`` installs it as a pg_cron job;
``audit`` reads and verifies the server-side audit trail; ``health`` says whether all of
that is working.  Every expected failure is one ``Error: ...`` line on stderr and exit 1 (2 for bad usage).
"""

from __future__ import annotations

from typing import Any

import click
import psycopg

from pgcli_jit.admin.connect import error_text
from pgcli_jit.core.errors import JitError, UsageError


class UsageProblem(click.ClickException):
    """Options that do not fit together: one line, exit 2 like click's own usage errors."""

    exit_code = 2


class _Group(click.Group):
    """Turns every expected failure into one ``Error: ...`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise UsageProblem(str(exc)) from None
        except JitError as exc:
            raise click.ClickException(str(exc)) from None
        except (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedTable):
            raise click.ClickException(
                "the jit schema is not installed in this database (or is older than this "
                "pgcli-jit-admin): run pgcli-jit-admin setup --apply") from None
        except psycopg.Error as exc:
            raise click.ClickException(error_text(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate pgcli-jit's server-side broker: schema, profiles, leases, reaper, audit."""


def _register() -> None:
    from pgcli_jit.admin import (
        apply,
        approvals,
        audit,
        cron,
        health,
        leases,
        notify,
        profiles,
        revoke,
        sessions,
        setup,
    )

    for module in (setup, profiles, apply, leases, revoke, approvals, audit, health, cron, sessions, notify):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
