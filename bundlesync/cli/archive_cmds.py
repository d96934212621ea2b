"""Archive commands: backup, snapshots, forget, prune, check (formats/archive-v1.md).

Reading commands need no site: the archive opens with its passphrase
(``BUNDLESYNC_PASSPHRASE``, ``--passphrase-file`` or a prompt on a terminal), a
recovery key card (``--recovery-key-file``), or the key of the site that wrote it.
Order: a card file, a passphrase file, this site's key (if it wrote the archive),
the environment, the prompt.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bundlesync.archive.backup import default_jobs, run_backup
from bundlesync.archive.cache import cache_path
from bundlesync.archive.errors import ArchiveDamaged, ArchiveError, NoRecoveryKey, WrongSecret
from bundlesync.archive.lock import archive_lock
from bundlesync.archive.locks import reader_lock
from bundlesync.archive.repository import (
    Archive,
    archive_exists,
    create_archive,
    open_archive,
    read_config,
)
from bundlesync.archive.secrets import (
    DEFAULT_LOG_N,
    MAX_LOG_N,
    MIN_LOG_N,
    Passphrase,
    RecoveryCard,
    Secret,
    new_card,
)
from bundlesync.archive.users import selection
from bundlesync.cli import cli
from bundlesync.cli.common import home_of, out_of
from bundlesync.cli.progress import Progress, human_bytes
from bundlesync.errors import BundlesyncError, PartialFailure, UsageError
from bundlesync.keys import KeyMissing, SiteIdentity, load_identity, site_paths
from bundlesync.operations.config import CONFIG_NAME
from bundlesync.operations.config import read_config as read_site_config
from bundlesync.operations.site import open_store
from bundlesync.state.archive_cache import ArchiveCacheDb

if TYPE_CHECKING:
    from bundlesync.archive.policy import Policy

# check, forget, prune and the retention rules are imported by the commands that use
# them: a nightly backup does not load them.
PASSPHRASE_ENV = "BUNDLESYNC_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
F = TypeVar("F", bound=Callable[..., Any])


def _secret_options(func: F) -> F:
    for option in reversed((
        click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Read the archive's passphrase from this file (first line)."),
        click.option("--recovery-key-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Open the archive with its recovery key card (a text file)."),
    )):
        func = option(func)
    return func


def _read_passphrase_file(path: Path) -> Passphrase:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot read the passphrase file {path}: {exc.strerror}.") from None
    line = text.splitlines()[0] if text.splitlines() else ""
    if not line:
        raise UsageError(f"The passphrase file {path} is empty.")
    return Passphrase(line)


def _site_identity(ctx: click.Context) -> SiteIdentity | None:
    try:
        return load_identity(site_paths(home_of(ctx)).keys)
    except KeyMissing:
        return None


def _reading_secret(ctx: click.Context, archive: Path, passphrase_file: Path | None,
                    recovery_key_file: Path | None) -> Secret:
    """The secret to open ``archive`` with, most explicit first (see the module text)."""
    if recovery_key_file is not None:
        try:
            return RecoveryCard.from_text(recovery_key_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"Cannot read the recovery key file {recovery_key_file}: "
                             f"{exc.strerror}.") from None
    if passphrase_file is not None:
        return _read_passphrase_file(passphrase_file)
    # On the site that wrote the archive its key opens it at once; a passphrase costs
    # the memory-hard derivation (a fraction of a second and 128 MiB) on every command.
    identity = _site_identity(ctx)
    config = read_config(archive)
    if identity is not None and identity.site_id == config.site_id:
        return identity
    if os.environ.get(PASSPHRASE_ENV):
        return Passphrase(os.environ[PASSPHRASE_ENV])
    if sys.stdin.isatty():
        return Passphrase(click.prompt(f"Passphrase of the archive at {archive}",
                                       hide_input=True, err=True))
    raise WrongSecret(f"No secret was given to open the archive at {archive}.")


def _open(ctx: click.Context, archive: Path, passphrase_file: Path | None,
          recovery_key_file: Path | None) -> Archive:
    return open_archive(archive, secret=_reading_secret(ctx, archive, passphrase_file,
                                                        recovery_key_file))


def _open_to_write(ctx: click.Context, archive: Path) -> Archive:
    """Prune writes a signed index: it needs the key of the site that wrote the archive."""
    config = read_config(archive)
    identity = _site_identity(ctx)
    if identity is None or identity.site_id != config.site_id:
        raise ArchiveError(
            f"Pruning the archive at {archive} needs the key of site {config.site_name} "
            f"({config.fingerprint}), which wrote it.",
            hint="Run prune on that site (or with --home pointing at it). Listing, checking, "
            "forgetting and restoring need only the passphrase.")
    return open_archive(archive, secret=identity)


def emit_json(ctx: click.Context, data: Any) -> None:
    """The command's result: printed by ``main`` inside the JSON envelope under --json."""
    out_of(ctx).result = data


