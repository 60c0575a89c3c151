"""Credentials from an external program that prints the credential JSON.

Like AWS's ``credential_process``: any tool a team already trusts (``aws``,
``gcloud``, ``az``, ``tsh`` or an in-house script) can hand pgcli-jit a
database user and password.  The program runs without a shell: the profile
gives its arguments as a list, placeholders are substituted one argument at a
time.  Every local user can read arguments (``/proc/PID/cmdline``, ``ps``), so
neither the password nor the reason goes there: the request arrives as one
JSON object on stdin and as ``PGCLI_JIT_*`` variables in the child's own
environment (readable only by the same user).  The child gets a minimal
environment (PATH, HOME, locale, TZ, plus what the profile names), not the
shell's: a Vault token or cloud keys in the caller's env are none of its business.

The program runs in a session (process group) of its own, so a timeout kills
it *and* whatever it started (a helper that hangs on a browser login, say).
Its stdout is read up to :data:`~pgcli_jit.core.limits.MAX_OUTPUT` (4 MiB); past that
it is killed.  Its stderr is shown only as a cleaned, capped last line or three.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pgcli_jit.backends import credential_json
from pgcli_jit.backends.base import Backend, LeaseRequest
from pgcli_jit.core.clock import Clock, system_clock
from pgcli_jit.core.durations import format_duration
from pgcli_jit.core.errors import BackendError, BackendUnavailable, NotRenewable
from pgcli_jit.core.lease import Credentials, Lease
from pgcli_jit.core.limits import MAX_OUTPUT
from pgcli_jit.core.permissions import fix_hint, parent_problem
from pgcli_jit.core.profile import Profile
from pgcli_jit.core.sanitize import clean

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
STDERR_LINES = 3
STDERR_CHARS = 300
REQUEST_FIELDS = frozenset({"profile", "ttl", "reason", "requester"})
LEASE_FIELDS = REQUEST_FIELDS | {"username", "lease_id"}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
#: Placeholders refused in arguments: every local user can read a process's argv.
PRIVATE_FIELDS = frozenset({"password", "reason"})
#: What every child gets from the caller's environment; the profile's pass_env adds names.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TZ", "TMPDIR")
#: stderr is only ever shown as its last lines: keep this much of its tail.
STDERR_KEEP = 64 * 1024
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str


#: ``runner(argv, timeout=..., env=...)``; raises ``subprocess.TimeoutExpired`` or ``OSError``.
Runner = Callable[..., RunResult]


class OutputTooLarge(Exception):
    """The program printed more than MAX_OUTPUT on stdout and was killed."""


def run_program(argv: Sequence[str], *, timeout: float, env: Mapping[str, str],
                input: bytes = b"") -> RunResult:
    """Run ``argv`` with no shell, ``input`` on stdin; kill its whole process group on
    timeout (``subprocess.TimeoutExpired``) or past MAX_OUTPUT of stdout (OutputTooLarge)."""
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(env), start_new_session=True,
    )
    try:
        _feed(proc, input)
        out, err = _read_bounded(proc, deadline)
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, OutputTooLarge):
        _kill_group(proc)
        raise
    _close_pipes(proc)
    return RunResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    """Write the request and close stdin; a program that never reads it is fine.

    The request is a few KiB (reasons are capped), well under a pipe's buffer,
    so this cannot block on a program that ignores stdin.
    """
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(data)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()


def _read_bounded(proc: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, bytes]:
    """stdout up to MAX_OUTPUT, the last STDERR_KEEP bytes of stderr, until both close."""
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)  # type: ignore[arg-type]
        sel.register(proc.stderr, selectors.EVENT_READ, err)  # type: ignore[arg-type]
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, 0)
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is out and len(out) > MAX_OUTPUT:
                    raise OutputTooLarge
                if key.data is err and len(err) > STDERR_KEEP:
                    del err[:-STDERR_KEEP]
    return bytes(out), bytes(err)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program's session, drop our pipe ends (a stray grandchild may hold
    the others open), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    _close_pipes(proc)
    proc.wait()


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe:
            with contextlib.suppress(OSError):
                pipe.close()


def substitute(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill ``{name}`` placeholders in each argument; other braces are left alone."""
    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))
    return [_PLACEHOLDER.sub(fill, arg) for arg in argv]


def stderr_tail(text: str, secrets: Sequence[str | None] = ()) -> str:
    """The last few non-empty lines of stderr, on one line: cleaned (no control
    characters, no secret) and trimmed from the front, so the end of the story shows."""
    lines = [line.strip() for line in text.splitlines() if line.strip()][-STDERR_LINES:]
    tail = clean(" | ".join(lines), secrets, limit=len(text) + 1)
    return tail if len(tail) <= STDERR_CHARS else "…" + tail[-STDERR_CHARS:]


