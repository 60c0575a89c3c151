"""Test-only instrumentation, loaded by pgcli-jit processes the tests start (via PYTHONPATH).

To prove that no password reaches a file, a log or the history, the tests
must know the passwords: this records every password the postgres backend
mints into the file named by $PGCLI_JIT_TEST_SECRETS, which the tests then
search for everywhere else.  Nothing in the package knows about this file.

With $PGCLI_JIT_TEST_RDS_ADMIN (a file holding a superuser conninfo), the
aws-rds-iam backend's tokens, signed for real by boto3 with fake credentials,
are also *accepted*: :class:`IamDatabase` plays the part of RDS a test cluster
lacks.  The fault tests use the same class in their own process.
"""

from __future__ import annotations

import os
from typing import Any


class IamDatabase:
    """What RDS does with an IAM token, on a plain PostgreSQL cluster: each token the client
    signs becomes the database user's password, so the cluster accepts the last one signed.

    The token reaches the server only as a SCRAM verifier computed here by libpq
    (``PQencryptPasswordConn``): the server logs every statement, and a token in SQL text
    would be a leak of the test's own making.  ``allow = False`` is IAM saying no: the user's
    password is removed, so the database refuses every token, as RDS does when the policy
    lacks ``rds-db:connect``.  ``signed`` keeps every token, for the tests to search for.
    """

    def __init__(self, admin_conninfo: str, record: str | None = None) -> None:
        self.admin = admin_conninfo
        self.record = record
        self.allow = True
        self.signed: list[str] = []

    def client(self, real: Any) -> Any:
        """boto3's RDS client as the backend sees it; every token it signs is accepted."""
        return _AcceptingClient(real, self)

    def accept(self, user: str, token: str) -> None:
        self.signed.append(token)
        if self.record:
            with open(self.record, "a", encoding="utf-8") as fh:
                fh.write(token + "\n")
        if not self.allow:
            self.refuse(user)
            return
        self._set_password(user, token)

    def refuse(self, user: str) -> None:
        """IAM denies: no token logs in as ``user`` any more (open sessions stay, as on RDS)."""
        self._set_password(user, None)

    def _set_password(self, user: str, token: str | None) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin, autocommit=True, connect_timeout=10) as conn:
            if token is None:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(user)))
                return
            verifier = bytes(conn.pgconn.encrypt_password(token.encode(), b"", b"scram-sha-256"))
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(verifier.decode())))


class _AcceptingClient:
    def __init__(self, real: Any, iam: IamDatabase) -> None:
        self.real, self.iam = real, iam

    def generate_db_auth_token(self, **kwargs: Any) -> str:
        token: str = self.real.generate_db_auth_token(**kwargs)
        self.iam.accept(kwargs["DBUsername"], token)
        return token


_path = os.environ.get("PGCLI_JIT_TEST_SECRETS")
if _path:
    from pgcli_jit.backends.postgres import scram

    _mint = scram.new_password

    def _recorded() -> str:
        password = _mint()
        with open(_path, "a", encoding="utf-8") as fh:
            fh.write(password + "\n")
        return password

    scram.new_password = _recorded

    # every backend: each lease's password as it is built (vault, command, http hand them in)
    from pgcli_jit.core import lease as _lease

    _init = _lease.Lease.__init__

    def _recorded_lease(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        _init(self, *args, **kwargs)
        password = self.credentials.password
        if password:
            with open(_path, "a", encoding="utf-8") as fh:
                fh.write(password + "\n")

    _lease.Lease.__init__ = _recorded_lease  # type: ignore[method-assign]

_rds_admin = os.environ.get("PGCLI_JIT_TEST_RDS_ADMIN")
if _rds_admin:
    # aws-rds-iam: the backend's own boto3 client signs; the cluster is told to accept it
    from pgcli_jit.backends import rds as _rds

    with open(_rds_admin, encoding="utf-8") as _fh:
        _iam = IamDatabase(_fh.read().strip(), record=_path)

    _rds_init = _rds.RdsIamBackend.__init__

    def _accepting_init(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        _rds_init(self, *args, **kwargs)
        factory = self.client_factory
        self.client_factory = lambda profile: _iam.client(factory(profile))

    _rds.RdsIamBackend.__init__ = _accepting_init  # type: ignore[method-assign]
