"""``pgcli-jit-admin pending|approve|deny``: deciding requests outside the shell.

The server decides who may: a member of the request's approvers role who is not the
requester (``jit._decidable``).  These commands pass the id and the words along and
print the server's refusal as one line.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import psycopg

from pgcli_jit.admin import fmt
from pgcli_jit.admin.connect import Conn, connect, dsn_option
from pgcli_jit.backends.postgres.backend import decidable
from pgcli_jit.core.errors import JitError
from pgcli_jit.server import statements
from pgcli_jit.session import approvals as approval

NOT_APPROVER = ("your login may not decide requests: it is in none of jit_requester, jit_admin or "
                "a profile's approvers role")
NOT_OPERATOR = ("pending --all lists every request: it needs a login in jit_admin",
                "as a superuser: GRANT jit_admin TO <your login>")


def _answer(conn: Conn, query: str, *params: Any) -> dict[str, Any]:
    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        raise JitError(NOT_APPROVER) from None
    return dict(row[0]) if row and row[0] else {}


@click.command()
@dsn_option
@click.option("--all", "every", is_flag=True,
              help="Every request waiting for a decision, whoever may decide it (a login in jit_admin).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pending(dsn: str, every: bool, as_json: bool) -> None:
    """Requests you may approve or deny now (never your own); --all: every one waiting."""
    with connect(dsn) as conn:
        try:
            rows = conn.execute(statements.PENDING_ALL if every else statements.PENDING).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            raise JitError(*(NOT_OPERATOR if every else (NOT_APPROVER,))) from None
    if as_json:
        keys = ("id", "requester", "profile", "ttl_seconds", "reason", "created_at", "expires_at",
                "approvals", "needed", *(("approvers",) if every else ()))
        click.echo(fmt.to_json([dict(zip(keys, row, strict=True)) for row in rows]))
    elif not rows:
        click.echo("No requests waiting." if every else "No requests waiting for you.")
    else:
        lines = approval.pending_rows([decidable(row[:9]) for row in rows], datetime.now(UTC))
        headers = [h.upper() for h in approval.PENDING_HEADERS]
        if every:   # who decides each: the role a request waits on
            lines = [(*line, fmt.printable(row[9])) for line, row in zip(lines, rows, strict=True)]
            headers.append("APPROVERS")
        click.echo(fmt.table(headers, lines))


@click.command()
@click.argument("request_id", type=int)
@click.option("--comment", default="", metavar="TEXT", help="Recorded in the audit trail.")
@dsn_option
def approve(request_id: int, comment: str, dsn: str) -> None:
    """Approve request REQUEST_ID."""
    with connect(dsn) as conn:
        answer = _answer(conn, statements.APPROVE, request_id, comment)
    click.echo(approval.decided_line(answer, "approve"))


@click.command()
@click.argument("request_id", type=int)
@click.option("--reason", required=True, metavar="TEXT", help="Why: the requester reads it.")
@dsn_option
def deny(request_id: int, reason: str, dsn: str) -> None:
    """Deny request REQUEST_ID."""
    with connect(dsn) as conn:
        answer = _answer(conn, statements.DENY, request_id, reason)
    click.echo(approval.decided_line(answer, "deny"))


COMMANDS = [pending, approve, deny]
