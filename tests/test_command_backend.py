"""The command backend, with real programs: a broker that mints real roles, and bad ones."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgcli_jit.backends import command
from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.command import CommandBackend, RunResult
from pgcli_jit.core.errors import BackendError, BackendUnavailable, ConfigError, NotRenewable
from pgcli_jit.core.lease import Lease
from pgcli_jit.devtools.cluster import Cluster
from pgcli_jit.devtools.testing import BackendContract
from pgcli_jit.session.config import parse_profile
from tests.brokers import roles as pg_roles
from tests.conftest import can_login

BROKER_PW_ENV = "PGCLI_JIT_TEST_BROKER_PW"

BROKER = str(Path(__file__).parent / "brokers" / "pg_broker.py")
ROOT = str(Path(__file__).parent.parent)
PY = sys.executable
#: The reason never goes in argv (every local user can read it): this shim hands the
#: broker the reason from the child's own environment, inside the process.
SHIM = ("import os, runpy, sys; sys.argv = [*sys.argv[1:], '--reason', os.environ['PGCLI_JIT_REASON']];"
        " runpy.run_path(sys.argv[0], run_name='__main__')")
REQUEST = [PY, "-c", SHIM, BROKER, "request", "--profile", "{profile}", "--ttl", "{ttl}",
           "--requester", "{requester}"]
RENEW = [PY, BROKER, "renew", "--username", "{username}", "--ttl", "{ttl}"]
REVOKE = [PY, BROKER, "revoke", "--username", "{username}"]
GOOD_JSON = '{"version": 1, "username": "u1", "password": "pw-from-program", "ttl": 60}'


def profile(name: str = "cmd", **options: Any) -> Any:
    if "PG_BROKER_DSN" in options.get("env", {}):
        options.setdefault("pass_env", [BROKER_PW_ENV])  # children get only what they are given
        options["env"] = {**options["env"], "PYTHONPATH": ROOT}  # the broker imports tests.brokers
    return parse_profile(name, {"backend": "command", **options}, Path("config.toml"))


def backend(name: str = "cmd", **options: Any) -> CommandBackend:
    return CommandBackend(profile(name, **options))


def python(code: str) -> list[str]:
    return [PY, "-c", code]


def ask(b: CommandBackend, ttl: float = 60, reason: str = "contract") -> Lease:
    return b.request(LeaseRequest(ttl=ttl, reason=reason, requester="alice"))



@pytest.fixture
def broker_backend(cluster: Cluster, admin_dsn: str) -> CommandBackend:
    return backend(command=REQUEST, renew_command=RENEW, revoke_command=REVOKE,
                   env={"PG_BROKER_DSN": admin_dsn}, max_ttl="10m")


class TestContract(BackendContract):
    @pytest.fixture(autouse=True)
    def _setup(self, cluster: Cluster, admin_dsn: str) -> None:
        self.cluster, self.admin_dsn = cluster, admin_dsn

    def make_backend(self) -> CommandBackend:
        return backend(command=REQUEST, renew_command=RENEW, revoke_command=REVOKE,
                       env={"PG_BROKER_DSN": self.admin_dsn})

    def can_login(self, lease: Lease) -> bool:
        return can_login(self.cluster, lease)


class TestContractWithoutRenewOrRevoke(TestContract):
    """Only a command: renew says NotRenewable, revoke does nothing (so can_login stays True)."""

    @pytest.fixture(autouse=True)
    def _drop_leftovers(self, cluster: Cluster) -> Iterator[None]:
        """Nothing revokes these roles: drop them so other tests see a clean cluster."""
        yield
        with cluster.connect() as conn:
            for role in pg_roles.jit_roles(conn):
                if role.metadata.get("profile") == "cmd-norevoke":
                    pg_roles.drop_role(conn, role.name)

    def make_backend(self) -> CommandBackend:
        return backend("cmd-norevoke", command=REQUEST, env={"PG_BROKER_DSN": self.admin_dsn})

    def can_login(self, lease: Lease) -> bool | None:
        return None

    def test_revoke_ends_access(self) -> None:
        pytest.skip("without revoke_command, revoke does nothing by design")


def test_arguments_are_never_shell_parsed(cluster: Cluster, broker_backend: CommandBackend,
                                          tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    reason = f'INC-1 "quoted" $(touch {marker}); touch {marker} {{ttl}}'
    lease = ask(broker_backend, reason=reason)
    try:
        with cluster.connect() as conn:
            [role] = pg_roles.jit_roles(conn, lease.username)
        assert role.metadata["reason"] == reason  # substituted once: no {ttl} inside a value
        assert role.metadata["profile"] == "cmd"
        assert not marker.exists()
        assert lease.renewable and lease.max_expires_at == pytest.approx(lease.issued_at + 600)
    finally:
        broker_backend.revoke(lease)


def test_renew_moves_valid_until_and_revoke_drops_the_role(
        cluster: Cluster, broker_backend: CommandBackend) -> None:
    lease = ask(broker_backend, ttl=60)
    renewed = broker_backend.renew(lease, 300)
    assert renewed.expires_at == pytest.approx(time.time() + 300, abs=5)
    assert renewed.credentials == lease.credentials and renewed.renewals == 1
    with cluster.connect() as conn:
        [role] = pg_roles.jit_roles(conn, lease.username)
    assert abs(role.valid_until.timestamp() - renewed.expires_at) < 2
    assert can_login(cluster, renewed)
    broker_backend.revoke(renewed)
    assert not can_login(cluster, renewed)


def test_real_expiry_is_seen(cluster: Cluster, broker_backend: CommandBackend) -> None:
    lease = ask(broker_backend, ttl=1)
    try:
        assert can_login(cluster, lease)
        time.sleep(max(0.0, lease.expires_at - time.time()) + 0.3)
        assert not can_login(cluster, lease)
    finally:
        broker_backend.revoke(lease)


def test_password_never_in_arguments(broker_backend: CommandBackend) -> None:
    seen: list[list[str]] = []

    def recording(argv: list[str], **kwargs: Any) -> RunResult:
        seen.append(list(argv))
        return command.run_program(argv, **kwargs)

    broker_backend.runner = recording
    lease = ask(broker_backend)
    broker_backend.renew(lease, 60)
    broker_backend.revoke(lease)
    assert len(seen) == 3
    assert not any(lease.credentials.password in arg for argv in seen for arg in argv)
    assert seen[1][-3:] == [lease.username, "--ttl", "60"]
    assert not any("contract" in arg for argv in seen for arg in argv)  # the reason stays out too


def test_request_values_also_arrive_as_env_with_the_profile_env() -> None:
    code = ("import json, os; print(json.dumps({'version': 1, 'username': os.environ['PGCLI_JIT_REQUESTER'],"
            " 'password': os.environ['EXTRA'] + os.environ['PGCLI_JIT_TTL'], 'ttl': 30}))")
    lease = ask(backend(command=python(code), env={"EXTRA": "x-"}), ttl=90.2)
    assert lease.credentials.username == "alice"
    assert lease.credentials.password == "x-91"


def test_without_renew_command_renew_is_not_possible_and_revoke_is_a_no_op() -> None:
    b = backend(command=python(f"print({GOOD_JSON!r})"))
    lease = ask(b)
    assert not b.can_renew and not lease.renewable
    with pytest.raises(NotRenewable, match="no renew_command"):
        b.renew(lease, 60)
    b.revoke(lease)
    assert backend(command=["x"], renew_command=["y"]).can_renew


def test_non_zero_exit_shows_the_last_lines_of_stderr() -> None:
    code = ("import sys; print('noise', file=sys.stderr);"
            " [print(f'  line {i}  ', file=sys.stderr) for i in range(5)]; sys.exit(4)")
    with pytest.raises(BackendError) as info:
        ask(backend(command=python(code)))
    assert type(info.value) is BackendError
    text = str(info.value)
    assert "exited with status 4: line 2 | line 3 | line 4" in text
    assert "noise" not in text and "\n" not in text


def test_killed_by_a_signal() -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    with pytest.raises(BackendError, match="killed by signal 15 \\(no stderr\\)"):
        ask(backend(command=python(code)))


def test_garbage_output_is_reported_without_echoing_it() -> None:
    with pytest.raises(BackendError, match="output is not JSON") as info:
        ask(backend(command=python("print('password: hunter2-secret')")))
    assert "hunter2" not in str(info.value)
    with pytest.raises(BackendError, match="printed nothing"):
        ask(backend(command=["true"]))


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (killed, not yet reaped by init) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_a_program_that_hangs_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    code = ("import subprocess, sys, time, os; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}'); time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="did not finish within 2s and was killed"):
        ask(backend(command=python(code), timeout=1.5))
    assert time.monotonic() - started < 5
    parent, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 2
    while (alive(parent) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(parent) and not alive(child)


def test_program_not_found_is_named() -> None:
    with pytest.raises(BackendUnavailable, match="program not found: no-such-credential-tool") as info:
        ask(backend(command=["no-such-credential-tool", "--x"]))
    assert "full path in command" in str(info.value)


def test_renew_that_changes_the_user_is_refused() -> None:
    other = GOOD_JSON.replace('"u1"', '"someone_else"')
    b = backend(command=python(f"print({GOOD_JSON!r})"), renew_command=python(f"print({other!r})"))
    with pytest.raises(BackendError, match="different username"):
        b.renew(ask(b), 60)


def test_renew_may_rotate_the_password() -> None:
    rotated = GOOD_JSON.replace("pw-from-program", "pw-rotated")
    b = backend(command=python(f"print({GOOD_JSON!r})"), renew_command=python(f"print({rotated!r})"))
    renewed = b.renew(ask(b), 60)
    assert renewed.credentials.password == "pw-rotated" and renewed.renewals == 1
    assert "pw-rotated" not in repr(renewed) and "pw-rotated" not in repr(b)


@pytest.mark.parametrize(("options", "message"), [
    ({}, "command: missing"),
    ({"command": "my-broker --ttl {ttl}"}, 'must be a list of arguments.*"my-broker", "--ttl", "{ttl}"'),
    ({"command": []}, "non-empty list"),
    ({"command": ["ok", 3]}, "non-empty list"),
    ({"command": ["b", "--password", "{password}"]}, "visible to every user in ps"),
    ({"command": ["b", "{username}"]}, "only known after the request"),
    ({"command": ["b"], "revoke_command": "b revoke"}, "revoke_command: must be a list"),
    ({"command": ["b"], "timeout": "soon"}, "timeout"),
    ({"command": ["b"], "env": {"A": 1}}, "env: must be a table of strings"),
    ({"command": ["b"], "shell": True}, "unknown key"),
])
def test_bad_profiles_are_refused_at_config_time(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        profile(**options)


def test_renew_command_may_use_lease_placeholders() -> None:
    p = profile(command=["b"], renew_command=["b", "{username}", "{lease_id}"],
                revoke_command=["b", "{username}"])
    assert p.options["renew_command"][1] == "{username}"


def test_runner_result_json_round_trip() -> None:
    result = command.run_program(python("import sys; print('{}'); print('e', file=sys.stderr)"),
                                 timeout=10, env={})
    assert (result.returncode, json.loads(result.stdout), result.stderr.strip()) == (0, {}, "e")
