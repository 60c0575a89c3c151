"""``pgcli-jit-admin revoke LEASE --reason TEXT``: an operator ends someone's lease now.

The server decides and records it (``jit.operator_revoke``: a login in ``jit_admin`` only,
audited with the operator as actor and the operator's reason).  As ``\\jit revoke`` does,
it takes two transactions: NOLOGIN is committed first, then ``jit.finish`` ends the role's
sessions and drops it, so no automatic reconnect slips in between.  The requester's shell
learns of it from the server (``jit.my_leases``) and returns to the requester's own login.
"""

from __future__ import annotations

from typing import Any

import click
import psycopg

from pgcli_jit.admin import fmt
from pgcli_jit.admin.connect import Conn, connect, dsn_option
from pgcli_jit.core.errors import JitError
from pgcli_jit.server import statements

NOT_OPERATOR = ("revoking another's lease needs a login in jit_admin",
                "as a superuser: GRANT jit_admin TO <your login>")


@click.command()
@click.argument("lease")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why: recorded in the audit trail with your login as the actor.")
@dsn_option
def revoke(lease: str, reason: str, dsn: str) -> None:
    r"""End LEASE now (its role's name, as `leases` shows it, or its lease id, as `\jit status`
    and the audit trail's detail show it): it can no longer log in, its sessions end and its
    role is dropped."""
    with connect(dsn) as conn:
        answer = _call(conn, statements.OPERATOR_REVOKE, lease, reason)
        head = _head(answer)
        if answer.get("dropped") is True:
            click.echo(f"{head} had already ended ({_how(answer)}); its role is gone.")
            return
        finished = _call(conn, statements.FINISH, answer["rolname"])
    done = "Revoked" if answer.get("status") == "revoked" else "Finished"
    error = finished.get("drop_error")
    if error:
        click.echo(f"{done} {head}: it can no longer log in, but its role is kept: "
                   f"{fmt.printable(error)}", err=True)
        raise click.exceptions.Exit(1)
    ended = "" if done == "Revoked" else f" (it had ended already: {_how(answer)})"
    click.echo(f"{done} {head}{ended}: it can no longer log in, its sessions are ended and "
               f"its role is dropped.")


def _call(conn: Conn, query: str, *params: Any) -> dict[str, Any]:
    """The server's JSON answer; its refusal (``denied``) as one error line."""
    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        raise JitError(*NOT_OPERATOR) from None
    answer = dict(row[0]) if row and row[0] else {}
    if answer.get("status") == "denied" or "rolname" not in answer:
        raise JitError(fmt.printable(answer.get("error") or "the server refused"),
                       fmt.printable(answer.get("hint") or ""))
    return answer


def _head(answer: dict[str, Any]) -> str:
    """``lease 12 (jit_carol_…, carol's adm-read)``: every name as the server sent it, made printable."""
    name, who, profile = (fmt.printable(answer.get(k)) for k in ("rolname", "requester", "profile"))
    return f"lease {answer.get('lease_id')} ({name}, {who}'s {profile})"


def _how(answer: dict[str, Any]) -> str:
    return fmt.printable(answer.get("end_event") or "ended")


COMMANDS = [revoke]