BACKUP_INTERRUPTED = (
    "Interrupted; no snapshot was written, and the archive's snapshots are as they were. "
    "The packs written so far belong to no snapshot: the next backup reuses the bodies "
    "an index file already lists, and 'bundlesync prune' removes what no snapshot uses.")


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


# --- backup ------------------------------------------------------------------------------


@cli.command()
@click.argument("archive", type=click.Path(file_okay=False, path_type=Path))
@click.option("-u", "--user", "users", multiple=True, metavar="MASK",
              help="Back up only users matching MASK ('*@example.org', 'a*'); repeatable.")
@click.option("--users-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A file of users or masks, one a line.")
@click.option("--include", multiple=True, metavar="PATTERN",
              help="Back up only mailboxes matching PATTERN (added to the site's filters).")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Leave out mailboxes matching PATTERN, e.g. 'Trash', 'Junk*'.")
@click.option("--tag", "tags", multiple=True, help="Tag the snapshot (forget --keep-tag).")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), metavar="N",
              help="Use N processes: this one and N-1 that read and hash folders with "
              "many new messages, as in a first backup (default: one per CPU; 1: all "
              "in this process).")
@_secret_options
@click.option("--recovery-key-card", type=click.Path(dir_okay=False, path_type=Path),
              help="New archive: write a recovery key card to this file (print it, keep it "
              "off-site, delete the file).")
@click.option("--no-recovery-key", is_flag=True,
              help="New archive: allow one that only this site's key opens.")
@click.option("--kdf-log-n", type=click.IntRange(MIN_LOG_N, MAX_LOG_N), default=DEFAULT_LOG_N,
              hidden=True, help="scrypt cost (2^N) of a new archive's passphrase.")
@click.pass_context
def backup(ctx: click.Context, archive: Path, users: tuple[str, ...], users_file: Path | None,
           include: tuple[str, ...], exclude: tuple[str, ...], tags: tuple[str, ...],
           jobs: int | None, passphrase_file: Path | None, recovery_key_file: Path | None,
           recovery_key_card: Path | None, no_recovery_key: bool, kdf_log_n: int) -> None:
    """Add a snapshot of every user's mail to ARCHIVE (created on first use)."""
    home = site_paths(home_of(ctx)).home
    config = read_site_config(home / CONFIG_NAME)
    identity = load_identity(site_paths(home_of(ctx)).keys)
    chosen = selection(users, users_file)
    filters = config.filters.merged(include=include, exclude=exclude)
    store = open_store(config.store)
    made = not archive.exists()
    archive.mkdir(parents=True, exist_ok=True)
    with archive_lock(archive, "backup"):
        if archive_exists(archive):
            opened = open_archive(archive, secret=identity)
        else:
            try:
                opened = _create(archive, identity, passphrase_file=passphrase_file,
                                 card_file=recovery_key_card,
                                 recovery_key_file=recovery_key_file,
                                 no_recovery_key=no_recovery_key, kdf_log_n=kdf_log_n)
            except BundlesyncError:
                if made:  # refused: leave no trace of the archive that was not made
                    (archive / "lock").unlink(missing_ok=True)
                    archive.rmdir()
                raise
        progress = Progress("backup", enabled=None if not out_of(ctx).json else False)
        cache_dir = home / "archive-cache"
        try:
            report = run_backup(opened, store, users=chosen, filters=filters, tags=tags,
                                cache_dir=cache_dir,
                                cache_rows=ArchiveCacheDb.open(cache_path(cache_dir, opened)),
                                jobs=jobs or default_jobs(),
                                progress=lambda user, done, total: progress.items(
                                    "users", done, total))
        except KeyboardInterrupt:
            # Packs may be on disk by now: say what becomes of them (archive-v1 §8, §10).
            raise KeyboardInterrupt(BACKUP_INTERRUPTED) from None
        progress.finish()
    if out_of(ctx).json:
        emit_json(ctx, report.as_json())
    else:
        click.echo(f"snapshot {report.snapshot}: {report.users} user(s), "
                   f"{report.messages:,} messages, {report.folders_listed}/{report.folders} "
                   f"folders listed, {report.bodies_added:,} new bodies, "
                   f"{human_bytes(report.bytes_added)} added in {report.seconds:.2f} s")
        for user, why in sorted(report.failed.items()):
            click.echo(f"failed: {user}: {why}", err=True)
    if report.failed:
        raise PartialFailure(
            f"{len(report.failed)} user(s) could not be backed up; the snapshot keeps their "
            "previous backup (marked stale).",
            hint="Fix what the messages above say, then run the backup again.")


