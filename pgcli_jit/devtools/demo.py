"""``pgcli-jit --demo``: the whole product on a throwaway cluster, torn down on exit.

It does what an operator and a user would: starts a scram-sha-256 cluster with a
little data, installs the ``jit`` schema (``pgcli-jit-admin setup``), creates grant
roles scoped to a schema and three server profiles (``change`` waits for approval), a
requester login, a second requester who approves and an operator login, whose passwords
sit in a pgpass file of the demo's own, runs the reaper in the background, prints the
commands that open the approver's shell and the operator's view in another terminal, and
opens pgcli-jit with ``--jit read``: the session starts as a temporary role.

Nothing is written to the user's own pgcli files: pgcli's config, history and log
go to the demo's directory.  The client audit log is kept after the demo ends.
"""

from __future__ import annotations

import os
import secrets
import shlex
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pgcli_jit import server
from pgcli_jit.admin import reaper
from pgcli_jit.admin.connect import Conn, open_conn
from pgcli_jit.backends.postgres.scram import scram_verifier
from pgcli_jit.devtools.cluster import Cluster, start_cluster
from pgcli_jit.server import statements

DB = "demo"
REQUESTER = "demo_user"
#: a second requester who approves (in demo_leads) and is on call (demo_oncall), and an
#: operator (in jit_admin)
APPROVER = "demo_lead"
OPERATOR = "demo_ops"
BANNER = """\
pgcli-jit demo: throwaway PostgreSQL on 127.0.0.1:{port}, removed when you quit.
You logged in as {requester}, a login that may only ask, and are now a temporary
role from the server profile `read` (read-only, 5 minutes). Try:
  \\jit status        select * from orders;        \\jit profiles
  \\jit request write --ttl 15m --reason "INC-123 hotfix"
  update orders set status = 'refunded' where id = 3;
  \\jit renew         \\jit revoke         \\q
Approvals: \\jit request change --reason "INC-9 refund" waits for {approver}.
In another terminal, {approver}'s own session (\\jit pending, \\jit approve ID):
  {approver_command}
and the operator's view of what waits (also: leases, audit, notify):
  {operator_command}
Config: {config}
Client audit log (kept after the demo): {audit}
"""

#: the approver's config: the same profiles, asked as demo_lead
APPROVER_CONFIG = "config-lead.toml"

#: the shell's start: pgcli's keyword arguments, the ``--jit`` profile, a TTL, a reason
RunPgcli = Callable[[dict[str, Any], str | None, float | None, str], None]


def prepare(cluster: Cluster, home: Path) -> dict[str, str]:
    """Data, the jit schema, grant roles, profiles and the requester; returns the env to run in.

    The config and the pgpass file go in ``home``, the user's own directory: the cluster's
    directory belongs to the server's user when run as root, and a config file in a
    directory another user owns is refused (``permissions``), as ssh would."""
    with cluster.connect() as conn:
        conn.execute(statements.create_database(DB))
    cluster.execute(statements.DEMO_DATA, dbname=DB)
    with cluster.connect(DB) as conn:
        server.apply(conn)
        conn.execute(statements.DEMO_GRANTS.encode())
        password = secrets.token_urlsafe(18)
        conn.execute(statements.create_requester(REQUESTER, scram_verifier(conn, password)))
        lines = [f"{cluster.host}:{cluster.port}:*:{REQUESTER}:{password}\n"]
        conn.execute(statements.DEMO_APPROVALS.encode())
        people = ((APPROVER, ("jit_requester", "demo_leads", "demo_oncall")), (OPERATOR, ("jit_admin",)))
        for name, roles in people:
            secret = secrets.token_urlsafe(18)
            conn.execute(statements.create_login(name, scram_verifier(conn, secret), roles))
            lines.append(f"{cluster.host}:{cluster.port}:*:{name}:{secret}\n")
    passfile = home / "pgpass"
    passfile.write_text("".join(lines), encoding="utf-8")
    passfile.chmod(0o600)
    for name, user, audit in (("config.toml", REQUESTER, "audit.jsonl"),
                              (APPROVER_CONFIG, APPROVER, "audit-lead.jsonl")):
        config = home / name
        config.write_text(demo_config(cluster, home / audit, user), encoding="utf-8")
        config.chmod(0o600)
    config = home / "config.toml"
    return {"PGCLI_JIT_CONFIG": str(config), "PGPASSFILE": str(passfile),
            "XDG_CONFIG_HOME": str(home / "xdg-config")}


