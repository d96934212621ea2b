"""The Maildir store adapter: Maildir++ exactly as Dovecot lays it out.

Layout of one user's Maildir (``MailLocation.path_for(user)``)::

    Maildir/                      INBOX: cur/ new/ tmp/ + Dovecot's files
    Maildir/.Archive/             folder ("Archive",): cur/ new/ tmp/ maildirfolder
    Maildir/.Archive.Z&APw-rich/  folder ("Archive", "Zürich")
    Maildir/subscriptions         "V\\t2\\n\\n" then one name a line, TAB between levels
    <folder>/dovecot-uidlist      "3 V<uidvalidity> N<next uid> G<mailbox guid>" + records
    <folder>/dovecot-keywords     "<index> <keyword>" lines; letter a = index 0

Folder names are modified UTF-7 (``mutf7``), levels joined with "." on disk and
given as tuples in the API; a level holding "." or "/" cannot be stored (the
name check refuses it, as Dovecot does).

Messages are files ``<key>[:2,<letters>]`` in ``new/`` or ``cur/`` (Dovecot
keeps flagged files in ``new/``; both are read). Letters, sorted by ASCII code:
``D`` Draft, ``F`` Flagged, ``P`` Passed, ``R`` Answered, ``S`` Seen, ``T``
Deleted, then ``a``..``z`` for the folder's keywords. Letters this adapter does
not know are kept as they are when flags change. A folder holds at most 26
keywords (Dovecot's limit for Maildir names): further keywords are not stored,
and the flags an ``add_message`` returns (or ``messages`` reports) are the ones
actually stored. Keywords compare without regard to case, as in Dovecot.

How the adapter behaves next to Dovecot and a delivery agent:

* Delivery: ``tmp/<unique>``, write, mtime := internal date (Dovecot's received
  date), fsync, link (which never replaces a file) to ``cur/<key>:2,<letters>``,
  fsync ``cur/``, unlink the tmp name. A delivery given a durable file holding
  its bytes (bundlesync's spool) hard-links that file into ``tmp/`` instead of
  writing them, when it is on the same file system and linked nowhere else;
  the rest is the same.
* A flag change is a rename in place (``new/`` stays ``new/``); an expunge is an
  unlink. If the file was renamed meanwhile (by Dovecot), the folder is listed
  again and the file found by its key; it is never duplicated.
* New keywords are added to ``dovecot-keywords`` under Dovecot's
  ``dovecot-uidlist.lock`` (Dovecot changes keywords only under that lock),
  replacing the file through ``dovecot-keywords.lock`` with a strictly newer
  mtime (Dovecot re-reads the file only when its mtime, in seconds, changes).
* ``subscriptions`` is replaced through ``subscriptions.lock``, as Dovecot does.
* A new folder is built inside ``tmp/`` and renamed into place, whole. When the
  caller gives a GUID or UIDVALIDITY, a fresh ``dovecot-uidlist`` carrying them is
  written into an empty folder that has none; Dovecot then adopts both.
* Otherwise Dovecot's files (``dovecot.index*``, ``dovecot-uidlist``,
  ``dovecot-uidvalidity*``) are only read, never written.
* Files and directories are created 0600/0700 and, when this runs as root and the
  user's Maildir (or the nearest existing directory above it) belongs to another
  uid, chowned to that owner, so that Dovecot (``mail_uid``) can use them.

Change detection: a folder's stamp is the mtimes (ns) of ``cur/`` and ``new/``.
It is *racy* while either is younger than the file system's timestamp step
allows (2 s on a file system that keeps whole seconds, 50 ms where the marks
show sub-second mtimes: ``folder_files.racy_window_ns``): a change in the same
tick would not move the mtime, so the caller must list the folder again next
time. :meth:`MaildirStore.messages` itself lists a folder that changed during
the listing (or is racy) again, until two listings agree, so a message present
throughout is never reported missing because of a concurrent rename
(:mod:`bundlesync.stores.folder_files`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from bundlesync import fsio
from bundlesync.core.model import SYSTEM_FLAGS
from bundlesync.errors import StoreError
from bundlesync.stores import dotlock, folder_files, mutf7
from bundlesync.stores.base import INBOX, FolderInfo, FolderPath, FolderStamp, StoredMessage
from bundlesync.stores.dovecot_files import (
    FLAG_TO_LETTER,
    FileName,
    compose_letters,
    format_keywords,
    format_subscriptions,
    format_uidlist_header,
    keyword_index,
    letters_to_flags,
    misstated_size,
    next_keyword_index,
    parse_keywords,
    parse_subscriptions,
    parse_uidlist_guids,
    parse_uidlist_header,
    unknown_letters,
)
from bundlesync.stores.errors import (
    FolderExists,
    FolderNotEmpty,
    FolderNotFound,
    InvalidMailboxName,
    KeyInUse,
    MessageMissing,
    UnknownUser,
    UnsafeName,
)
from bundlesync.stores.folder_files import Entry, Lru
from bundlesync.stores.location import MailLocation
from bundlesync.stores.names import (
    check_folder_path,
    check_key,
    new_message_key,
    storable_flags,
)

RACY_NS = folder_files.COARSE_RACY_NS  # the window where the marks prove nothing finer
DIR_MODE = 0o700
FILE_MODE = 0o600
UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
SUBSCRIPTIONS = "subscriptions"
UIDLIST_LOCK_STALE_S = 120  # Dovecot overrides dovecot-uidlist.lock after 2 minutes
SUBSCRIPTIONS_LOCK_STALE_S = 30  # ... and subscriptions.lock after 30 s
_MAX_RETRIES = 4
# Dovecot's own small files (dovecot-uidlist, dovecot-keywords, subscriptions) are
# read up to this size: a uidlist of a million messages is about 80 MiB.
MAX_DOVECOT_FILE = 128 * 1024 * 1024
# Caches are per folder and small: memory stays bounded by the work at hand,
# not by the size of the store (a folder index holds one entry per message).
# Folder listings kept for locating files: an import touches a folder in several
# passes (placements, then removals, bodies read from other folders), and four
# folders made it list most folders again and again. Bounded by the files held too.
_INDEX_CACHE = 64
# A batch that renamed or named files in more directories than this makes them
# durable with one sync of the file system instead of one fsync each.
_DIR_SYNCS = 16
_INDEX_ENTRIES = 100_000  # about 35 MB; one folder of that size was always kept whole
_KEYWORDS_CACHE = 64
_FOLDER_NAMES_CACHE = 4096
_GUIDS_CACHE = 4
_CREATE_FLAGS = dotlock.CREATE_FLAGS
_DELETING_PREFIX = ".bundlesync-deleting."
_CREATING_PREFIX = ".bundlesync-creating."
# Dovecot removes files from tmp/ that were neither accessed nor changed for 36 hours.
TMP_STALE_S = 36 * 3600
# A tmp/ name made by new_message_key on this host: "<secs>.M<usecs>P<pid>Q<n>.<host>".
_TMP_NAME = re.compile(r"(?:\.bundlesync-(?:creating|deleting)\.)?\d+\.M\d+P(\d+)Q\d+\.(.+)\Z")

# The message files of a batch are written together, by this many threads
# (creating a file is most of a delivery's cost, and a write releases the GIL),
# at the batch's end or whenever this many bytes wait: memory stays bounded.
# 0 writes them in the calling thread.
WRITER_THREADS = 2
MAX_BYTES_WAITING = 64 * 1024 * 1024

Owner = tuple[int, int] | None


@dataclass(slots=True)
class _Delivery:
    """A message written into tmp/ inside a batch, named when the batch ends."""

    tmp_path: str
    directory: str
    key: str
    flags: frozenset[str]


@dataclass(slots=True)
class _Write:
    """A tmp/ file to write: ``_write_tmp``'s arguments."""

    tmp_path: str
    data: bytes
    owner: Owner
    date_ns: int
    source: str | None  # a file with these bytes to link instead (add_message's source)


