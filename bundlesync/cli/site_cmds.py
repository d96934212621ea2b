"""Site commands: init, key, peer, export, import, status."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from bundlesync.cli import cli
from bundlesync.cli.progress import Progress, human_bytes
from bundlesync.errors import EXIT_BUNDLE_REJECTED, EXIT_PARTIAL, UsageError
from bundlesync.keys import PeerCard, site_paths
from bundlesync.operations.export import export_drop
from bundlesync.operations.importer import import_drop
from bundlesync.operations.setup import add_peer, init_site, own_card, remove_peer
from bundlesync.operations.site import open_site, resolve_home, site_lock
from bundlesync.operations.status import site_status


def now_ms() -> int:
    return int(time.time() * 1000)


def home_of(ctx: click.Context) -> Path | None:
    home = ctx.find_root().obj.get("home") if ctx.find_root().obj else None
    return home if isinstance(home, Path) else None


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def parse_size(text: str | None) -> int | None:
    if text is None:
        return None
    units = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}
    raw = text.strip().upper().removesuffix("B")
    number = raw.rstrip("KMGI")
    unit = raw[len(number):]
    try:
        value = int(float(number) * units[unit])
    except (KeyError, ValueError):
        raise UsageError(f"cannot read the size {text!r}",
                         hint="Write it like 700M, 4G or 2GiB.") from None
    if value < 1 << 20:
        raise UsageError(f"a volume of {text} is too small", hint="Use at least 1M.")
    return value


def confirm(question: str, *, yes: bool) -> None:
    """Ask on a terminal; never prompt when stdin is not one (scripts, cron)."""
    if yes or not sys.stdin.isatty():
        return
    if not click.confirm(question, default=False):
        raise click.exceptions.Abort()


pattern_options = [
    click.option("--include", multiple=True, metavar="PATTERN",
                 help="Only mailboxes matching (fnmatch on 'Parent/Child'); repeatable."),
    click.option("--exclude", multiple=True, metavar="PATTERN",
                 help="Skip mailboxes matching, e.g. 'Trash' or 'Junk*'; repeatable."),
]


def with_patterns(func: Any) -> Any:
    for option in reversed(pattern_options):
        func = option(func)
    return func


# -- init ------------------------------------------------------------------------------


@cli.command()
@click.option("--site", "name", required=True, help="This site's name (letters, digits, - _ .).")
@click.option("--store", required=True,
              help="One user's Maildir, or a template like /var/vmail/%d/%n/Maildir.")
@with_patterns
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def init(ctx: click.Context, name: str, store: str, include: tuple[str, ...],
         exclude: tuple[str, ...], as_json: bool) -> None:
    """Set up this site: keys, configuration, state index, inventory of the store."""
    home = resolve_home(home_of(ctx))
    with site_lock(home):
        result = init_site(home, name=name, store_location=store, include=include,
                           exclude=exclude, now_ms=now_ms())
    if as_json:
        emit_json({"home": str(result.home), "name": result.name, "site_id": result.site_id,
                   "fingerprint": result.fingerprint, "users": result.scan.users,
                   "folders": result.scan.folders, "messages": result.scan.added})
        return
    click.echo(f"Site {result.name} set up in {result.home}")
    click.echo(f"  fingerprint {result.fingerprint}")
    click.echo(f"  inventory: {result.scan.users} user(s), {result.scan.folders} folder(s), "
               f"{result.scan.added:,} message(s)")
    click.echo("Next: 'bundlesync key export CARD' and give the card to the other site.")


# -- keys and peers --------------------------------------------------------------------


@cli.group()
def key() -> None:
    """This site's key card (its public keys)."""


@key.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def key_show(ctx: click.Context, as_json: bool) -> None:
    """Show this site's name, id and fingerprint."""
    card = own_card(resolve_home(home_of(ctx)))
    if as_json:
        emit_json({"name": card.name, "site_id": card.site_id, "fingerprint": card.fingerprint})
        return
    click.echo(f"{card.name}  {card.fingerprint}")


