"""Credentials from an external program that prints the credential JSON.

Like AWS's ``credential_process``: any tool a team already trusts (``aws``,
``gcloud``, ``az``, ``tsh`` or an in-house script) can hand pgcli-jit a
database user and password.  The program runs without a shell: the profile
gives its arguments as a list, placeholders are substituted one argument at a
time, so a reason such as ``"; rm -rf ~"`` stays one harmless argument.  The
password is never put in arguments (every user can read them in ``ps``).

The program runs in a session (process group) of its own, so a timeout kills
it *and* whatever it started (a helper that hangs on a browser login, say).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pgcli_jit.backends import credential_json
from pgcli_jit.backends.base import Backend, LeaseRequest
from pgcli_jit.clock import Clock, system_clock
from pgcli_jit.config import Profile
from pgcli_jit.durations import format_duration
from pgcli_jit.errors import BackendError, BackendUnavailable, NotRenewable
from pgcli_jit.lease import Credentials, Lease

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
STDERR_LINES = 3
STDERR_CHARS = 300
REQUEST_FIELDS = frozenset({"profile", "ttl", "reason", "requester"})
LEASE_FIELDS = REQUEST_FIELDS | {"username", "lease_id"}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str


#: ``runner(argv, timeout=..., env=...)``; raises ``subprocess.TimeoutExpired`` or ``OSError``.
Runner = Callable[..., RunResult]


def run_program(argv: Sequence[str], *, timeout: float, env: Mapping[str, str]) -> RunResult:
    """Run ``argv`` with no shell and no stdin; on timeout kill its whole process group."""
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(env), text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise
    return RunResult(proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the program's session, reap it, and drop pipes a stray grandchild may hold open."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
        proc.wait()


def substitute(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill ``{name}`` placeholders in each argument; other braces are left alone."""
    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))
    return [_PLACEHOLDER.sub(fill, arg) for arg in argv]


def stderr_tail(text: str) -> str:
    """The last few non-empty lines of stderr, on one line, trimmed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()][-STDERR_LINES:]
    tail = " | ".join(lines)
    return tail if len(tail) <= STDERR_CHARS else "…" + tail[-STDERR_CHARS:]


class CommandBackend(Backend):
    name: ClassVar[str] = "command"
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"command", "renew_command", "revoke_command", "timeout", "env"}
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
        if not (isinstance(env, Mapping) and all(isinstance(v, str) for v in env.values())):
            raise profile.error("env", "must be a table of strings", 'e.g. env = { AWS_PROFILE = "prod" }')

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
        stdout = self._run(key, values)
        try:
            return credential_json.parse_text(stdout, now=now, current=current)
        except credential_json.CredentialFormatError as exc:
            raise self._error(BackendError, f"{self._program(key)}: {exc}",
                              "it must print the credential JSON on stdout") from None

    def _run(self, key: str, values: Mapping[str, str]) -> str:
        argv = substitute(self._argv(key), values)
        env = self._env(values)
        log.debug("running %s for profile %s", argv[0], self.profile.name)
        try:
            result = self.runner(argv, timeout=self.timeout, env=env)
        except subprocess.TimeoutExpired:
            limit = format_duration(self.timeout)
            raise self._error(BackendUnavailable, f"{argv[0]} did not finish within {limit} and was killed",
                              "raise timeout in the profile if it is just slow") from None
        except FileNotFoundError:
            raise self._error(BackendUnavailable, f"program not found: {argv[0]}",
                              f"install it or give its full path in {key}") from None
        except OSError as exc:
            raise self._error(BackendUnavailable, f"cannot run {argv[0]}: {exc.strerror}") from None
        if result.returncode != 0:
            raise self._error(BackendError, _exit_message(argv[0], result))
        return result.stdout

    def _argv(self, key: str) -> list[str]:
        return [str(a) for a in self.profile.options.get(key, [])]

    def _program(self, key: str) -> str:
        argv = self._argv(key)
        return argv[0] if argv else key

    def _env(self, values: Mapping[str, str]) -> dict[str, str]:
        """The caller's env, the profile's ``env``, and the request as PGCLI_JIT_* variables."""
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in self.profile.options.get("env", {}).items()})
        env.update({f"PGCLI_JIT_{k.upper()}": v for k, v in values.items()})
        return env

    def _error(self, cls: type[BackendError], message: str, hint: str = "") -> BackendError:
        return cls(message, backend=self.name, profile=self.profile.name, hint=hint)


def _exit_message(program: str, result: RunResult) -> str:
    how = (f"was killed by signal {-result.returncode}" if result.returncode < 0
           else f"exited with status {result.returncode}")
    tail = stderr_tail(result.stderr)
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
    for name in {m for arg in value for m in _PLACEHOLDER.findall(arg)}:
        if name == "password":
            raise profile.error(key, "uses {password}",
                                "a password in arguments is visible to every user in ps; never pass it")
        if name in LEASE_FIELDS - allowed:
            raise profile.error(key, f"uses {{{name}}}, which is only known after the request",
                                f"use it in renew_command/revoke_command; here: {sorted(allowed)}")


def _as_list(text: str) -> str:
    """A hint that shows the profile's string as the list it was probably meant to be."""
    parts = text.split() or ["my-broker"]
    return "[" + ", ".join(f'"{p}"' for p in parts) + "]"
