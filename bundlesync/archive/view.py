"""The Backups view: every snapshot date as a read-only Maildir tree Dovecot can serve.

Layout under the view directory ``DIR``::

    DIR/users/<user>/<date>/<folder>/<child>/{cur,new,tmp}   Maildir, LAYOUT=fs, read-only
    DIR/control/<user>/<date>/<folder>/<child>/dovecot-uidlist  the snapshot's UIDs, writable
    DIR/control/<user>/<date>/<folder>/<child>/dovecot-keywords
    DIR/pool/<ab>/<sha256>.<received>                        one file per body
    DIR/view.json                                            which snapshot each date shows
    DIR/view.lock                                            held while a refresh runs
    DIR/tmp/                                                 dates being built or removed

A Dovecot namespace with the location
``maildir:DIR/users/%u:LAYOUT=fs:CONTROL=DIR/control/%u:INDEX=DIR/control/%u``
and the prefix ``Backups.`` then shows each user ``Backups/<date>/<folder>``
(:func:`dovecot_config` prints it, with a read-only ACL). A date shows the
newest snapshot taken that day (UTC). A single-user archive's mail is under
``users/_single`` and ``control/_single``.

Message files are hard links into the pool, so a body kept by many snapshots is
stored once; the pool file is named by body *and* received date because
Dovecot takes the received date from the file's mtime, which links share.

The messages are read-only, twice over: files are 0440 and directories 0750,
owned by the user running bundlesync (root) and the view directory's group (give
it Dovecot's ``mail_gid``), so Dovecot can read but not rename, add or remove
anything; and the namespace's ACL grants only ``lr`` (lookup, read).

The control tree is where Dovecot may write. Each folder's control directory
holds a complete ``dovecot-uidlist`` (the snapshot's UIDVALIDITY, mailbox GUID
and UIDs) and ``dovecot-keywords``, and is writable by the view directory's
group (0770, files 0660): Dovecot's maildir sync takes its ``dovecot-uidlist.lock``
dotlock there on every command, and it keeps its index there. Without it the sync
cannot lock, and Dovecot logs an error and adds an untagged ``NO`` to every
command. Since the uidlist lists every message file, Dovecot has no UID to assign
and shows the UIDs the user's client knew.

A refresh compares the wanted dates with ``view.json``: a date whose snapshot
is unchanged is not touched; a new date is built in ``tmp/`` and renamed into
place whole, its control entries before its messages (so Dovecot never sees the
messages without their UIDs, which it would number afresh); a date whose
snapshots were all forgotten is renamed into ``tmp/``, messages first, and
deleted; pool files no date links to any more are removed. An interrupted
refresh leaves only ``tmp/`` debris, cleared by the next one. A view written by
an older bundlesync (``view.json`` version 1, the uidlists inside the read-only
Maildirs) is rebuilt date by date on its next refresh, from the pool it has.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from bundlesync.archive.model import ArchivedMailbox, ArchivedMessage, SnapshotInfo, SnapshotSource
from bundlesync.archive.restore_plan import (
    derived_key,
    key_with_body,
    needs_body_for_key,
    snapshot_date,
    storable_flags,
)
from bundlesync.errors import LockHeld, StoreError, UsageError
from bundlesync.fsio import fsync_dir, write_all
from bundlesync.stores import dotlock, mutf7
from bundlesync.stores.dovecot_files import (
    FLAG_TO_LETTER,
    MAX_KEYWORDS,
    UidlistRecord,
    format_keywords,
    format_uidlist,
)
from bundlesync.stores.errors import FolderLocked
from bundlesync.stores.names import check_user

SINGLE_USER = "_single"  # the directory of a single-user archive's mail (user "")
MANIFEST = "view.json"
LOCK_STALE_S = 6 * 3600  # a refresh's lock unchanged this long is abandoned (pid checked first)
FILE_MODE = 0o440
DIR_MODE = 0o750
# The control tree: Dovecot (the view directory's group) locks and indexes there.
CONTROL_FILE_MODE = 0o660
CONTROL_DIR_MODE = 0o770
MANIFEST_VERSION = 2  # 1: the uidlists were inside the read-only Maildirs
_RESERVED = {"cur", "new", "tmp"}  # names LAYOUT=fs uses for the Maildir itself


@dataclass(frozen=True, slots=True)
class ViewReport:
    """What a refresh did: dates per user added, removed and left as they were."""

    added: tuple[tuple[str, str], ...]  # (user, date)
    removed: tuple[tuple[str, str], ...]
    unchanged: tuple[tuple[str, str], ...]
    skipped_folders: tuple[tuple[str, str, str], ...]  # (user, date, folder) LAYOUT=fs cannot hold
    upgraded: bool = False  # an older layout was rebuilt: Dovecot's namespace must change

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = []
        if self.upgraded:
            out.append("rebuilt the view in its new layout (UIDs in a writable control/ tree): "
                       "replace the Dovecot namespace with the one "
                       "'bundlesync view --dovecot-config --into DIR' prints")
        out += [f"added {user or '(store)'} {date}" for user, date in self.added]
        out += [f"removed {user or '(store)'} {date}" for user, date in self.removed]
        out += [f"skipped folder {folder} of {user or '(store)'} {date}: its name is reserved "
                "in the view's layout" for user, date, folder in self.skipped_folders]
        out.append(f"{len(self.added)} dates added, {len(self.removed)} removed, "
                   f"{len(self.unchanged)} unchanged")
        return out


def user_dir_name(user: str) -> str:
    """The directory of ``user`` under ``users/`` (``_single`` for a single-user archive)."""
    return SINGLE_USER if user == "" else check_user(user)


def wanted_dates(
    source: SnapshotSource, at: Iterable[str] = ()
) -> dict[str, SnapshotInfo]:
    """Date -> the snapshot it shows: the newest of that day, among ``at`` if given."""
    chosen = [source.find(item) for item in at] if at else source.snapshots()
    by_date: dict[str, SnapshotInfo] = {}
    for info in sorted(chosen, key=lambda item: item.time_ms):
        by_date[snapshot_date(info)] = info
    return by_date


def refresh_view(source: SnapshotSource, directory: str, *, at: Iterable[str] = ()) -> ViewReport:
    """Bring the view in ``directory`` in line with the archive (see the module text)."""
    try:
        return _refresh(source, directory, tuple(at))
    except OSError as exc:
        raise StoreError(
            f"could not update the Backups view in {directory}: {exc.strerror or exc}",
            hint="Check that the view directory is writable by this user and on one file "
            "system (hard links cannot cross file systems).",
        ) from exc


def _refresh(source: SnapshotSource, directory: str, at: tuple[str, ...]) -> ViewReport:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"{directory} is not a directory")
    os.makedirs(directory, mode=0o750, exist_ok=True)
    try:
        # Two refreshes at once (overlapping cron runs) would build in the same tmp/.
        with dotlock.held(os.path.join(directory, "view.lock"), stale_after=LOCK_STALE_S,
                          timeout=0):
            return _refresh_locked(source, directory, at)
    except FolderLocked:
        raise LockHeld(f"another 'bundlesync view' is updating {directory}") from None


def _refresh_locked(source: SnapshotSource, directory: str, at: tuple[str, ...]) -> ViewReport:
    group = os.stat(directory).st_gid
    version, manifest = _read_manifest(directory)  # first: a view it refuses stays as it is
    upgrading = bool(manifest) and version < MANIFEST_VERSION
    for sub in ("users", "control", "pool", "tmp"):
        _mkdir(os.path.join(directory, sub), group)
    tmp = os.path.join(directory, "tmp")
    _write_acl(directory)
    for leftover in os.listdir(tmp):  # debris of an interrupted refresh
        shutil.rmtree(os.path.join(tmp, leftover), ignore_errors=True)
    wanted: dict[tuple[str, str], str] = {}
    for date, info in wanted_dates(source, at).items():
        for user in source.users(info.id):
            wanted[(user, date)] = info.id
    added: list[tuple[str, str]] = []
    removed: list[tuple[str, str]] = []
    unchanged: list[tuple[str, str]] = []
    skipped: list[tuple[str, str, str]] = []
    for (user, date), snapshot_id in sorted(manifest.items()):
        if (not upgrading and wanted.get((user, date)) == snapshot_id
                and os.path.isdir(_date_dir(directory, user, date))
                and os.path.isdir(_control_dir(directory, user, date))):
            unchanged.append((user, date))
            continue
        _remove_date(directory, user, date)
        del manifest[(user, date)]
        _write_manifest(directory, manifest, group)
        if (user, date) not in wanted:
            removed.append((user, date))
    for (user, date), snapshot_id in sorted(wanted.items()):
        if manifest.get((user, date)) == snapshot_id:
            continue
        skipped += _build_date(source, directory, user=user, date=date,
                               snapshot_id=snapshot_id, group=group)
        manifest[(user, date)] = snapshot_id
        _write_manifest(directory, manifest, group)
        added.append((user, date))
    if removed or added:
        _prune_pool(directory)
    if upgrading and not manifest:  # every date was forgotten meanwhile
        _write_manifest(directory, manifest, group)
    return ViewReport(added=tuple(added), removed=tuple(removed), unchanged=tuple(unchanged),
                      skipped_folders=tuple(skipped), upgraded=upgrading)


# --- files -----------------------------------------------------------------------------


def _mkdir(path: str, group: int, mode: int = DIR_MODE) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    _own(path, group)
    os.chmod(path, mode)  # not narrowed by the umask: the group must traverse (or write) it


def _own(path: str, group: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, 0, group, follow_symlinks=False)


def _date_dir(directory: str, user: str, date: str) -> str:
    return os.path.join(directory, "users", user_dir_name(user), date)


def _control_dir(directory: str, user: str, date: str) -> str:
    return os.path.join(directory, "control", user_dir_name(user), date)


def _read_manifest(directory: str) -> tuple[int, dict[tuple[str, str], str]]:
    try:
        with open(os.path.join(directory, MANIFEST), encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return MANIFEST_VERSION, {}
    except (OSError, ValueError) as exc:
        raise StoreError(f"the view's {MANIFEST} in {directory} is damaged: {exc}",
                         hint=f"Delete {MANIFEST} and the users/ directory, then run "
                         "'bundlesync view' again to rebuild the view.") from exc
    version = data.get("version", 1)
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise StoreError(f"the view in {directory} was written by a newer bundlesync "
                         f"({MANIFEST} version {version})",
                         hint="Refresh it with that version, or delete the view directory "
                         "and run 'bundlesync view' again to rebuild it.")
    result: dict[tuple[str, str], str] = {}
    for user, dates in data.get("users", {}).items():
        for date, snapshot_id in dates.items():
            result[(user, date)] = snapshot_id
    return version, result


def _write_manifest(directory: str, manifest: dict[tuple[str, str], str], group: int) -> None:
    users: dict[str, dict[str, str]] = defaultdict(dict)
    for (user, date), snapshot_id in sorted(manifest.items()):
        users[user][date] = snapshot_id
    data = {"version": MANIFEST_VERSION, "users": users}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    path = os.path.join(directory, MANIFEST)
    staging = os.path.join(directory, "tmp", MANIFEST)
    with open(staging, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)


def _write_acl(directory: str) -> None:
    path = os.path.join(directory, "dovecot-acl")
    text = acl_file_text()
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as handle:
        if handle.read() == text:
            return
    staging = os.path.join(directory, "tmp", "dovecot-acl")
    with open(staging, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(staging, 0o644)
    os.replace(staging, path)


def _remove_date(directory: str, user: str, date: str) -> None:
    # The messages go first: Dovecot must never see them without their control
    # entries, or it would number them afresh in a new uidlist.
    for kind, target in (("users", _date_dir(directory, user, date)),
                         ("control", _control_dir(directory, user, date))):
        if not os.path.isdir(target):
            continue
        # Out of Dovecot's sight in one rename, then deleted at leisure.
        doomed = os.path.join(directory, "tmp", f"removing.{kind}.{user_dir_name(user)}.{date}")
        os.rename(target, doomed)
        shutil.rmtree(doomed)


def _prune_pool(directory: str) -> None:
    pool = os.path.join(directory, "pool")
    for bucket in os.listdir(pool):
        bucket_dir = os.path.join(pool, bucket)
        for name in os.listdir(bucket_dir):
            path = os.path.join(bucket_dir, name)
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_nlink <= 1:
                    os.unlink(path)


def _pool_file(
    source: SnapshotSource, directory: str, message: ArchivedMessage, group: int
) -> str:
    """The pool file of the message's body and received date, written if missing."""
    bucket = os.path.join(directory, "pool", message.body[:2])
    _mkdir(bucket, group)
    path = os.path.join(bucket, f"{message.body}.{max(0, message.internal_date)}")
    if os.path.exists(path):
        return path
    data = source.read_body(message.body)
    staging = os.path.join(directory, "tmp", f"pool.{message.body}.{os.getpid()}")
    fd = os.open(staging, dotlock.CREATE_FLAGS, FILE_MODE)
    try:
        write_all(fd, data)
        if os.geteuid() == 0:
            os.fchown(fd, 0, group)
        os.fchmod(fd, FILE_MODE)
        date = max(0, message.internal_date)
        os.utime(fd, (date, date))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staging, path)
    return path


