"""Talking to Vault or OpenBao: address, TLS, namespace and token, all read at call time.

Precedence, the way the ``bao``/``vault`` CLIs have it: the profile's key
(``addr``, ``namespace``, ``ca_cert``), else ``BAO_*``, else ``VAULT_*``.  The
token is ``$BAO_TOKEN``, else ``$VAULT_TOKEN``, else ``~/.vault-token``; it is
read for every request, so a ``bao login`` in another terminal takes effect at
once, and it is never stored on an object, logged or put in an error message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from pgcli_jit.backends import httputil
from pgcli_jit.core.durations import parse_duration
from pgcli_jit.core.errors import BackendError

log = logging.getLogger(__name__)

DEFAULT_ADDR = "https://127.0.0.1:8200"
TRUE_WORDS = frozenset({"1", "t", "true", "yes", "y", "on"})


def env_value(env: Mapping[str, str], suffix: str) -> tuple[str, str] | None:
    """``(name, value)`` of ``BAO_<suffix>``, else ``VAULT_<suffix>``, if either is set."""
    for name in (f"BAO_{suffix}", f"VAULT_{suffix}"):
        if env.get(name):
            return name, env[name]
    return None


def read_token(env: Mapping[str, str]) -> str | None:
    """The caller's token: ``$BAO_TOKEN``, ``$VAULT_TOKEN``, then ``~/.vault-token``."""
    found = env_value(env, "TOKEN")
    if found:
        return found[1].strip()
    path = Path(env.get("HOME") or Path.home()) / ".vault-token"
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Settings:
    """Where and how to connect; never the token."""

    addr: str
    addr_source: str
    namespace: str | None
    verify: bool | str
    cert: tuple[str, str] | str | None
    timeout: float
    allow_http: bool


def resolve_settings(options: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Profile keys over ``BAO_*`` over ``VAULT_*``: one function, documented above."""
    addr, source = _pick(options, env, "addr", "ADDR") or (DEFAULT_ADDR, "default")
    namespace = _pick(options, env, "namespace", "NAMESPACE")
    return Settings(
        addr=addr.rstrip("/"), addr_source=source,
        namespace=namespace[0] if namespace else None,
        verify=_verify(options, env), cert=_client_cert(env),
        timeout=parse_duration(options.get("timeout", httputil.DEFAULT_TIMEOUT)),
        allow_http=bool(options.get("allow_http", False)),
    )


def _pick(options: Mapping[str, Any], env: Mapping[str, str], key: str,
          suffix: str) -> tuple[str, str] | None:
    if options.get(key):
        return str(options[key]), key
    found = env_value(env, suffix)
    return (found[1], f"${found[0]}") if found else None


def _verify(options: Mapping[str, Any], env: Mapping[str, str]) -> bool | str:
    """requests' ``verify``: a CA file or directory, False only when asked for by env."""
    if options.get("ca_cert"):
        return os.path.expanduser(str(options["ca_cert"]))
    skip = env_value(env, "SKIP_VERIFY")
    if skip and skip[1].strip().lower() in TRUE_WORDS:
        log.warning("%s is set: the server's TLS certificate is not verified", skip[0])
        return False
    found = env_value(env, "CACERT") or env_value(env, "CAPATH")
    return os.path.expanduser(found[1]) if found else True


def _client_cert(env: Mapping[str, str]) -> tuple[str, str] | str | None:
    cert, key = env_value(env, "CLIENT_CERT"), env_value(env, "CLIENT_KEY")
    if cert and key:
        return (os.path.expanduser(cert[1]), os.path.expanduser(key[1]))
    return os.path.expanduser(cert[1]) if cert else None


class VaultClient:
    """One profile's view of the server: ``call`` returns the JSON body or raises BackendError."""

    def __init__(self, options: Mapping[str, Any], *, backend: str, profile: str,
                 session: requests.Session) -> None:
        self.options = options
        self.backend = backend
        self.profile = profile
        self.session = session

    def __repr__(self) -> str:
        return f"VaultClient(profile={self.profile!r})"

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
             *, empty_on_404: bool = False) -> dict[str, Any]:
        """One request to ``/v1/<path>``; a 404 without errors is ``{}`` when asked (LIST)."""
        settings = self.settings()
        headers = self._headers(settings)
        resp = httputil.send(
            self.session, method, f"{settings.addr}/v1/{path}", backend=self.backend,
            profile=self.profile, timeout=settings.timeout, headers=headers,
            json=body, verify=settings.verify, cert=settings.cert,
        )
        log.debug("vault %s %s -> %s", method, path, resp.status_code)
        messages = httputil.error_messages(resp, [headers["X-Vault-Token"]])
        if empty_on_404 and resp.status_code == 404 and not messages:
            return {}
        if resp.status_code >= 400:
            raise httputil.error_from_response(resp, backend=self.backend, profile=self.profile,
                                               messages=messages)
        return self._json(resp)

    def settings(self) -> Settings:
        """Resolved now, so env changes apply; an unsafe address is refused before sending."""
        settings = resolve_settings(self.options, os.environ)
        problem = httputil.check_url(settings.addr, allow_http=settings.allow_http)
        if problem:
            raise self.error(f"{settings.addr_source} is {settings.addr!r}: {problem}")
        return settings

    def _headers(self, settings: Settings) -> dict[str, str]:
        token = read_token(os.environ)
        if not token:
            raise self.error("no token", "set BAO_TOKEN or VAULT_TOKEN, or log in with bao/vault login")
        if not httputil.header_safe(token):
            raise self.error("the token contains spaces or control characters",
                             "check BAO_TOKEN/VAULT_TOKEN or ~/.vault-token (one line, one token)")
        headers = {"X-Vault-Token": token, "X-Vault-Request": "true"}
        if settings.namespace:
            headers["X-Vault-Namespace"] = settings.namespace
        return headers

    def _json(self, resp: requests.Response) -> dict[str, Any]:
        if not resp.content:
            return {}
        try:
            data = resp.json()
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise self.error(f"HTTP {resp.status_code}: the answer is not a JSON object",
                             "is addr a Vault/OpenBao server?")
        return data

    def error(self, message: str, hint: str = "",
              cls: type[BackendError] = BackendError) -> BackendError:
        return cls(message, backend=self.backend, profile=self.profile, hint=hint)