@key.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def key_export(ctx: click.Context, file: Path) -> None:
    """Write this site's key card to FILE, to give to a peer."""
    card = own_card(resolve_home(home_of(ctx)))
    card.write(file)
    click.echo(f"Wrote the key card of {card.name} to {file}")
    click.echo(f"  fingerprint {card.fingerprint} (the peer compares it when adding the card)")


@cli.group()
def peer() -> None:
    """The sites this site trusts."""


@peer.command("add")
@click.argument("name")
@click.argument("card", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask to confirm the fingerprint.")
@click.pass_context
def peer_add(ctx: click.Context, name: str, card: Path, yes: bool) -> None:
    """Trust the site whose key card is CARD, under NAME."""
    home = resolve_home(home_of(ctx))
    preview = PeerCard.read(card)
    click.echo(f"Card of {preview.name}, fingerprint {preview.fingerprint}")
    confirm("Does this fingerprint match the one the other site reads out to you?", yes=yes)
    with site_lock(home):
        added = add_peer(home, card, name=name)
    click.echo(f"Peer {added.name} added. Compare the fingerprint out of band:")
    click.echo(f"  {added.fingerprint}")


@peer.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def peer_list(ctx: click.Context, as_json: bool) -> None:
    """List the trusted peers."""
    cards = sorted(site_paths(resolve_home(home_of(ctx))).trust_store().list(),
                   key=lambda c: c.name)
    if as_json:
        emit_json([{"name": c.name, "site_id": c.site_id, "fingerprint": c.fingerprint}
                   for c in cards])
        return
    if not cards:
        click.echo("No peers yet. Add one with 'bundlesync peer add NAME CARD'.")
    for c in cards:
        click.echo(f"{c.name}  {c.fingerprint}")


@peer.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def peer_remove(ctx: click.Context, name: str, yes: bool) -> None:
    """Stop trusting NAME: its bundles are refused from now on."""
    home = resolve_home(home_of(ctx))
    confirm(f"Remove the peer {name}? Its bundles will be refused.", yes=yes)
    with site_lock(home):
        card = remove_peer(home, name)
    click.echo(f"Peer {card.name} removed ({card.fingerprint}).")


# -- export and import -----------------------------------------------------------------


@cli.command("export")
@click.argument("drop", type=click.Path(file_okay=False, path_type=Path))
@click.option("--to", "to", multiple=True, metavar="PEER", help="Only for this peer; repeatable.")
@click.option("--no-encrypt", is_flag=True, help="Sign but do not encrypt (not for lost sticks).")
@click.option("--max-volume-size", metavar="SIZE",
              help="Split bundles into volumes of at most SIZE (e.g. 4G, 700M).")
@with_patterns
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def export_cmd(ctx: click.Context, drop: Path, to: tuple[str, ...], no_encrypt: bool,
               max_volume_size: str | None, include: tuple[str, ...],
               exclude: tuple[str, ...], as_json: bool) -> None:
    """Write a bundle for each peer into DROP with everything it has not acknowledged."""
    home = resolve_home(home_of(ctx))
    progress = Progress("export", enabled=None if not as_json else False)
    with site_lock(home):
        site = open_site(home)
        try:
            site.config = site.config.with_filters(include=include, exclude=exclude)
            result = export_drop(site, drop, to=to, encrypt=not no_encrypt,
                                 max_volume_size=parse_size(max_volume_size), now_ms=now_ms(),
                                 progress=progress.bytes, scan_progress=progress.step,
                                 counter=progress.items)
        finally:
            site.index.close()
    progress.finish()
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"{result.scan.changes:,} local change(s) found in the store")
    for bundle in result.bundles:
        click.echo(f"Wrote a bundle for {bundle.peer}: {bundle.changes:,} change(s), "
                   f"{bundle.bodies:,} message bod{'y' if bundle.bodies == 1 else 'ies'} "
                   f"({human_bytes(bundle.body_bytes)}), {human_bytes(bundle.size)} on disk")
        for path in bundle.paths:
            click.echo(f"  {path}")
    for name in result.up_to_date:
        click.echo(f"Nothing new for {name}: it has acknowledged everything.")
    for name in result.removed:
        click.echo(f"Removed {name} (acknowledged or superseded)")
    for warning in result.scan.warnings:
        click.echo(f"warning: {warning}", err=True)


