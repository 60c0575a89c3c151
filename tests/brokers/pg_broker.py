"""A real credential broker for the tests: it mints temporary roles in the test cluster.

Usable two ways: as a program for the ``command`` backend (prints the
credential JSON, exits non-zero with a message on stderr), and as functions
the HTTP test broker calls.  It connects as the least-privilege ``jit_broker``
(DSN in ``$PG_BROKER_DSN``, password in ``$PGCLI_JIT_TEST_BROKER_PW``) and
uses the same role SQL as the postgres backend, so the password reaches the
server only as a SCRAM verifier and ``can_login`` in the contract test opens a
real session.  Renewals print no password: a broker never keeps one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from tests.brokers import roles as pg_roles

DSN_ENV = "PG_BROKER_DSN"
PASSWORD_ENV = "PGCLI_JIT_TEST_BROKER_PW"
GRANTS = ("jit_read",)


class RoleGone(Exception):
    """The role to renew no longer exists or can no longer log in."""


def connect(dsn: str | None = None) -> pg_roles.Conn:
    return psycopg.connect(dsn or os.environ[DSN_ENV], password=os.environ[PASSWORD_ENV],
                           autocommit=True, connect_timeout=5)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def mint(conn: pg_roles.Conn, *, ttl: float, requester: str, reason: str, profile: str) -> dict[str, Any]:
    name = pg_roles.role_name("jit_", requester)
    password = pg_roles.new_password()
    expires = time.time() + ttl
    meta = {"requester": requester, "reason": reason, "profile": profile, "broker": "pg_broker"}
    pg_roles.create_role(conn, name, password, list(GRANTS), expires, meta)
    return {"version": 1, "username": name, "password": password, "expires_at": iso(expires),
            "lease_id": name, "renewable": True}


def renew(conn: pg_roles.Conn, *, username: str, ttl: float) -> dict[str, Any]:
    roles = pg_roles.jit_roles(conn, username)
    if not roles or not roles[0].can_login or roles[0].expired(pg_roles.server_now(conn)):
        raise RoleGone(f"role {username} no longer exists")
    expires = time.time() + ttl
    pg_roles.set_valid_until(conn, username, expires, roles[0].metadata)
    return {"version": 1, "username": username, "ttl": ttl, "lease_id": username, "renewable": True}


def revoke(conn: pg_roles.Conn, *, username: str) -> None:
    if pg_roles.jit_roles(conn, username):
        pg_roles.drop_role(conn, username)


def main(argv: Sequence[str] | None = None) -> int:
    import json

    args = _parser().parse_args(argv)
    try:
        with connect() as conn:
            if args.action == "request":
                out = mint(conn, ttl=args.ttl, requester=args.requester, reason=args.reason,
                           profile=args.profile)
            elif args.action == "renew":
                out = renew(conn, username=args.username, ttl=args.ttl)
            else:
                revoke(conn, username=args.username)
                return 0
    except RoleGone as exc:
        print(f"pg_broker: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(out))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pg_broker")
    parser.add_argument("action", choices=("request", "renew", "revoke"))
    parser.add_argument("--ttl", type=float, default=60.0)
    parser.add_argument("--requester", default="tester")
    parser.add_argument("--reason", default="")
    parser.add_argument("--profile", default="")
    parser.add_argument("--username", default="")
    return parser


if __name__ == "__main__":
    sys.exit(main())