def _create(archive: Path, identity: SiteIdentity, *, passphrase_file: Path | None,
            card_file: Path | None, recovery_key_file: Path | None, no_recovery_key: bool,
            kdf_log_n: int) -> Archive:
    recovery: list[Passphrase | RecoveryCard] = []
    if passphrase_file is not None:
        recovery.append(_read_passphrase_file(passphrase_file))
    elif os.environ.get(PASSPHRASE_ENV):
        recovery.append(Passphrase(os.environ[PASSPHRASE_ENV]))
    card = None
    if card_file is not None:
        if card_file.exists():
            raise UsageError(f"{card_file} exists; a new recovery key card is never written "
                             "over a file.")
        card = new_card()
        recovery.append(card)
    if recovery_key_file is not None:
        raise UsageError("--recovery-key-file opens an archive; for a new archive use "
                         "--recovery-key-card FILE.")
    if not recovery and not no_recovery_key and sys.stdin.isatty():
        first = click.prompt("Passphrase for the new archive", hide_input=True, err=True,
                             confirmation_prompt=True)
        recovery.append(Passphrase(first))
    if not recovery and not no_recovery_key:
        raise NoRecoveryKey(f"A new archive at {archive} would be readable only with this "
                            "site's key: if the machine dies, so does the backup.")
    created = create_archive(archive, identity=identity, recovery=recovery,
                             kdf_log_n=kdf_log_n)
    if card is not None and card_file is not None:
        fd = os.open(card_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(card.card_text(archive_id=created.config.archive_id.hex()))
        click.echo(f"Recovery key card written to {card_file}: print it, keep it off-site, "
                   "then delete the file.", err=True)
    return created


# --- snapshots ---------------------------------------------------------------------------


def _policy_options(func: F) -> F:
    options = [
        click.option("--keep-last", type=int, default=0, metavar="N"),
        click.option("--keep-hourly", type=int, default=0, metavar="N"),
        click.option("--keep-daily", type=int, default=0, metavar="N"),
        click.option("--keep-weekly", type=int, default=0, metavar="N"),
        click.option("--keep-monthly", type=int, default=0, metavar="N"),
        click.option("--keep-yearly", type=int, default=0, metavar="N"),
        click.option("--keep-within", default="", metavar="DURATION",
                     help="Keep every snapshot within DURATION (e.g. 7d, 1y6m) of the newest."),
        click.option("--keep-within-hourly", default="", metavar="DURATION"),
        click.option("--keep-within-daily", default="", metavar="DURATION"),
        click.option("--keep-within-weekly", default="", metavar="DURATION"),
        click.option("--keep-within-monthly", default="", metavar="DURATION"),
        click.option("--keep-within-yearly", default="", metavar="DURATION"),
        click.option("--keep-tag", multiple=True, metavar="TAG"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _policy(kw: dict[str, Any]) -> Policy:
    from bundlesync.archive.policy import Policy, parse_duration  # noqa: PLC0415

    def duration(name: str) -> Any:
        return parse_duration(kw[name]) if kw[name] else parse_duration("0h")

    for name in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
                 "keep_yearly"):
        if kw[name] < -1:
            raise UsageError(f"--{name.replace('_', '-')} takes a count, or -1 for unlimited.")
    return Policy(last=kw["keep_last"], hourly=kw["keep_hourly"], daily=kw["keep_daily"],
                  weekly=kw["keep_weekly"], monthly=kw["keep_monthly"],
                  yearly=kw["keep_yearly"], within=duration("keep_within"),
                  within_hourly=duration("keep_within_hourly"),
                  within_daily=duration("keep_within_daily"),
                  within_weekly=duration("keep_within_weekly"),
                  within_monthly=duration("keep_within_monthly"),
                  within_yearly=duration("keep_within_yearly"), tags=tuple(kw["keep_tag"]))


def _take_policy(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw.pop(k) for k in list(kw) if k.startswith("keep_")}


@cli.command()
@click.argument("archive", type=click.Path(file_okay=False, path_type=Path))
@_secret_options
@_policy_options
@click.pass_context
def snapshots(ctx: click.Context, /, archive: Path, passphrase_file: Path | None,
              recovery_key_file: Path | None, **kw: Any) -> None:
    """List the snapshots of ARCHIVE; with --keep-* options, which rule keeps each."""
    from bundlesync.archive.prune import plan_forget  # noqa: PLC0415

    policy_kw = _take_policy(kw)
    policy = _policy(policy_kw)
    opened = _open(ctx, archive, passphrase_file, recovery_key_file)
    reasons: dict[str, str] = {}
    # A reader like restore and check (archive-v1 §11.2): opening read only the config;
    # the listing is read under the shared lock, so no prune deletes under it.
    with reader_lock(archive, op="snapshots", wait=out_of(ctx).options.lock_wait):
        snaps = opened.all_snapshots()
        if not policy.empty:
            for group in plan_forget(opened, policy):
                for decision in group.decisions:
                    reasons[decision.candidate.id] = (
                        ", ".join(decision.reasons) if decision.keep
                        else "(would be forgotten)")
    if out_of(ctx).json:
        emit_json(ctx, {"archive": opened.config.archive_id.hex(),
                   "site": opened.config.site_name, "fingerprint": opened.config.fingerprint,
                   "snapshots": [{
                       "id": s.id, "time": dt.datetime.fromtimestamp(
                           s.time_ms / 1000, dt.UTC).isoformat(),
                       "time_ms": s.time_ms, "host": s.host, "group": s.group,
                       "tags": list(s.tags), "users": sorted(s.users),
                       "messages": s.message_count, "bytes_added": s.added,
                       "failed": list(s.failed), "kept_by": reasons.get(s.id)}
                       for s in snaps]})
        return
    click.echo(f"archive of site {opened.config.site_name} ({opened.config.fingerprint})")
    click.echo(f"{'ID':16}  {'DATE':19}  {'USERS':>6}  {'MESSAGES':>10}  {'ADDED':>10}  KEPT BY")
    for s in snaps:
        click.echo(f"{s.id:16}  {_when(s.time_ms):19}  {len(s.users):>6}  "
                   f"{s.message_count:>10,}  {human_bytes(s.added):>10}  "
                   f"{reasons.get(s.id, '-')}")
    click.echo(f"{len(snaps)} snapshot(s)")


# --- forget and prune ----------------------------------------------------------------------


@cli.command(name="forget")
@click.argument("archive", type=click.Path(file_okay=False, path_type=Path))
@_policy_options
@click.option("--prune", "then_prune", is_flag=True,
              help="Then reclaim the space no kept snapshot uses.")
@click.option("--dry-run", is_flag=True, help="Only say what would be forgotten, and why.")
@_secret_options
@click.pass_context
def forget_cmd(ctx: click.Context, /, archive: Path, then_prune: bool, dry_run: bool,
               passphrase_file: Path | None, recovery_key_file: Path | None,
               **kw: Any) -> None:
    """Forget snapshots by a retention policy (restic's rules: ORed, per calendar period)."""
    from bundlesync.archive.prune import forget, plan_forget, prune  # noqa: PLC0415

    policy = _policy(_take_policy(kw))
    if policy.empty:
        raise UsageError("No retention rule was given: forget would keep everything.",
                         hint="Give at least one --keep-* option, e.g. --keep-daily 7 "
                         "--keep-weekly 5 --keep-monthly 12.")
    if then_prune and not dry_run:
        opened = _open_to_write(ctx, archive)
    else:
        opened = _open(ctx, archive, passphrase_file, recovery_key_file)
    result: dict[str, Any] = {"dry_run": dry_run}
    with archive_lock(archive, "forget"):
        plan = plan_forget(opened, policy)
        removed = [] if dry_run else forget(opened, plan)
        result["groups"] = [{"site": g.site, "group": g.group, "snapshots": [
            {"id": d.candidate.id, "time_ms": d.candidate.time_ms, "keep": d.keep,
             "reasons": list(d.reasons)} for d in g.decisions]} for g in plan]
        result["removed"] = removed
        if then_prune and not dry_run:
            result["prune"] = prune(opened, lock_wait=out_of(ctx).options.lock_wait).as_json()
    if out_of(ctx).json:
        emit_json(ctx, result)
        return
    for group in plan:
        click.echo(f"group: {group.group}")
        for d in group.decisions:
            verb = "keep  " if d.keep else ("would forget" if dry_run else "forget")
            click.echo(f"  {verb} {d.candidate.id}  {_when(d.candidate.time_ms)}  "
                       f"{', '.join(d.reasons)}")
    click.echo(f"{len(removed)} snapshot(s) forgotten" if not dry_run else "dry run: nothing "
               "was changed")
    if "prune" in result:
        _print_prune(result["prune"])


def _print_prune(report: dict[str, Any]) -> None:
    click.echo(f"prune: {report['packs_deleted']} pack(s) deleted, {report['packs_written']} "
               f"written, {human_bytes(report['bytes_freed'])} freed in {report['seconds']} s")


@cli.command(name="prune")
@click.argument("archive", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def prune_cmd(ctx: click.Context, archive: Path) -> None:
    """Reclaim the space of message bodies no snapshot references."""
    from bundlesync.archive.prune import prune  # noqa: PLC0415

    opened = _open_to_write(ctx, archive)
    with archive_lock(archive, "prune"):
        report = prune(opened, lock_wait=out_of(ctx).options.lock_wait).as_json()
    if out_of(ctx).json:
        emit_json(ctx, report)
    else:
        _print_prune(report)


# --- check -------------------------------------------------------------------------------


def _percent(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        value = -1
    if not 0 < value <= 100:
        raise UsageError(f"--read-data-subset {text!r} is not a share between 0% and 100%.",
                         hint="Write it like 5% (then 20 days read everything once).")
    return value


@cli.command()
@click.argument("archive", type=click.Path(file_okay=False, path_type=Path))
@click.option("--read-data", is_flag=True, help="Read, decrypt and re-hash every body.")
@click.option("--read-data-subset", metavar="N%",
              help="Read a slice of N% of the packs, rotating by day.")
@_secret_options
@click.pass_context
def check(ctx: click.Context, archive: Path, read_data: bool, read_data_subset: str | None,
          passphrase_file: Path | None, recovery_key_file: Path | None) -> None:
    """Check that every snapshot of ARCHIVE is whole; name what is damaged."""
    from bundlesync.archive.check import check_archive  # noqa: PLC0415

    subset = _percent(read_data_subset)
    opened = _open(ctx, archive, passphrase_file, recovery_key_file)
    progress = Progress("check", enabled=None if not out_of(ctx).json else False)
    report = check_archive(opened, read_data=read_data, subset_percent=subset,
                           progress=lambda done, total: progress.items("packs", done, total),
                           lock_wait=out_of(ctx).options.lock_wait)
    progress.finish()
    if out_of(ctx).json:
        emit_json(ctx, report.as_json())
    else:
        click.echo(f"{report.snapshots} snapshot(s), {report.indexes} index file(s), "
                   f"{report.packs} pack(s); read {report.packs_read} pack(s), "
                   f"{report.blobs_read:,} blobs, {human_bytes(report.bytes_read)} "
                   f"in {report.seconds:.2f} s")
        for note in report.notes:
            click.echo(f"note: {note}")
        for problem in report.problems:
            click.echo(f"problem: {problem.message}", err=True)
            for place in problem.affects[:20]:
                click.echo(f"  affects {place}", err=True)
            if len(problem.affects) > 20:
                click.echo(f"  ... and {len(problem.affects) - 20} more", err=True)
    if not report.ok:
        raise ArchiveDamaged(f"The archive has {len(report.problems)} problem(s); everything "
                             "not named above is sound.")
    if not out_of(ctx).json:
        click.echo("no problems found")



