"""``bundlesync import``: verify, merge and apply the bundles in a drop for this site."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bundlesync.cli import cli
from bundlesync.cli.common import (
    configure,
    locked,
    now_ms,
    out_of,
    plural,
    scans_everything,
    site_home,
    warn_unknown_users,
    with_filters,
    with_users,
)
from bundlesync.cli.output import Output
from bundlesync.errors import BundleRejected, PartialFailure

if TYPE_CHECKING:
    from bundlesync.operations.importer import ImportResult
    from bundlesync.operations.report import ApplyReport


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
    from bundlesync.operations.report import show_user  # noqa: PLC0415 - a run's, not --help's

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
    from bundlesync.operations.freshness import record_scan  # noqa: PLC0415
    from bundlesync.operations.importer import import_drop  # noqa: PLC0415
    from bundlesync.operations.site import open_site  # noqa: PLC0415

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
                record_scan(site.home, started, whole=scans_everything(site, matcher))
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
        from bundlesync.operations.report import show_user  # noqa: PLC0415

        users = sorted(show_user(u) for u in result.report.failures)
        raise PartialFailure(
            f"the store could not be written for {plural(len(users), 'user')}: "
            + ", ".join(users[:5]) + (" …" if len(users) > 5 else ""),
            hint="Fix the store for those users (see FAILED above); their changes stay "
                 "pending and the next import or export applies them.")
