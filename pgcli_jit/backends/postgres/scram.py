"""Passwords made on the client, sent to the server only as SCRAM verifiers.

libpq's ``PQencryptPasswordConn`` computes the verifier locally, so the plaintext
never reaches SQL text, the wire or the server log.  A SCRAM verifier does not
depend on the user name, so it can be made before the server picks the role's name.
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg


def new_password() -> str:
    """192 random bits, URL-safe so no libpq quoting is ever needed."""
    return secrets.token_urlsafe(24)


def scram_verifier(conn: psycopg.Connection[Any], password: str, username: str = "") -> str:
    raw = conn.pgconn.encrypt_password(password.encode(), username.encode(), b"scram-sha-256")
    return bytes(raw).decode()
