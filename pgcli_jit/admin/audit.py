"""``pgcli-jit-admin audit``: the server-side trail, ``--verify`` of its hash chain (in the
table or in archive files), and ``audit archive``, which moves old rows to such a file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import psycopg

from pgcli_jit.admin import archive, fmt, follow
from pgcli_jit.admin.connect import Conn, check_dsn, connect, dsn_option
from pgcli_jit.core.durations import parse_duration
from pgcli_jit.core.errors import JitError, UsageError
from pgcli_jit.server import statements

HEADERS = ("ID", "AT", "EVENT", "PROFILE", "ROLE", "REQUESTER", "ACTOR", "CLIENT", "REASON", "EXPIRES")


def since_time(text: str | None) -> datetime:
    """``--since 2h`` (that long ago) or an ISO-8601 time; default: everything."""
    if not text:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return _past_time(text, "--since", "a duration (2h, 30m) nor an ISO-8601 time")


def before_time(text: str) -> datetime:
    """``--before 90d`` (older than that) or an ISO-8601 date or time."""
    return _past_time(text, "--before", "a duration (90d) nor an ISO-8601 date or time")


def _past_time(text: str, option: str, neither: str) -> datetime:
    """A duration ago, or an ISO-8601 time (local when it names no zone)."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is neither {neither}") from None
    return value if value.tzinfo else value.astimezone()


@click.group(invoke_without_command=True)
@dsn_option
@click.option("--since", metavar="DUR|TIME", help="Only events since then (2h, or 2026-11-24T09:00).")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True,
              help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--after-id", type=click.IntRange(0), metavar="ID",
              help="Only the rows committed after row ID, oldest first (0: from the start): "
                   "a cursor for shipping the trail, --limit rows at a time.")
@click.option("--verify", is_flag=True, help="Check the hash chain; exit 1 naming the first bad row.")
@click.option("--break-glass", is_flag=True,
              help="Only break-glass uses (with --since: since then).")
@click.option("--follow", "follow_rows", is_flag=True,
              help="Keep running: print each row as it commits (woken by the server's doorbell), "
                   "from the end of the chain, --after-id or --cursor-file; Ctrl-C or SIGTERM stops.")
@click.option("--cursor-file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="With --follow: start after the row this file names (when it exists), and "
                   "write each row printed to it: a shipper's restart loses nothing.")
