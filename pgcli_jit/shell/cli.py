"""The ``pgcli-jit`` console script: pgcli's own command line plus ``--jit`` and ``--demo``.

pgcli has no plugin system, but its ``cli()`` builds the shell from the
module-level name ``PGCli`` at call time.  So the entry point (never an
import) points that name at :class:`~pgcli_jit.shell.jitshell.JitShell` and runs
pgcli's own ``cli`` callback with every pgcli option untouched.
"""

from __future__ import annotations

import copy
import gc
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from pgcli_jit import __version__
from pgcli_jit.core.durations import parse_duration
from pgcli_jit.core.errors import JitError

if TYPE_CHECKING:
    from pgcli_jit.session.config import Config

JIT_OPTIONS = [
    click.Option(["--jit", "jit_profile"], metavar="PROFILE",
                 help="Request credentials from PROFILE before connecting, and connect as them."),
    click.Option(["--jit-ttl"], metavar="DUR", help="Lease length for --jit (90s, 15m, 1h30m)."),
    click.Option(["--jit-reason"], metavar="TEXT", default="", help="Why you need access (audited)."),
    click.Option(["--demo"], is_flag=True,
                 help="Start a throwaway PostgreSQL with demo data and profiles, and connect via --jit."),
]


def build_command() -> click.Command:
    from pgcli import main as pgmain

    base: click.Command = pgmain.cli
    return click.Command(
        name="pgcli-jit", params=[*map(_own_help, base.params), *JIT_OPTIONS], callback=_callback,
        help=(base.help or "") + "\n\npgcli-jit adds \\jit commands and --jit PROFILE.",
        context_settings=base.context_settings,
    )


def _own_help(param: click.Parameter) -> click.Parameter:
    """pgcli's ``-v`` says "Version of pgcli."; ours prints both versions, so say that.
    A copy: pgcli's own command object stays as pgcli made it."""
    if param.name != "version" or not isinstance(param, click.Option):
        return param
    ours = copy.copy(param)
    ours.help = "Print the versions of pgcli-jit and pgcli, and exit."
    return ours


def _callback(**kwargs: Any) -> None:
    profile = kwargs.pop("jit_profile")
    ttl_text, reason = kwargs.pop("jit_ttl"), kwargs.pop("jit_reason")
    _warn_unused_jit_options(profile, ttl_text, reason)
    if kwargs.get("version"):
        click.echo(f"pgcli-jit {__version__}")  # pgcli then prints its own version and exits
    if kwargs.pop("demo"):
        from pgcli_jit.devtools import demo

        demo.run(kwargs, run_pgcli)
        return
    run_pgcli(kwargs, profile, _ttl(ttl_text), reason)


def _warn_unused_jit_options(profile: str | None, ttl_text: str | None, reason: str) -> None:
    """``--jit-reason`` and ``--jit-ttl`` shape the ``--jit`` request only: a reason typed
    for the audit log and then silently dropped is worse than one line saying so."""
    given = [name for name, value in (("--jit-ttl", ttl_text), ("--jit-reason", reason)) if value]
    if given and not profile:
        click.secho(f"{' and '.join(given)} ignored: {'they apply' if len(given) > 1 else 'it applies'} "
                    "only with --jit PROFILE (in the shell: \\jit request PROFILE --ttl DUR --reason TEXT)",
                    err=True, fg="yellow")


def run_pgcli(kwargs: dict[str, Any], profile: str | None, ttl: float | None = None,
              reason: str = "") -> None:
    """pgcli's cli() with the JIT shell in place of PGCli; restored afterwards."""
    from pgcli import main as pgmain

    from pgcli_jit.shell.jitshell import JitShell, Startup

    if profile:
        config, asks_defaults = _apply_profile_defaults(kwargs, profile)
        JitShell.jit_startup = Startup(profile, ttl, reason, config, asks_defaults)
    original = pgmain.PGCli
    pgmain.PGCli = JitShell
    _exit_on_hangup()
    try:
        pgmain.cli.callback(**kwargs)
    finally:
        pgmain.PGCli = original
        JitShell.jit_startup = None


