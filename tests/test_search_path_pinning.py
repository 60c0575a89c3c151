"""A function planted in a schema on someone else's search_path never runs as them.

A login that may CREATE in a schema others have on their path (``public`` on a cluster that
began before PostgreSQL 15) plants functions that are closer type matches than the built-in
ones the package calls: ``pg_advisory_xact_lock(integer)`` (setup locks with an int4),
``format(text, regrole)`` (setup's grant blocks) and ``make_interval(secs text)`` (a NULL
TTL). Each records who ran it.  Setup, the admin CLI, the reaper, the notifier's and the
broker's connections all pin their search_path, so none of them is ever called.

The database here is the suite's cluster's own ``shadow``: what is planted stays there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgcli_jit import server
from pgcli_jit.admin.connect import open_conn
from pgcli_jit.admin.reaper import one_pass
from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.devtools.cluster import Cluster
from tests.conftest import REQUESTER, make_login
from tests.test_postgres_backend import make_backend

pytestmark = pytest.mark.security

Conn = psycopg.Connection[tuple[Any, ...]]
DB = "shadow"
PLANTER = "planter"
ADMIN = Path(sys.executable).with_name("pgcli-jit-admin")

PLANTED = """
CREATE TABLE public.caught (what text, who text);
GRANT INSERT ON public.caught TO PUBLIC;
CREATE FUNCTION public.pg_advisory_xact_lock(k integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.caught VALUES ('pg_advisory_xact_lock', current_user);
    PERFORM pg_catalog.pg_advisory_xact_lock(k::bigint);
END $$;
CREATE FUNCTION public.format(f text, r regrole) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.caught VALUES ('format', current_user);
    RETURN pg_catalog.format(f, r);
END $$;
CREATE FUNCTION public.make_interval(secs text) RETURNS interval LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.caught VALUES ('make_interval', current_user);
    RETURN pg_catalog.make_interval(secs => secs::float8);
END $$;
CREATE FUNCTION public.lower(t text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.caught VALUES ('lower', current_user);
    RETURN pg_catalog.lower(t);
END $$;
CREATE FUNCTION public.text_eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.caught VALUES ('=', current_user);
    RETURN pg_catalog.texteq(a, b);
END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_eq);
CREATE FUNCTION public.regtype_ne(a regtype, b regtype) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.caught VALUES ('<>', current_user);
    RETURN a::oid OPERATOR(pg_catalog.<>) b::oid;
END $$;
CREATE OPERATOR public.<> (LEFTARG = regtype, RIGHTARG = regtype, FUNCTION = public.regtype_ne);
CREATE FUNCTION public.text_check(t pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.caught VALUES ('text', current_user);
    RETURN true;
END $$;
CREATE DOMAIN public.text AS pg_catalog.text CHECK (public.text_check(VALUE));
GRANT EXECUTE ON FUNCTION public.pg_advisory_xact_lock(integer), public.format(text, regrole),
    public.make_interval(text), public.lower(text), public.text_eq(text, text),
    public.regtype_ne(regtype, regtype), public.text_check(pg_catalog.text) TO PUBLIC;
"""


@pytest.fixture(scope="module")
def shadow(cluster: Cluster) -> Iterator[Cluster]:
    """``shadow`` with the jit schema, a profile, and the planter's functions in ``public``."""
    make_login(cluster, PLANTER, member_of="jit_requester")
    cluster.execute(f"CREATE DATABASE {DB}")
    try:
        with cluster.connect(DB) as conn:
            server.apply(conn)
            conn.execute(f"GRANT CREATE ON SCHEMA public TO {PLANTER}")
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'shadow_read'").fetchone() is None:
                conn.execute("CREATE ROLE shadow_read NOLOGIN")
            conn.execute("GRANT shadow_read TO jit_owner WITH ADMIN OPTION")
            conn.execute("SELECT jit.profile_set('shadow', ARRAY['shadow_read'], make_interval(secs => 60),"
                         " make_interval(secs => 600), 'jit_requester', false, '', '')")
        with psycopg.connect(cluster.conninfo(DB, user=PLANTER), autocommit=True) as planter:
            planter.execute(PLANTED.encode())
        yield cluster
    finally:
        with cluster.connect() as conn:
            conn.execute(f"DROP DATABASE {DB} WITH (FORCE)")


def caught(cluster: Cluster) -> list[tuple[str, str]]:
    with cluster.connect(DB) as conn:
        rows = conn.execute("SELECT what, who FROM public.caught ORDER BY 1, 2").fetchall()
        conn.execute("DELETE FROM public.caught")
    return [(str(a), str(b)) for a, b in rows]


def test_the_planted_functions_are_live_on_a_connection_that_does_not_pin(shadow: Cluster) -> None:
    """The control: the attack works wherever the search_path is the default one."""
    with shadow.connect(DB) as conn:
        conn.execute("SELECT make_interval(secs => NULL)")
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('x'))")
    su = shadow.superuser
    assert caught(shadow) == [("make_interval", su), ("pg_advisory_xact_lock", su)]


def test_setup_runs_none_of_them(shadow: Cluster) -> None:
    with shadow.connect(DB) as conn:
        server.apply(conn)  # the functions files again: their grant blocks call format(%s, regrole)
    assert caught(shadow) == []


def test_the_printed_setup_script_runs_none_of_them(shadow: Cluster, tmp_path: Path) -> None:
    psql = shutil.which("psql", path=f"{shadow.bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    if psql is None:
        pytest.skip("no psql next to this PostgreSQL's server binaries")
    script = tmp_path / "setup.sql"
    script.write_text(server.script(0), encoding="utf-8")
    env = {**os.environ, "PGPASSWORD": shadow.superpassword}
    done = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), shadow.conninfo(DB)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert caught(shadow) == []


def test_the_admin_cli_runs_none_of_them(shadow: Cluster) -> None:
    """``profile set`` with options left out sends NULL TTLs (``make_interval(secs => NULL)``)."""
    dsn = f"host={shadow.host} port={shadow.port} dbname={DB} user={shadow.superuser}"
    env = {**os.environ, "PGPASSWORD": shadow.superpassword}
    done = subprocess.run([str(ADMIN), "profile", "set", "shadow", "--description", "pinned", "--dsn", dsn],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert caught(shadow) == []


def test_a_requester_asking_without_a_ttl_and_the_reaper_run_none_of_them(shadow: Cluster) -> None:
    backend = make_backend(shadow, "shadow", dbname=DB)
    lease = backend.request(LeaseRequest(ttl=None, reason="pinned", requester=REQUESTER))
    try:
        backend.renew(lease, None)
    finally:
        backend.revoke(lease)
    with open_conn(shadow.conninfo(DB)) as conn:
        one_pass(conn)
    assert caught(shadow) == []


def test_the_permission_denied_lookup_runs_none_of_them_whatever_the_callers_path(shadow: Cluster) -> None:
    """``jit.profiles_granting`` resolves the object's name with the caller's search_path (as
    the failed statement did), so it runs with that path; everything it calls or compares
    names pg_catalog, even for a caller who put ``public`` before ``pg_catalog``."""
    with psycopg.connect(shadow.conninfo(DB, user=REQUESTER), autocommit=True) as alice:
        alice.execute("SET search_path = public, pg_catalog")
        alice.execute("SELECT lower('X') = 'x', 'y'::text")  # the control: planted, live on this path
        assert sorted(caught(shadow)) == [("=", REQUESTER), ("lower", REQUESTER), ("text", REQUESTER)]
        alice.execute("SELECT * FROM jit.profiles_granting('SELECT', 'Table', 'caught')").fetchall()
        alice.execute("SELECT * FROM jit.profiles_granting('USAGE', 'SCHEMA', 'public')").fetchall()
        alice.execute("SELECT * FROM jit.profiles_granting('SELECT', 'table', 'caught', 'what')").fetchall()
    assert caught(shadow) == []


def refresh_completions(refresher: Any, shadow: Cluster) -> Any:
    """pgcli's completion refresh as the session runs it (its background thread's body),
    as the requester, on the database where the operator is planted."""
    from pgcli.pgexecute import PGExecute
    from pgspecial.main import PGSpecial

    executor = PGExecute(DB, REQUESTER, None, shadow.host, str(shadow.port))
    done: list[Any] = []
    try:
        refresher._bg_refresh(executor, PGSpecial(), done.append, None, {})
    finally:
        executor.conn.close()
    assert len(done) == 1
    return done[0]


def test_pgcli_completion_refresh_runs_none_of_them(shadow: Cluster) -> None:
    """pgcli refreshes completions by itself (after connecting, after every switch to a lease)
    with ``prorettype::regtype != 'trigger'::regtype``: pgcli's own refresher calls the
    planted operator as the user; the shell's refresher pins its connection and still lists
    by the user's search path."""
    from pgcli.completion_refresher import CompletionRefresher

    from pgcli_jit.shell.jitshell import SafeCompletionRefresher

    refresh_completions(CompletionRefresher(), shadow)  # the control
    assert ("<>", REQUESTER) in caught(shadow)
    completer = refresh_completions(SafeCompletionRefresher(), shadow)
    assert caught(shadow) == []
    assert "public" in completer.search_path and "caught" in completer.dbmetadata["tables"]["public"]