def demo_config(cluster: Cluster, audit: Path, user: str = REQUESTER) -> str:
    where = (f'backend = "postgres"\nhost = "{cluster.host}"\nport = {cluster.port}\n'
             f'dbname = "{DB}"\nuser = "{user}"\n')
    return (
        f'default_profile = "read"\naudit_log = "{audit}"\n\n'
        f'[profiles.read]\n{where}renew = "prompt"\nrenew_before = "1m"\n\n'
        f'[profiles.write]\n{where}renew = "auto"\nrenew_before = "2m"\n\n'
        f'[profiles.change]\n{where}renew = "never"\n'
    )


def second_sessions(cluster: Cluster, home: Path) -> tuple[str, str]:
    """The two commands that open the approver's shell and the operator's view, as typed in
    another terminal while the demo runs (their passwords are in the demo's pgpass file).
    One word group per line, continued with a backslash: pasted whole into a shell they run
    as one command, and at 80 columns no path is wrapped in the middle."""
    passfile = shlex.quote(str(home / "pgpass"))
    approver = CONTINUED.join([f"PGCLI_JIT_CONFIG={shlex.quote(str(home / APPROVER_CONFIG))}",
                               f"PGPASSFILE={passfile}",
                               f"pgcli-jit -h {cluster.host} -p {cluster.port} -U {APPROVER} {DB}"])
    dsn = f"host={cluster.host} port={cluster.port} dbname={DB} user={OPERATOR}"
    operator = CONTINUED.join([f"PGPASSFILE={passfile}", "pgcli-jit-admin pending --all", f"--dsn '{dsn}'"])
    return approver, operator


#: a shell line continuation, indented under the banner's two-space commands
CONTINUED = " \\\n    "


def start_reaper(cluster: Cluster) -> threading.Event:
    """The operator's reaper, in a thread: access ends on the server's clock even if the shell hangs."""
    stop = threading.Event()

    def open_reaper() -> Conn:
        return open_conn(cluster.conninfo(DB), reaper.APPLICATION_NAME)

    thread = threading.Thread(target=reaper.watch, args=(open_reaper, lambda _o: None, stop),
                              kwargs={"on_error": lambda _t: None}, daemon=True, name="reaper")
    thread.start()
    return stop


def run(pgcli_kwargs: dict[str, Any], run_pgcli: RunPgcli) -> None:
    """A throwaway cluster with profiles and a reaper, then ``run_pgcli`` (the shell's own
    start, handed in by the shell's ``--demo``: a developer tool never reaches up into it)."""
    click.echo("Starting a throwaway PostgreSQL cluster...", err=True)
    home = Path(tempfile.mkdtemp(prefix="pgcli-jit-demo-"))
    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    stop = None
    try:
        os.environ.update(prepare(cluster, home))
        stop = start_reaper(cluster)
        approver_command, operator_command = second_sessions(cluster, home)
        click.echo(BANNER.format(port=cluster.port, requester=REQUESTER, approver=APPROVER,
                                 approver_command=approver_command, operator_command=operator_command,
                                 config=os.environ["PGCLI_JIT_CONFIG"], audit=home / "audit.jsonl"), err=True)
        pgcli_kwargs.update(host=None, port=None, dbname=None, dbname_opt=None, username=None,
                            username_opt=None)
        run_pgcli(pgcli_kwargs, "read", None, "pgcli-jit demo")
    finally:
        if stop is not None:
            stop.set()
        cluster.stop()
        # the audit logs stay; a dead cluster's logins go
        for spent in ("pgpass", "config.toml", APPROVER_CONFIG):
            (home / spent).unlink(missing_ok=True)
        click.echo(f"Demo cluster removed. Client audit log: {home / 'audit.jsonl'}", err=True)
