"""The shell over the vault backend: real pgcli-jit in a pty, a real OpenBao server, a real cluster."""

from __future__ import annotations

import re

import pytest

from tests.openbao import Vault
from tests.shell_fixtures import Session

pytestmark = [pytest.mark.pty, pytest.mark.vault]
VAULT_USER = r"v-[A-Za-z0-9-]+"


def write_vault_config(session: Session, vault: Vault) -> None:
    c = vault.cluster
    session.config.write_text(
        f'audit_log = "{session.audit_log}"\n\n[profiles.v]\nbackend = "vault"\nrole = "ro"\n'
        f'addr = "{vault.server.addr}"\nhost = "{c.host}"\nport = {c.port}\ndbname = "app"\n'
        'ttl = "2m"\nrenew = "never"\n', encoding="utf-8")


def test_vault_session_status_profiles_renew_and_revoke_on_exit(session: Session, vault: Vault) -> None:
    write_vault_config(session, vault)
    term = session.open("--jit", "v", VAULT_TOKEN=vault.user_token)
    term.wait_for(r"app>")
    screen = term.run("select current_user as whoami;", r"SELECT 1")
    user = re.findall(VAULT_USER, screen)[-1]
    term.wait_toolbar(rf"JIT v as {user} [12]:\d\d")

    status = term.run(r"\jit status", r"as of")
    assert re.search(r"backend\s+\|\s+vault", status) and re.search(r"as of\s+\|\s+backend", status)
    assert re.search(r"lease id\s+\|\s+database/c…", status)  # shortened for the table
    assert not re.search(r"hard limit\s+\|\s+unknown", status)  # the role's max_ttl was readable

    profiles = term.run(r"\jit profiles", r"role short")
    assert re.search(r"v: role ro\s+\|\s+1m\s+\|\s+10m", profiles)
    term.run(r"\jit renew --ttl 5m", rf"Renewed {user} until")

    term.child.send("\\q\r")
    term.wait_for(rf"Revoked {user}")
    assert term.close() == 0
    with vault.cluster.connect() as conn:  # Vault's revocation dropped the role
        assert conn.execute("select 1 from pg_roles where rolname = %s", (user,)).fetchone() is None
