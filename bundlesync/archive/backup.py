"""``bundlesync backup``: add one snapshot of the store to an archive (archive-v1 §8).

Per user and folder: a folder whose stamp equals the one the previous snapshot
recorded keeps its tree without being listed; otherwise its file names are
listed, messages already in the previous tree keep their body reference (a flag
change costs metadata only), and only new files are read and hashed. A body the
archive already holds (any user, folder or date) is never stored again.

Crash safety: packs first, then the index that lists them, then the snapshot
file, each written whole and synced. A crash leaves at worst unreferenced packs
or index entries, which ``prune`` reclaims; never a half snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cbor2

from bundlesync.archive.cache import BackupCache, CacheRows
from bundlesync.archive.errors import ArchiveDamaged
from bundlesync.archive.listing import (
    Builder,
    Previous,
    RawMessage,
    check_entries,
    decode,
    dump_spans,
    encode_entry,
    load_spans,
    no_cycle_collection,
)
from bundlesync.archive.objects import BLOB_BODY, BLOB_TREE, PackBuilder
from bundlesync.archive.repository import (
    DATA_DIR,
    Archive,
    MailboxEntry,
    Snapshot,
    UserEntry,
)
from bundlesync.archive.users import UserSelection
from bundlesync.core.model import derived_mailbox_guid
from bundlesync.errors import BundlesyncError
from bundlesync.operations import failpoints
from bundlesync.operations.config import MailboxFilter
from bundlesync.stores.base import FolderInfo, FolderPath, Store
from bundlesync.stores.dovecot_files import parse_uidlist_header
from bundlesync.stores.errors import MessageMissing
from bundlesync.stores.maildir import KEYWORDS, UIDLIST, MaildirStore

Progress = Callable[[str, int, int], None]  # (user, users done, users total)
READ_THREADS = 6
# Fewer new messages than this in a folder are read by the backup's own thread: each
# reader thread's store lists a folder before it finds a message in it, so for the
# few new messages of an incremental backup the threads cost a folder listing each and
# their hand-offs, more than the reads they overlap (a 1 % change of 100,000
# messages: 0.29 s for 206 messages in 34 folders, 0.02 s without).
THREADS_MIN_KEYS = 32
# A pack is cut when its bodies reach this many uncompressed bytes, whatever the
# archive's pack size says: the builder and the pack in flight each hold their raw
# segments until sealed, so this bounds the writer's memory (about 4x this) however
# well the mail compresses. 8 MiB of mail makes packs of 2-4 MB.
PACK_RAW_LIMIT = 8 * 1024 * 1024
INDEX_EVERY_PACKS = 64


@dataclass
class BackupReport:
    snapshot: str = ""
    users: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    missing_users: list[str] = field(default_factory=list)
    folders: int = 0
    folders_listed: int = 0
    messages: int = 0
    bodies_added: int = 0
    body_bytes_read: int = 0
    bytes_added: int = 0
    packs: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {"snapshot": self.snapshot, "users": self.users, "failed": self.failed,
                "missing_users": self.missing_users, "folders": self.folders,
                "folders_listed": self.folders_listed, "messages": self.messages,
                "bodies_added": self.bodies_added, "body_bytes_read": self.body_bytes_read,
                "bytes_added": self.bytes_added, "packs": self.packs,
                "seconds": round(self.seconds, 3)}


def parse_uidlist(text: str) -> tuple[int | None, int | None, dict[str, int]]:
    """(UIDVALIDITY, next UID, base name -> UID) of a dovecot-uidlist."""
    lines = text.split("\n")
    header = parse_uidlist_header(lines[0]) if lines else None
    uids: dict[str, int] = {}
    for line in lines[1:]:
        uid_text, _, rest = line.partition(" ")
        if not uid_text.isdigit() or not rest:
            continue
        padded = " " + rest
        # v2/v3: "<uid> [<ext>...] :<file name>"; v1: "<uid> <file name>".
        name = padded.split(" :", 1)[1] if " :" in padded else rest.split()[-1]
        uids[name.partition(":")[0]] = int(uid_text)
    if header is None:
        return None, None, uids
    return header.uidvalidity, header.next_uid, uids


class _PackWriter:
    """Blobs into packs of about the archive's pack size; each pack written whole.

    What the archive already holds is asked of the local cache (an index mirror on
    disk, :mod:`bundlesync.archive.cache`); only the blobs of packs not yet listed by
    an index file are held in memory, at most ``INDEX_EVERY_PACKS`` packs' worth.
    """

    def __init__(self, archive: Archive, cache: BackupCache, report: BackupReport) -> None:
        self.archive = archive
        self.cache = cache
        self.report = report
        # Blobs added since the last index file: in a builder, in flight or in a pack
        # written but not yet listed. Cleared when an index file lists them.
        self.pending: set[bytes] = set()
        # Trees go to packs of their own (as restic's tree packs): reading a folder's
        # previous listing then decompresses a segment of listings, not of bodies.
        self.builders = {BLOB_BODY: PackBuilder(archive.key), BLOB_TREE: PackBuilder(archive.key)}
        self.written: list[tuple[bytes, int, list[list[object]]]] = []
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack")
        self.inflight: Future[tuple[bytes, int, list[list[object]]]] | None = None

    def has(self, kind: int, blob_id: bytes) -> bool:
        return blob_id in self.pending or self.cache.has(kind, blob_id)

    def add(self, kind: int, blob_id: bytes, data: bytes) -> None:
        if self.has(kind, blob_id):
            return
        self.pending.add(blob_id)
        builder = self.builders[kind]
        builder.add(kind, blob_id, data)
        if (builder.size >= self.archive.config.pack_size
                or builder.blob_bytes >= PACK_RAW_LIMIT):
            self.flush(kind)

    def flush(self, kind: int | None = None) -> None:
        """Hand full builders to the writer thread: compressing, sealing and writing a
        pack overlaps with reading the next messages. One pack is in flight at most."""
        for each in (BLOB_BODY, BLOB_TREE) if kind is None else (kind,):
            builder = self.builders[each]
            if not len(builder):
                continue
            self.builders[each] = PackBuilder(self.archive.key)
            self.wait()
            self.inflight = self.pool.submit(self._write, builder)

    def _write(self, builder: PackBuilder) -> tuple[bytes, int, list[list[object]]]:
        data, entries = builder.finish()
        name = hashlib.sha256(data).digest()
        self.archive.write_file(Path(DATA_DIR) / name.hex()[:2] / name.hex(), data)
        return name, len(data), entries

    def wait(self) -> None:
        """Record the pack in flight (in this thread: the cache is not shared)."""
        if self.inflight is None:
            return
        name, size, entries = self.inflight.result()
        self.inflight = None
        failpoints.reached("archive-pack")
        self.written.append((name, size, entries))
        if len(self.written) >= INDEX_EVERY_PACKS:
            # An index file now and then, as restic does: the entries of a first backup
            # are not all held until the end (memory), and a crash keeps more of the work.
            self.write_index()
        self.report.bytes_added += size
        self.report.packs += 1

    def write_index(self) -> None:
        """An index file for the packs written since the last one; only once it is
        synced does the cache learn of their blobs (archive-v1 §6)."""
        if not self.written:
            return
        name = self.archive.write_index(self.written)
        failpoints.reached("archive-index")
        self.cache.record_index(name, [(p, s, list(e)) for p, s, e in self.written])
        for _pack, _size, entries in self.written:
            self.pending.difference_update(
                e[1] for e in entries if isinstance(e[1], bytes))
        self.written = []

    def close(self) -> None:
        """Write what is left and wait for it."""
        try:
            self.flush()
            self.wait()
        finally:
            self.pool.shutdown()


def _stat_mark(path: str) -> list[int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [0, 0]
    return [st.st_mtime_ns, st.st_size]


def folder_stamp(store: Store, user: str, info: FolderInfo) -> bytes | None:
    """The folder's change marker (archive-v1 §8.2); None if racy (list it again)."""
    if info.stamp.racy:
        return None
    parts: list[object] = [list(info.stamp.marks)]
    if isinstance(store, MaildirStore):
        directory = store.folder_dir(user, info.path)
        parts += [_stat_mark(os.path.join(directory, UIDLIST)),
                  _stat_mark(os.path.join(directory, KEYWORDS))]
        if any(time.time_ns() - m[0] < 2_000_000_000 for m in parts[1:]  # type: ignore[index]
               if m[0]):  # type: ignore[index]
            return None
    return cbor2.dumps(parts, canonical=True)