# --- one date of one user --------------------------------------------------------------


def _build_date(
    source: SnapshotSource, directory: str, *, user: str, date: str, snapshot_id: str, group: int
) -> list[tuple[str, str, str]]:
    user_dir = os.path.join(directory, "users", user_dir_name(user))
    control_user_dir = os.path.join(directory, "control", user_dir_name(user))
    _mkdir(user_dir, group)
    # Dovecot's mailbox-list lock and list index are per user, at the control root.
    _mkdir(control_user_dir, group, CONTROL_DIR_MODE)
    staging = os.path.join(directory, "tmp", f"building.{user_dir_name(user)}.{date}")
    control_staging = os.path.join(directory, "tmp", f"control.{user_dir_name(user)}.{date}")
    _mkdir(staging, group)
    _mkdir(control_staging, group)
    skipped = []
    for mailbox in source.mailboxes(snapshot_id, user):
        if any(component in _RESERVED for component in mailbox.path):
            skipped.append((user, date, "/".join(mailbox.path)))
            continue
        _build_folder(source, directory, staging, control_staging, mailbox, group)
    # A date on disk the manifest does not know (a crash between the two) goes first.
    _remove_date(directory, user, date)
    # The UIDs are in place before the messages Dovecot could otherwise number afresh.
    os.rename(control_staging, os.path.join(control_user_dir, date))
    fsync_dir(control_user_dir)
    os.rename(staging, os.path.join(user_dir, date))
    fsync_dir(user_dir)
    return skipped


