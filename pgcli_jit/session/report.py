"""Tables and times as ``\\jit status`` and ``\\jit profiles`` show them."""

from __future__ import annotations

from pgcli_jit.backends.base import Backend, ProfileGrants, RoleInfo
from pgcli_jit.core.clock import local_time
from pgcli_jit.core.durations import format_clock, format_duration
from pgcli_jit.core.errors import JitError
from pgcli_jit.core.lease import Lease
from pgcli_jit.core.policy import windows
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
        ("renewable", _renewable(lease)),
        ("hard limit", hard),
        ("renewals", str(lease.renewals)),
        ("renew mode", f"{profile.renew} (window: {_window(lease, profile)})"),
        ("reason", lease.reason or "-"),
        ("lease id", lease.short_id() or "-"),
        ("as of", source),
    ]


def _renewable(lease: Lease) -> str:
    """Whether ``\\jit renew`` can extend this lease, as it stands now."""
    if not lease.renewable:
        return "no (renewal means new credentials)"
    if lease.max_expires_at is not None and lease.expires_at >= lease.max_expires_at - 1:
        return "no: at the hard limit (new credentials: \\jit renew --rotate)"
    return "yes"


def _window(lease: Lease, profile: Profile) -> str:
    """The renewal window this lease really has (``renew_before`` never covers more than
    two thirds of a lease), not the setting as written."""
    w = windows(lease, profile.renew_before)
    return f"the last {format_duration(w.expires_at - w.renew_at)}"


Row = tuple[str, str, str, str, str]


def profile_rows(config: Config, backends: dict[str, Backend],
                 server: list[RoleInfo] | None = None,
                 grants: list[ProfileGrants] | None = None) -> list[Row]:
    """Every profile of the config, then what the server lets this login request by name
    (``server``): for a config profile the server also knows, the server's TTLs and rules
    stand in its row (the client's are only a wish); under a Vault-style profile, its roles.
    ``grants``: what the server says each of its profiles grants (empty where it does not)."""
    offered = {info.name: info for info in server or ()}
    described = {g.name: g for g in grants or ()}
    rows: list[Row] = []
    for name in sorted(config.profiles):
        profile = config.profiles[name]
        backend = backends.get(name)
        info = offered.pop(str(profile.options.get("server_profile") or name), None) \
            if backend is not None and backend.server_policy else None
        rows.append(_config_row(config, profile, backend, info, described))
        if backend is not None and not backend.server_policy:
            rows.extend(_role_rows(name, backend))
    rows.extend((f"{info.name} (server)", *_terms(info.default_ttl, info.max_ttl),
                 *_described(info, "", described.get(info.name)))
                for info in offered.values())
    return rows


def _config_row(config: Config, profile: Profile, backend: Backend | None, info: RoleInfo | None,
                described: dict[str, ProfileGrants]) -> Row:
    default = " (default)" if profile.name == config.default_profile else ""
    if info is not None:
        return (profile.name + default, *_terms(info.default_ttl, info.max_ttl),
                *_described(info, profile.description, described.get(info.name)))
    server_decides = backend is not None and backend.server_policy and not profile.ttl_given
    ttl = "server's" if server_decides else format_duration(profile.ttl)
    where = "" if backend is not None and backend.server_policy else f"{profile.backend}: "
    return (profile.name + default, ttl, format_duration(profile.max_ttl) if profile.max_ttl else "-",
            "", where + (profile.description or f"renew {profile.renew}"))


def _role_rows(name: str, backend: Backend) -> list[Row]:
    try:
        roles = backend.roles()
    except JitError as exc:
        return [(f"  {name}: roles", "", "", "", f"not listed: {exc}")]
    return [(f"  {name}: {r.kind} {r.name}", *_terms(r.default_ttl, r.max_ttl), "", r.note) for r in roles]


def _terms(ttl: float | None, max_ttl: float | None) -> tuple[str, str]:
    return (format_duration(ttl) if ttl else "-", format_duration(max_ttl) if max_ttl else "-")