class _Readers:
    """Reads new messages with a few threads: file reads and SHA-256 release the GIL, so
    a cold store is read with several requests in flight, as restic and borg do.

    Each thread has its own store object (Maildir caches are not shared between
    threads); results come back in order, a bounded batch at a time (memory).
    """

    BATCH = 128

    def __init__(self, store: Store, workers: int) -> None:
        self.store = store
        self.local = threading.local()
        self.pool = (ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read")
                     if isinstance(store, MaildirStore) and workers > 1 else None)

    def _store(self) -> Store:
        assert isinstance(self.store, MaildirStore)
        mine = getattr(self.local, "store", None)
        if mine is None:
            mine = MaildirStore(self.store.location.template, fsync=False)
            self.local.store = mine
        return mine

    def _one(self, store: Store, user: str, path: FolderPath, key: str
             ) -> tuple[str, bytes, int] | None:
        try:
            stored = store.message_info(user, path, key)
            data = store.read_body(user, path, key)
        except MessageMissing:
            return None  # expunged while we looked: it is gone at this snapshot
        return key, data, stored.internal_date

    def read(self, user: str, path: FolderPath, keys: list[str]
             ) -> Iterator[tuple[str, bytes, int]]:
        for start in range(0, len(keys), self.BATCH):
            batch = keys[start:start + self.BATCH]
            if self.pool is None or len(batch) < THREADS_MIN_KEYS:
                results: Iterable[tuple[str, bytes, int] | None] = (
                    self._one(self.store, user, path, k) for k in batch)
            else:
                results = self.pool.map(lambda k: self._one(self._store(), user, path, k),
                                        batch)
            for result in results:
                if result is not None:
                    yield result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class _UserBackup:
    def __init__(self, archive: Archive, store: Store, packs: _PackWriter, user: str, *,
                 readers: _Readers, previous: UserEntry | None, filters: MailboxFilter,
                 report: BackupReport) -> None:
        self.archive, self.store, self.packs, self.user = archive, store, packs, user
        self.cache = packs.cache
        self.filters, self.report, self.readers = filters, report, readers
        prev = previous.mailboxes if previous else ()
        self.prev_by_guid = {m.guid: m for m in prev}
        self.prev_by_path = {m.path: m for m in prev}
        self._elsewhere: list[Previous] | None = None
        # Each previous listing is read once per user: a folder's own listing and the
        # search for moved messages share it.
        self._trees: dict[bytes, Previous] = {}

    def tree(self, tree_id: bytes) -> Previous:
        """A previous listing of this user, read once."""
        found = self._trees.get(tree_id)
        if found is None:
            found = self._trees[tree_id] = previous_listing(self.archive, self.cache, tree_id)
        return found

    def known_elsewhere(self, key: str) -> tuple[Previous, int] | None:
        """The message with this key in any of the user's previous folders (its listing
        and number there): a move or a renamed folder then costs no read (the listings
        are loaded on the first miss, once per user)."""
        if self._elsewhere is None:
            self._elsewhere = [self.tree(box.tree) for box in self.prev_by_guid.values()]
        for listing in self._elsewhere:
            number = listing.index.get(key)
            if number is not None:
                return listing, number
        return None

    def run(self) -> UserEntry:
        subscriptions = self.store.subscriptions(self.user)
        boxes = []
        for info in self.store.folders(self.user):
            if not self.filters.wants(info.path):
                continue
            boxes.append(self.folder(info, info.path in subscriptions))
        return UserEntry(mailboxes=tuple(sorted(boxes, key=lambda b: b.path)),
                         subscriptions=tuple(sorted(subscriptions)))

    def folder(self, info: FolderInfo, subscribed: bool) -> MailboxEntry:
        self.report.folders += 1
        guid = info.guid or derived_mailbox_guid(self.user, info.path)
        prev = self.prev_by_guid.get(guid) or self.prev_by_path.get(info.path)
        stamp = folder_stamp(self.store, self.user, info)
        if prev is not None and stamp is not None and prev.stamp == stamp:
            self.report.messages += prev.messages
            return MailboxEntry(guid=guid, path=info.path, uidvalidity=prev.uidvalidity,
                                uidnext=prev.uidnext, subscribed=subscribed, tree=prev.tree,
                                messages=prev.messages, total_size=prev.total_size, stamp=stamp)
        self.report.folders_listed += 1
        uidvalidity, uidnext = info.uidvalidity, None
        uids: dict[str, int] = {}
        if isinstance(self.store, MaildirStore):
            path = os.path.join(self.store.folder_dir(self.user, info.path), UIDLIST)
            try:
                with open(path, "rb") as handle:
                    text = handle.read().decode("utf-8", "surrogateescape")
                uidvalidity, uidnext, uids = parse_uidlist(text)
            except FileNotFoundError:
                pass
        old = self.tree(prev.tree) if prev else None
        listing = Builder()
        with no_cycle_collection():  # an object or two per message, none in a cycle
            names = self.store.message_names(self.user, info.path)
            pending, total_size = self._compare(info.path, names, uids, old, listing)
        flag_lists: dict[frozenset[str], list[str]] = {}
        for key, data, date in self.readers.read(self.user, info.path, list(pending)):
            body = hashlib.sha256(data).digest()
            slot, msg_guid, flags, uid = pending[key]
            flag_list = flag_lists.get(flags)
            if flag_list is None:
                flag_list = flag_lists[flags] = sorted(flags)
            listing.parts[slot] = encode_entry([key, msg_guid, body, len(data), flag_list,
                                                uid, date])
            total_size += len(data)
            self.report.body_bytes_read += len(data)
            if not self.packs.has(BLOB_BODY, body):
                self.report.bodies_added += 1
                self.packs.add(BLOB_BODY, body, data)
        # A slot still None: expunged while we looked, not in this snapshot.
        tree, offsets, count = listing.finish()
        tree_id = hashlib.sha256(tree).digest()
        self.packs.add(BLOB_TREE, tree_id, tree)
        if self.cache.keep_listings:
            self.cache.keep_listing(tree_id, tree, dump_spans(tree_id, offsets))
        self.report.messages += count
        return MailboxEntry(guid=guid, path=info.path, uidvalidity=uidvalidity,
                            uidnext=uidnext, subscribed=subscribed, tree=tree_id,
                            messages=count, total_size=total_size, stamp=stamp)

    def _compare(self, path: FolderPath, names: dict[str, tuple[str, frozenset[str]]],
                 uids: dict[str, int], old: Previous | None, listing: Builder
                 ) -> tuple[dict[str, tuple[int, str, frozenset[str], int | None]], int]:
        """Each listed message into ``listing`` in key order (archive-v1 §8.1, as
        TreeMessage.encode lays it out): a touched folder of a large store is mostly
        unchanged messages, whose bytes are copied from the previous listing
        (:mod:`bundlesync.archive.listing`); changed ones are encoded again. Returns the
        messages still to be read (key -> slot, GUID, flags, UID) and the sum of the
        sizes of the others."""
        old_index = old.index if old is not None else {}
        old_entries = old.entries if old is not None else []
        # The common case, an entry kept in its own folder, copied without a call.
        data, offsets = (old.data, old.offsets) if old is not None else (b"", None)
        parts = listing.parts
        pending: dict[str, tuple[int, str, frozenset[str], int | None]] = {}
        flag_lists: dict[frozenset[str], list[str]] = {}  # few distinct sets per folder
        total_size = 0
        for key in sorted(names):  # keys alone sort faster than (key, value) pairs
            msg_guid, flags = names[key]
            flag_list = flag_lists.get(flags)
            if flag_list is None:
                flag_list = flag_lists[flags] = sorted(flags)
            uid = uids.get(key)
            source, number = old, old_index.get(key)
            known = old_entries[number] if number is not None else None
            if known is None:
                found = self.known_elsewhere(key)
                if found is not None:
                    elsewhere = found[0].entries[found[1]]
                    # A key is unique in a folder, not across folders: trust the match
                    # only if the file's size and date agree too (one stat, no read).
                    try:
                        info_now = self.store.message_info(self.user, path, key)
                    except MessageMissing:
                        continue
                    if (info_now.size, info_now.internal_date) == (elsewhere[3], elsewhere[6]):
                        (source, number), known = found, elsewhere
            if known is None or source is None or number is None:
                pending[key] = (len(parts), msg_guid, flags, uid)
                parts.append(None)
                continue
            total_size += known[3]  # type: ignore[operator]  # an int (checked when decoded)
            if known[1] == msg_guid and known[4] == flag_list and known[5] == uid:
                if source is old and offsets is not None:
                    parts.append(data[offsets[number]:offsets[number + 1]])
                else:
                    parts.append(source.raw(number))
            else:
                parts.append(encode_entry([key, msg_guid, known[2], known[3], flag_list, uid,
                                           known[6]]))
        return pending, total_size


