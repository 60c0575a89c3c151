"""The brokers' bad days: real programs and a real HTTP server
that misbehave on purpose.  What reaches the user is one clean line: no control
character, no secret, no unbounded read."""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pgcli_jit.backends.base import LeaseRequest
from pgcli_jit.backends.command import CommandBackend
from pgcli_jit.backends.http import HttpBackend
from pgcli_jit.backends.vault.backend import VaultBackend
from pgcli_jit.core.errors import BackendError, ConfigError
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.session.config import parse_profile

pytestmark = pytest.mark.security

PY = sys.executable
REQ = LeaseRequest(ttl=60, reason="INC-42 private reason", requester="alice")
TOKEN = "tok-VERY-secret-0123456789"
GOOD = {"version": 1, "username": "u1", "password": "pw-issued-XYZ", "ttl": 60}


def command_backend(**options: Any) -> CommandBackend:
    return CommandBackend(parse_profile("cmd", {"backend": "command", **options}, Path("c.toml")))


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def one_clean_line(text: str) -> None:
    assert "\n" not in text and "\x1b" not in text and "\x07" not in text


# -- 9. the command backend: request on stdin, reason never in argv, minimal env -----------------

def test_the_request_arrives_on_stdin_and_in_env_never_in_argv(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    code = ("import json, os, sys; req = json.load(sys.stdin);"
            f" json.dump({{'stdin': req, 'argv': sys.argv, 'env': dict(os.environ)}},"
            f" open({str(seen)!r}, 'w'));"
            f" print(json.dumps({GOOD!r}))")
    command_backend(command=[*py(code), "{profile}", "{ttl}", "{requester}"]).request(REQ)
    got = json.loads(seen.read_text())
    assert got["stdin"] == {"version": 1, "action": "request", "profile": "cmd", "ttl": 60,
                            "reason": "INC-42 private reason", "requester": "alice"}
    assert not any("INC-42" in arg for arg in got["argv"])
    assert got["env"]["PGCLI_JIT_REASON"] == "INC-42 private reason"


def test_reason_placeholder_in_arguments_is_refused_at_config_time() -> None:
    with pytest.raises(ConfigError, match=r"uses \{reason\}.*PGCLI_JIT_REASON or the JSON request on stdin"):
        command_backend(command=["broker", "--reason", "{reason}"])


def test_children_get_only_the_variables_they_need(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.should-never-reach-a-child")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("AWS_PROFILE", "prod")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p1")
    monkeypatch.setenv("LC_TIME", "C")
    seen = tmp_path / "env.json"
    code = (f"import json, os; json.dump(dict(os.environ), open({str(seen)!r}, 'w'));"
            f" print(json.dumps({GOOD!r}))")
    command_backend(command=py(code), pass_env=["AWS_PROFILE", "GOOGLE_*"], env={"X": "1"}).request(REQ)
    env = json.loads(seen.read_text())
    assert "VAULT_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["AWS_PROFILE"] == "prod" and env["GOOGLE_CLOUD_PROJECT"] == "p1" and env["X"] == "1"
    assert env["LC_TIME"] == "C" and env["PATH"] == os.environ["PATH"]
    assert set(env) - {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "X", "AWS_PROFILE"} \
        <= {k for k in env if k.startswith(("LC_", "GOOGLE_", "PGCLI_JIT_"))}


@pytest.mark.parametrize("bad", [["a b"], "AWS_PROFILE", [1], ["*"]])
def test_pass_env_must_be_a_list_of_names(bad: object) -> None:
    with pytest.raises(ConfigError, match="pass_env"):
        command_backend(command=["b"], pass_env=bad)


# -- 5. an executable others can write is refused -----------------------------------------------

def script(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "broker"
    path.write_text(f"#!{PY}\nimport json; print(json.dumps({GOOD!r}))\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_broker_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = script(tmp_path, mode)
    with pytest.raises(BackendError) as info:
        command_backend(command=[str(path)]).request(REQ)
    text = str(info.value)
    assert "writable by group or others" in text and f"chmod go-w {path}" in text


def test_a_broker_found_on_path_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script(tmp_path, 0o777)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(BackendError, match="writable by group or others"):
        command_backend(command=["broker"]).request(REQ)


def test_a_broker_only_its_owner_can_write_runs(tmp_path: Path) -> None:
    assert command_backend(command=[str(script(tmp_path, 0o755))]).request(REQ).username == "u1"


# -- 5b. ... and so is one in a directory others can write: they could swap it ----------------------

def script_in(directory: Path, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = script(directory, 0o755)
    directory.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o775, 0o777], ids=oct)
def test_a_broker_in_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = script_in(tmp_path / "bin", mode)
    with pytest.raises(BackendError) as info:
        command_backend(command=[str(path)]).request(REQ)
    text = str(info.value)
    assert f"command: {path} is in {tmp_path / 'bin'}, which group or others can write" in text, text
    assert text.endswith(f"run chmod go-w {tmp_path / 'bin'})") and "\n" not in text


def test_a_broker_found_on_path_in_a_loose_directory_is_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    script_in(tmp_path / "bin", 0o775)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(BackendError, match=f"run chmod go-w {tmp_path / 'bin'}"):
        command_backend(command=["broker"]).request(REQ)


def test_a_renew_or_revoke_program_in_a_loose_directory_is_refused(tmp_path: Path) -> None:
    good, loose = script_in(tmp_path / "good"), script_in(tmp_path / "loose", 0o777)
    backend = command_backend(command=[str(good)], renew_command=[str(loose)], revoke_command=[str(loose)])
    lease = backend.request(REQ)
    for call in (lambda: backend.renew(lease, None), lambda: backend.revoke(lease)):
        with pytest.raises(BackendError, match="which group or others can write"):
            call()


def test_a_broker_in_a_sticky_directory_runs(tmp_path: Path) -> None:
    path = script_in(tmp_path / "sticky", 0o1777)
    assert command_backend(command=[str(path)]).request(REQ).username == "u1"


def test_a_broker_linked_from_a_loose_directory_is_refused(tmp_path: Path) -> None:
    good = script_in(tmp_path / "good")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "broker").symlink_to(good)
    (tmp_path / "loose").chmod(0o777)
    with pytest.raises(BackendError, match=f"is in {tmp_path / 'loose'}, which group or others"):
        command_backend(command=[str(tmp_path / "loose" / "broker")]).request(REQ)


def test_a_broker_under_another_users_directory(tmp_path: Path) -> None:
    """Refused under a directory of someone else; run when that someone also owns the
    program (a shared Homebrew: they could replace it anyway, as its owner)."""
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    path = script_in(tmp_path / "theirs")
    os.chown(tmp_path / "theirs", 65534, 65534)
    with pytest.raises(BackendError, match=f"is in {tmp_path / 'theirs'}, which is owned by another user"):
        command_backend(command=[str(path)]).request(REQ)
    os.chown(path, 65534, 65534)
    assert command_backend(command=[str(path)]).request(REQ).username == "u1"


# -- 8. output is capped ----------------------------------------------------------------------------

def test_a_broker_printing_200_mb_is_killed_at_4_mib() -> None:
    code = "import sys\nchunk = b'x' * 1048576\nfor _ in range(200): sys.stdout.buffer.write(chunk)"
    started = time.monotonic()
    with pytest.raises(BackendError, match="printed more than 4 MiB on stdout and was killed"):
        command_backend(command=py(code)).request(REQ)
    assert time.monotonic() - started < 10


def test_a_flood_on_stderr_keeps_only_its_tail() -> None:
    code = ("import sys\nfor i in range(300000): sys.stderr.write(f'noise {i} ' * 20 + '\\n')\n"
            "sys.stderr.write('the real reason\\n'); sys.exit(3)")
    with pytest.raises(BackendError) as info:
        command_backend(command=py(code), timeout="60s").request(REQ)
    assert str(info.value).endswith("the real reason") and len(str(info.value)) < 400


# -- 4. stderr: no control characters, no secret ------------------------------------------------

def test_stderr_is_cleaned_of_escapes_and_of_the_password_it_printed() -> None:
    code = (f"import json, sys; print(json.dumps({GOOD!r}));"
            " print('\\x1b[2J\\x1b]0;owned\\x07 leaked pw-issued-XYZ password=hunter2', file=sys.stderr);"
            " sys.exit(1)")
    with pytest.raises(BackendError) as info:
        command_backend(command=py(code)).request(REQ)
    text = str(info.value)
    one_clean_line(text)
    assert "pw-issued-XYZ" not in text and "hunter2" not in text and "leaked ***" in text


def test_renew_failure_never_echoes_the_current_password() -> None:
    renew = py("import sys; print('cannot renew, current password is pw-current-77', file=sys.stderr);"
               " sys.exit(2)")
    b = command_backend(command=["b"], renew_command=renew)
    lease = Lease(profile="cmd", backend="command", credentials=Credentials("u1", "pw-current-77"),
                  issued_at=time.time(), expires_at=time.time() + 60)
    with pytest.raises(BackendError) as info:
        b.renew(lease, 60)
    assert "pw-current-77" not in str(info.value) and "current password is ***" in str(info.value)


# -- http and vault: a real HTTP server that misbehaves ------------------------------------------

class Script:
    """path -> (status, headers, body); a body may be an iterator of chunks (streamed)."""

    routes: ClassVar[dict[str, tuple[int, dict[str, str], Any]]] = {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        status, headers, body = Script.routes.get(self.path, (404, {}, b"{}"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in body:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def http_backend(url: str, monkeypatch: pytest.MonkeyPatch) -> HttpBackend:
    monkeypatch.setenv("BROKER_TOKEN", TOKEN)
    return HttpBackend(parse_profile("h", {"backend": "http", "url": url, "token_env": "BROKER_TOKEN",
                                           "timeout": "20s"}, Path("c.toml")))


def route(path: str, status: int, body: Any, **headers: str) -> None:
    Script.routes[path] = (status, {"Content-Type": "application/json", **headers}, body)


def test_an_http_answer_over_4_mib_is_refused(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    route("/credentials", 200, b"[" + b"0," * (3 * 1024 * 1024) + b"0]")
    with pytest.raises(BackendError, match="larger than 4 MiB"):
        http_backend(server, monkeypatch).request(REQ)


def test_a_streamed_endless_http_answer_stops_at_4_mib(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    route("/credentials", 200, (b"x" * 65536 for _ in range(10_000)))  # 655 MB if read whole
    started = time.monotonic()
    with pytest.raises(BackendError, match="larger than 4 MiB"):
        http_backend(server, monkeypatch).request(REQ)
    assert time.monotonic() - started < 15


def test_an_http_error_body_is_cleaned(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    errors = [f"\x1b[2Jdenied for Bearer {TOKEN}\x07", "db said password=hunter2", "x" * 10_000]
    route("/credentials", 403, json.dumps({"errors": errors}).encode())
    with pytest.raises(BackendError) as info:
        http_backend(server, monkeypatch).request(REQ)
    text = str(info.value)
    one_clean_line(text)
    assert TOKEN not in text and "hunter2" not in text and len(text) < 2000


def test_an_http_ttl_of_1e12_is_refused(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    route("/credentials", 200, json.dumps({**GOOD, "ttl": 1e12}).encode())
    with pytest.raises(BackendError, match="longer than 366 days"):
        http_backend(server, monkeypatch).request(REQ)


def vault_backend(url: str, monkeypatch: pytest.MonkeyPatch) -> VaultBackend:
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    for name in ("BAO_TOKEN", "BAO_ADDR", "VAULT_ADDR", "BAO_NAMESPACE", "VAULT_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    return VaultBackend(parse_profile("v", {"backend": "vault", "addr": url, "role": "ro"}, Path("c.toml")))


@pytest.mark.parametrize("answer", [
    {"lease_duration": "soon", "data": {"username": "u", "password": "p"}},
    {"lease_duration": 1e12, "data": {"username": "u", "password": "p"}},
    {"lease_duration": 60, "data": []},
    {"lease_duration": 60, "data": {"username": "u\x00x", "password": "p"}},
    {"lease_duration": 60, "data": {"username": "u", "password": 5}},
    {"lease_duration": 60, "lease_id": ["x"], "data": {"username": "u", "password": "p"}},
    {"lease_duration": 60, "warnings": "w", "data": {"username": "u", "password": "p"}},
    ["not", "an", "object"],
])
def test_vault_answers_of_the_wrong_shape_are_one_line_errors(
        server: str, monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
    route("/v1/database/creds/ro", 200, json.dumps(answer).encode())
    with pytest.raises(BackendError) as info:
        vault_backend(server, monkeypatch).request(REQ)
    one_clean_line(str(info.value))


def test_a_vault_error_echoing_the_token_is_redacted(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    route("/v1/database/creds/ro", 403,
          json.dumps({"errors": [f"1 error occurred:\n\t* token {TOKEN} \x1b[31mdenied"]}).encode())
    with pytest.raises(BackendError) as info:
        vault_backend(server, monkeypatch).request(REQ)
    one_clean_line(str(info.value))
    assert TOKEN not in str(info.value)