def _described(info: RoleInfo, description: str, grants: ProfileGrants | None) -> tuple[str, str]:
    """The grants cell and the note cell of a server profile."""
    return (grants.summary() if grants is not None else "", _note(info, description, grants))


def _note(info: RoleInfo, description: str, grants: ProfileGrants | None = None) -> str:
    approval = approval_note(info)
    if approval and grants is not None and grants.auto_approved:
        approval += " (auto-approved for you)"
    return "; ".join(filter(None, ("reason required" if info.reason_required else "",
                                   approval,
                                   "break-glass" if grants is not None and grants.break_glass else "",
                                   "logged" if info.logged else "",
                                   description or info.note)))


def approval_note(info: RoleInfo) -> str:
    """Who must approve a request for a server profile before it is granted; nothing when
    nobody must, ``approval unknown`` when the server does not say (an older jit schema)."""
    if info.approvers is None:
        return "approval unknown"
    if not info.approvers:
        return ""
    if info.approvals <= 1:
        return f"approval by {info.approvers}"
    return f"{info.approvals} approvals by {info.approvers}"


PROFILE_HEADERS = ["profile", "ttl", "max ttl", "grants", "note"]
#: the narrowest a wrapped grants or note column gets before the list goes one to a line
NARROWEST = 12


def table_width(rows: list[Row], headers: list[str]) -> int:
    """How wide pgcli's bordered table of these rows is: each column plus `` | `` between."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    return sum(widths) + 3 * len(widths) + 1


def fit_profile_rows(rows: list[Row], width: int) -> list[Row] | None:
    """The table within ``width`` columns: the grants and the note go on over the next rows,
    wrapped at words; None when even that does not fit (then :func:`vertical`)."""
    import textwrap

    if table_width(rows, PROFILE_HEADERS) <= width:
        return rows
    fixed = sum(max(len(r[i]) for r in [tuple(PROFILE_HEADERS), *rows]) for i in range(3))
    room = width - fixed - 3 * len(PROFILE_HEADERS) - 1
    if room < 2 * NARROWEST:
        return None

    def wrap(text: str, width: int) -> list[str]:
        return textwrap.wrap(text, width, break_on_hyphens=False) or [""]

    def lines(grants_w: int) -> int:
        return sum(max(len(wrap(r[3], grants_w)), len(wrap(r[4], room - grants_w))) for r in rows)

    # the split of the room that takes the fewest lines (the wider grants column on a tie)
    grants_w = min(range(room - NARROWEST, NARROWEST - 1, -1), key=lines)
    out: list[Row] = []
    for name, ttl, max_ttl, grants, note in rows:
        left, right = wrap(grants, grants_w), wrap(note, room - grants_w)
        for i in range(max(len(left), len(right))):
            first = i == 0
            out.append((name if first else "", ttl if first else "", max_ttl if first else "",
                        left[i] if i < len(left) else "", right[i] if i < len(right) else ""))
    return out if table_width(out, PROFILE_HEADERS) <= width else None


def profile_table(rows: list[Row], width: int) -> tuple[list[tuple[str, ...]], list[str]] | None:
    """The rows and headers pgcli prints, within ``width``; without the grants column when no
    broker described any (a backend that cannot say changes nothing); None: too narrow."""
    fitted = fit_profile_rows(rows, width)
    if fitted is None:
        return None
    if any(row[3] for row in rows):
        return list(fitted), list(PROFILE_HEADERS)
    return [(a, b, c, e) for a, b, c, _, e in fitted], [h for h in PROFILE_HEADERS if h != "grants"]


def vertical(rows: list[Row], width: int) -> str:
    """The profiles one to a line, what they grant and the note wrapped under them: for a
    terminal too narrow for the table (pgcli would cut it in the pager)."""
    import textwrap

    lines: list[str] = []
    for name, ttl, max_ttl, grants, note in rows:
        lines.append(f"{name}: ttl {ttl}, max ttl {max_ttl}" if ttl else name)
        if grants:
            lines += textwrap.wrap(f"grants {grants}", width, initial_indent="    ",
                                   subsequent_indent="      ", break_on_hyphens=False)
        lines += textwrap.wrap(note, width, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)