def previous_listing(archive: Archive, cache: BackupCache, tree_id: bytes) -> Previous:
    """A previous tree's entries by key, checked for the fields a backup reuses, and,
    when the local cache kept them beside it, the spans of their bytes.

    The bytes come from the local cache when it holds them (checked against the id,
    which the signed snapshot names), else from the pack the cache's index mirror
    names; then the cache keeps them for the next run."""
    what = f"Tree {tree_id.hex()[:16]}"
    cached = cache.listing(tree_id)
    spans: bytes | None = None
    if cached is not None:
        data, spans = cached
    else:
        ref = cache.tree_ref(tree_id)
        if ref is None:
            raise ArchiveDamaged(f"The archive has no tree {tree_id.hex()[:16]}: "
                                 "no index lists it.")
        data = archive.read_blob_at(ref)
    items = decode(data, what=what)
    offsets = load_spans(tree_id, spans, data, len(items)) if spans is not None else None
    entries = (cast("list[RawMessage]", items) if offsets is not None
               else check_entries(items, what=what))
    if cached is None:
        cache.keep_listing(tree_id, data)
    return Previous(entries, data, offsets)


def newest_snapshot(archive: Archive, cache_dir: Path | None) -> Snapshot | None:
    """The archive's newest snapshot (the order of ``Archive.all_snapshots``), decrypting
    only the snapshots a local cache of their times does not know yet.

    The cache (one JSON file per archive id in ``cache_dir``) is only an accelerator:
    a missing or unreadable one is rebuilt, and the snapshot it names is verified as
    any other. A wrong time in it can only pick an older parent, which costs folder
    listings, never content: an unchanged stamp means an unchanged folder at any date.
    """
    names = archive.snapshot_names()
    if not names:
        return None
    cache = (cache_dir / f"snapshots-{archive.config.archive_id.hex()}.json"
             if cache_dir is not None else None)
    known: dict[str, int] = {}
    if cache is not None:
        try:
            loaded = json.loads(cache.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                known = {k: v for k, v in loaded.items()
                         if isinstance(k, str) and isinstance(v, int)}
        except (OSError, ValueError):
            known = {}
    times: dict[str, int] = {}
    for name in names:
        when = known.get(name)
        if when is None:
            when = archive.load_snapshot(name, keep=False).time_ms
        times[name] = when
    newest = max(names, key=lambda n: (times[n], n))
    snap = archive.load_snapshot(newest)
    if snap.time_ms != times[newest]:  # a stale cache: fall back to reading them all
        snaps = archive.all_snapshots()
        snap = snaps[-1]
        times = {s.id: s.time_ms for s in snaps}
    if cache is not None and times != known:
        with contextlib.suppress(OSError):
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}")
            tmp.write_text(json.dumps(times, sort_keys=True), encoding="utf-8")
            os.replace(tmp, cache)
    return snap


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def bound_heap_growth() -> bool:
    """Keep glibc to one heap for all threads (Linux, glibc only).

    glibc gives each thread that contends for the heap an arena of its own, and
    keeps what is freed in each. The backup's reader and writer threads allocate and
    free 1 MiB segment and multi-MiB pack buffers, so memory freed in one arena is not
    reused by another and the process grows. Measured on a first backup of 10,000
    messages (CPU time, peak RSS): default 3.3-4.0 s, 136 MB; one arena 3.4 s, 94-97 MB.
    (A fixed 512 KiB mmap threshold gave 89-91 MB but seven times the page faults and
    0.4 s more system time; two arenas 115-119 MB.) Python's own small objects are
    allocated under the GIL, so one arena costs no contention that matters here.
    Returns whether it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # noqa: PLC0415 - only here: most commands never need it

    try:
        # The process's own symbols, the C library's among them: no search for the
        # library (find_library runs ldconfig in a child process).
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        return False  # another C library (musl): nothing to tune


def run_backup(archive: Archive, store: Store, *, users: UserSelection,
               filters: MailboxFilter, now_ms: int | None = None, tags: tuple[str, ...] = (),
               progress: Progress | None = None, cache_dir: Path | None = None,
               cache_rows: CacheRows | None = None) -> BackupReport:
    """Add one snapshot (the caller holds the archive lock). ``cache_dir``: where to keep
    the local cache of snapshot times (:func:`newest_snapshot`); ``cache_rows``: where
    the index mirror and listings persist (:mod:`bundlesync.archive.cache`; the caller
    opens and this closes them). None for either keeps it in memory for this run."""
    started = time.monotonic()
    bound_heap_growth()
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    report = BackupReport()
    assert archive.identity is not None
    previous = newest_snapshot(archive, cache_dir)
    chosen, missing = users.select(store.users())
    report.missing_users = missing
    for user in missing:
        report.failed[user] = "the store has no such user"
    cache = BackupCache.open(archive, cache_rows)
    try:
        packs = _PackWriter(archive, cache, report)
        readers = _Readers(store, READ_THREADS)
        try:
            entries = _back_up_users(archive, store, packs, readers, chosen,
                                     previous=previous, filters=filters, report=report,
                                     progress=progress)
        finally:
            readers.close()
            packs.close()
        packs.write_index()
        snapshot = _write_snapshot(archive, users=users, filters=filters, now_ms=now_ms,
                                   tags=tags, previous=previous, entries=entries,
                                   report=report)
        # The next run finds this snapshot's listings in the cache; older ones go.
        cache.retain_listings(m.tree for e in snapshot.users.values() for m in e.mailboxes)
    finally:
        cache.close()
    if cache_dir is not None:  # the next run then decrypts no snapshot to find its parent
        newest_snapshot(archive, cache_dir)
    report.snapshot = snapshot.id
    report.seconds = time.monotonic() - started
    return report


def _back_up_users(archive: Archive, store: Store, packs: _PackWriter, readers: _Readers,
                   chosen: list[str], *, previous: Snapshot | None, filters: MailboxFilter,
                   report: BackupReport, progress: Progress | None) -> dict[str, UserEntry]:
    entries: dict[str, UserEntry] = {}
    for number, user in enumerate(chosen):
        if progress is not None:
            progress(user, number, len(chosen))
        prev = previous.users.get(user) if previous else None
        try:
            entries[user] = _UserBackup(archive, store, packs, user, readers=readers,
                                        previous=prev, filters=filters, report=report).run()
        except BundlesyncError as exc:
            report.failed[user] = exc.message
        except OSError as exc:
            report.failed[user] = f"{exc.strerror or exc} ({exc.filename or ''})"
        else:
            report.users += 1
            continue
        if prev is not None:  # keep what we had: a restore of this snapshot still has it
            entries[user] = UserEntry(prev.mailboxes, prev.subscriptions, stale=True)
    return entries


def _write_snapshot(archive: Archive, *, users: UserSelection, filters: MailboxFilter,
                    now_ms: int, tags: tuple[str, ...], previous: Snapshot | None,
                    entries: dict[str, UserEntry], report: BackupReport) -> Snapshot:
    assert archive.identity is not None
    snap_id = os.urandom(8).hex()
    snapshot = Snapshot(
        id=snap_id, time_ms=now_ms, site=bytes.fromhex(archive.identity.site_id),
        host=socket.gethostname(), group=f"{users.describe()}; {_describe(filters)}",
        tags=tags, parent=previous.id if previous else None, added=report.bytes_added,
        users=entries, failed=tuple(sorted(report.failed)))
    archive.write_snapshot(snapshot)
    return snapshot


def _describe(filters: MailboxFilter) -> str:
    parts = [f"include {p}" for p in filters.include] + [f"exclude {p}" for p in filters.exclude]
    return ", ".join(parts) or "all mailboxes"