@dataclass
class _Batch:
    """What a batch defers to its end (see :meth:`MaildirStore.batch`)."""

    deliveries: list[_Delivery] = field(default_factory=list)
    # Folders found present and safe, with cur/ and tmp/, in this batch.
    ready: set[str] = field(default_factory=set)
    # (user, folder path) -> (user root, folder directory) of the ready folders.
    places: dict[tuple[str, FolderPath], tuple[str, str]] = field(default_factory=dict)
    # Keywords to add to a folder's dovecot-keywords: written once per batch.
    keywords: dict[str, list[str]] = field(default_factory=dict)
    # cur/ and new/ directories whose renames and unlinks are synced at the end.
    renamed_in: set[str] = field(default_factory=set)
    # Files not written yet, and their bytes.
    waiting: list[_Write] = field(default_factory=list)
    waiting_bytes: int = 0


@functools.lru_cache(maxsize=1024)
def _storable(flags: frozenset[str]) -> frozenset[str]:
    """:func:`storable_flags` of a set of flags (a delivery asks it per message)."""
    return storable_flags(flags, system=SYSTEM_FLAGS)


def _write_tmp(tmp_path: str, data: bytes, owner: Owner, date_ns: int, *,
               sync: bool = False, source: str | None = None) -> None:
    """Write one message file under its tmp/ name (in a writer thread in a batch),
    or link ``source`` there when it can be taken (:func:`_link_tmp`)."""
    if source is not None and _link_tmp(tmp_path, source, len(data), owner, date_ns,
                                        sync=sync):
        return
    fd = os.open(tmp_path, _CREATE_FLAGS, FILE_MODE)
    try:
        fsio.write_all(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
        # Dovecot takes the file's mtime as the received date.
        os.utime(fd, ns=(date_ns, date_ns))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _link_tmp(tmp_path: str, source: str, size: int, owner: Owner, date_ns: int, *,
              sync: bool) -> bool:
    """Make ``source`` the message file under its tmp/ name; False if it cannot be
    (the caller writes the bytes then).

    The file gets what :func:`_write_tmp` gives a written one -- the owner and the
    received date; its mode is the 0600 both are created with -- before it gets a
    name in the folder. Everything is done through ``source``'s name, in a
    directory only this process's user can enter, never through the tmp/ name,
    which the folder's owner could swap for a link to a file of someone else's.
    It is taken only while ``source`` is its one name: a file linked elsewhere
    already -- to another message, or by a run killed before it recorded the
    delivery -- is never shared (a change to its owner or date would change that
    other message too). Its bytes are not read again: ``source`` is a durable file
    the caller read and checked.
    """
    try:
        st = os.lstat(source)
        if st.st_nlink != 1 or st.st_size != size or not stat.S_ISREG(st.st_mode):
            return False
        if owner is not None:
            os.chown(source, *owner, follow_symlinks=False)
        # Dovecot takes the file's mtime as the received date.
        os.utime(source, ns=(date_ns, date_ns), follow_symlinks=False)
        if sync:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.link(source, tmp_path, follow_symlinks=False)
    except OSError:
        # EXDEV (another file system), EPERM (no hard links there), a vanished
        # source, anything: the bytes are at hand, write them.
        return False
    return True


_Parsed = TypeVar("_Parsed")


def _read_cached(path: str, cache: Lru[tuple[tuple[int, int, int], _Parsed]],
                 parse: Callable[[bytes], _Parsed]) -> _Parsed:
    """Parse one of Dovecot's small files, again only when it changed on disk.

    A missing file parses as the empty value (``parse(b"")``).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return parse(b"")
    signature = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = cache.get(path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    try:
        value = parse(_read_plain(path, limit=MAX_DOVECOT_FILE))
    except FileNotFoundError:
        return parse(b"")
    cache.put(path, (signature, value))
    return value


def _open_plain(path: str) -> tuple[int, os.stat_result]:
    """An open descriptor and the stat of a plain file, never through a symlink and
    never blocking on a FIFO; anything else raises FileNotFoundError (for the store
    it is not there). The caller closes the descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise FileNotFoundError(errno.ENOENT, "not a plain file", path) from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a plain file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_fd(fd: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_plain(path: str, *, limit: int | None = None) -> bytes:
    """The bytes of a plain file, never through a symlink and never blocking on a FIFO.

    ``limit``: read at most this many bytes. A path that is not a plain file
    raises FileNotFoundError (for the store it is not there).
    """
    fd, st = _open_plain(path)
    try:
        return _read_fd(fd, st.st_size if limit is None else min(st.st_size, limit))
    finally:
        os.close(fd)


def _read_ahead(path: str) -> None:
    """Have the kernel read a plain file into the page cache, in the background."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass  # a hint only
    finally:
        os.close(fd)


def _read_plain_sized(path: str, max_size: int) -> tuple[os.stat_result, bytes | None]:
    """The stat of a plain file and its bytes (None if larger than ``max_size``: not
    read); like :func:`_read_plain`, never through a symlink or blocking on a FIFO."""
    fd, st = _open_plain(path)
    try:
        return st, (None if st.st_size > max_size else _read_fd(fd, st.st_size))
    finally:
        os.close(fd)


def _is_mutf7(name: str) -> bool:
    try:
        for component in name[1:].split("."):
            mutf7.decode(component)
    except InvalidMailboxName:
        return False
    return True


def _host_name() -> str:
    # As new_message_key writes it (Maildir escapes "/" and ":").
    return (socket.gethostname() or "localhost").replace("/", "\\057").replace(":", "\\072")


def _translate(exc: OSError, action: str) -> StoreError:
    where = f" ({exc.filename})" if exc.filename else ""
    message = f"could not {action}: {exc.strerror or exc}{where}"
    if isinstance(exc, PermissionError):
        return StoreError(
            message,
            hint="Run as the mail user (or root) and check the ownership of the Maildir.",
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(message, hint="Free space on the mail file system, then run again.")
    if exc.errno == errno.EROFS:
        return StoreError(message, hint="The mail file system is read-only; remount it rw.")
    return StoreError(message)


@contextlib.contextmanager
def _io(action: str) -> Iterator[None]:
    """Translate OSError into StoreError that says what we were doing."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise _translate(exc, action) from exc


class MaildirStore:
    """A Dovecot-compatible Maildir++ store for one user or many (see the module text).

    ``location``: a Maildir path or a template with ``%u``, ``%n``, ``%d``.
    ``fsync``: make every write durable before returning (off only for benchmarks).
    ``now_ns``: the clock used for racy stamps and new file names.
    ``lock_timeout``: seconds to wait for a lock Dovecot holds before giving up.
    """

    def __init__(
        self,
        location: str,
        *,
        fsync: bool = True,
        now_ns: Callable[[], int] = time.time_ns,
        lock_timeout: float = 30.0,
    ) -> None:
        self.location = MailLocation.parse(location)
        self._fsync = fsync
        self._now_ns = now_ns
        self._lock_timeout = lock_timeout
        self._files = folder_files.FileIndex(folders=_INDEX_CACHE,
                                                entries=_INDEX_ENTRIES)
        self._folder_names: dict[tuple[str, FolderPath], tuple[str, str]] = {}
        self._keyword_cache: Lru[tuple[tuple[int, int, int], dict[int, str]]] = Lru(
            _KEYWORDS_CACHE
        )
        self._guid_cache: Lru[tuple[tuple[int, int, int], dict[str, str]]] = Lru(_GUIDS_CACHE)
        self._owners: dict[str, Owner] = {}
        # What batch() defers to its end; None outside a batch.
        self._batch: _Batch | None = None
        # What was skipped (symlinks, odd files) since the caller last asked.
        self._warnings: dict[str, None] = {}
        # Folders whose tmp/ was cleaned of a dead run's leftovers in this run.
        self._cleaned: set[str] = set()
        # Folders found free of symlinks, by the lstat of the folder directory.
        self._safe_dirs: Lru[tuple[int, int, int]] = Lru(_KEYWORDS_CACHE)

    def __repr__(self) -> str:
        return f"MaildirStore({self.location.template!r})"

    # --- paths -------------------------------------------------------------------------

    def maildir_path(self, user: str) -> str:
        """The user's Maildir directory (whether it exists or not)."""
        return self.location.path_for(user)

    def folder_dir(self, user: str, path: FolderPath) -> str:
        """The directory of folder ``path`` (checked: safe, inside the user's Maildir)."""
        root = self.location.path_for(user)
        return self._dir_in(root, check_folder_path(path))

    @staticmethod
    def _dir_in(root: str, path: FolderPath) -> str:
        if path == INBOX:
            return root
        name = "." + ".".join(mutf7.encode(component) for component in path)
        if len(name.encode("utf-8")) > 255:
            raise UnsafeName(f"folder path {path!r} is too long for one directory name")
        return os.path.join(root, name)

    def _existing_root(self, user: str) -> str:
        root = self.location.path_for(user)
        if not os.path.isdir(root):
            raise UnknownUser(f"user {user!r} has no Maildir at {root}")
        return root

    def take_warnings(self) -> list[str]:
        """What the store skipped since the last call (symlinks, files that are not
        plain files), one line each, for the operation's report."""
        found, self._warnings = list(self._warnings), {}
        return found

    def _warn(self, text: str) -> None:
        self._warnings[text] = None

    def _symlinked(self, root: str, directory: str) -> str | None:
        """The part of the folder that is a symlink (warned about), or None."""
        link = folder_files.symlinked_part(directory, itself=directory != root)
        if link is not None:
            self._warn(f"skipped {link}: a symlink inside a Maildir is never followed "
                       "(replace it with a real directory to have it synchronised)")
        return link

    def clean_tmp(self, directory: str) -> int:
        """Remove what dead runs left in the folder's ``tmp/``; the number removed.

        As Dovecot does, a file neither read nor changed for 36 hours goes. A name
        of this host's pattern (``...P<pid>Q<n>.<host>``, as we and Dovecot make
        them) whose process no longer runs goes at once: no one will ever finish
        it. Symlinks are removed as links, never followed. Done once per folder
        and run, before the first delivery into it.
        """
        if directory in self._cleaned:
            return 0
        self._cleaned.add(directory)
        tmp = os.path.join(directory, "tmp")
        now = time.time()
        host = _host_name()
        removed = 0
        try:
            entries = list(os.scandir(tmp))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            match = _TMP_NAME.match(entry.name)
            dead_owner = (match is not None and match[2] == host
                          and not dotlock.process_alive(int(match[1])))
            old = now - max(st.st_atime, st.st_ctime) > TMP_STALE_S
            if not (dead_owner or old):
                continue
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(st.st_mode):
                    if not entry.name.startswith((_CREATING_PREFIX, _DELETING_PREFIX)):
                        continue  # a directory of someone else's: not ours to judge
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
        return removed

    # --- users -------------------------------------------------------------------------

    def users(self) -> list[str]:
        """Every user whose Maildir exists, sorted (``[""]`` for a single-user store)."""
        with _io("list the users of the store"):
            return self.location.users()

    def ensure_user(self, user: str) -> None:
        """Create the user's Maildir (cur/, new/, tmp/) and missing parents; idempotent."""
        root = self.location.path_for(user)
        with _io(f"create the Maildir of user {user!r}"):
            owner = self._make_dirs(root)
            if owner is None:
                owner = self._owner_of(root)
            for sub in ("cur", "new", "tmp"):
                self._mkdir(os.path.join(root, sub), owner)
            if folder_files.symlinked_part(root, itself=False) is None:
                self.clean_tmp(root)  # a killed run's half-built folders, its deliveries

    def _make_dirs(self, path: str) -> Owner:
        """mkdir -p with our modes; returns the owner given to what was created."""
        missing: list[str] = []
        current = path
        while not os.path.isdir(current):
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        if not missing:
            return None
        owner = self._owner_from_stat(os.stat(current))
        for directory in reversed(missing):
            self._mkdir(directory, owner)
        return owner

    def _mkdir(self, path: str, owner: Owner) -> None:
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            return
        if owner is not None:
            os.chown(path, *owner, follow_symlinks=False)

    @staticmethod
    def _owner_from_stat(st: os.stat_result) -> Owner:
        if os.geteuid() != 0 or (st.st_uid == 0 and st.st_gid == 0):
            return None
        return (st.st_uid, st.st_gid)

    def _owner_of(self, root: str) -> Owner:
        if root not in self._owners:
            self._owners[root] = self._owner_from_stat(os.stat(root))
        return self._owners[root]

    def _check_inside(self, root: str, directory: str) -> None:
        """Refuse to write through a symlink below the user's Maildir.

        The answer is kept while the folder directory's own lstat (inode, mode,
        mtime) is unchanged: replacing cur/, new/ or tmp/ by a link changes the
        folder's mtime, replacing the folder by a link changes its inode and mode.
        One lstat per call instead of four.
        """
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            st = None
        signature = None if st is None else (st.st_ino, st.st_mode, st.st_mtime_ns)
        if signature is not None and self._safe_dirs.get(directory) == signature:
            return
        link = folder_files.symlinked_part(directory, itself=directory != root)
        if link is None:
            if signature is not None:
                self._safe_dirs.put(directory, signature)
            return
        raise UnsafeName(
            f"{link} is a symlink; bundlesync never writes through one (Maildir {root})",
            hint="Replace the symlink with a real directory, or move the folder into the "
            "Maildir.",
        )

    # --- folders -----------------------------------------------------------------------

    def folders(self, user: str) -> list[FolderInfo]:
        """Every folder of the user, INBOX included, sorted by path; [] without a Maildir.

        Directories whose names are not canonical modified UTF-7, or that no
        folder path could name (see ``check_folder_path``), are not reported.
        """
        root = self.location.path_for(user)
        with _io(f"list the folders of user {user!r}"):
            if not os.path.isdir(root):
                return []
            found: list[tuple[FolderPath, str]] = [(INBOX, root)]
            with os.scandir(root) as entries:
                for entry in entries:
                    path = self._folder_path_of(entry.name)
                    if path is not None and entry.is_dir():
                        found.append((path, entry.path))
                    elif (path is None and entry.name.startswith(".")
                          and not _is_mutf7(entry.name) and entry.is_dir()):
                        # Some tools write raw UTF-8; Dovecot would show it garbled.
                        self._warn(f"skipped folder {entry.path}: its name is not modified "
                                   "UTF-7 (raw UTF-8?); rename it with an IMAP client or "
                                   "'doveadm mailbox rename' to have it synchronised")
            infos = []
            for path, directory in sorted(found):
                if self._symlinked(root, directory) is not None:
                    continue
                info = self._folder_info(path, directory)
                if info is not None:
                    infos.append(info)
            return infos

    @staticmethod
    def _folder_path_of(name: str) -> FolderPath | None:
        if not name.startswith(".") or name in {".", ".."}:
            return None
        try:
            path = tuple(mutf7.decode(component) for component in name[1:].split("."))
            check_folder_path(path)
        except (InvalidMailboxName, UnsafeName):
            return None
        return None if path == INBOX else path

    def _folder_info(self, path: FolderPath, directory: str) -> FolderInfo | None:
        stamp = self._stamp(directory)
        if stamp is None:
            return None
        header = None
        try:
            head = _read_plain(os.path.join(directory, UIDLIST), limit=1024)
        except FileNotFoundError:
            pass
        else:
            header = parse_uidlist_header(head.split(b"\n", 1)[0].decode("ascii", "replace"))
        return FolderInfo(
            path=path,
            guid=header.guid if header else None,
            uidvalidity=header.uidvalidity if header else None,
            stamp=stamp,
        )

    def _stamp(self, directory: str) -> FolderStamp | None:
        marks = folder_files.marks(directory)
        if marks is None:
            return None
        return FolderStamp(marks=marks, racy=self._is_racy(marks))

    def _is_racy(self, marks: tuple[int, int]) -> bool:
        return folder_files.is_racy(marks, self._now_ns())

    def folder_stamp(self, user: str, path: FolderPath) -> FolderStamp | None:
        """Two stats: the mtimes of cur/ and new/; None if the folder does not exist."""
        directory = self.folder_dir(user, path)
        with _io(f"read the state of folder {'/'.join(path)}"):
            return self._stamp(directory)

    def create_folder(
        self, user: str, path: FolderPath, *, guid: str | None, uidvalidity: int | None
    ) -> None:
        """Create the folder whole (idempotent). GUID/UIDVALIDITY seed a new dovecot-uidlist."""
        if guid is not None and (len(guid) != 32 or any(c not in "0123456789abcdef" for c in guid)):
            raise UnsafeName(f"mailbox GUID {guid!r} is not 32 lowercase hex digits")
        if uidvalidity is not None and not 0 < uidvalidity < 2**32:
            raise UnsafeName(f"UIDVALIDITY {uidvalidity} is outside 1..4294967295")
        root = self._existing_root(user)
        directory = self.folder_dir(user, path)
        with _io(f"create folder {'/'.join(path)} of user {user!r}"):
            owner = self._owner_of(root)
            if path != INBOX and not os.path.isdir(directory):
                self._build_folder(root, directory, owner)
            self._check_inside(root, directory)
            for sub in ("cur", "new", "tmp"):
                self._mkdir(os.path.join(directory, sub), owner)
            if guid is not None or uidvalidity is not None:
                self._seed_uidlist(directory, guid, uidvalidity, owner)

    def _build_folder(self, root: str, directory: str, owner: Owner) -> None:
        # Built under tmp/ and renamed into place: Dovecot never sees half a folder.
        staging_parent = os.path.join(root, "tmp")
        self._mkdir(staging_parent, owner)
        staging = os.path.join(
            staging_parent, _CREATING_PREFIX + new_message_key(now_ns=self._now_ns())
        )
        self._mkdir(staging, owner)
        try:
            for sub in ("cur", "new", "tmp"):
                self._mkdir(os.path.join(staging, sub), owner)
            self._write_new_file(os.path.join(staging, "maildirfolder"), b"", owner)
            try:
                os.rename(staging, directory)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # Created meanwhile by someone else (Dovecot, a client): that one stands.
            else:
                if self._fsync:
                    fsio.fsync_dir(root)
        finally:
            if os.path.isdir(staging):
                shutil.rmtree(staging, ignore_errors=True)

    def _seed_uidlist(
        self, directory: str, guid: str | None, uidvalidity: int | None, owner: Owner
    ) -> None:
        target = os.path.join(directory, UIDLIST)
        if os.path.lexists(target) or folder_files.scan_names(directory):
            return  # Dovecot's own record (or mail it has not numbered yet) stands
        if uidvalidity is None:
            uidvalidity = max(1, self._now_ns() // 1_000_000_000 % 2**32)
        text = format_uidlist_header(uidvalidity=uidvalidity, guid=guid)
        staging = os.path.join(directory, "tmp", new_message_key(now_ns=self._now_ns()))
        self._write_new_file(staging, text.encode("ascii"), owner)
        try:
            # link() never replaces: if Dovecot wrote its uidlist meanwhile, it stays.
            os.link(staging, target)
        except FileExistsError:
            pass
        finally:
            os.unlink(staging)
        if self._fsync:
            fsio.fsync_dir(directory)

    def _write_new_file(self, path: str, data: bytes, owner: Owner) -> None:
        fd = os.open(path, _CREATE_FLAGS, FILE_MODE)
        try:
            fsio.write_all(fd, data)
            if owner is not None:
                os.fchown(fd, *owner)
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def rename_folder(self, user: str, old: FolderPath, new: FolderPath) -> None:
        """Rename ``old`` and every folder below it; idempotent after an interruption."""
        root = self._existing_root(user)
        old_dir = self.folder_dir(user, old)
        new_dir = self.folder_dir(user, new)
        if INBOX in (old, new):
            raise StoreError(
                "INBOX cannot be renamed, and no folder can be renamed to INBOX",
                hint="Move the messages instead.",
            )
        if old == new:
            return
        if new[: len(old)] == old:
            raise StoreError(f"cannot move folder {'/'.join(old)} below itself")
        old_name = os.path.basename(old_dir)
        new_name = os.path.basename(new_dir)
        with _io(f"rename folder {'/'.join(old)} to {'/'.join(new)}"):
            with os.scandir(root) as entries:
                children = sorted(
                    entry.name
                    for entry in entries
                    if entry.name.startswith(old_name + ".") and entry.is_dir()
                )
            moves = []
            if os.path.isdir(old_dir):
                moves.append((old_name, new_name))
            moves.extend((child, new_name + child[len(old_name) :]) for child in children)
            if not moves:
                if os.path.isdir(new_dir):
                    return  # done before (the run was interrupted after renaming)
                raise FolderNotFound(f"folder {'/'.join(old)} of user {user!r} does not exist")
            for _, target in moves:
                if os.path.lexists(os.path.join(root, target)):
                    raise FolderExists(
                        f"cannot rename {'/'.join(old)}: {target} already exists in {root}"
                    )
            for source, target in moves:
                os.rename(os.path.join(root, source), os.path.join(root, target))
            if self._fsync:
                fsio.fsync_dir(root)
        self._forget_dirs(root)

    def _forget_dirs(self, root: str) -> None:
        prefix = root + os.sep
        self._files.forget_below(prefix)

    def delete_folder(self, user: str, path: FolderPath) -> None:
        """Delete a folder without messages; its Dovecot files go with it. Idempotent.

        Refused (FolderNotEmpty) while cur/, new/ or tmp/ hold any file, or the
        folder holds a file that is neither Maildir's nor Dovecot's.
        """
        if path == INBOX:
            raise StoreError("INBOX cannot be deleted", hint="Expunge its messages instead.")
        root = self._existing_root(user)
        directory = self.folder_dir(user, path)
        label = "/".join(path)
        with _io(f"delete folder {label} of user {user!r}"):
            if os.path.islink(directory):
                raise StoreError(
                    f"folder {label} is a symlink ({directory}); it is not deleted",
                    hint="Remove the link by hand if the folder should go.",
                )
            if not os.path.isdir(directory):
                return
            self._check_deletable(directory, label)
            # Moved out of Dovecot's sight first, then checked again: a message
            # delivered in between is put back with its folder, never deleted.
            graveyard = os.path.join(root, "tmp")
            self._mkdir(graveyard, self._owner_of(root))
            doomed = os.path.join(
                graveyard, _DELETING_PREFIX + new_message_key(now_ns=self._now_ns())
            )
            os.rename(directory, doomed)
            try:
                self._check_deletable(doomed, label)
            except FolderNotEmpty:
                os.rename(doomed, directory)
                raise
            shutil.rmtree(doomed)
            if self._fsync:
                fsio.fsync_dir(root)
        self._forget_dirs(root)

    @staticmethod
    def _check_deletable(directory: str, label: str) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if name in {"cur", "new", "tmp"} and entry.is_dir(follow_symlinks=False):
                    with os.scandir(entry.path) as files:
                        held = [f.name for f in files]
                    if held:
                        raise FolderNotEmpty(
                            f"folder {label} still holds {len(held)} file(s) in {name}/, "
                            f"e.g. {held[0]}"
                        )
                elif not (name == "maildirfolder" or name.startswith("dovecot")):
                    raise FolderNotEmpty(
                        f"folder {label} holds {name!r}, which is not a Maildir or Dovecot file"
                    )

    # --- messages ----------------------------------------------------------------------

    def _folder(self, user: str, path: FolderPath) -> tuple[str, str]:
        """(user root, folder dir) of an existing folder."""
        # The names are a pure function of (user, path), checked once: a scan or an
        # export asks for the same folder once per message.
        names = self._folder_names.get((user, path))
        if names is None:
            root = self.location.path_for(user)
            names = root, self._dir_in(root, check_folder_path(path))
            if len(self._folder_names) >= _FOLDER_NAMES_CACHE:
                self._folder_names.clear()
            self._folder_names[(user, path)] = names
        root, directory = names
        if folder_files.marks(directory) is None:
            raise FolderNotFound(f"folder {'/'.join(path)} of user {user!r} does not exist")
        self._check_inside(root, directory)
        return root, directory

    def messages(self, user: str, path: FolderPath) -> list[StoredMessage]:
        """Every message in new/ and cur/, sorted by key (one stat per message for its date)."""
        _, directory = self._folder(user, path)
        with _io(f"list folder {'/'.join(path)} of user {user!r}"):
            listing, marks = folder_files.stable_listing(directory, is_racy=self._is_racy)
            self._files.remember(directory, listing, marks)
            keywords = self._keywords(directory)
            guids = self._uidlist_guids(directory)
            # Few distinct flag combinations occur in a folder: decode each once.
            decoded: dict[str, frozenset[str]] = {}
            result = []
            for key, (entry, st) in sorted(listing.items()):
                info = entry.name[len(key) :]
                flags = decoded.get(info)
                if flags is None:
                    flags = letters_to_flags(FileName.parse(entry.name).letters, keywords)
                    decoded[info] = flags
                result.append(
                    StoredMessage(
                        key=key,
                        guid=guids.get(key, key),
                        flags=flags,
                        size=st.st_size,
                        internal_date=st.st_mtime_ns // 1_000_000_000,
                    )
                )
            return result

    def message_names(self, user: str, path: FolderPath) -> dict[str, tuple[str, frozenset[str]]]:
        """Key -> (GUID, flags) of every message, from the file names alone.

        The cheap listing a scan diffs against what it knew: no stat per file (as
        reliable as :meth:`messages` against concurrent renames); only the new
        files need :meth:`message_info`.
        """
        directory, flags = self._list_flags(user, path)
        with _io(f"list folder {'/'.join(path)} of user {user!r}"):
            guids = self._uidlist_guids(directory)
        return {key: (guids.get(key, key), found) for key, found in flags.items()}

    def message_flags(self, user: str, path: FolderPath) -> dict[str, frozenset[str]]:
        """Key -> flags of every message, from the file names alone (no stat, and
        ``dovecot-uidlist`` is not read: a new file's GUID is read with its body)."""
        return self._list_flags(user, path)[1]

    def _list_flags(self, user: str, path: FolderPath) -> tuple[str, dict[str, frozenset[str]]]:
        """The folder's directory, and key -> flags of each of its files."""
        _, directory = self._folder(user, path)
        with _io(f"list folder {'/'.join(path)} of user {user!r}"):
            skipped: list[str] = []
            entries, marks = folder_files.stable_names(directory, is_racy=self._is_racy,
                                                       skipped=skipped)
            for odd in skipped:
                self._warn(f"skipped {odd}: not a plain file (symlinks are never followed)")
            self._files.remember_entries(directory, entries, marks)
            keywords = self._keywords(directory)
            # Few distinct flag combinations occur in a folder: decode each once, and
            # share one set between the files that have it.
            decoded: dict[str, frozenset[str]] = {}
            result: dict[str, frozenset[str]] = {}
            for key, entry in entries.items():
                info = entry.name[len(key) :]
                flags = decoded.get(info)
                if flags is None:
                    flags = letters_to_flags(FileName.parse(entry.name).letters, keywords)
                    decoded[info] = flags
                result[key] = flags
            return directory, result

    def message_info(self, user: str, path: FolderPath, key: str) -> StoredMessage:
        """One message with its size and date; MessageMissing if it is gone."""
        check_key(key)
        _, directory = self._folder(user, path)
        with _io(f"look at message {key} in folder {'/'.join(path)}"):
            return self._stored(directory, key)

    def read_body(self, user: str, path: FolderPath, key: str) -> bytes:
        """The message's raw bytes; MessageMissing if no file has this key."""
        check_key(key)
        _, directory = self._folder(user, path)
        with _io(f"read message {key} in folder {'/'.join(path)}"):
            for attempt in range(_MAX_RETRIES):
                entry = self._files.locate(directory, key, refresh=attempt > 0)
                if entry is None:
                    break
                try:
                    return _read_plain(os.path.join(directory, entry.subdir, entry.name))
                except FileNotFoundError:
                    continue  # renamed meanwhile: list again, find it by its key
        raise MessageMissing(f"message {key} is not in folder {'/'.join(path)} of user {user!r}")

    def prefetch(self, user: str) -> None:
        """Ask the kernel to start reading every message file of ``user`` (a hint).

        Uses nothing this store caches, so it may run in a thread beside a scan;
        reads no byte itself; never goes through a symlink below the Maildir; an
        error only means less is read ahead.
        """
        if not hasattr(os, "posix_fadvise"):
            return
        try:
            root = self.location.path_for(user)
            with os.scandir(root) as entries:
                folders = [root, *(e.path for e in entries
                                   if e.name.startswith(".") and e.is_dir(follow_symlinks=False))]
        except (OSError, StoreError):
            return
        for folder in folders:
            for sub in ("cur", "new"):
                directory = os.path.join(folder, sub)
                try:
                    if not stat.S_ISDIR(os.lstat(directory).st_mode):
                        continue
                    with os.scandir(directory) as files:
                        paths = [f.path for f in files if f.is_file(follow_symlinks=False)]
                except OSError:
                    continue
                for path in paths:
                    _read_ahead(path)

    def read_messages(self, user: str, path: FolderPath, keys: Iterable[str], *,
                      max_size: int) -> Iterator[tuple[StoredMessage, bytes | None]]:
        """Each message of ``keys`` still in the folder, with its bytes (None above
        ``max_size``: not read); the ones gone are left out.

        The folder is checked, and its keywords and GUIDs read, once for all; each
        file is opened once, its size and date taken from the open file. The
        folder's listing is checked against its stamp once too, for the first key:
        a file renamed since is not found where the listing says and the folder is
        listed again; a key the listing lacks has the stamp checked again.
        """
        keys = [check_key(key) for key in keys]
        _, directory = self._folder(user, path)
        files = self._files
        with _io(f"read messages in folder {'/'.join(path)} of user {user!r}"):
            keywords = self._keywords(directory)
            guids = self._uidlist_guids(directory)
            # Few distinct flag combinations occur in a folder: one value for each
            # (an inventory of a huge folder would otherwise hold one set per message).
            decoded: dict[str, frozenset[str]] = {}
            checked = False
            for key in keys:
                for attempt in range(_MAX_RETRIES):
                    entry = files.locate_known(directory, key) if checked and not attempt else None
                    if entry is None:
                        entry = files.locate(directory, key, refresh=attempt > 0)
                        checked = True
                    if entry is None:
                        break
                    try:
                        st, data = _read_plain_sized(
                            os.path.join(directory, entry.subdir, entry.name), max_size)
                    except FileNotFoundError:
                        continue  # renamed meanwhile: list again, find it by its key
                    info = entry.name[len(key):]
                    flags = decoded.get(info)
                    if flags is None:
                        flags = letters_to_flags(FileName.parse(entry.name).letters, keywords)
                        decoded[info] = flags
                    yield StoredMessage(
                        key=key,
                        guid=guids.get(key, key),
                        flags=flags,
                        size=st.st_size,
                        internal_date=st.st_mtime_ns // 1_000_000_000,
                    ), data
                    break

    def add_message(
        self,
        user: str,
        path: FolderPath,
        *,
        key: str,
        data: bytes,
        flags: frozenset[str],
        internal_date: int,
        source: str | None = None,
    ) -> StoredMessage:
        """Deliver through tmp/ into cur/ (idempotent for the same key and bytes).

        KeyInUse if the key holds different bytes. The returned flags are the
        ones stored (keywords beyond the folder's 26 are not). ``source``, a file
        holding ``data`` that the caller gives up, is hard-linked into tmp/
        instead of writing the bytes when it is on this file system and no other
        name links to it (``Store.add_message``).
        """
        return self._add(user, path, key=key, data=data, flags=flags,
                         internal_date=internal_date, source=source)

    def _delivery_dir(self, batch: _Batch | None, user: str, path: FolderPath
                      ) -> tuple[str, str, bool]:
        """(user root, folder directory, whether the batch delivered into it already)."""
        place = None if batch is None else batch.places.get((user, path))
        if place is not None:
            return place[0], place[1], True
        root = self.location.path_for(user)
        directory = self._dir_in(root, check_folder_path(path))
        if batch is not None and directory in batch.ready:
            return root, directory, True
        # (user root, folder dir) of an existing folder, checked once per batch.
        root, directory = self._folder(user, path)
        return root, directory, False

    def _add(
        self,
        user: str,
        path: FolderPath,
        *,
        key: str,
        data: bytes,
        flags: frozenset[str],
        internal_date: int,
        source: str | None,
    ) -> StoredMessage:
        check_key(key)
        size = len(data)
        problem = misstated_size(key, data)
        if problem is not None:
            raise UnsafeName(
                f"message key {key} misstates its size ({problem})",
                hint="Dovecot would trust the key and report a wrong size; deliver the "
                "message under a new key.",
            )
        batch = self._batch
        root, directory, ready = self._delivery_dir(batch, user, path)
        label = "/".join(path)
        with _io(f"deliver message {key} into folder {label} of user {user!r}"):
            self.clean_tmp(directory)
            if batch is not None:
                stored = self._plan_letters(batch, directory, flags)
            else:
                letters, stored = self._letters_for(directory, flags)
            for attempt in range(_MAX_RETRIES):
                if ready and attempt == 0:
                    # Located in this batch already, the marks checked then.
                    entry = self._files.locate_known(directory, key)
                else:
                    entry = self._files.locate(directory, key, refresh=attempt > 0)
                if entry is None:
                    break
                try:
                    same = self._holds_bytes(directory, entry, data)
                except FileNotFoundError:
                    continue
                if not same:
                    raise KeyInUse(
                        f"folder {label} of user {user!r} already holds another message "
                        f"under key {key}"
                    )
                self.set_flags(user, path, key, flags)
                return self._stored(directory, key)
            owner = self._owner_of(root)
            if not ready:
                for sub in ("cur", "tmp"):
                    self._mkdir(os.path.join(directory, sub), owner)
            tmp_path = os.path.join(directory, "tmp", new_message_key(now_ns=self._now_ns()))
            date_ns = max(0, internal_date) * 1_000_000_000
            if batch is not None:
                # Written by a writer thread; named at the end of the batch, after
                # one sync of the file system for all.
                batch.ready.add(directory)
                batch.places[(user, path)] = (root, directory)
                batch.deliveries.append(_Delivery(tmp_path, directory, key, stored))
                batch.waiting.append(_Write(tmp_path, data, owner, date_ns, source))
                batch.waiting_bytes += size
                if batch.waiting_bytes > MAX_BYTES_WAITING:
                    self._write_waiting(batch)
                return StoredMessage(key=key, guid=key, flags=stored, size=size,
                                     internal_date=max(0, internal_date))
            name = FileName(key=key, letters="").with_letters(letters)
            try:
                _write_tmp(tmp_path, data, owner, date_ns, sync=self._fsync, source=source)
                placed = self._place(tmp_path, os.path.join(directory, "cur", name))
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_path)
            if not placed:
                # The exact name appeared since we looked: another copy of this key.
                entry = self._files.locate(directory, key, refresh=True)
                if entry is None or not self._holds_bytes(directory, entry, data):
                    raise KeyInUse(
                        f"folder {label} of user {user!r} already holds another message "
                        f"under key {key}"
                    )
                return self._stored(directory, key)
            if self._fsync:
                fsio.fsync_dir(os.path.join(directory, "cur"))
            self._files.changed(directory, key, Entry("cur", name))
        return StoredMessage(
            key=key, guid=key, flags=stored, size=size, internal_date=max(0, internal_date)
        )

    @staticmethod
    def _write_waiting(batch: _Batch) -> None:
        """Write the batch's waiting files, in parallel; the first failure is raised.

        The calling thread waits meanwhile: it holds no GIL the writers need, so
        they do not queue behind it (handing each file to a thread as it comes
        cost more CPU than it saved on two cores). The threads end here, so none
        outlives the batch.
        """
        waiting, batch.waiting, batch.waiting_bytes = batch.waiting, [], 0
        # Links first, in this thread: a few short system calls each, which
        # writer threads would only spend handing the GIL back and forth.
        waiting = [item for item in waiting if item.source is None or not _link_tmp(
            item.tmp_path, item.source, len(item.data), item.owner, item.date_ns, sync=False)]
        if WRITER_THREADS == 0 or len(waiting) < 2 * WRITER_THREADS:
            for item in waiting:
                _write_tmp(item.tmp_path, item.data, item.owner, item.date_ns)
            return
        # Each thread takes a contiguous share: files of one folder stay together.
        share = -(-len(waiting) // WRITER_THREADS)

        def write(part: list[_Write]) -> None:
            for item in part:
                _write_tmp(item.tmp_path, item.data, item.owner, item.date_ns)

        with ThreadPoolExecutor(max_workers=WRITER_THREADS,
                                thread_name_prefix="maildir-writer") as writers:
            futures = [writers.submit(write, waiting[i:i + share])
                       for i in range(0, len(waiting), share)]
            for future in futures:
                future.result()

    @contextlib.contextmanager
    def batch(self, *, step: Callable[[str], None] | None = None) -> Iterator[None]:
        """Deliver, re-flag and expunge many messages with one sync instead of one each.

        Inside the block, ``add_message`` hands each message to writer threads that
        write it into ``tmp/`` (or link its ``source`` there), and returns at once;
        new keywords are collected. When the block ends: the writes are awaited
        (then ``step("written")``), each folder's new keywords
        are added to ``dovecot-keywords`` (once per folder), the file system is
        synced once (``syncfs``), every message is renamed into ``cur/``, and each
        touched ``cur/`` -- and each ``cur/`` or ``new/`` where ``set_flags`` or
        ``expunge`` renamed or unlinked a file in the block -- is synced once.
        The Maildir rule holds -- a message is on disk before it has its name --
        at a fraction of the cost; callers record the block's work only after it
        ends. If the block fails, the unnamed files are removed.
        """
        if self._batch is not None:
            yield
            return
        batch = self._batch = _Batch()
        try:
            yield
            with _io("write delivered messages"):
                self._write_waiting(batch)
        except BaseException:
            # Every writer has ended (``_write_waiting`` waits for all): nothing is
            # written after these unlinks.
            for delivery in batch.deliveries:
                with contextlib.suppress(OSError):
                    os.unlink(delivery.tmp_path)
            raise
        finally:
            self._batch = None
        with _io("make delivered messages durable"):
            try:
                if step is not None and batch.deliveries:
                    step("written")
                self._name_deliveries(batch, step)
            finally:
                for delivery in batch.deliveries:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(delivery.tmp_path)

    def _name_deliveries(self, batch: _Batch, step: Callable[[str], None] | None) -> None:
        for directory, names in batch.keywords.items():
            self._register_keywords(directory, sorted(set(names)))
        if self._fsync and batch.deliveries:
            fsio.sync_file_systems(sorted({d.directory for d in batch.deliveries}))
        touched = set(batch.renamed_in)
        named: set[str] = set()
        letters_of: dict[tuple[str, frozenset[str]], str] = {}
        for delivery in batch.deliveries:
            directory, key = delivery.directory, delivery.key
            letters = letters_of.get((directory, delivery.flags))
            if letters is None:
                letters = self._letters_for(directory, delivery.flags)[0]
                letters_of[(directory, delivery.flags)] = letters
            name = FileName(key=key, letters="").with_letters(letters)
            if not self._place(delivery.tmp_path, os.path.join(directory, "cur", name)):
                entry = self._files.locate(directory, key, refresh=True)
                if entry is None or not self._holds_bytes(
                        directory, entry, _read_plain(delivery.tmp_path)):
                    # The very name appeared meanwhile with other bytes: keep ours
                    # beside it; the next scan sees a new file (no loss).
                    self._place(delivery.tmp_path, os.path.join(
                        directory, "cur", new_message_key(now_ns=self._now_ns())))
                    touched.add(os.path.join(directory, "cur"))
                continue
            # The folder's marks are taken once for all, after the loop.
            self._files.note(directory, key, Entry("cur", name))
            named.add(directory)
            touched.add(os.path.join(directory, "cur"))
            if step is not None:
                step("deliver")
        for directory in named:
            self._files.settle(directory)
        if self._fsync and len(touched) > _DIR_SYNCS:
            # Many directories (a batch of several users' small changes): one flush
            # of the file system waits once where each fsync waited for its own write.
            fsio.sync_file_systems(sorted(touched))
        elif self._fsync:
            for directory in sorted(touched):
                with contextlib.suppress(FileNotFoundError):  # a folder deleted meanwhile
                    fsio.fsync_dir(directory)

    @staticmethod
    def _place(source: str, target: str) -> bool:
        """Give the finished file its name without ever replacing a file; False if taken.

        link() fails on an existing name where rename() would replace it. On file
        systems without hard links, rename after a check (the window is tiny).
        """
        try:
            os.link(source, target)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            if os.path.lexists(target):
                return False
            os.rename(source, target)
        return True

    @staticmethod
    def _holds_bytes(directory: str, entry: Entry, data: bytes) -> bool:
        path = os.path.join(directory, entry.subdir, entry.name)
        if os.lstat(path).st_size != len(data):
            return False
        return _read_plain(path) == data

    def _stored(self, directory: str, key: str) -> StoredMessage:
        for attempt in range(_MAX_RETRIES):
            entry = self._files.locate(directory, key, refresh=attempt > 0)
            if entry is None:
                break
            try:
                st = os.lstat(os.path.join(directory, entry.subdir, entry.name))
            except FileNotFoundError:
                continue
            keywords = self._keywords(directory)
            return StoredMessage(
                key=key,
                guid=self._uidlist_guids(directory).get(key, key),
                flags=letters_to_flags(FileName.parse(entry.name).letters, keywords),
                size=st.st_size,
                internal_date=st.st_mtime_ns // 1_000_000_000,
            )
        raise MessageMissing(f"message {key} is not in {directory} (any more)")

    def set_flags(self, user: str, path: FolderPath, key: str, flags: frozenset[str]
                  ) -> frozenset[str]:
        """Rename the message file so its letters say ``flags`` (in new/ or cur/, in place).

        Returns the flags actually stored (a folder holds at most 26 keywords).
        """
        check_key(key)
        root, directory = self._folder(user, path)
        label = "/".join(path)
        with _io(f"change the flags of message {key} in folder {label}"):
            self._check_inside(root, directory)
            letters, stored = self._letters_for(directory, flags)
            for attempt in range(_MAX_RETRIES):
                entry = self._files.locate(directory, key, refresh=attempt > 0)
                if entry is None:
                    raise MessageMissing(
                        f"message {key} is not in folder {label} of user {user!r}"
                    )
                parsed = FileName.parse(entry.name)
                kept = unknown_letters(parsed.letters, self._keywords(directory))
                wanted = compose_letters(letters, kept)
                if wanted == parsed.letters:
                    return stored
                new_name = parsed.with_letters(wanted)
                source = os.path.join(directory, entry.subdir, entry.name)
                target = os.path.join(directory, entry.subdir, new_name)
                if os.path.lexists(target):
                    return stored  # a second copy already carries exactly these flags
                try:
                    os.rename(source, target)
                except FileNotFoundError:
                    continue  # renamed by Dovecot meanwhile: find it again by its key
                self._synced(os.path.join(directory, entry.subdir))
                self._files.changed(directory, key, Entry(entry.subdir, new_name))
                return stored
        raise StoreError(
            f"message {key} in folder {label} kept changing its name; try again",
            hint="A mail client is working on this folder right now.",
        )

    def expunge(self, user: str, path: FolderPath, key: str) -> None:
        """Unlink the message; a message (or folder) already gone is fine."""
        check_key(key)
        root = self.location.path_for(user)
        directory = self._dir_in(root, check_folder_path(path))
        with _io(f"expunge message {key} in folder {'/'.join(path)}"):
            if folder_files.marks(directory) is None:
                return
            if self._symlinked(root, directory) is not None:
                return  # never unlink through a link: the file may be anywhere
            for attempt in range(_MAX_RETRIES):
                entry = self._files.locate(directory, key, refresh=attempt > 0)
                if entry is None:
                    return
                try:
                    os.unlink(os.path.join(directory, entry.subdir, entry.name))
                except FileNotFoundError:
                    continue
                self._synced(os.path.join(directory, entry.subdir))
                self._files.changed(directory, key, None)
                return
        raise StoreError(
            f"message {key} in folder {'/'.join(path)} kept changing its name; try again",
            hint="A mail client is working on this folder right now.",
        )

    def _synced(self, subdir: str) -> None:
        """Make a rename or unlink in ``subdir`` durable: now, or at the batch's end."""
        if not self._fsync:
            return
        if self._batch is not None:
            self._batch.renamed_in.add(subdir)
        else:
            fsio.fsync_dir(subdir)

    # --- flags and keywords ------------------------------------------------------------

    def _plan_letters(self, batch: _Batch, directory: str, flags: Iterable[str]
                      ) -> frozenset[str]:
        """The flags a delivery in ``batch`` will store; its new keywords are noted.

        The keywords are written to ``dovecot-keywords`` once per folder when the
        batch ends, each taking the next free letter, as :meth:`_letters_for`
        would give it now (a keyword beyond the folder's 26 is not stored).
        """
        stored: set[str] = set()
        wanted: list[str] = []
        for flag in _storable(frozenset(flags)):
            if flag.startswith("\\"):
                stored.add(flag)
            else:
                wanted.append(flag)
        if not wanted:
            return frozenset(stored)
        keywords = dict(self._keywords(directory))
        noted = batch.keywords.setdefault(directory, [])
        for name in [*noted, *sorted(wanted)]:
            if keyword_index(keywords, name) is None:
                index = next_keyword_index(keywords)
                if index is None:
                    break  # all 26 letters taken: Dovecot's Maildir limit
                keywords[index] = name
                if name not in noted:
                    noted.append(name)
        for name in wanted:
            index = keyword_index(keywords, name)
            if index is not None:
                stored.add(keywords[index])
        return frozenset(stored)

    def file_name_parts(self, user: str, path: FolderPath,
                        flags: Iterable[str] = ()) -> tuple[str, str]:
        """(folder directory, info letters) for a writer that names message files itself,
        such as an exact restore into folders no Dovecot serves yet: the file goes to
        ``<directory>/tmp/<key>`` and then ``<directory>/cur/<key>:2,<letters>``.

        ``path`` must exist; its directory is checked to lie inside the user's Maildir
        (no symlink leads out). ``letters`` are the sorted Maildir info letters of
        ``flags``: system flags, and keywords by their letter in ``dovecot-keywords``,
        where a keyword not yet listed is registered under Dovecot's uidlist lock. A flag
        the store cannot hold as it is goes in under its storable form, as in
        :meth:`add_message`."""
        _, directory = self._folder(user, path)
        return directory, self._letters_for(directory, flags)[0]

    def _letters_for(self, directory: str, flags: Iterable[str]) -> tuple[str, frozenset[str]]:
        """(letters, flags stored) for ``flags``; registers new keywords in the folder."""
        letters: list[str] = []
        stored: set[str] = set()
        wanted_keywords: list[str] = []
        # A flag this store cannot hold as it is goes in under its storable form
        # (stores.names): never a failure of the whole message.
        for flag in storable_flags(frozenset(flags), system=SYSTEM_FLAGS):
            if flag.startswith("\\"):
                letters.append(FLAG_TO_LETTER[flag])
                stored.add(flag)
            else:
                wanted_keywords.append(flag)
        if wanted_keywords:
            keywords = self._keywords(directory)
            if any(keyword_index(keywords, name) is None for name in wanted_keywords):
                keywords = self._register_keywords(directory, sorted(wanted_keywords))
            for name in wanted_keywords:
                index = keyword_index(keywords, name)
                if index is not None:
                    letters.append(chr(ord("a") + index))
                    stored.add(keywords[index])
        return "".join(sorted(set(letters))), frozenset(stored)

    def _keywords(self, directory: str) -> dict[int, str]:
        return _read_cached(os.path.join(directory, KEYWORDS), self._keyword_cache,
                            lambda text: parse_keywords(text.decode("utf-8", "replace")))

    def _register_keywords(self, directory: str, names: list[str]) -> dict[int, str]:
        path = os.path.join(directory, KEYWORDS)
        owner = self._owner_of(directory)
        result: dict[int, str] = {}

        def update(old: bytes | None) -> bytes | None:
            current = parse_keywords(old.decode("utf-8", "replace")) if old else {}
            changed = False
            for name in names:
                if keyword_index(current, name) is None:
                    index = next_keyword_index(current)
                    if index is None:
                        break  # all 26 letters taken: Dovecot's Maildir limit
                    current[index] = name
                    changed = True
            result.update(current)
            return format_keywords(current).encode("utf-8") if changed else None

        # Dovecot changes keywords only while holding the uidlist lock.
        with dotlock.held(
            os.path.join(directory, UIDLIST + ".lock"),
            stale_after=UIDLIST_LOCK_STALE_S,
            timeout=self._lock_timeout,
        ):
            dotlock.replace_file(
                path,
                update,
                stale_after=UIDLIST_LOCK_STALE_S,
                timeout=self._lock_timeout,
                owner=owner,
                fsync=self._fsync,
                newer_mtime=True,
                orphaned_lock=True,
            )
        self._keyword_cache.pop(path)
        return result

    def _uidlist_guids(self, directory: str) -> dict[str, str]:
        return _read_cached(
            os.path.join(directory, UIDLIST), self._guid_cache,
            lambda text: parse_uidlist_guids(text.decode("utf-8", "surrogateescape")))

    # --- subscriptions -----------------------------------------------------------------

    def subscriptions(self, user: str) -> set[FolderPath]:
        """The subscribed folder paths (names Dovecot wrote in either file version)."""
        root = self.location.path_for(user)
        with _io(f"read the subscriptions of user {user!r}"):
            try:
                text = _read_plain(os.path.join(root, SUBSCRIPTIONS),
                                   limit=MAX_DOVECOT_FILE).decode("utf-8", "replace")
            except FileNotFoundError:
                return set()
        return parse_subscriptions(text)

    def set_subscriptions(self, user: str, paths: Iterable[FolderPath]) -> None:
        """Make the subscriptions exactly ``paths`` (the file is only replaced if different)."""
        wanted = {check_folder_path(tuple(path)) for path in paths}
        root = self._existing_root(user)
        text = format_subscriptions(wanted).encode("utf-8")
        with _io(f"write the subscriptions of user {user!r}"):
            dotlock.replace_file(
                os.path.join(root, SUBSCRIPTIONS),
                lambda old: None if old == text else text,
                stale_after=SUBSCRIPTIONS_LOCK_STALE_S,
                timeout=self._lock_timeout,
                owner=self._owner_of(root),
                fsync=self._fsync,
            )
