"""``bundlesync status``: current numbers, honest warnings, and a monitoring check.

By default ``status`` scans the store first (incrementally: a folder that did not
change costs one ``stat``), so "pending" counts the changes made since the last
run too; ``--no-scan`` skips that and says how old the numbers are. If another
run holds the site, status does not wait for it unless ``--lock-wait`` says so:
it reports from the state as it is, without scanning, and says so.

Received changes not yet in the store are found by a dry run of the apply step,
so they are reported only when there really is something to apply.

``--check`` prints one line and exits in the Nagios plugin convention:
0 OK, 1 WARNING (any warning), 2 CRITICAL (a peer silent for twice
``silent_peer_days``, or the site cannot be read), 3 UNKNOWN (bad command line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from bundlesync.cli import cli
from bundlesync.cli.common import (
    ago,
    configure,
    locked,
    now_ms,
    out_of,
    plural,
    scans_everything,
    site_home,
    with_users,
)
from bundlesync.cli.progress import human_bytes
from bundlesync.errors import BundlesyncError, LockHeld, UsageError
from bundlesync.operations.apply import apply_pending
from bundlesync.operations.freshness import last_scan, record_scan
from bundlesync.operations.preview import rehearsal
from bundlesync.operations.report import ApplyReport
from bundlesync.operations.scan import scan_store
from bundlesync.operations.site import Site, open_site
from bundlesync.operations.status import DAY_MS, SiteStatus, site_status

CHECK_OK, CHECK_WARNING, CHECK_CRITICAL, CHECK_UNKNOWN = 0, 1, 2, 3
CHECK_NAMES = {CHECK_OK: "OK", CHECK_WARNING: "WARNING", CHECK_CRITICAL: "CRITICAL",
               CHECK_UNKNOWN: "UNKNOWN"}


@dataclass
class _Extra:
    scanned: bool = False
    local_changes: int = 0
    as_of_ms: int | None = None
    busy: str | None = None
    unapplied: ApplyReport | None = None
    warnings: list[str] = field(default_factory=list)
    critical: list[str] = field(default_factory=list)


def _unapplied(site: Site) -> ApplyReport:
    """What applying the pending work would change in the store (a rolled-back dry run)."""
    with rehearsal(site.index):
        return apply_pending(site, dry_run=True)


def _as_of(site: Site, report: SiteStatus) -> int | None:
    scanned = last_scan(site.home)
    times = [] if scanned is None else [scanned]
    for p in report.peers:
        if p.last_sent is not None:
            times.append(p.last_sent["created_ms"])
        if p.last_received is not None:
            times.append(p.last_received["received_ms"])
    return max(times) if times else None


def _gather(site: Site, extra: _Extra, *, scan: bool, when: int, whole: bool = False,
            progress: Callable[[str], None] | None = None) -> SiteStatus:
    """``whole``: a scan would take in every user and mailbox; ``last-scan`` then says
    so, and the next no-change export or import can take the quick path."""
    if scan and extra.busy is None:
        stats = scan_store(site, now_ms=when, progress=progress)
        record_scan(site.home, when, whole=whole)
        extra.scanned, extra.local_changes = True, stats.changes
        extra.warnings.extend(stats.warnings)
    report = site_status(site, now_ms=when)
    extra.as_of_ms = when if extra.scanned else _as_of(site, report)
    if extra.busy is None:
        unapplied = _unapplied(site)
        if not unapplied.empty or unapplied.missing:
            extra.unapplied = unapplied
            extra.warnings.append(
                "received changes are not all in the store yet ("
                + unapplied.summary()
                + (f"; {len(unapplied.missing):,} message bodies still to come"
                   if unapplied.missing else "")
                + "): the next import or export applies them")
    limit = site.config.silent_peer_days * DAY_MS
    for p in report.peers:
        if p.heard_ms is not None and when - p.heard_ms > 2 * limit:
            extra.critical.append(f"{p.name}: not heard from for "
                                  f"{(when - p.heard_ms) // DAY_MS} days")
    return report


def _result(report: SiteStatus, extra: _Extra, state: int) -> dict[str, Any]:
    data = report.as_dict()
    data.pop("pending_apply", None)  # replaced by "unapplied", which has no false alarms
    data["scanned"] = extra.scanned
    data["local_changes"] = extra.local_changes
    data["as_of_ms"] = extra.as_of_ms
    data["busy"] = extra.busy
    data["unapplied"] = None if extra.unapplied is None else extra.unapplied.as_dict()
    data["warnings"] = _warnings(report, extra)
    data["notes"] = [n for p in report.peers for n in p.notes] + _held_back(report)
    data["critical"] = extra.critical
    data["check"] = {"state": CHECK_NAMES[state], "code": state}
    return data


@cli.command()
@click.option("--check", is_flag=True,
              help="For monitoring: one line; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
@click.option("--no-scan", is_flag=True,
              help="Do not look at the store; say how old the numbers are.")
@with_users
@click.pass_context
def status(ctx: click.Context, /, check: bool, no_scan: bool, **options: Any) -> None:
    """Per peer: last bundle sent and received, what is pending; warnings.

    Scans the store first (incrementally), so the numbers are current.
    -u/--users-file limit the scan to those users.
    """
    out = out_of(ctx)
    try:
        report, extra = _status(ctx, scan=not no_scan, options=options)
    except BundlesyncError as exc:
        if not check or isinstance(exc, UsageError):
            raise
        out.result = {"check": {"state": "CRITICAL", "code": CHECK_CRITICAL},
                      "error": exc.message}
        if not out.json:
            click.echo(f"BUNDLESYNC CRITICAL - {exc.message}")
        ctx.exit(CHECK_CRITICAL)
    warnings = _warnings(report, extra)
    state = (CHECK_CRITICAL if extra.critical else CHECK_WARNING if warnings else CHECK_OK)
    out.result = _result(report, extra, state)
    if check:
        if not out.json:
            _print_check(report, extra, state, warnings)
        ctx.exit(state)
    _print(out, report, extra)
    for warning in warnings:
        out.warn(warning)


def _held_back(report: SiteStatus) -> list[str]:
    """Mailboxes a configured filter holds back: as configured, so nothing to warn about."""
    return [f"{user or '(store)'}: {', '.join(names)} held back by a filter (their changes "
            "are kept and applied once the filter is lifted)"
            for user, names in sorted(report.held_back.items())]


def _warnings(report: SiteStatus, extra: _Extra) -> list[str]:
    return [w for p in report.peers for w in p.warnings] + extra.warnings


def _status(ctx: click.Context, *, scan: bool,
            options: dict[str, Any]) -> tuple[SiteStatus, _Extra]:
    home = site_home(ctx)
    extra = _Extra()
    when = now_ms()
    progress = out_of(ctx).progress("status: scanning")
    try:
        with locked(ctx, home):
            site = open_site(home)
            try:
                matcher = configure(site, options)
                return _gather(site, extra, scan=scan, when=when,
                               whole=scans_everything(site, matcher),
                               progress=progress.step), extra
            finally:
                site.index.close()
                progress.finish()
    except LockHeld as exc:
        # Another run is working: report the state as it is, read-only, and say so.
        extra.busy = exc.message
    site = open_site(home)
    try:
        configure(site, options)
        return _gather(site, extra, scan=False, when=when), extra
    finally:
        site.index.close()


def _print_check(report: SiteStatus, extra: _Extra, state: int, warnings: list[str]) -> None:
    pending = sum(p.pending_changes for p in report.peers)
    why = extra.critical or warnings
    text = "; ".join(why[:3]) + (f" (+{len(why) - 3} more)" if len(why) > 3 else "")
    if not text:
        text = f"site {report.name}: {plural(len(report.peers), 'peer')}, nothing to report"
    click.echo(f"BUNDLESYNC {CHECK_NAMES[state]} - {text} | peers={len(report.peers)} "
               f"pending_changes={pending} warnings={len(warnings)} messages={report.messages}")


def _print(out: Any, report: SiteStatus, extra: _Extra) -> None:
    out.say(f"Site {report.name}  {report.fingerprint}  (incarnation {report.incarnation})")
    out.say(f"Store {report.store}: {plural(report.users, 'user')}, "
            f"{plural(report.folders, 'folder')}, {plural(report.messages, 'message')}; "
            f"{plural(report.changes_logged, 'change')} logged")
    if extra.scanned:
        out.say(f"Scanned now: {plural(extra.local_changes, 'new local change')}")
    elif extra.busy is not None:
        out.say(f"Not scanned: {extra.busy}; the numbers are from before it.")
    else:
        out.say("Not scanned: the numbers are as of "
                + ("never" if extra.as_of_ms is None else ago(extra.as_of_ms)))
    for p in report.peers:
        out.say(f"Peer {p.name}  {p.fingerprint}")
        out.say(f"  pending for it: {plural(p.pending_changes, 'change')}")
        sent = p.last_sent
        out.say("  last sent: " + ("never" if sent is None else
                f"bundle {sent['seq']}, {human_bytes(sent['size'])}, "
                f"{ago(sent['created_ms'])}"))
        got = p.last_received
        out.say("  last received: " + ("never" if got is None else
                f"bundle {got['seq']}, {ago(got['received_ms'])}"))
        for note in p.notes:
            out.detail(f"  note: {note}")
    if not report.peers:
        out.say("No peers yet. Add one with 'bundlesync peer add NAME CARD'.")
    for line in _held_back(report):
        out.say(line)
