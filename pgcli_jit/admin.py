"""``pgcli-jit-admin``: the operator's side of the ``postgres`` backend.

``setup`` prints (or, with ``--apply``, runs) the SQL for a least-privilege
broker role and the roles it may grant; ``leases`` shows who holds access
right now; ``reap`` ends the JIT roles a crashed client never revoked.  All
role SQL lives in :mod:`pgcli_jit.backends.pg_roles`, shared with the backend.

No password is ever a command-line argument (it would land in shell history
and ``ps``): libpq finds it in ``PGPASSWORD``/``~/.pgpass``/``PGPASSFILE``/a
service file, a profile names an env var (``admin_password_env``), and the
broker's new password comes from ``--password-env`` or a prompt.  Every
failure is one line on stderr and a non-zero exit (1; 2 for bad usage), never
a traceback and never ``repr`` of a psycopg exception, which can hold a password.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgcli_jit import admin_format as fmt
from pgcli_jit.admin_format import error_text
from pgcli_jit.admin_setup import (
    DEFAULT_BROKER,
    DEFAULT_GRANTS,
    apply_setup,
    check_role_name,
    new_broker_password,
    parse_grants,
    password_hint,
    setup_script,
)
from pgcli_jit.backends import pg_roles
from pgcli_jit.config import load_config
from pgcli_jit.errors import JitError, UsageError

LIBPQ_SOURCES = "PGPASSWORD, ~/.pgpass, PGPASSFILE or a service file"
F = TypeVar("F", bound=Callable[..., Any])


class UsageProblem(click.ClickException):
    """Options that do not fit together: one line, exit 2 like click's own usage errors."""

    exit_code = 2


class _Group(click.Group):
    """Turns every expected failure into one ``Error: ...`` line (click prints it on stderr)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise UsageProblem(str(exc)) from None
        except JitError as exc:
            raise click.ClickException(str(exc)) from None
        except psycopg.Error as exc:
            raise click.ClickException(error_text(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate the postgres backend of pgcli-jit: set up the broker, list and reap JIT roles."""


# -- connections -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where to connect, and the password if one comes from the environment (never shown)."""

    dsn: str
    password: str | None = field(default=None, repr=False)
    reassign_to: str | None = None
    label: str = "--dsn"


