"""``bundlesync export``: a bundle for each peer with what it has not acknowledged.

Kept apart from ``import`` so that an export imports neither the bundle reader
nor the import's apply and report code; the operations are imported inside the
command, so ``--help`` loads only click and the options.
"""

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
    scans_everything,
    site_home,
    warn_unknown_users,
    with_filters,
    with_users,
)
from bundlesync.cli.progress import human_bytes


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
    # Loaded here, not at the top: only the run itself needs them (``--help`` and
    # the completion need only the options).
    from bundlesync.format.volumes import find_bundles  # noqa: PLC0415
    from bundlesync.operations.droplist import list_drop  # noqa: PLC0415
    from bundlesync.operations.export import export_drop  # noqa: PLC0415
    from bundlesync.operations.freshness import record_scan  # noqa: PLC0415
    from bundlesync.operations.readme import (  # noqa: PLC0415
        README_NAME,
        readme_lists,
        readme_text,
        write_readme,
    )
    from bundlesync.operations.site import open_site  # noqa: PLC0415

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
                from bundlesync.operations.preview import preview_export  # noqa: PLC0415

                preview = preview_export(site, to=to, now_ms=now_ms(), bodies=not no_bodies)
            else:
                started = now_ms()
                result = export_drop(site, drop, to=to, encrypt=not no_encrypt,
                                     max_volume_size=volume_size, now_ms=started,
                                     progress=progress.bytes, scan_progress=progress.step,
                                     counter=progress.items, bodies=not no_bodies)
                record_scan(site.home, started, whole=scans_everything(site, matcher))
                # README.txt says which bundles the drop holds: rewritten only when
                # that changed, so a run that changed nothing writes nothing here.
                readme = drop / README_NAME
                if not readme_lists(drop, [p.name for p in find_bundles(drop)]):
                    readme = write_readme(drop, readme_text(
                        list_drop(drop, site=site), writer=site.name, now_ms=started,
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
