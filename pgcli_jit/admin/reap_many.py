"""One reaper for several databases: ``reap --watch --dsn A --dsn B`` and ``--all-databases``.

Each database gets its own thread running :func:`reaper.watch` on its own connection, so one
database that is down (or slow, or refusing the login) never holds up the others: its thread
says so and retries with the same growing pause as a single reaper.  Every line names its
database (``[app@db1:5432]``), so a log of several reads on its own.

``--all-databases`` turns each ``--dsn`` into a cluster to search: every database the login may
connect to that has the ``jit`` schema is watched, and the cluster is searched again every
minute, so a database set up later is picked up and one dropped is let go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcli_jit.admin import reaper
from pgcli_jit.admin.connect import Conn, check_dsn, error_text
from pgcli_jit.admin.connect import open_conn as open_pinned
from pgcli_jit.core.sanitize import printable
from pgcli_jit.server import statements

#: how often ``--all-databases`` looks again for databases that gained or lost the schema
RESCAN = 60.0

Say = Callable[[str, bool], None]   # (line, to stderr)
#: how an outcome is worded (the single reaper's words), given where its line goes
Report = Callable[[reaper.Outcome, Callable[..., None]], None]


def label(dsn: str) -> str:
    """What a line calls the database: ``dbname@host:port``, or the libpq service's name
    (a conninfo never holds a password here: ``check_dsn`` refused it)."""
    params = conninfo_to_dict(dsn)
    if "service" in params:
        name = f"service={params['service']}"
        return printable(f"{params['dbname']}@{name}" if "dbname" in params else name)
    where = str(params.get("host") or "")
    if params.get("port"):
        where += f":{params['port']}"
    db = str(params.get("dbname") or params.get("user") or "(default)")
    return printable(f"{db}@{where}" if where else db)


def in_database(dsn: str, dbname: str) -> str:
    """The same conninfo (host, login, service...) aimed at another database of the cluster."""
    return make_conninfo(dsn, dbname=dbname)


def open_conn(dsn: str) -> Conn:
    return open_pinned(dsn, reaper.APPLICATION_NAME)


def databases_with_schema(dsn: str, unreached: list[str] | None = None) -> list[str]:
    """Every database of ``dsn``'s cluster this login may connect to that has the jit schema;
    one it cannot reach now is added to ``unreached`` (a watcher it has keeps running) and
    left for the next search."""
    with open_conn(dsn) as conn:
        names = [str(n) for (n,) in conn.execute(statements.CONNECTABLE_DATABASES)]
    found = []
    for name in names:
        try:
            with open_conn(in_database(dsn, name)) as conn:
                row = conn.execute(statements.HAS_JIT_SCHEMA).fetchone()
        except psycopg.Error:
            if unreached is not None:
                unreached.append(name)
            continue
        if row is not None and row[0]:
            found.append(name)
    return found


@dataclass
class Watchers:
    """The running threads, one per database conninfo, each with its own stop event."""

    say: Say
    report: Report
    threads: dict[str, tuple[threading.Thread, threading.Event]] = field(default_factory=dict)

    def start(self, dsn: str) -> None:
        if dsn in self.threads:
            return
        name = label(dsn)
        stop = threading.Event()

        def line(text: str, err: bool = False) -> None:
            self.say(f"[{name}] {text}", err)

        thread = threading.Thread(
            target=reaper.watch, name=f"reaper {name}",
            args=(lambda: open_conn(dsn), lambda outcome: self.report(outcome, line), stop),
            kwargs={"on_error": lambda text: line(text, True),
                    "on_info": lambda text: line(text, True)},
            daemon=True)
        self.threads[dsn] = (thread, stop)
        thread.start()

    def keep_only(self, dsns: set[str]) -> None:
        """Let go of the databases that no longer have the schema (or were dropped)."""
        for dsn in set(self.threads) - dsns:
            _thread, stop = self.threads.pop(dsn)
            stop.set()
            self.say(f"[{label(dsn)}] reaper: this database no longer has the jit schema; "
                     f"not watched", True)

    def stop_all(self) -> None:
        for _thread, stop in self.threads.values():
            stop.set()
        for thread, _stop in self.threads.values():
            thread.join(15)


def watch_many(dsns: list[str], all_databases: bool, say: Say, report: Report,
               stop: threading.Event) -> None:
    """Run one watcher per database until ``stop``; with ``all_databases`` each dsn is a
    cluster, searched now and every RESCAN seconds."""
    for dsn in dsns:
        check_dsn(dsn)
    watchers = Watchers(say, report)
    if not all_databases:
        for dsn in dsns:
            watchers.start(dsn)
        while not stop.wait(1.0):
            pass
        watchers.stop_all()
        return
    while not stop.is_set():
        wanted: set[str] = set()
        searched_all = True
        for cluster in dsns:
            unreached: list[str] = []
            try:
                found = databases_with_schema(cluster, unreached)
            except psycopg.Error as exc:
                searched_all = False
                say(f"[{label(cluster)}] reaper: cannot list the cluster's databases: "
                    f"{error_text(exc)}; trying again in {RESCAN:.0f}s", True)
                wanted |= {d for d in watchers.threads if _same_cluster(d, cluster)}
                continue
            if not found:
                say(f"[{label(cluster)}] reaper: no database of this cluster has the jit "
                    f"schema (or this login may not connect to it)", True)
            wanted |= {in_database(cluster, name) for name in unreached}
            for name in found:
                target = in_database(cluster, name)
                wanted.add(target)
                if target not in watchers.threads:
                    say(f"[{label(target)}] reaper: watching this database", True)
                    watchers.start(target)
        if searched_all:
            watchers.keep_only(wanted)
        stop.wait(RESCAN)
    watchers.stop_all()


def _same_cluster(dsn: str, cluster: str) -> bool:
    a, b = conninfo_to_dict(dsn), conninfo_to_dict(cluster)
    a.pop("dbname", None)
    b.pop("dbname", None)
    return a == b
