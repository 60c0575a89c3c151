"""Test-only instrumentation, loaded by pgcli-jit processes the tests start (via PYTHONPATH).

To prove that no password reaches a file, a log or the history, the tests
must know the passwords: this records every password the postgres backend
mints into the file named by $PGCLI_JIT_TEST_SECRETS, which the tests then
search for everywhere else.  Nothing in the package knows about this file.
"""

import os

_path = os.environ.get("PGCLI_JIT_TEST_SECRETS")
if _path:
    from pgcli_jit.backends import scram

    _mint = scram.new_password

    def _recorded() -> str:
        password = _mint()
        with open(_path, "a", encoding="utf-8") as fh:
            fh.write(password + "\n")
        return password

    scram.new_password = _recorded

    # every backend: each lease's password as it is built (vault, command, http hand them in)
    from pgcli_jit import lease as _lease

    _init = _lease.Lease.__init__

    def _recorded_lease(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        _init(self, *args, **kwargs)
        password = self.credentials.password
        if password:
            with open(_path, "a", encoding="utf-8") as fh:
                fh.write(password + "\n")

    _lease.Lease.__init__ = _recorded_lease  # type: ignore[method-assign]