def _build_folder(  # noqa: PLR0917 - private, one caller, each argument distinct
    source: SnapshotSource,
    directory: str,
    staging: str,
    control_staging: str,
    mailbox: ArchivedMailbox,
    group: int,
) -> None:
    folder = staging
    control = control_staging
    for component in mailbox.path:
        folder = os.path.join(folder, mutf7.encode(component))
        control = os.path.join(control, mutf7.encode(component))
        _mkdir(folder, group)
        _mkdir(control, group)
    # Dovecot writes here only: its uidlist lock, a rewritten uidlist, its index.
    os.chmod(control, CONTROL_DIR_MODE)
    for sub in ("cur", "new", "tmp"):
        _mkdir(os.path.join(folder, sub), group)
    keywords = sorted({flag for message in mailbox.messages
                       for flag in storable_flags(message.flags) if not flag.startswith("\\")},
                      key=str.lower)[:MAX_KEYWORDS]
    letter_of = {name: chr(ord("a") + index) for index, name in enumerate(keywords)}
    records: list[UidlistRecord] = []
    used_uids: set[int] = set()
    used_keys: set[str] = set()
    unnumbered: list[str] = []
    for message in mailbox.messages:
        pool_path = _pool_file(source, directory, message, group)
        data = b""
        if needs_body_for_key(message):
            with open(pool_path, "rb") as handle:  # the size fields must match the body
                data = handle.read()
        key = key_with_body(message, data)
        if key in used_keys:  # one GUID, two bodies: both are kept
            key = derived_key(message)
        used_keys.add(key)
        letters = "".join(sorted(
            FLAG_TO_LETTER[flag] if flag.startswith("\\") else letter_of.get(flag, "")
            for flag in storable_flags(message.flags)))
        _link_or_copy(pool_path, os.path.join(folder, "cur", f"{key}:2,{letters}"), group)
        if message.uid is not None and message.uid not in used_uids:
            used_uids.add(message.uid)
            records.append(UidlistRecord(uid=message.uid, key=key,
                                         guid=None if key == message.guid else message.guid))
        else:
            unnumbered.append(key)
    highest = max(used_uids, default=0)
    next_uid = max(mailbox.uidnext or 1, highest + 1)
    for key in sorted(unnumbered):  # numbered after the known ones, as Dovecot would
        records.append(UidlistRecord(uid=next_uid, key=key))
        next_uid += 1
    uidvalidity = mailbox.uidvalidity or 1
    _write_small(os.path.join(control, "dovecot-uidlist"),
                 format_uidlist(uidvalidity=uidvalidity, next_uid=next_uid, guid=mailbox.guid,
                                records=records), group, CONTROL_FILE_MODE)
    if keywords:
        _write_small(os.path.join(control, "dovecot-keywords"),
                     format_keywords(dict(enumerate(keywords))), group, CONTROL_FILE_MODE)


