"""A database of an admin test module's own on the suite's cluster, and the operator's CLI.

Each module that drives ``pgcli-jit-admin`` against a real server keeps its audit chain,
reaper passes and requests apart from the rest of the suite in a database of its own: the
``jit`` schema applied, the module's grant roles and logins made (their passwords in the
pgpass file, as an operator's own would be), its profiles added by its operator through the
CLI, as an operator adds them.
"""

from __future__ import annotations

from collections.abc import Sequence

from click.testing import CliRunner, Result

from pgcli_jit import server
from pgcli_jit.admin import main
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import make_login


def run(*args: str) -> Result:
    """``pgcli-jit-admin ARGS`` in this process, its output and exit code captured."""
    return CliRunner().invoke(main, list(args))


def dsn(cluster: Cluster, user: str, *, db: str) -> str:
    """A conninfo without a password: libpq finds it in the pgpass file."""
    return f"host={cluster.host} port={cluster.port} dbname={db} user={user}"


def admin_database(cluster: Cluster, db: str, *, roles_sql: str, operator: str,
                   logins: Sequence[tuple[str, str]],
                   profiles: Sequence[Sequence[str]]) -> str:
    """Database ``db`` with the schema, then ``roles_sql`` run in it as the superuser (grant
    roles, tables), each ``(login, member_of)`` made, and each profile's ``profile add``
    arguments run as ``operator``; the operator's conninfo."""
    cluster.execute(f"CREATE DATABASE {db}")
    with cluster.connect(db) as conn:
        server.apply(conn)
        conn.execute(roles_sql.encode())
    for login, member_of in logins:
        make_login(cluster, login, member_of=member_of)
    operating = dsn(cluster, operator, db=db)
    for args in profiles:
        added = run("profile", "add", *args, "--dsn", operating)
        assert added.exit_code == 0, added.output
    return operating


def end_all(cluster: Cluster, db: str) -> None:
    """Every lease of ``db`` revoked and dropped, every waiting request withdrawn and every
    break-glass use forgotten: each test of a module starts afresh."""
    with cluster.connect(db) as conn:
        live = conn.execute("SELECT rolname FROM jit_data.leases WHERE dropped_at IS NULL").fetchall()
        for (name,) in live:
            conn.execute("SELECT jit.revoke(%s)", (name,))
            conn.execute("SELECT jit.finish(%s)", (name,))
        conn.execute("UPDATE jit_data.requests SET status = 'cancelled', verifier = NULL"
                     " WHERE status IN ('pending', 'approved')")
        conn.execute("UPDATE jit_data.leases SET break_glass = false")
