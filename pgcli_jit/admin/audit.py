"""``pgcli-jit-admin audit``: the server-side trail, and ``--verify`` of its hash chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from pgcli_jit.admin import fmt
from pgcli_jit.admin.connect import connect, dsn_option
from pgcli_jit.core.durations import parse_duration
from pgcli_jit.core.errors import UsageError
from pgcli_jit.server import statements

HEADERS = ("ID", "AT", "EVENT", "PROFILE", "ROLE", "REQUESTER", "ACTOR", "CLIENT", "REASON", "EXPIRES")


def since_time(text: str | None) -> datetime:
    """``--since 2h`` (that long ago) or an ISO-8601 time; default: everything."""
    if not text:
        return datetime(1970, 1, 1, tzinfo=UTC)
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since: {text!r} is neither a duration (2h, 30m) nor an ISO-8601 time") from None
    return value if value.tzinfo else value.astimezone()


@click.command()
@dsn_option
@click.option("--since", metavar="DUR|TIME", help="Only events since then (2h, or 2026-11-24T09:00).")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True,
              help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--verify", is_flag=True, help="Check the hash chain; exit 1 naming the first bad row.")
def audit(dsn: str, since: str | None, limit: int, as_json: bool, verify: bool) -> None:
    """Who asked for what, why, for how long, and who ended it (newest first)."""
    with connect(dsn) as conn:
        if verify:
            row = conn.execute(statements.AUDIT_VERIFY).fetchone()
            assert row is not None
            checked, bad_id, problem = row
            if bad_id is not None or problem:
                click.echo(f"audit chain broken at row {bad_id}: {problem} ({checked} rows read)", err=True)
                raise click.exceptions.Exit(1)
            click.echo(f"audit chain intact: {checked} rows")
            return
        cur = conn.execute(statements.AUDIT, (since_time(since), limit))
        names = [c.name for c in cur.description or []]
        rows = cur.fetchall()
    if as_json:
        click.echo(fmt.to_json([dict(zip(names, r, strict=True)) for r in rows]))
    elif rows:
        click.echo(fmt.table(HEADERS, [(*r[:8], fmt.clip(fmt.printable(r[8] or "-")), r[9]) for r in rows]))
    else:
        click.echo("No audit events.")


COMMANDS = [audit]