class CommandBackend(Backend):
    name: ClassVar[str] = "command"
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"command", "renew_command", "revoke_command", "timeout", "env", "pass_env"}
    )
    #: Without a renew_command there is nothing to extend with; see __init__.
    can_renew: bool = False

    def __init__(self, profile: Profile, *, clock: Clock = system_clock,
                 runner: Runner = run_program) -> None:
        super().__init__(profile, clock=clock)
        self.runner = runner
        self.timeout = profile.duration_option("timeout", DEFAULT_TIMEOUT)
        if profile.options.get("renew_command"):
            self.can_renew = True

    def __repr__(self) -> str:
        return f"CommandBackend(profile={self.profile.name!r}, command={self._argv('command')[:1]!r})"

    @classmethod
    def check_profile(cls, profile: Profile) -> None:
        opts = profile.options
        if "command" not in opts:
            raise profile.error("command", "missing",
                                'e.g. command = ["my-broker", "--ttl", "{ttl}", "--reason", "{reason}"]')
        _check_argv(profile, "command", REQUEST_FIELDS)
        for key in ("renew_command", "revoke_command"):
            if key in opts:
                _check_argv(profile, key, LEASE_FIELDS)
        profile.duration_option("timeout", DEFAULT_TIMEOUT)
        env = opts.get("env", {})
        if not (isinstance(env, Mapping) and all(isinstance(v, str) and "\0" not in v and "\0" not in k
                                                  and "=" not in k and k for k, v in env.items())):
            raise profile.error("env", "must be a table of strings", 'e.g. env = { AWS_PROFILE = "prod" }')
        names = opts.get("pass_env", [])
        if not (isinstance(names, list) and all(isinstance(n, str) and _NAME.fullmatch(n) for n in names)):
            raise profile.error("pass_env", "must be a list of variable names (* at the end: a prefix)",
                                'e.g. pass_env = ["AWS_PROFILE", "AWS_CONFIG_FILE", "GOOGLE_*"]')

    # -- the Backend interface ----------------------------------------------

    def request(self, req: LeaseRequest) -> Lease:
        now = self.clock()
        ttl = self.effective_ttl(req.ttl)
        values = {"profile": self.profile.name, "ttl": str(math.ceil(ttl)),
                  "reason": req.reason, "requester": req.requester}
        parsed = self._call("command", values, now)
        return credential_json.new_lease(parsed, self.profile, self.name, now, req, self.can_renew)

    def renew(self, lease: Lease, ttl: float | None) -> Lease:
        if not self.can_renew:
            raise self._error(NotRenewable, "no renew_command in the profile",
                              "\\jit renew will request new credentials")
        now = self.clock()
        parsed = self._call("renew_command", self._lease_values(lease, ttl), now, lease.credentials)
        try:
            return credential_json.renewed_lease(lease, parsed)
        except credential_json.CredentialFormatError as exc:
            raise self._error(BackendError, f"renew_command: {exc}",
                              "a renewal keeps the user; print a new lease from command instead") from None

    def revoke(self, lease: Lease) -> None:
        """Run revoke_command if there is one; without it the credentials simply run out."""
        if self.profile.options.get("revoke_command"):
            self._run("revoke_command", self._lease_values(lease, None))

    # -- helpers --------------------------------------------------------------

    def _lease_values(self, lease: Lease, ttl: float | None) -> dict[str, str]:
        return {"profile": self.profile.name, "ttl": str(math.ceil(self.effective_ttl(ttl))),
                "reason": lease.reason, "requester": lease.requester,
                "username": lease.username, "lease_id": lease.lease_id}

    def _call(self, key: str, values: Mapping[str, str], now: float,
              current: Credentials | None = None) -> credential_json.ParsedCredential:
        stdout = self._run(key, values, current)
        try:
            return credential_json.parse_text(stdout, now=now, current=current)
        except credential_json.CredentialFormatError as exc:
            raise self._error(BackendError, f"{self._program(key)}: {exc}",
                              "it must print the credential JSON on stdout") from None

    def _run(self, key: str, values: Mapping[str, str], current: Credentials | None = None) -> str:
        argv = substitute(self._argv(key), values)
        env = self._env(values)
        if any("\0" in text for text in (*argv, *env.values())):  # exec would refuse it
            raise self._error(BackendError, f"cannot run {key}: a value holds a NUL character")
        argv[0] = self._checked_program(argv[0], key, env)
        log.debug("running %s for profile %s", argv[0], self.profile.name)
        try:
            result = self.runner(argv, timeout=self.timeout, env=env, input=_stdin_request(key, values))
        except subprocess.TimeoutExpired:
            limit = format_duration(self.timeout)
            raise self._error(BackendUnavailable, f"{argv[0]} did not finish within {limit} and was killed",
                              "raise timeout in the profile if it is just slow") from None
        except OutputTooLarge:
            raise self._error(BackendError, f"{argv[0]} printed more than {MAX_OUTPUT // 2**20} MiB"
                              " on stdout and was killed", "it must print one credential JSON") from None
        except FileNotFoundError:
            raise self._error(BackendUnavailable, f"program not found: {argv[0]}",
                              f"install it or give its full path in {key}") from None
        except OSError as exc:
            raise self._error(BackendUnavailable, f"cannot run {argv[0]}: {exc.strerror}") from None
        if result.returncode != 0:
            secrets = (current.password if current else None, _printed_password(result.stdout))
            raise self._error(BackendError, _exit_message(argv[0], result, secrets))
        return result.stdout

    def _checked_program(self, program: str, key: str, env: Mapping[str, str]) -> str:
        """The program's path, refused when others may write it or a directory above it
        (they could swap the broker)."""
        path = program if os.sep in program else shutil.which(program, path=env.get("PATH", os.defpath))
        if path is None:
            raise self._error(BackendUnavailable, f"program not found: {program}",
                              f"install it or give its full path in {key}")
        try:
            st = os.stat(path)
        except OSError:
            return path  # missing or unreadable: running it reports why
        problem = writable_by_others(st)
        if problem:
            raise self._error(BackendError, f"{key}: {path} {problem}", fix_hint(path))
        above = parent_problem(path, also_trust=st.st_uid)
        if above:
            raise self._error(BackendError, f"{key}: {path} {above[0]}", above[1])
        return path

    def _argv(self, key: str) -> list[str]:
        return [str(a) for a in self.profile.options.get(key, [])]

    def _program(self, key: str) -> str:
        argv = self._argv(key)
        return argv[0] if argv else key

    def _env(self, values: Mapping[str, str]) -> dict[str, str]:
        """BASE_ENV and the profile's ``pass_env`` from the caller's env, the profile's
        ``env``, and the request as PGCLI_JIT_* variables: nothing else is inherited."""
        patterns = (*BASE_ENV, *self.profile.options.get("pass_env", []))
        env = {k: v for k, v in os.environ.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
        env.update({str(k): str(v) for k, v in self.profile.options.get("env", {}).items()})
        env.update({f"PGCLI_JIT_{k.upper()}": v for k, v in values.items()})
        return env

    def _error(self, cls: type[BackendError], message: str, hint: str = "") -> BackendError:
        return cls(message, backend=self.name, profile=self.profile.name, hint=hint)


def writable_by_others(st: os.stat_result) -> str | None:
    """Group/other write on an executable is the one check: owners vary (root, brew, pipx)."""
    mode = st.st_mode & 0o777
    return f"is writable by group or others (mode {mode:04o})" if mode & 0o022 else None


def _stdin_request(key: str, values: Mapping[str, str]) -> bytes:
    """The request as one JSON object: what ``{placeholders}`` would say, and the reason."""
    action = {"command": "request", "renew_command": "renew", "revoke_command": "revoke"}[key]
    body: dict[str, Any] = {"version": 1, "action": action, **values}
    body["ttl"] = int(values["ttl"])
    return (json.dumps(body) + "\n").encode("utf-8")


def _printed_password(stdout: str) -> str | None:
    """The password a failing program printed anyway, so its stderr can never echo it."""
    try:
        data = json.loads(stdout)
    except (ValueError, RecursionError):
        return None
    password = data.get("password") if isinstance(data, dict) else None
    return password if isinstance(password, str) else None


def _exit_message(program: str, result: RunResult, secrets: Sequence[str | None] = ()) -> str:
    how = (f"was killed by signal {-result.returncode}" if result.returncode < 0
           else f"exited with status {result.returncode}")
    tail = stderr_tail(result.stderr, secrets)
    return f"{program} {how}" + (f": {tail}" if tail else " (no stderr)")


def _check_argv(profile: Profile, key: str, allowed: frozenset[str]) -> None:
    """A non-empty list of strings whose placeholders are known for this key."""
    value: Any = profile.options[key]
    if isinstance(value, str):
        raise profile.error(key, "must be a list of arguments, not a string",
                            f'write {key} = {_as_list(value)}: arguments are never passed through a shell')
    if not (isinstance(value, list) and value and all(isinstance(a, str) for a in value) and value[0]):
        raise profile.error(key, "must be a non-empty list of strings",
                            'e.g. ["my-broker", "--ttl", "{ttl}"]')
    if any("\0" in arg for arg in value):
        raise profile.error(key, "holds a NUL character")
    for name in {m for arg in value for m in _PLACEHOLDER.findall(arg)}:
        if name == "password":
            raise profile.error(key, "uses {password}",
                                "a password in arguments is visible to every user in ps; never pass it")
        if name == "reason":
            raise profile.error(key, "uses {reason}",
                                "arguments are visible to every local user in ps: the program reads"
                                " $PGCLI_JIT_REASON or the JSON request on stdin instead")
        if name in LEASE_FIELDS - allowed:
            raise profile.error(key, f"uses {{{name}}}, which is only known after the request",
                                f"use it in renew_command/revoke_command; here: {sorted(allowed)}")


def _as_list(text: str) -> str:
    """A hint that shows the profile's string as the list it was probably meant to be."""
    parts = text.split() or ["my-broker"]
    return "[" + ", ".join(f'"{p}"' for p in parts) + "]"
