"""The requester's shell says an operator's revoke reason: ``pgcli-jit-admin revoke --reason``
while the shell is idle, and the line the shell prints names the reason."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from pgcli_jit.admin import main
from tests.conftest import make_login
from tests.shell_fixtures import Session

pytestmark = pytest.mark.pty
JIT_USER = r"jit_[a-z0-9_]+_[a-z0-9]{8,}"


def test_an_operator_revoke_says_the_operators_reason(session: Session) -> None:
    make_login(session.cluster, "rrp_ops", member_of="jit_admin")
    ops = f"host={session.cluster.host} port={session.cluster.port} dbname=app user=rrp_ops"
    session.profile("write", grant=["jit_write"], ttl="5m")
    term = session.open("--jit", "write", "--jit-reason", "INC-11")
    term.wait_for(r"app>")
    screen = term.run("select current_user as whoami;", r"SELECT 1")
    user = re.findall(JIT_USER, screen)[-1]
    done = CliRunner().invoke(main, ["revoke", user, "--reason", "INC-12 offboarding", "--dsn", ops])
    assert done.exit_code == 0, done.output
    term.wait_for(r"JIT access ended on the server: lease \S+ was revoked by an operator: "
                  r"INC-12 offboarding; back to alice\.", timeout=10)
