"""Restore and view commands: bring a snapshot back, or show every date read-only."""

from __future__ import annotations

from pathlib import Path

import click

from bundlesync.archive.locks import reader_lock
from bundlesync.archive.model import SnapshotSource
from bundlesync.archive.restore import restore_beside, restore_into
from bundlesync.archive.restore_plan import Selection, parse_prefix
from bundlesync.archive.view import SINGLE_USER, acl_file_text, dovecot_config, refresh_view
from bundlesync.cli import cli
from bundlesync.cli.archive_cmds import _open as open_reading
from bundlesync.cli.archive_cmds import _secret_options as secret_options
from bundlesync.cli.common import home_of, out_of
from bundlesync.cli.progress import Progress
from bundlesync.errors import UsageError
from bundlesync.stores.maildir import MaildirStore


def open_for_reading(
    ctx: click.Context, archive: Path, passphrase_file: Path | None,
    recovery_key_file: Path | None,
) -> SnapshotSource:
    """The archive opened as the other reading commands open it (same secret options)."""
    return open_reading(ctx, archive, passphrase_file, recovery_key_file)


def live_store(ctx: click.Context, location: str | None) -> MaildirStore:
    if location is not None:
        return MaildirStore(location)
    from bundlesync.operations.config import CONFIG_NAME, read_config  # noqa: PLC0415
    from bundlesync.operations.site import resolve_home  # noqa: PLC0415

    config = read_config(resolve_home(home_of(ctx)) / CONFIG_NAME)
    return MaildirStore(config.store)


@cli.command()
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--at", required=True, metavar="DATE|SNAPSHOT",
              help="The snapshot: an id (or prefix), 'latest', or an ISO date or time (the "
              "newest snapshot at or before it).")
@click.option("--user", "users", multiple=True, metavar="MASK",
              help="Only users matching (e.g. '*@example.org'); repeatable.")
@click.option("--mailbox", "mailboxes", multiple=True, metavar="PATTERN",
              help="Only mailboxes matching ('INBOX', 'Archive/*'; a folder includes its "
              "children); repeatable.")
@click.option("--into", "into", metavar="STORE",
              help="Restore exactly (GUIDs, UIDVALIDITY, UIDs) into this empty store: a "
              "Maildir path or a template such as /var/vmail/%d/%n/Maildir.")
@click.option("--beside", is_flag=True,
              help="Restore into the live store, under Restored/<date>/, only what the live "
              "mailboxes lack; nothing live is changed.")
@click.option("--store", "store_location", metavar="STORE",
              help="The live store for --beside (default: the site's store).")
@click.option("--prefix", default="Restored", show_default=True,
              help="The folder --beside restores under.")
@click.option("--dry-run", is_flag=True, help="Say what would be restored; write nothing.")
@secret_options
@click.pass_context
def restore(
    ctx: click.Context,
    archive: Path,
    at: str,
    users: tuple[str, ...],
    mailboxes: tuple[str, ...],
    into: str | None,
    beside: bool,
    store_location: str | None,
    prefix: str,
    dry_run: bool,
    passphrase_file: Path | None,
    recovery_key_file: Path | None,
) -> None:
    """Restore a snapshot --into an empty store or --beside the live mailboxes."""
    if (into is None) == (not beside):
        raise UsageError("say where to restore: --into STORE or --beside",
                         hint="--into writes an exact copy into an empty store; --beside adds "
                         "what the live mailboxes lack under Restored/<date>/.")
    if into is not None and store_location is not None:
        raise UsageError("--store goes with --beside; --into names its own store")
    folder_prefix = parse_prefix(prefix)
    selection = Selection(users=users, mailboxes=mailboxes)
    progress = Progress("restore", enabled=None if not out_of(ctx).json else False)
    done = [0]

    def advance(count: int) -> None:
        done[0] += count
        progress.bytes(done[0])

    # Opening reads only the config; the lock is held before any index or pack is
    # read and for the whole run, so no prune removes a pack this restore needs.
    source = open_for_reading(ctx, archive, passphrase_file, recovery_key_file)
    with reader_lock(archive, op="restore", wait=out_of(ctx).options.lock_wait):
        if into is not None:
            report = restore_into(source, MaildirStore(into), at=at, selection=selection,
                                  dry_run=dry_run, progress=advance)
        else:
            report = restore_beside(source, live_store(ctx, store_location), at=at,
                                    selection=selection, prefix=folder_prefix,
                                    dry_run=dry_run, progress=advance)
    progress.step("done")
    if out_of(ctx).json:
        out_of(ctx).result = (report.to_json())
        return
    for line in report.lines():
        click.echo(line)


@cli.command()
@click.argument("archive", type=click.Path(path_type=Path), required=False)
@click.option("--into", "directory", type=click.Path(path_type=Path), metavar="DIR",
              help="The view directory (created if missing; give it Dovecot's mail group).")
@click.option("--at", "at", multiple=True, metavar="DATE|SNAPSHOT",
              help="Only these snapshots (default: every one); repeatable.")
@click.option("--dovecot-config", "print_config", is_flag=True,
              help="Print the Dovecot namespace for the view in DIR and exit.")
@secret_options
@click.pass_context
def view(
    ctx: click.Context,
    archive: Path | None,
    directory: Path | None,
    at: tuple[str, ...],
    print_config: bool,
    passphrase_file: Path | None,
    recovery_key_file: Path | None,
) -> None:
    """Keep a read-only Maildir tree of every snapshot date, for a Dovecot 'Backups' namespace."""
    if print_config:
        root = directory if directory is not None else Path("/srv/mail-backups-view")
        single = (root / "users" / SINGLE_USER).is_dir()
        click.echo(dovecot_config(str(root), single_user=single), nl=False)
        return
    if archive is None or directory is None:
        raise UsageError("give the archive and the view directory: "
                         "bundlesync view ARCHIVE --into DIR",
                         hint="'bundlesync view --dovecot-config --into DIR' prints the "
                         "Dovecot namespace for it.")
    source = open_for_reading(ctx, archive, passphrase_file, recovery_key_file)
    with reader_lock(archive, op="view", wait=out_of(ctx).options.lock_wait):
        report = refresh_view(source, str(directory), at=at)
    if out_of(ctx).json:
        out_of(ctx).result = ({
            "added": [{"user": u, "date": d} for u, d in report.added],
            "removed": [{"user": u, "date": d} for u, d in report.removed],
            "unchanged": len(report.unchanged),
            "upgraded": report.upgraded,
            "acl": acl_file_text(),
        })
        return
    for line in report.lines():
        click.echo(line)