def _link_or_copy(pool_path: str, target: str, group: int) -> None:
    try:
        os.link(pool_path, target)
    except OSError as exc:
        if exc.errno != errno.EMLINK:
            raise
        # A body in more places than the file system has links for (ext4: 65,000):
        # this place gets its own copy.
        staging = target + ".copy"
        shutil.copy2(pool_path, staging)
        if os.geteuid() == 0:
            os.chown(staging, 0, group)
        os.rename(staging, target)


def _write_small(path: str, text: str, group: int, mode: int) -> None:
    fd = os.open(path, dotlock.CREATE_FLAGS, mode)
    try:
        write_all(fd, text.encode("utf-8"))
        if os.geteuid() == 0:
            os.fchown(fd, 0, group)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


# --- the Dovecot side ------------------------------------------------------------------


def dovecot_config(directory: str, *, single_user: bool = False, prefix: str = "Backups") -> str:
    """The Dovecot configuration that shows the view as a read-only ``Backups`` namespace.

    ``directory`` is the view directory as Dovecot's server sees it. The snippet
    goes next to the server's inbox namespace, which must use "." as its separator
    (Maildir++'s), as this one does.
    """
    root = os.path.abspath(directory)
    owner = SINGLE_USER if single_user else "%u"
    control = f"{root}/control/{owner}"
    return f"""\
# bundlesync Backups view: each snapshot date, read-only, as {prefix}/<date>/<folder>.
# Messages are read-only on disk (0440, group = the view directory's group: make it
# Dovecot's mail_gid); the ACL below also refuses every change at the IMAP level.
mail_plugins = $mail_plugins acl
protocol imap {{
  mail_plugins = $mail_plugins imap_acl
}}
namespace backups {{
  type = private
  prefix = {prefix}.
  separator = .
  # CONTROL and INDEX: the view's UIDs, Dovecot's uidlist lock and its index live in
  # {root}/control, the one part of the view Dovecot's group may write.
  location = maildir:{root}/users/{owner}:LAYOUT=fs:CONTROL={control}:INDEX={control}
  list = yes
  subscriptions = no
}}
plugin {{
  # Global ACL file: lookup and read only, for everything below {prefix}.
  acl = vfile:{root}/dovecot-acl
}}
# and {root}/dovecot-acl holds the single line:
#   {prefix}.* owner lr
"""


def acl_file_text(prefix: str = "Backups") -> str:
    """The global ACL file the namespace snippet points to."""
    return f"{prefix}.* owner lr\n"


__all__ = [
    "SINGLE_USER",
    "ViewReport",
    "acl_file_text",
    "dovecot_config",
    "refresh_view",
    "user_dir_name",
    "wanted_dates",
]
