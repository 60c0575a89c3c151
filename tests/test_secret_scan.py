"""No secret anywhere: one full session per backend, then every place a secret could land is searched.

Each test drives the real ``pgcli-jit`` in a pty (pgcli's debug logging on) through
a request, a renewal, a replacement lease, ``\\o`` output, an SQL error and a
refused ``\\jit`` command, a revoke and exit, against a server that logs every
statement.  ``tests/instrument/sitecustomize.py`` records every password the run
was issued (each Lease as it is built); the test adds the tokens it handed out.
Then every file under the test's directory (HOME, the XDG dirs, TMPDIR, pgcli's
history and log, the audit log, the ``\\o`` file), the server's log (and OpenBao's),
and the argv and environment of every child process seen while the session ran
(a /proc poller; for ``command`` also a wrapper each broker call goes through)
are searched for each of them.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pgcli_jit.devtools.cluster import Cluster
from tests.brokers import http_broker
from tests.conftest import BROKER_PW_ENV, RDS_USER
from tests.shell_fixtures import Session
from tests.terminal import Terminal

pytestmark = [pytest.mark.pty, pytest.mark.security]
ROOT = Path(__file__).parent.parent
BROKER = ROOT / "tests" / "brokers" / "pg_broker.py"
HTTP_TOKEN = "tok-scan-bearer-7Hq2pLm9Xv4RtY8wZk3N"
HTTP_TOKEN_ENV = "PGCLI_JIT_SCAN_HTTP_TOKEN"
#: Every child of the shell, recorded by the poller: (argv, environ) as the kernel shows them
Children = dict[tuple[int, str], tuple[bytes, bytes]]


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid]
        found += kids
        frontier += kids
    return found


@contextmanager
def watching_children(root: int) -> Iterator[Children]:
    """Poll /proc every 10 ms for the shell's descendants; record each one's argv and env."""
    seen: Children = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for pid in _descendants(root):
                try:
                    start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes()
                    env = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                key = (pid, start)
                if len(argv) + len(env) >= sum(map(len, seen.get(key, (b"", b"")))):
                    seen[key] = (argv, env)  # keep the fullest view (after exec, not before)
            stop.wait(0.01)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


def debug_logging(home: Path) -> Path:
    """pgcli's own config with log_level = DEBUG; its log file is next to it."""
    conf = home / "config" / "pgcli"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "config").write_text("[main]\nlog_level = DEBUG\n", encoding="utf-8")
    return conf / "log"


def quiet(term: Terminal, line: str) -> None:
    """A line that prints nothing (the shell reads typed lines in order: the next one waits)."""
    term.child.send(line + "\r")
    term.wait_for(lambda screen: line in screen)
    term.pump(0.5)


def drive(term: Terminal, profile: str, out: Path, renew: str = r"\jit renew --ttl 3m") -> None:
    """The session: startup lease, \\o, a query, a renewal, a replacement, errors, revoke, exit."""
    term.wait_for(r"app>")
    quiet(term, f"\\o {out}")
    term.child.send("select current_user as whoami, 'scan-marker' as m;\r")
    term.wait_for(lambda _: out.exists() and "scan-marker" in out.read_text())
    quiet(term, r"\o")
    term.run(renew, r"Renewed|Rotated|Nothing to renew")
    term.run(f'\\jit request {profile} --reason "INC-42 second look"', r"Connected as")
    term.run("select 1/0;", r"division by zero")
    term.run(r"\jit renew --ttl 999999d", r"too long|limit")
    term.run("select current_user;", r"SELECT 1")
    term.run(r"\jit revoke", r"Revoked|Closed")  # Closed: a token that cannot be withdrawn
    term.child.send("\\q\r")
    term.close()


def scan(session: Session, secrets: list[str], children: Children, logs: dict[str, str],
         out: Path, pgcli_log: Path) -> dict[str, int]:
    """Search everything; fail naming the place of any hit.  Returns what was searched."""
    secrets = sorted({s for s in secrets if len(s) >= 8})
    assert len(secrets) >= 2, f"too few secrets recorded: {len(secrets)}"
    root = session.home.parent
    files = [p for p in root.rglob("*") if p.is_file() and p != session.secrets_file]
    names = {p.name for p in files}
    assert {"history", "audit.jsonl", "log"} <= names and out in files, sorted(names)
    assert "DEBUG" in pgcli_log.read_text(errors="replace")
    assert "scan-marker" in out.read_text()
    hits = []
    for path in files:
        data = path.read_bytes()
        hits += [f"{path}" for s in secrets if s.encode() in data]
    for name, text in logs.items():
        hits += [name for s in secrets if s in text]
    for (pid, _), (argv, env) in children.items():
        hits += [f"child {pid} {argv[:80]!r}" for s in secrets if s.encode() in argv + env]
    assert hits == [], f"secrets found in: {hits}"
    return {"secrets": len(secrets), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "children": len(children), "log_bytes": sum(len(t) for t in logs.values())}


