"""``pgcli-jit-admin apply FILE``: make a database's server profiles equal to a file.

The file is the whole truth: a profile it declares is added or changed, one it leaves out is
removed.  Every change goes through ``jit.profile_set``/``jit.profile_drop`` (and
``jit.profile_approval_rules`` for auto-approval and break-glass), so the server runs the same
checks and writes the same audit rows as ``profile add|set|rm``; nothing is called for a
profile (or the part of one) that already matches, so a second apply changes (and audits) nothing.
All databases named by ``--dsn`` are changed in transactions that commit together at the
end: a refusal anywhere rolls every one of them back.
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from pathlib import Path

import click
import psycopg

from pgcli_jit.admin import fmt
from pgcli_jit.admin.connect import Conn, connect, error_text
from pgcli_jit.admin.profile_spec import Profile, from_document, on_server, role_keys, shown
from pgcli_jit.core.errors import UsageError
from pgcli_jit.server import statements

#: what the server raises for a profile it refuses: bad input, exit 2 like the file's own
_REFUSALS = (psycopg.errors.RaiseException, psycopg.errors.InvalidParameterValue)


class Plan:
    """What one database needs to match the file."""

    def __init__(self, have: dict[str, Profile], want: dict[str, Profile]) -> None:
        self.added = {n: p for n, p in sorted(want.items()) if n not in have}
        self.changed = {n: (have[n], p) for n, p in sorted(want.items()) if n in have and have[n] != p}
        self.removed = sorted(set(have) - set(want))

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def lines(self) -> list[str]:
        """The diff as the operator reads it: + added, ~ changed (old → new), - removed."""
        out = [f"+ {n}: " + "; ".join(f"{k} {v}" for k, v in _fields(p)) for n, p in self.added.items()]
        for name, (old, new) in self.changed.items():
            out.append(f"~ {name}: " + "; ".join(f"{k} {a} → {b}" for k, a, b in old.changes(new)))
        out += [f"- {n}" for n in self.removed]
        return [fmt.printable(line) for line in out]

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.changed)} changed, "
                f"{len(self.removed)} removed")

    def run(self, conn: Conn) -> None:
        """Only what differs is called, so each call writes its audit row for a real change."""
        default_rules = Profile(grants=()).rules()
        for name, profile in self.added.items():
            conn.execute(statements.PROFILE_SET, _set_args(name, profile))
            if profile.rules() != default_rules:
                conn.execute(statements.PROFILE_RULES, _rules_args(name, profile))
        for name, (old, new) in self.changed.items():
            if _set_args(name, old) != _set_args(name, new):
                conn.execute(statements.PROFILE_SET, _set_args(name, new))
            if old.rules() != new.rules():
                conn.execute(statements.PROFILE_RULES, _rules_args(name, new))
        for name in self.removed:
            conn.execute(statements.PROFILE_DROP, (name,))


def _fields(p: Profile) -> list[tuple[str, str]]:
    return [(k, shown(v)) for k, v in p.to_doc().items()]


def _set_args(name: str, p: Profile) -> tuple[object, ...]:
    return (name, list(p.grants), p.ttl, p.max_ttl, p.requesters, p.reason_required, p.owner,
            p.description, p.approvers, p.approvals, p.approval_timeout, p.max_live, p.log_statements)


def _rules_args(name: str, p: Profile) -> tuple[object, ...]:
    """auto_approve '' clears the role (NULL would keep the server's)."""
    return (name, p.auto_approve, p.break_glass, p.break_glass_max_ttl, p.break_glass_per_day)


def read_file(path: Path) -> dict[str, Profile]:
    """TOML, or JSON (what ``profile list --json`` printed) for a name ending ``.json``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    return from_document(doc, str(path))


def conninfo(dsn: str) -> str:
    """A bare word is a libpq service name (``pg_service.conf``)."""
    if dsn and "=" not in dsn and "://" not in dsn:
        return f"service={dsn}"
    return dsn


def check_roles(conn: Conn, want: dict[str, Profile], where: str) -> None:
    """A role the file names that this database lacks: refused before anything changes."""
    keys = role_keys(want)
    missing = [r for (r,) in conn.execute(statements.MISSING_ROLES, (list(keys),)).fetchall()]
    if missing:
        name, key = keys[missing[0]]
        raise UsageError(f"profile {name}: {key}: role {missing[0]} does not exist{where}")


@click.command("apply")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dsn", "dsns", multiple=True, metavar="CONNINFO",
              help="A database to converge: libpq conninfo, URI or service name, no password "
                   "(repeatable; none: libpq's PG* defaults).")
@click.option("--dry-run", is_flag=True, help="Print the diff; change nothing.")
def apply(file: Path, dsns: tuple[str, ...], dry_run: bool) -> None:
    """Make the server profiles equal to FILE (TOML; JSON as profile list --json prints)."""
    want = read_file(file)
    targets = [conninfo(d) for d in dsns] or [""]
    with contextlib.ExitStack() as stack:
        plans: list[tuple[Conn, Plan]] = []
        for dsn in targets:
            conn = stack.enter_context(connect(dsn))
            stack.enter_context(conn.transaction())
            where = f" in {dsn}" if len(targets) > 1 else ""
            check_roles(conn, want, where)
            plans.append((conn, Plan(on_server(conn), want)))
        for dsn, (_, plan) in zip(targets, plans, strict=True):
            _show(dsn if len(targets) > 1 else "", plan)
        if not any(plan for _, plan in plans):
            return
        if dry_run:
            click.echo("dry run: nothing applied")
            return
        for dsn, (conn, plan) in zip(targets, plans, strict=True):
            _run(conn, plan, dsn if len(targets) > 1 else "")
    click.echo("applied")


def _show(dsn: str, plan: Plan) -> None:
    head = f"{fmt.printable(dsn)}: " if dsn else ""
    click.echo(f"{head}{plan.summary()}" if plan else f"{head}no changes")
    for line in plan.lines():
        click.echo(f"  {line}")


def _run(conn: Conn, plan: Plan, dsn: str) -> None:
    """A refusal is bad input: one line, exit 2, every transaction rolled back."""
    try:
        plan.run(conn)
    except _REFUSALS as exc:
        where = f" in {dsn}" if dsn else ""
        raise UsageError(f"{error_text(exc)}{where}; nothing applied") from None


COMMANDS = [apply]