@cli.command("import")
@click.argument("drop", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@with_patterns
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def import_cmd(ctx: click.Context, drop: Path, dry_run: bool, include: tuple[str, ...],
               exclude: tuple[str, ...], as_json: bool) -> None:
    """Verify, merge and apply every bundle in DROP addressed to this site."""
    home = resolve_home(home_of(ctx))
    progress = Progress("import", enabled=None if not as_json else False)
    with site_lock(home):
        site = open_site(home)
        try:
            site.config = site.config.with_filters(include=include, exclude=exclude)
            result = import_drop(site, drop, dry_run=dry_run, now_ms=now_ms(),
                                 progress=progress.items)
        finally:
            site.index.close()
    progress.finish()
    if as_json:
        emit_json(result.as_dict())
    else:
        prefix = "Would apply" if dry_run else "Applied"
        for b in result.bundles:
            if b.status == "applied":
                bodies = f"{b.bodies:,} bod{'y' if b.bodies == 1 else 'ies'}"
                click.echo(f"{prefix} bundle {b.seq} from {b.origin}: {b.new_changes:,} new of "
                           f"{b.changes:,} change(s), {bodies}")
            elif b.status == "rejected":
                click.echo(f"REJECTED {b.path}: {b.error}", err=True)
            else:
                click.echo(f"Skipped {Path(b.path).name}: {b.status}")
        if not result.bundles:
            click.echo(f"No bundles for this site in {drop}.")
        for line in result.report.lines():
            click.echo(("would: " if dry_run else "") + line)
        if not result.report.empty:
            click.echo(("Would change: " if dry_run else "Changed: ") + result.report.summary())
        if result.new_incarnation is not None:
            click.echo(f"This site was restored from an old copy; it now writes as incarnation "
                       f"{result.new_incarnation} so no change number is used twice.")
    if result.rejected:
        click.echo("hint: rejected bundles changed nothing; ask their site to export again.",
                   err=True)
        ctx.exit(EXIT_BUNDLE_REJECTED)
    if result.report.failures:
        ctx.exit(EXIT_PARTIAL)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per peer: last bundle sent and received, what is pending; warnings."""
    home = resolve_home(home_of(ctx))
    with site_lock(home):
        site = open_site(home)
        try:
            report = site_status(site, now_ms=now_ms())
        finally:
            site.index.close()
    if as_json:
        emit_json(report.as_dict())
        return
    click.echo(f"Site {report.name}  {report.fingerprint}  (incarnation {report.incarnation})")
    click.echo(f"Store {report.store}: {report.users} user(s), {report.folders} folder(s), "
               f"{report.messages:,} message(s); {report.changes_logged:,} change(s) logged")
    if report.pending_apply:
        click.echo("An interrupted import left work pending: the next export or import "
                   "finishes it.")
    for p in report.peers:
        click.echo(f"Peer {p.name}  {p.fingerprint}")
        click.echo(f"  pending for it: {p.pending_changes:,} change(s)")
        sent = p.last_sent
        click.echo("  last sent: " + ("never" if sent is None else
                   f"bundle {sent['seq']}, {human_bytes(sent['size'])}, "
                   f"{_ago(sent['created_ms'])}"))
        got = p.last_received
        click.echo("  last received: " + ("never" if got is None else
                   f"bundle {got['seq']}, {_ago(got['received_ms'])}"))
    for warning in report.warnings:
        click.echo(f"warning: {warning}")


def _ago(ms: int) -> str:
    seconds = max(0, (now_ms() - ms) // 1000)
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"
