"""The routine: ``export`` and ``import``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bundlesync.cli import cli
from bundlesync.cli.common import (
    configure,
    locked,
    now_ms,
    out_of,
    parse_size,
    plural,
    site_home,
    with_filters,
    with_users,
)
from bundlesync.cli.output import Output
from bundlesync.cli.progress import human_bytes
from bundlesync.errors import BundleRejected, PartialFailure
from bundlesync.operations.droplist import list_drop, readme_text, write_readme
from bundlesync.operations.export import export_drop
from bundlesync.operations.freshness import record_scan
from bundlesync.operations.importer import ImportResult, import_drop
from bundlesync.operations.preview import preview_export
from bundlesync.operations.report import ApplyReport, show_user
from bundlesync.operations.site import Site, open_site
from bundlesync.operations.users import UserMatcher


def warn_unknown_users(out: Output, matcher: UserMatcher, site: Site) -> None:
    """A mask naming one exact user the site does not know is most likely a typo."""
    if matcher.everyone:
        return
    known = set(site.store.users()) | set(site.index.folder_users())
    for mask in matcher.unmatched(known):
        out.warn(f"no user {mask} in the store or the state; the mask -u {mask} chose nobody")


@cli.command("export")
@click.argument("drop", type=click.Path(file_okay=False, path_type=Path))
@click.option("--to", "to", multiple=True, metavar="PEER", help="Only for this peer; repeatable.")
@click.option("--no-encrypt", is_flag=True, help="Sign but do not encrypt (not for lost sticks).")
@click.option("--max-volume-size", metavar="SIZE",
              help="Split bundles into volumes of at most SIZE (e.g. 4G, 700M).")
@click.option("--dry-run", is_flag=True,
              help="Say what each peer's bundle would hold; write nothing.")
@click.option("--no-bodies", is_flag=True,
              help="Changes without message bodies, for a site set up on a copy of the "
                   "peer's store: the peer asks for any body it lacks.")
@with_users
@with_filters
@click.pass_context
def export_cmd(ctx: click.Context, /, drop: Path, to: tuple[str, ...], no_encrypt: bool,
               max_volume_size: str | None, dry_run: bool, no_bodies: bool,
               **options: Any) -> None:
    """Write a bundle for each peer into DROP with everything it has not acknowledged.

    -u/--users-file and the mailbox filters choose which users and mailboxes are
    scanned for local changes; without them, every one is.
    """
    out = out_of(ctx)
    home = site_home(ctx)
    volume_size = parse_size(max_volume_size)
    progress = out.progress("export")
    with locked(ctx, home):
        site = open_site(home)
        try:
            matcher = configure(site, options)
            warn_unknown_users(out, matcher, site)
            if dry_run:
                preview = preview_export(site, to=to, now_ms=now_ms(), bodies=not no_bodies)
            else:
                started = now_ms()
                result = export_drop(site, drop, to=to, encrypt=not no_encrypt,
                                     max_volume_size=volume_size, now_ms=started,
                                     progress=progress.bytes, scan_progress=progress.step,
                                     counter=progress.items, bodies=not no_bodies)
                record_scan(site.home, started)
                readme = write_readme(drop, readme_text(
                    list_drop(drop, site=site), writer=site.identity.name, now_ms=started,
                    size_text=human_bytes))
        finally:
            site.index.close()
    progress.finish()
    if dry_run:
        out.result = preview.as_dict()
        out.say(f"Would scan: {plural(preview.local_changes, 'new local change')} in the store")
        for p in preview.peers:
            out.say(f"Would write for {p.peer}: {plural(p.changes, 'change')}, "
                    f"{plural(p.bodies, 'message body', 'message bodies')}"
                    + (f" ({p.asked_bodies:,} asked for by it)" if p.asked_bodies else ""))
        for warning in preview.warnings:
            out.warn(warning)
        return
    data = result.as_dict()
    data["drop"] = str(drop)
    data["bundles"] = [dict(b, paths=[Path(p).name for p in b["paths"]])
                       for b in data["bundles"]]
    data["readme"] = readme.name
    data["card"] = None if result.card is None else Path(result.card).name
    out.result = data
    out.say(f"Scanned the store: {plural(result.scan.changes, 'new local change')} since the "
            "last run")
    for bundle in result.bundles:
        out.say(f"Wrote a bundle for {bundle.peer}: {plural(bundle.changes, 'change')} it has "
                f"not acknowledged, {plural(bundle.bodies, 'message body', 'message bodies')} "
                f"({human_bytes(bundle.body_bytes)}), {human_bytes(bundle.size)} on disk")
        for path in bundle.paths:
            out.detail(f"  {path}")
    for name in result.up_to_date:
        out.say(f"Nothing new for {name}: it has acknowledged everything.")
    if result.removed:
        out.say(f"Removed {plural(len(result.removed), 'old bundle file')} (acknowledged or "
                "superseded)")
        for name in result.removed:
            out.detail(f"  removed {name}")
    for warning in result.scan.warnings:
        out.warn(warning)


def _summary(report: ApplyReport) -> str:
    # Failed users' changes stay pending and are applied by a later run: they are
    # not counted as done.
    ok = [(k, t) for k, t in report.tallies.items() if k[0] not in report.failures]
    added = sum(t.added for _k, t in ok)
    expunged = sum(t.expunged for _k, t in ok)
    flags = sum(t.flags for _k, t in ok)
    conflicts = sum(t.conflicts for _k, t in ok)
    users = len({k[0] for k, t in ok if t.added or t.expunged or t.flags})
    mailboxes = [m for m in report.mailboxes if m["user"] not in report.failures]
    return (f"{plural(added, 'message')} added, {expunged:,} expunged, "
            f"{plural(flags, 'flag change')}, {plural(len(mailboxes), 'mailbox change')}"
            f" for {plural(users, 'user')}"
            + (f", {plural(conflicts, 'conflict')} resolved" if conflicts else ""))


def _print_import(out: Output, result: ImportResult, drop: Path) -> None:
    dry = result.dry_run
    prefix = "Would apply" if dry else "Applied"
    skipped: dict[str, int] = {}
    for b in result.bundles:
        if b.status == "applied":
            out.say(f"{prefix} bundle {b.seq} from {b.origin}: {b.new_changes:,} new of "
                    f"{plural(b.changes, 'change')}, "
                    f"{plural(b.bodies, 'message body', 'message bodies')}")
        elif b.status != "rejected":
            skipped[b.status] = skipped.get(b.status, 0) + 1
            out.detail(f"Skipped {Path(b.path).name}: {b.status}")
    for status, count in sorted(skipped.items()):
        out.say(f"Skipped {plural(count, 'bundle')}: {status}")
    if not result.bundles:
        out.say(f"No bundles for this site in {drop}.")
    report = result.report
    for line in report.lines() if out.options.verbose else []:
        if not line.startswith(("FAILED", "warning:")):
            out.detail(("would: " if dry else "") + line)
    if not report.empty:
        out.say(("Would change: " if dry else "Changed: ") + _summary(report))
    if report.missing and not out.options.verbose:
        out.say(f"Waiting for {plural(len(report.missing), 'message body', 'message bodies')} "
                "(they come with a later bundle)")
    for user, text in sorted(report.failures.items()):
        click.echo(f"FAILED for {show_user(user)}: {text}", err=True)
    for warning in report.warnings + result.scan.warnings:
        out.warn(warning)
    if result.new_incarnation is not None:
        out.say(f"This site was restored from an old copy; it now writes as incarnation "
                f"{result.new_incarnation} so no change number is used twice.")


def _import_json(result: ImportResult) -> dict[str, Any]:
    data = result.as_dict()
    data["bundles"] = [dict(b, path=Path(b["path"]).name,
                            status="would apply" if result.dry_run and b["status"] == "applied"
                            else b["status"]) for b in data["bundles"]]
    changes = data["changes"]
    changes["failed_users"] = sorted(result.report.failures)
    changes["mailboxes"] = [m for m in changes["mailboxes"]
                            if m["user"] not in result.report.failures]
    for key in ("added", "expunged", "flag_changes", "conflicts"):
        changes[key] = sum(m[key] for m in changes["mailboxes"])
    return data


@cli.command("import")
@click.argument("drop", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@with_users
@with_filters
@click.pass_context
def import_cmd(ctx: click.Context, /, drop: Path, dry_run: bool, **options: Any) -> None:
    """Verify, merge and apply every bundle in DROP addressed to this site.

    Every bundle is merged; -u/--users-file and the mailbox filters choose what
    is applied to the store now -- the rest is held back, not dropped, and
    applied by a later run that includes it. Prints a summary; a line per user
    and mailbox with -v.
    """
    out = out_of(ctx)
    home = site_home(ctx)
    progress = out.progress("import")
    with locked(ctx, home):
        site = open_site(home)
        try:
            matcher = configure(site, options)
            warn_unknown_users(out, matcher, site)
            started = now_ms()
            result = import_drop(site, drop, dry_run=dry_run, now_ms=started,
                                 progress=progress.items)
            if not dry_run:
                record_scan(site.home, started)
            held = [u for u in site.index.pending_users() if not matcher.matches(u)]
            rejections = [(b, b.rejection) for b in result.rejected]
        finally:
            site.index.close()
    progress.finish()
    out.result = _import_json(result)
    out.result["held_back_users"] = len(held)
    _print_import(out, result, drop)
    if held:
        out.say(f"Held back for {plural(len(held), 'user')} outside -u/--users-file: "
                "applied by a run that includes them.")
    if rejections:
        for outcome, exc in rejections:
            hint = f" ({exc.hint})" if exc is not None and exc.hint else ""
            click.echo(f"REJECTED {Path(outcome.path).name}: {outcome.error}{hint}", err=True)
        first_outcome, first = rejections[0]
        error = first if first is not None else BundleRejected(first_outcome.error or "rejected")
        error.message = (f"{plural(len(rejections), 'bundle')} rejected "
                         f"(first: {Path(first_outcome.path).name}: {error.message}); "
                         "the others were imported")
        raise error
    if result.report.failures:
        users = sorted(show_user(u) for u in result.report.failures)
        raise PartialFailure(
            f"the store could not be written for {plural(len(users), 'user')}: "
            + ", ".join(users[:5]) + (" …" if len(users) > 5 else ""),
            hint="Fix the store for those users (see FAILED above); their changes stay "
                 "pending and the next import or export applies them.")