def _exit_on_hangup() -> None:
    """A closed terminal or a ``kill`` unwinds normally, so the lease is revoked on the way out."""
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))


def _apply_profile_defaults(kwargs: dict[str, Any], name: str) -> tuple[Config, bool]:
    """The profile's host/port/dbname, unless given on the command line (which wins).
    Returns the config read, so the shell does not read and validate it a second time, and
    whether the profile will be asked of libpq's defaults: a name the file does not define,
    with no server named anywhere."""
    from pgcli_jit.session.config import load_config

    try:
        config = load_config()
        profile = config.requestable(name)
    except JitError as exc:
        raise click.ClickException(str(exc)) from None
    if name not in config.profiles and not _connection_given(kwargs):
        return config, not _ask_the_config_server(kwargs, config, name)
    ctx = click.get_current_context(silent=True)

    def from_cli(param: str) -> bool:
        return ctx is not None and ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE

    if profile.host and not from_cli("host"):
        kwargs["host"] = profile.host
    if profile.port and not from_cli("port"):
        kwargs["port"] = profile.port
    if profile.dbname and not (from_cli("dbname") or from_cli("dbname_opt")):
        kwargs["dbname"], kwargs["dbname_opt"] = profile.dbname, None
    return config, False


#: pgcli's parameters that say where, or as whom, to connect (``-h``, ``-p``, ``-U``/``-u``,
#: ``-d``, ``DBNAME``, ``USERNAME``, ``-D``); click fills some from PGHOST, PGPORT, PGUSER,
#: PGDATABASE and DSN, which name a server just as well
CONNECTION_PARAMS = ("host", "port", "username_opt", "username", "dbname_opt", "dbname", "dsn")
#: libpq's own variables that name a server without passing through pgcli's options
CONNECTION_ENV = ("PGSERVICE", "PGHOSTADDR")


def _connection_given(kwargs: dict[str, Any]) -> bool:
    """Whether anything names a server: pgcli's defaults (port 5432) do not."""
    ctx = click.get_current_context(silent=True)
    named = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    given = [k for k in CONNECTION_PARAMS if ctx is not None and ctx.get_parameter_source(k) in named]
    return any(kwargs.get(k) for k in given) or any(os.environ.get(v) for v in CONNECTION_ENV)


def _ask_the_config_server(kwargs: dict[str, Any], config: Config, name: str) -> bool:
    """A profile the file does not define, and no server named: ask the one the file's
    profiles all point at (libpq's defaults, a local socket as the OS user, are rarely where
    the user's profiles live), and say so in one line.  False when there is no such server."""
    server = config.shared_server()
    if server is None:
        return False
    kwargs.update(host=server.get("host"), port=server.get("port"), dbname=server.get("dbname"),
                  dbname_opt=None)
    if server.get("user"):
        kwargs.update(username=server["user"], username_opt=None)
    if not kwargs.get("less_chatty"):
        click.echo(f"Profile {name} is not in {config.path}: asking the server of its profiles, "
                   f"{_describe(server)}.", err=True)
    return True


def _describe(server: dict[str, str]) -> str:
    """``demo_user@db:5432/demo``, with what the profiles leave to libpq left out."""
    who = f"{server['user']}@" if server.get("user") else ""
    port = f":{server['port']}" if server.get("port") else ""
    db = f"/{server['dbname']}" if server.get("dbname") else ""
    return f"{who}{server.get('host') or 'local socket'}{port}{db}"


def _ttl(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--jit-ttl") from None


def main() -> None:
    from pgcli_jit.shell.procsafety import harden_process

    harden_process()  # before any credential exists: no core dumps, not ptrace-able
    command = build_command()
    # pgcli's modules (prompt_toolkit, pygments, psycopg ...) live as long as the process;
    # frozen, the cyclic collector no longer walks all of them in every full collection (as
    # our modules load, and at exit): ~35 ms of a ~210 ms `-c` run (docs/performance.md)
    gc.freeze()
    command(prog_name="pgcli-jit")