def report(backend: str, figures: dict[str, int]) -> None:
    print(f"\nsecret scan {backend}: {json.dumps(figures)}", file=sys.stderr)


def test_postgres_session_leaves_no_secret(session: Session) -> None:
    session.profile("read", ttl="2m", max_ttl="3m")
    pgcli_log, out = debug_logging(session.home), session.home / "out.txt"
    tmp = session.home.parent / "tmp"
    tmp.mkdir()
    term = session.open("--jit", "read", TMPDIR=str(tmp))
    with watching_children(term.child.pid) as children:
        drive(term, "read", out, renew=r"\jit renew --ttl 3m")
        term2 = session.open("--jit", "read", TMPDIR=str(tmp))  # a rotation past max_ttl
        term2.wait_for(r"app>")
        term2.run(r"\jit renew --ttl 3m", r"Rotated|Renewed|Nothing")
        term2.run(r"\jit renew --ttl 3m", r"Rotated|Renewed|Nothing")
        term2.child.send("\\q\r")
        term2.close()
    figures = scan(session, session.minted(), children, {"server log": session.cluster.server_log()},
                   out, pgcli_log)
    report("postgres", figures)


def test_vault_session_leaves_no_secret(session: Session, vault: object) -> None:
    from tests.openbao import Vault

    assert isinstance(vault, Vault)
    c = vault.cluster
    session.config.write_text(
        f'audit_log = "{session.audit_log}"\n\n[profiles.v]\nbackend = "vault"\nrole = "ro"\n'
        f'addr = "{vault.server.addr}"\nhost = "{c.host}"\nport = {c.port}\ndbname = "app"\n'
        'ttl = "2m"\nrenew = "never"\n', encoding="utf-8")
    pgcli_log, out = debug_logging(session.home), session.home / "out.txt"
    term = session.open("--jit", "v", VAULT_TOKEN=vault.user_token)
    with watching_children(term.child.pid) as children:
        drive(term, "v", out)
    figures = scan(session, [*session.minted(), vault.user_token], children,
                   {"server log": c.server_log(), "OpenBao log": vault.server.log()}, out, pgcli_log)
    report("vault", figures)


def _wrapper(session: Session) -> tuple[Path, Path]:
    """An executable every broker call goes through: it records its argv and environment
    (as the broker will see them), then execs the real broker."""
    record = session.home.parent / "broker-calls.jsonl"
    wrapper = session.home.parent / "broker-wrapper"
    wrapper.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(record)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps({'argv': sys.argv, 'env': dict(os.environ)}) + '\\n')\n"
        "sys.argv = [*sys.argv[1:], *(['--reason', os.environ['PGCLI_JIT_REASON']]"
        " if 'PGCLI_JIT_REASON' in os.environ and sys.argv[2] == 'request' else [])]\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv])\n", encoding="utf-8")
    wrapper.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return wrapper, record


def test_command_session_leaves_no_secret(session: Session, admin_dsn: str, broker_password: str) -> None:
    wrapper, record = _wrapper(session)
    req = [str(wrapper), str(BROKER), "request", "--profile", "{profile}", "--ttl", "{ttl}",
           "--requester", "{requester}"]
    renew = [str(wrapper), str(BROKER), "renew", "--username", "{username}", "--ttl", "{ttl}"]
    revoke = [str(wrapper), str(BROKER), "revoke", "--username", "{username}"]
    c = session.cluster
    session.config.write_text(
        f'audit_log = "{session.audit_log}"\n\n[profiles.cmd]\nbackend = "command"\n'
        f"command = {json.dumps(req)}\nrenew_command = {json.dumps(renew)}\n"
        f"revoke_command = {json.dumps(revoke)}\npass_env = [\"{BROKER_PW_ENV}\"]\n"
        f'host = "{c.host}"\nport = {c.port}\ndbname = "app"\nttl = "2m"\nrenew = "never"\n'
        f'[profiles.cmd.env]\nPG_BROKER_DSN = "{admin_dsn}"\nPYTHONPATH = "{ROOT}"\n', encoding="utf-8")
    pgcli_log, out = debug_logging(session.home), session.home / "out.txt"
    term = session.open("--jit", "cmd", **{BROKER_PW_ENV: broker_password})
    with watching_children(term.child.pid) as children:
        drive(term, "cmd", out)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert {call["argv"][2] for call in calls} == {"request", "renew", "revoke"}
    assert not any("PGCLI_JIT_TEST_SECRETS" in call["env"] for call in calls)  # only what it is given
    assert children, "the poller saw no broker process"
    figures = scan(session, session.minted(), children, {"server log": c.server_log()}, out, pgcli_log)
    report("command", {**figures, "broker_calls": len(calls)})