@click.option("--file", "files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="With --verify: check these archive files (in chain order), not the database.")
@click.pass_context
def audit(ctx: click.Context, dsn: str, since: str | None, limit: int, as_json: bool,
          after_id: int | None, verify: bool, break_glass: bool, follow_rows: bool,
          cursor_file: Path | None, files: tuple[Path, ...]) -> None:
    """Who asked for what, why, for how long, and who ended it (newest first).

    ``audit archive`` moves old rows to a file that verifies on its own."""
    if ctx.invoked_subcommand is not None:
        return
    if cursor_file is not None and not follow_rows:
        raise UsageError("--cursor-file goes with --follow: audit --follow --cursor-file FILE")
    if follow_rows:
        if since or verify or break_glass or files:
            raise UsageError("--follow streams rows from a cursor: not with --since, --verify, "
                             "--break-glass or --file")
        check_dsn(dsn)
        follow.run(dsn, as_json, lambda conn: start_after(conn, after_id), cursor_file,
                   "pgcli-jit-admin audit --follow")
        return
    if files and not verify:
        raise UsageError("--file goes with --verify: audit --verify --file FILE")
    if after_id is not None and (since or verify):
        raise UsageError("--after-id is a cursor of its own: not with --since or --verify")
    if break_glass and (after_id is not None or verify or files):
        raise UsageError("--break-glass lists uses: with --since, not with --after-id or --verify")
    if files:
        verify_files(list(files))
        return
    with connect(dsn) as conn:
        if verify:
            verify_table(conn)
            return
        if break_glass:
            cur = conn.execute(statements.AUDIT_BREAK_GLASS, (since_time(since), limit))
        elif after_id is None:
            cur = conn.execute(statements.AUDIT, (since_time(since), limit))
        else:
            cur = conn.execute(statements.AUDIT_AFTER, (seq_after(conn, after_id), limit))
        names = [c.name for c in cur.description or []]
        rows = cur.fetchall()
    if as_json:
        click.echo(fmt.to_json([dict(zip(names, r, strict=True)) for r in rows]))
    elif rows:
        click.echo(fmt.table(HEADERS, [(*r[:8], fmt.clip(fmt.printable(r[8] or "-")), r[9]) for r in rows]))
    else:
        click.echo("No break-glass uses." if break_glass else "No audit events.")


def seq_after(conn: Conn, after_id: int) -> int:
    """The chain position of row ``after_id`` (0: before the first row).  The rows committed
    so far are chained first, so a row committed after an id taken later is still shipped:
    the cursor follows the chain (commit order), not the ids."""
    conn.execute(statements.CHAIN_AUDIT)
    if after_id == 0:
        return -1
    row = conn.execute(statements.AUDIT_SEQ_OF, (after_id,)).fetchone()
    if row is None or row[0] is None:
        raise JitError(f"audit row {after_id} is not in the table (archived, or never written)",
                       "--after-id 0 starts from the oldest row the table holds")
    return int(row[0])


def start_after(conn: Conn, after_id: int | None) -> follow.Cursor:
    """Where ``--follow`` starts without a cursor file: after ``--after-id``, else the end."""
    if after_id is None:
        return follow.end_of_chain(conn)
    return follow.Cursor(seq_after(conn, after_id), after_id or None)


def verify_table(conn: Conn) -> None:
    row = conn.execute(statements.AUDIT_VERIFY).fetchone()
    assert row is not None
    checked, bad_id, problem = row
    if bad_id is not None or problem:
        click.echo(f"audit chain broken at row {bad_id}: {problem} ({checked} rows read)", err=True)
        raise click.exceptions.Exit(1)
    after, _ = checkpoint(conn)
    since = f", from the archive checkpoint at seq {after} on" if after is not None else ""
    click.echo(f"audit chain intact: {checked} rows{since}")
    verify_session_logs(conn)


def verify_session_logs(conn: Conn) -> None:
    """Each sealed lease's collected lines against its 'session' audit row: the chain proves
    the row, the row's digest proves the lines."""
    row = conn.execute(statements.SESSION_LOG_VERIFY).fetchone()
    assert row is not None
    checked, bad_lease, problem = row
    if bad_lease is not None or problem:
        click.echo(f"session log broken: {problem}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"session logs intact: {checked} sealed lease(s)")
    for lease_id, gaps in conn.execute(statements.SESSION_LOGS_INCOMPLETE).fetchall():
        click.echo(f"lease {lease_id} was sealed incomplete: {gaps} line(s) too long to collect"
                   f" (pgcli-jit-admin session {lease_id} shows where)")


def verify_files(paths: list[Path]) -> None:
    try:
        found = archive.verify_all(paths)
    except archive.ArchiveError as exc:
        click.echo(f"audit archive broken: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    rows = sum(s.rows for s in found)
    click.echo(f"audit archive intact: {rows} rows, seq {found[0].first_seq}..{found[-1].through_seq}"
               f" ({', '.join(str(s.path) for s in found)})")


def checkpoint(conn: Conn) -> tuple[int | None, bytes | None]:
    """Where the table's chain starts: the last archived row's seq and hash (none: None)."""
    try:
        row = conn.execute(statements.AUDIT_CHECKPOINT).fetchone()
    except psycopg.errors.UndefinedTable:   # a schema older than retention: nothing archived
        return None, None
    return (int(row[0]), bytes(row[1])) if row else (None, None)


@audit.command("archive")
@dsn_option
@click.option("--before", required=True, metavar="DATE|DUR",
              help="Archive the rows older than this (2026-01-01, or 90d for 90 days ago).")
@click.option("--to", "target", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The JSON-lines file to write (a new one for each archive).")
@click.pass_context
def archive_rows(ctx: click.Context, dsn: str, before: str, target: Path) -> None:
    """Move the audit rows older than DATE to FILE, then remove them from the table (operators).

    The file is written and fsynced first; the server removes only what it holds, in one
    transaction, and leaves a checkpoint that audit --verify proves the rest of the chain from.
    Stopped in between, the same command can be run again."""
    cutoff = before_time(before)
    with connect(dsn or (ctx.parent.params["dsn"] if ctx.parent else "")) as conn:
        conn.execute(statements.CHAIN_AUDIT)
        after_seq, after_hash = checkpoint(conn)
        try:
            if target.exists() or target.is_symlink():
                done = reusable(target, after_seq, after_hash)
            else:
                done = write_new(conn, target, after_seq, after_hash, cutoff)
            if done is None or done.through_hash is None:
                return
            conn.execute(statements.AUDIT_ARCHIVE, (after_seq, after_hash, done.through_seq,
                                                    bytes.fromhex(done.through_hash), done.rows, cutoff))
        except psycopg.errors.InsufficientPrivilege:
            raise JitError("archiving removes audit rows: only a login in jit_archiver may",
                           "as a superuser: GRANT jit_archiver TO the one login that ships archives "
                           "(never the reaper or monitoring)") from None
    click.echo(f"archived {done.rows} audit rows (seq {done.first_seq}..{done.through_seq}, older than "
               f"{cutoff.isoformat()}) to {target}; the table's chain now starts after seq "
               f"{done.through_seq}")


def write_new(conn: Conn, target: Path, after_seq: int | None, after_hash: bytes | None,
              cutoff: datetime) -> archive.Summary | None:
    """The rows older than ``cutoff`` the server lets go, in a new file (None: there were none)."""
    head = archive.header(after_seq, after_hash, before=cutoff.isoformat(),
                          database=current_database(conn))
    rows = (archive.row_line(seq, _bytes(prev), bytes(digest), hashed) for seq, prev, digest, hashed
            in conn.cursor().stream(statements.AUDIT_ARCHIVE_ROWS, (cutoff,)))
    try:
        done = archive.write(target, head, rows)
    except archive.ArchiveError as exc:
        raise JitError(f"the rows read do not verify, nothing written or removed: {exc.problem}",
                       "pgcli-jit-admin audit --verify says what is wrong in the table") from None
    if done is None:
        click.echo(f"No audit rows older than {cutoff.isoformat()} to archive.")
    return done


def reusable(target: Path, after_seq: int | None, after_hash: bytes | None) -> archive.Summary | None:
    """What an existing ``--to`` file holds, when its rows are still in the table (a run
    stopped before the removal): the server removes those, and the file is not written
    again.  One whose rows the table has archived already is the run that finished: said,
    not redone (None).  Anything else is refused."""
    try:
        found = archive.verify(target)
    except archive.ArchiveError as exc:
        raise JitError(f"{target} exists and is not an intact archive ({exc.problem})",
                       "choose another file") from None
    mine = after_hash.hex() if after_hash is not None else None
    if (found.through_seq, found.through_hash) == (after_seq, mine):
        click.echo(f"{target} already holds the rows archived through seq {after_seq}, the table's "
                   "checkpoint: nothing to do (archive newer rows to a new file)")
        return None
    if (found.after_seq, found.after_hash) == (after_seq, mine):
        return found
    raise JitError(f"{target} exists and holds other audit rows (seq {found.first_seq}..{found.through_seq})",
                   "choose another file")


def current_database(conn: Conn) -> str:
    row = conn.execute(statements.CURRENT_DATABASE).fetchone()
    return str(row[0]) if row else ""


def _bytes(value: bytes | None) -> bytes | None:
    return bytes(value) if value is not None else None


COMMANDS = [audit]
