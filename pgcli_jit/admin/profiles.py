"""``pgcli-jit-admin profile add|set|list|rm``: what may be requested, declared server-side.

Every check (grant roles jit_owner may hand out, no role that reaches the OS or every
password verifier, requesters and owner roles that exist) runs in ``jit.profile_set``
inside the database, whoever calls it: this command only collects the options.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from pgcli_jit.admin import fmt, profile_spec
from pgcli_jit.admin.connect import Conn, connect, dsn_option
from pgcli_jit.core.durations import format_duration, option_duration
from pgcli_jit.core.errors import JitError
from pgcli_jit.server import statements

HEADERS = ("PROFILE", "GRANTS", "TTL", "MAX TTL", "MAX LIVE", "REQUESTERS", "REASON", "OWNER",
           "APPROVAL", "LOGGED", "DESCRIPTION")


def profile_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``add`` and ``set`` share: each left out keeps its value (or the default)."""
    for decorator in reversed([
        click.option("--grant", "grants", multiple=True, metavar="ROLE",
                     help="A role the lease is granted (repeatable); jit_owner needs ADMIN OPTION on it."),
        click.option("--ttl", metavar="DUR", help="Default lease length (default 15m)."),
        click.option("--max-ttl", metavar="DUR",
                     help="Hard limit from issue, renewals included (default 1h)."),
        click.option("--max-live", type=click.IntRange(1, 1000), metavar="N",
                     help="Live leases one requester may hold at once (default 5; a replacing "
                          "\\jit request needs 2)."),
        click.option("--requesters", metavar="ROLE", help="Whose members may ask (default jit_requester)."),
        click.option("--reason-required/--no-reason-required", default=None,
                     help="Refuse requests without --reason."),
        click.option("--owner", metavar="ROLE",
                     help="Who receives objects a lease created when it ends ('' for nobody: they "
                          "are dropped with the lease's role)."),
        click.option("--description", metavar="TEXT", help="Shown by \\jit profiles."),
        click.option("--approvers", metavar="ROLE",
                     help="Requests wait for approval by members of ROLE (never the requester); "
                          "'' for none."),
        click.option("--approvals", type=click.IntRange(1, 10), metavar="N",
                     help="Distinct approvals a request needs (default 1)."),
        click.option("--approval-timeout", metavar="DUR",
                     help="An undecided request expires after this (default 1h)."),
        click.option("--log-statements", metavar="MODE",
                     help="What the server logs of each lease, set on its role where it cannot "
                          "unset it: all (default), mod, ddl, none, or pgaudit:CLASSES "
                          "(e.g. pgaudit:read,write; pgaudit must be loaded).  mod and ddl log "
                          "top-level statements only: a write inside a DO block, a function or a "
                          "writable CTE (WITH x AS (UPDATE ...) SELECT) leaves no line; use all "
                          "or pgaudit:write,ddl where writes must be seen."),
        dsn_option,
    ]):
        fn = decorator(fn)
    return fn


def rules_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """On-call auto-approval and break-glass (``jit.profile_approval_rules``): kept apart from
    the options ``jit.profile_set`` takes; each left out keeps its value."""
    for decorator in reversed([
        click.option("--auto-approve", metavar="ROLE",
                     help="A request from a member of ROLE (checked at request time) is granted "
                          "at once, audited as auto-approved; '' for none."),
        click.option("--break-glass/--no-break-glass", default=None,
                     help="Allow \\jit request NAME --break-glass --reason TEXT: granted at once, "
                          "audited, approvers notified (default: not allowed)."),
        click.option("--break-glass-max-ttl", metavar="DUR",
                     help="Longest a break-glass lease lives, renewals included (default 1h)."),
        click.option("--break-glass-per-day", type=click.IntRange(1, 100), metavar="N",
                     help="Break-glass uses one requester may make in 24 hours (default 1)."),
    ]):
        fn = decorator(fn)
    return fn


RULES = profile_spec.RULES


def _set_rules(conn: Conn, name: str, rules: dict[str, Any]) -> None:
    if all(rules[k] is None for k in RULES):
        return
    conn.execute(statements.PROFILE_RULES, (
        name, rules["auto_approve"], rules["break_glass"],
        option_duration(rules["break_glass_max_ttl"], "--break-glass-max-ttl"),
        rules["break_glass_per_day"]))


def describe_rules(conn: Conn, name: str) -> str:
    """``auto-approve: oncall; break-glass: at most 1h, 1 per requester per day``, or ''."""
    row = conn.execute(statements.PROFILE_RULES_OF, (name,)).fetchone()
    if row is None or (not row[0] and not row[1]):
        return ""
    auto, glass, max_ttl, per_day = row
    parts = [f"auto-approve: members of {auto}"] if auto else []
    if glass:
        parts.append(f"break-glass: allowed, at most {format_duration(float(max_ttl))}, "
                     f"{per_day} per requester per day")
    return "; ".join(parts)