def test_http_session_leaves_no_secret(session: Session, admin_dsn: str) -> None:
    c = session.cluster
    with http_broker.running(admin_dsn, HTTP_TOKEN) as broker:
        session.config.write_text(
            f'audit_log = "{session.audit_log}"\n\n[profiles.web]\nbackend = "http"\n'
            f'url = "{broker.url}"\ntoken_env = "{HTTP_TOKEN_ENV}"\nallow_http = true\n'
            f'host = "{c.host}"\nport = {c.port}\ndbname = "app"\nttl = "2m"\nrenew = "never"\n',
            encoding="utf-8")
        pgcli_log, out = debug_logging(session.home), session.home / "out.txt"
        term = session.open("--jit", "web", **{HTTP_TOKEN_ENV: HTTP_TOKEN})
        with watching_children(term.child.pid) as children:
            drive(term, "web", out)
        paths = [path for path, _, _ in broker.requests]
    assert {"/v1/credentials", "/v1/renew", "/v1/revoke"} <= set(paths)
    figures = scan(session, [*session.minted(), HTTP_TOKEN], children, {"server log": c.server_log()},
                   out, pgcli_log)
    report("http", figures)


def test_rds_session_leaves_no_secret(session: Session, tls_cluster: Cluster,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """aws-rds-iam: boto3 signs real tokens offline with fake static AWS credentials (nothing
    reaches AWS); the TLS cluster accepts each one (the instrument makes it the user's password,
    sent as a SCRAM verifier).  Searched for: every token, each token's signature alone, and
    the AWS secret access key."""
    c, root = tls_cluster, session.home.parent
    admin = root / "rds-admin.conninfo"  # the instrument's superuser login (not a searched secret)
    admin.write_text(c.conninfo("app"), encoding="utf-8")
    admin.chmod(0o600)
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)  # only what the test gives: no profile, no session token
    aws_secret = "scan-aws-secret/" + secrets.token_urlsafe(27)
    aws = {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": aws_secret,
           "AWS_CONFIG_FILE": str(root / "aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(root / "aws-credentials"),
           "AWS_EC2_METADATA_DISABLED": "true", "PGCLI_JIT_TEST_RDS_ADMIN": str(admin)}
    session.config.write_text(
        f'audit_log = "{session.audit_log}"\n\n[profiles.rds]\nbackend = "aws-rds-iam"\n'
        f'host = "{c.host}"\nport = {c.port}\ndbname = "app"\nregion = "eu-west-1"\n'
        f'username = "{RDS_USER}"\nttl = "2m"\nrenew = "never"\n', encoding="utf-8")
    pgcli_log, out = debug_logging(session.home), session.home / "out.txt"
    term = session.open("--jit", "rds", **aws)
    with watching_children(term.child.pid) as children:
        drive(term, "rds", out)
    tokens = sorted(set(session.minted()))
    assert len(tokens) >= 2 and all(t.startswith(f"{c.host}:{c.port}/?Action=connect&") for t in tokens)
    signatures = [parse_qs(urlsplit("https://" + t).query)["X-Amz-Signature"][0] for t in tokens]
    log = c.server_log()
    logins = [line for line in log.splitlines() if f"connection authorized: user={RDS_USER}" in line]
    assert len(logins) >= 2 and all("SSL enabled" in line for line in logins), logins
    events = [json.loads(line)["event"] for line in session.audit_log.read_text().splitlines()]
    signed = sum(e in ("request", "renew", "rotate") for e in events)  # a token each
    assert signed >= 3, events
    figures = scan(session, [*tokens, *signatures, aws_secret], children, {"server log": log}, out, pgcli_log)
    report("aws-rds-iam", {**figures, "signed": signed, "distinct_tokens": len(tokens),
                           "logins": len(logins)})
