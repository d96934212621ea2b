"""``bundlesync list DROP``: every bundle on a stick, for the courier and the administrator."""

from __future__ import annotations

from pathlib import Path

import click

from bundlesync.cli import cli
from bundlesync.cli.common import home_of, out_of
from bundlesync.cli.progress import human_bytes
from bundlesync.errors import ConfigError, UsageError
from bundlesync.keys import KeyMissing
from bundlesync.operations.droplist import list_drop
from bundlesync.operations.readme import counts_text, maybe_when
from bundlesync.operations.site import Site, open_site


def _site_if_any(home: Path | None) -> Site | None:
    """This machine's site, read without the lock (listing never writes); None if none."""
    try:
        return open_site(home)
    except (ConfigError, KeyMissing):
        return None


@cli.command("list")
@click.argument("drop", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def list_cmd(ctx: click.Context, drop: Path) -> None:
    """List every bundle in DROP: from whom, for whom, when, size, changes, state.

    Only the headers are read, so it is quick and works on any machine; on a
    site it also says which bundles this site applied and which may be erased.
    """
    out = out_of(ctx)
    if not drop.is_dir():
        raise UsageError(f"the drop {drop} is not a directory",
                         hint="Mount the drive, or check the path.")
    site = _site_if_any(home_of(ctx))
    try:
        entries = list_drop(drop, site=site)
    finally:
        if site is not None:
            site.index.close()
    out.result = {"drop": str(drop), "site": None if site is None else site.identity.name,
                  "bundles": [e.as_dict() for e in entries]}
    if not entries:
        out.say(f"No bundles in {drop}.")
        return
    for e in entries:
        to = ", ".join(e.recipients) or "any site"
        erase = {True: "safe to erase", False: "keep", None: "keep"}[e.safe_to_erase]
        if e.error is not None:
            out.say(f"{e.name}  {human_bytes(e.size)}  unreadable: {e.error}")
            continue
        out.say(f"{e.name}")
        out.say(f"  {e.origin} -> {to}, bundle {e.seq}, {maybe_when(e.created_ms)}, "
                f"{human_bytes(e.size)}, {counts_text(e)}"
                + ("" if e.encrypted else ", NOT encrypted"))
        out.say(f"  {e.note}; {erase}")
    out.say(f"{len(entries)} bundle(s), {human_bytes(sum(e.size for e in entries))}"
            + ("" if site is not None else " (no site here: applied and erase state unknown)"))