#: log_statement modes that log what a statement is at the top level, not what it does
MISSES_WRITES = ("mod", "ddl")
MISSES_WRITES_WARNING = (
    "warning: log_statements {mode} logs top-level statements only: a lease's writes inside a DO"
    " block, a function or a writable CTE leave no line in its session log; use all, or"
    " pgaudit:write,ddl where pgaudit is loaded")


def _set(conn: Conn, name: str, grants: tuple[str, ...], ttl: float | None, max_ttl: float | None,
         requesters: str | None, reason_required: bool | None, owner: str | None,
         description: str | None, approvers: str | None = None, approvals: int | None = None,
         approval_timeout: float | None = None, max_live: int | None = None,
         log_statements: str | None = None) -> None:
    if log_statements in MISSES_WRITES:
        click.echo(MISSES_WRITES_WARNING.format(mode=log_statements), err=True)
    conn.execute(statements.PROFILE_SET, (name, list(grants) or None, ttl, max_ttl, requesters,
                                          reason_required, owner, description, approvers, approvals,
                                          approval_timeout, max_live, log_statements))


def _parsed(options: dict[str, Any]) -> dict[str, Any]:
    """Durations checked before any connection: bad input costs no round trip."""
    return {**options, "ttl": option_duration(options["ttl"], "--ttl"),
            "max_ttl": option_duration(options["max_ttl"], "--max-ttl"),
            "approval_timeout": option_duration(options["approval_timeout"], "--approval-timeout")}


def _exists(conn: Conn, name: str) -> bool:
    return conn.execute(statements.PROFILE_EXISTS, (name,)).fetchone() is not None


@click.group()
def profile() -> None:
    """Declare what may be requested: grant roles, TTLs, who may ask."""


@profile.command("add")
@click.argument("name")
@profile_options
@rules_options
def add(name: str, dsn: str, **options: Any) -> None:
    """Create profile NAME (at least one --grant)."""
    _save(name, dsn, options, exists=False)


@profile.command("set")
@click.argument("name")
@profile_options
@rules_options
def set_(name: str, dsn: str, **options: Any) -> None:
    """Change profile NAME: only the options given change (leases already issued keep theirs)."""
    _save(name, dsn, options, exists=True)


def _save(name: str, dsn: str, options: dict[str, Any], *, exists: bool) -> None:
    """``add`` refuses a profile that exists, ``set`` one that does not: a typo never creates one."""
    rules = {k: options.pop(k) for k in RULES}
    option_duration(rules["break_glass_max_ttl"], "--break-glass-max-ttl")  # before connecting
    options = _parsed(options)
    with connect(dsn) as conn:
        if _exists(conn, name) != exists:
            verb = "set" if not exists else "add"
            raise JitError(f"profile {name} exists" if not exists else f"no profile {name}",
                           f"use: pgcli-jit-admin profile {verb} {name} ...")
        with conn.transaction():  # a refused rule (an unfit auto-approve role) changes nothing
            _set(conn, name, **options)
            _set_rules(conn, name, rules)
        click.echo(describe(conn, name))
        if said := describe_rules(conn, name):
            click.echo(said)


@profile.command("rm")
@click.argument("name")
@dsn_option
def rm(name: str, dsn: str) -> None:
    """Remove profile NAME; leases already issued run until they end."""
    with connect(dsn) as conn:
        row = conn.execute(statements.PROFILE_DROP, (name,)).fetchone()
    if not row or not row[0]:
        raise JitError(f"no profile {name}")
    click.echo(f"removed profile {name}")


@profile.command("list")
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(dsn: str, as_json: bool) -> None:
    """Every profile and who may request it (``--json``: the shape ``apply`` reads)."""
    with connect(dsn) as conn:
        if as_json:
            click.echo(json.dumps(profile_spec.document(profile_spec.on_server(conn)), indent=2))
            return
        rows = rows_of(conn)
    empty = "No profiles: pgcli-jit-admin profile add NAME --grant ROLE"
    click.echo(fmt.table(HEADERS, rows) if rows else empty)


def rows_of(conn: Conn, name: str | None = None) -> list[tuple[object, ...]]:
    cur = conn.execute(statements.PROFILE, (name,)) if name else conn.execute(statements.PROFILES)
    rows = cur.fetchall()
    return [(n, g, format_duration(float(t)), format_duration(float(m)), live, r,
             "required" if need else "optional", o, approval(a, k, float(w)), log, d)
            for n, g, t, m, live, r, need, o, a, k, w, d, log in rows]


def approval(approvers: str | None, needed: int, timeout: float) -> str:
    """``2 of jit_leads within 1h``, or ``none``: who must agree before a role exists."""
    if not approvers:
        return "none"
    return f"{needed} of {approvers} within {format_duration(timeout)}"


def describe(conn: Conn, name: str) -> str:
    return fmt.table(HEADERS, rows_of(conn, name))


COMMANDS = [profile]