def check_dsn(dsn: str, label: str) -> None:
    """Refuse a conninfo that cannot parse or that carries a password (shell history, ``ps``)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise JitError(f"{label} is not a libpq conninfo or URI",
                       'e.g. "host=db dbname=app user=jit_broker"') from None
    if "password" in params:
        raise JitError(f"{label} holds a password; passwords never go on the command line",
                       f"use {LIBPQ_SOURCES}")


@contextlib.contextmanager
def connect(target: Target) -> Iterator[pg_roles.Conn]:
    """One autocommit connection (``drop_role`` manages its own transactions)."""
    check_dsn(target.dsn, target.label)
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 10,
                              "application_name": "pgcli-jit-admin"}
    if target.password:
        kwargs["password"] = target.password
    try:
        conn = psycopg.connect(target.dsn, **kwargs)
    except psycopg.Error as exc:
        text = error_text(exc)
        hint = f"passwords come from {LIBPQ_SOURCES}" if "password" in text else ""
        raise JitError(f"cannot connect ({target.label}): {text}", hint) from None
    with conn:
        yield conn


def profile_target(name: str) -> Target:
    """The broker connection a postgres profile names: its admin_dsn and admin_password_env."""
    profile = load_config().profile(name)
    if profile.backend != "postgres":
        raise JitError(f"profile {name!r} uses the {profile.backend} backend, not postgres",
                       "leases and reap work on postgres profiles; or pass --dsn")
    env_name = profile.options.get("admin_password_env")
    password = os.environ.get(str(env_name)) if env_name else None
    if env_name and not password:
        raise JitError(f"${env_name} (admin_password_env of profile {name}) is not set")
    reassign = profile.options.get("reassign_to")
    return Target(str(profile.options["admin_dsn"]), password, str(reassign) if reassign else None,
                  f"admin_dsn of profile {name}")


def resolve_target(dsn: str | None, profile_name: str | None) -> Target:
    if (dsn is None) == (profile_name is None):
        raise UsageProblem("give exactly one of --dsn CONNINFO and --profile NAME")
    return profile_target(profile_name) if profile_name is not None else Target(str(dsn))


def connection_options(fn: F) -> F:
    fn = click.option("--profile", "profile_name", metavar="NAME",
                      help="Use this postgres profile's admin_dsn and admin_password_env.")(fn)
    return click.option("--dsn", metavar="CONNINFO",
                        help=f"libpq conninfo or URI, without a password ({LIBPQ_SOURCES}).")(fn)


# -- leases and reap -----------------------------------------------------------


@main.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def leases(dsn: str | None, profile_name: str | None, as_json: bool) -> None:
    """List JIT roles: who asked, why, until when, and who is still connected."""
    with connect(resolve_target(dsn, profile_name)) as conn:
        roles, now = pg_roles.jit_roles(conn), pg_roles.server_now(conn)
    click.echo(fmt.leases_json(roles, now) if as_json else fmt.leases_table(roles, now))


@main.command()
@connection_options
@click.option("--reassign-to", metavar="ROLE", help="Who gets what the roles own (default: the broker).")
@click.option("--dry-run", is_flag=True, help="Only list what would be reaped.")
@click.option("-v", "--verbose", is_flag=True, help="Say so when there is nothing to do.")
def reap(dsn: str | None, profile_name: str | None, reassign_to: str | None, dry_run: bool,
         verbose: bool) -> None:
    """End expired JIT roles (server clock) and NOLOGIN ones left by a failed revoke.

    VALID UNTIL only stops new logins: a crashed client's open sessions keep
    running until this terminates them.  Quiet when there is nothing to do, so
    it can run from cron; exits 1 if any role could not be reaped.
    """
    target = resolve_target(dsn, profile_name)
    with connect(target) as conn:
        now = pg_roles.server_now(conn)
        doomed = [r for r in pg_roles.jit_roles(conn) if r.expired(now) or not r.can_login]
        if not doomed:
            if verbose:
                click.echo("nothing to reap")
            return
        if dry_run:
            report_dry_run(doomed, now)
            return
        failed = sum(not reap_one(conn, role, now, reassign_to or target.reassign_to)
                     for role in doomed)
    summarize(len(doomed), failed)


def report_dry_run(doomed: Sequence[pg_roles.JitRole], now: datetime) -> None:
    for role in doomed:
        click.echo(f"would reap {fmt.printable(role.name)} ({fmt.why_reaped(role, now)}; "
                   f"{fmt.sessions_text(role.sessions, 'open')})")
    click.echo(f"dry run: would reap {len(doomed)} JIT role(s)")


def reap_one(conn: pg_roles.Conn, role: pg_roles.JitRole, now: datetime,
             reassign_to: str | None) -> bool:
    """Drop one role; a failure is reported on stderr and does not stop the others."""
    name = fmt.printable(role.name)
    try:
        terminated = pg_roles.drop_role(conn, role.name, reassign_to)
    except psycopg.errors.UndefinedObject:
        click.echo(f"reaped {name} (already gone)")
        return True
    except psycopg.Error as exc:
        click.echo(f"cannot reap {name}: {error_text(exc)}", err=True)
        return False
    click.echo(f"reaped {name} ({fmt.why_reaped(role, now)}; "
               f"{fmt.sessions_text(terminated, 'terminated')})")
    return True


def summarize(total: int, failed: int) -> None:
    if not failed:
        click.echo(f"reaped {total} JIT role(s)")
        return
    click.echo(f"reaped {total - failed} of {total} JIT role(s); {failed} failed", err=True)
    raise click.exceptions.Exit(1)


# -- setup ---------------------------------------------------------------------


@main.command()
@click.option("--broker", default=DEFAULT_BROKER, show_default=True, help="The broker role's name.")
@click.option("--grant", "grant_specs", multiple=True, metavar="ROLE=MEMBER_OF[,MEMBER_OF...]",
              help="A role the broker may grant (repeatable; default jit_read and jit_write).")
@click.option("--apply", is_flag=True, help="Run the SQL (needs --dsn) instead of printing it.")
@click.option("--dsn", metavar="CONNINFO", help="A superuser connection, for --apply.")
@click.option("--password-env", metavar="VAR", help="Env var holding the broker's new password.")
def setup(broker: str, grant_specs: tuple[str, ...], apply: bool, dsn: str | None,
          password_env: str | None) -> None:
    """Print (or --apply) the SQL for a least-privilege broker role and its grant roles."""
    check_role_name(broker, "--broker")
    grants = parse_grants(grant_specs) if grant_specs else DEFAULT_GRANTS
    if not apply:
        if dsn is not None or password_env:
            raise UsageProblem("--dsn and --password-env take effect only with --apply")
        click.echo(setup_script(broker, grants))
        return
    if dsn is None:
        raise UsageProblem("--apply needs --dsn SUPERUSER_CONNINFO")
    password = new_broker_password(broker, password_env)
    with connect(Target(dsn)) as conn:
        click.echo("\n".join(apply_setup(conn, broker, grants, password)))
    if password is None:
        click.echo("\n".join(password_hint(broker)))
