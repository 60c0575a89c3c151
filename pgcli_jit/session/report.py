"""Tables and times as ``\\jit status`` and ``\\jit profiles`` show them."""

from __future__ import annotations

from pgcli_jit.backends.base import Backend
from pgcli_jit.core.clock import local_time
from pgcli_jit.core.durations import format_clock, format_duration
from pgcli_jit.core.errors import JitError
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.profile import Profile
from pgcli_jit.session.config import Config

Rows = list[tuple[str, str]]


def status_rows(lease: Lease, profile: Profile, now: float, source: str) -> Rows:
    """One (field, value) row per fact; ``source`` says whether the backend confirmed it."""
    remaining = lease.remaining(now)

    def at(ts: float) -> str:
        return local_time(ts, zone=True, now=now)

    hard = at(lease.max_expires_at) if lease.max_expires_at else "unknown"
    return [
        ("profile", profile.name),
        ("backend", lease.backend),
        ("database user", lease.username),
        ("issued", at(lease.issued_at)),
        ("expires", at(lease.expires_at)),
        ("remaining", format_clock(remaining) if remaining > 0 else "expired"),
        ("renewable", "yes" if lease.renewable else "no (renew issues new credentials)"),
        ("hard limit", hard),
        ("renewals", str(lease.renewals)),
        ("renew mode", f"{profile.renew} (window {_window(profile)})"),
        ("reason", lease.reason or "-"),
        ("lease id", lease.short_id() or "-"),
        ("as of", source),
    ]


def _window(profile: Profile) -> str:
    return f"last {format_duration(profile.renew_before)}" if profile.renew_before else "last third"


def profile_rows(config: Config, backends: dict[str, Backend]) -> list[tuple[str, str, str, str, str]]:
    """Every profile, and under a Vault-style profile the roles its backend lists."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name in sorted(config.profiles):
        profile = config.profiles[name]
        default = " (default)" if name == config.default_profile else ""
        backend = backends.get(name)
        server_decides = backend is not None and backend.server_policy and not profile.ttl_given
        rows.append((name + default, profile.backend,
                     "server's" if server_decides else format_duration(profile.ttl),
                     format_duration(profile.max_ttl) if profile.max_ttl else "-",
                     profile.description or profile.renew))
        if backend is None:
            continue
        try:
            roles = backend.roles()
        except JitError as exc:
            rows.append((f"  {name}: roles", "", "", "", f"not listed: {exc}"))
            continue
        rows.extend(
            (f"  {name}: {r.kind} {r.name}", profile.backend,
             format_duration(r.default_ttl) if r.default_ttl else "-",
             format_duration(r.max_ttl) if r.max_ttl else "-", r.note)
            for r in roles
        )
    return rows


PROFILE_HEADERS = ["profile", "backend", "ttl", "max ttl", "renew / note"]
