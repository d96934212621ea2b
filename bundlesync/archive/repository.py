"""An archive directory opened with a secret: its files, index, snapshots and blobs.

:func:`open_archive` is how every reader starts (``snapshots``, ``check``,
``restore``, ``view``): it needs only the directory and one secret -- the site's
identity, a passphrase or a recovery key card -- never a site. The returned
:class:`Archive` implements :class:`bundlesync.archive.model.SnapshotSource`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bundlesync.archive.errors import ArchiveDamaged, ArchiveError, NotAnArchive
from bundlesync.archive.model import ArchivedMailbox, ArchivedMessage, SnapshotInfo
from bundlesync.archive.objects import (
    BLOB_BODY,
    BLOB_TREE,
    CTX_INDEX,
    CTX_SNAPSHOT,
    INDEX_MAGIC,
    SNAPSHOT_MAGIC,
    BlobRef,
    data_key,
    decode_sealed_cbor,
    encode_sealed_cbor,
    parse_entry,
    read_segment,
    read_signed,
    write_signed,
)
from bundlesync.archive.secrets import (
    ArchiveConfig,
    Passphrase,
    RecoveryCard,
    Secret,
    card_stanza,
    decode_config,
    encode_config,
    passphrase_stanza,
    site_stanza,
    unwrap_archive_key,
)
from bundlesync.errors import UsageError
from bundlesync.fsio import fsync_dir, write_all
from bundlesync.keys import SiteIdentity

CONFIG_NAME = "config"
DATA_DIR = "data"
INDEX_DIR = "index"
SNAPSHOT_DIR = "snapshots"
TMP_DIR = "tmp"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX16 = re.compile(r"[0-9a-f]{16}\Z")
MAX_TREE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MailboxEntry:
    """One mailbox as a snapshot file records it (archive-v1 §7)."""

    guid: str
    path: tuple[str, ...]
    uidvalidity: int | None
    uidnext: int | None
    subscribed: bool
    tree: bytes
    messages: int
    total_size: int
    stamp: bytes | None

    def encode(self) -> dict[str, object]:
        return {"guid": self.guid, "path": list(self.path), "uidvalidity": self.uidvalidity,
                "uidnext": self.uidnext, "subscribed": self.subscribed, "tree": self.tree,
                "messages": self.messages, "bytes": self.total_size, "stamp": self.stamp}

    @classmethod
    def decode(cls, value: object, *, what: str) -> MailboxEntry:
        try:
            assert isinstance(value, dict)
            entry = cls(guid=value["guid"], path=tuple(value["path"]),
                        uidvalidity=value["uidvalidity"], uidnext=value["uidnext"],
                        subscribed=bool(value["subscribed"]), tree=value["tree"],
                        messages=value["messages"], total_size=value["bytes"],
                        stamp=value["stamp"])
            assert isinstance(entry.guid, str) and isinstance(entry.tree, bytes)
            assert all(isinstance(c, str) for c in entry.path)
            assert len(entry.tree) == 32
        except (AssertionError, KeyError, TypeError):
            raise ArchiveDamaged(f"{what} has a malformed mailbox entry.") from None
        return entry


@dataclass(frozen=True, slots=True)
class UserEntry:
    mailboxes: tuple[MailboxEntry, ...]
    subscriptions: tuple[tuple[str, ...], ...]
    stale: bool = False

    def encode(self) -> dict[str, object]:
        return {"mailboxes": [m.encode() for m in self.mailboxes],
                "subscriptions": [list(p) for p in self.subscriptions], "stale": self.stale}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A decoded snapshot file (archive-v1 §7)."""

    id: str
    time_ms: int
    site: bytes
    host: str
    group: str
    tags: tuple[str, ...]
    parent: str | None
    added: int
    users: dict[str, UserEntry]
    failed: tuple[str, ...]

    def encode(self) -> dict[str, object]:
        return {"id": self.id, "time": self.time_ms, "site": self.site, "host": self.host,
                "group": self.group, "tags": list(self.tags), "parent": self.parent,
                "added": self.added, "failed": list(self.failed),
                "users": {u: e.encode() for u, e in self.users.items()}}

    @property
    def message_count(self) -> int:
        return sum(m.messages for e in self.users.values() for m in e.mailboxes)

    def info(self) -> SnapshotInfo:
        return SnapshotInfo(id=self.id, time_ms=self.time_ms, users=len(self.users),
                            messages=self.message_count, bytes_added=self.added,
                            tags=self.tags)


def decode_snapshot(value: object, *, name: str) -> Snapshot:
    what = f"Snapshot {name}"
    try:
        assert isinstance(value, dict)
        users: dict[str, UserEntry] = {}
        raw_users = value["users"]
        assert isinstance(raw_users, dict)
        for user, raw in raw_users.items():
            assert isinstance(user, str) and isinstance(raw, dict)
            users[user] = UserEntry(
                mailboxes=tuple(MailboxEntry.decode(m, what=what) for m in raw["mailboxes"]),
                subscriptions=tuple(tuple(p) for p in raw["subscriptions"]),
                stale=bool(raw.get("stale", False)))
        snap = Snapshot(id=value["id"], time_ms=value["time"], site=value["site"],
                        host=value["host"], group=value["group"], tags=tuple(value["tags"]),
                        parent=value["parent"], added=value["added"], users=users,
                        failed=tuple(value["failed"]))
        assert isinstance(snap.time_ms, int) and isinstance(snap.id, str)
    except (AssertionError, KeyError, TypeError):
        raise ArchiveDamaged(f"{what} is malformed.") from None
    if snap.id != name:
        raise ArchiveDamaged(f"{what} says it is snapshot {snap.id}: it was renamed.")
    return snap


@dataclass(frozen=True, slots=True)
class TreeMessage:
    """One message of a tree (archive-v1 §8.1)."""

    key: str
    guid: str
    body: bytes
    size: int
    flags: tuple[str, ...]
    uid: int | None
    internal_date: int

    def encode(self) -> list[object]:
        return [self.key, self.guid, self.body, self.size, list(self.flags), self.uid,
                self.internal_date]


def decode_tree(value: object, *, what: str) -> list[TreeMessage]:
    try:
        assert isinstance(value, list)
        result = []
        for item in value:
            assert isinstance(item, list) and len(item) == 7
            key, guid, body, size, flags, uid, date = item
            assert isinstance(key, str) and isinstance(guid, str) and isinstance(body, bytes)
            assert isinstance(size, int) and isinstance(date, int) and isinstance(flags, list)
            assert uid is None or isinstance(uid, int)
            result.append(TreeMessage(key, guid, body, size, tuple(flags), uid, date))
    except (AssertionError, TypeError, ValueError):
        raise ArchiveDamaged(f"{what} is malformed.") from None
    return result


class Archive:
    """An opened archive: reads (and, with a site identity, writes) its files."""

    def __init__(self, root: Path, config: ArchiveConfig, archive_key: bytes,
                 identity: SiteIdentity | None) -> None:
        self.root = root
        self.config = config
        self.key = data_key(archive_key, config.archive_id)
        self.archive_key = archive_key
        self.identity = identity
        self._index: dict[bytes, BlobRef] | None = None
        self._index_files: list[str] = []
        # A reader's index (see _load_reader_index): bodies' entries not yet parsed.
        self._raw_bodies: dict[bytes, tuple[bytes, list[object]]] | None = None
        self._pack_sizes: dict[bytes, int] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._segment_cache: tuple[tuple[bytes, int], bytes] | None = None
        self._pack_handles: dict[bytes, object] = {}

    # --- files --------------------------------------------------------------------------

    def pack_path(self, name: bytes) -> Path:
        text = name.hex()
        return self.root / DATA_DIR / text[:2] / text

    def write_file(self, relative: Path, data: bytes) -> None:
        """tmp/, fsync, rename, fsync the directory (archive-v1 §2)."""
        target = self.root / relative
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"{target.name}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        fsync_dir(target.parent)

    def _read(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ArchiveDamaged(f"{what} is missing ({path.name}).") from None
        except OSError as exc:
            raise ArchiveDamaged(f"{what} cannot be read: {exc.strerror}.") from None

    # --- indexes -------------------------------------------------------------------------

    def index_names(self) -> list[str]:
        directory = self.root / INDEX_DIR
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if _HEX64.match(p.name))

    def read_index_raw(self, name: str) -> tuple[list[tuple[bytes, int, list[object]]],
                                                   list[bytes]]:
        """One index file's packs (name, size, raw entries) and what it supersedes."""
        what = f"Index file {name[:12]}"
        data = self._read(self.root / INDEX_DIR / name, what)
        payload = read_signed(data, INDEX_MAGIC, self.config.signing_public, what=what)
        value = decode_sealed_cbor(self.key, CTX_INDEX, payload, what=what)
        packs: list[tuple[bytes, int, list[object]]] = []
        try:
            assert isinstance(value, dict)
            for pack, size, entries in value["packs"]:
                assert isinstance(pack, bytes) and len(pack) == 32 and isinstance(size, int)
                assert isinstance(entries, list)
                packs.append((pack, size, entries))
            supersedes = list(value["supersedes"])
            assert all(isinstance(s, bytes) for s in supersedes)
        except (AssertionError, KeyError, TypeError, ValueError):
            raise ArchiveDamaged(f"{what} is malformed.") from None
        return packs, supersedes

    def read_index(self, name: str) -> tuple[list[tuple[bytes, int, list[BlobRef]]], list[bytes]]:
        """One index file's packs (name, size, blobs) and the indexes it supersedes."""
        what = f"Index file {name[:12]}"
        raw, supersedes = self.read_index_raw(name)
        packs = [(pack, size, [parse_entry(e, pack, what=what) for e in entries])
                 for pack, size, entries in raw]
        return packs, supersedes

    def load_index(self) -> dict[bytes, BlobRef]:
        """Blob id -> where it is, from every index file (loaded once)."""
        if self._index is not None and self._raw_bodies is None:
            return self._index
        index: dict[bytes, BlobRef] = {}
        names = self.index_names()
        for name in names:
            packs, _ = self.read_index(name)
            for pack, size, refs in packs:
                self._pack_sizes[pack] = size
                for ref in refs:
                    index.setdefault(ref.id, ref)
        self._index, self._index_files = index, names
        self._raw_bodies = None
        return index

    def _load_reader_index(self) -> None:
        """What a reader needs: every tree's place, and each body's index entry as it was
        decoded, parsed only when that body is read. A restore of one user reads a small
        share of the archive's bodies; parsing every entry up front was most of the CPU
        time its start took."""
        trees: dict[bytes, BlobRef] = {}
        bodies: dict[bytes, tuple[bytes, list[object]]] = {}
        names = self.index_names()
        for name in names:
            what = f"Index file {name[:12]}"
            packs, _ = self.read_index_raw(name)
            for pack, size, entries in packs:
                self._pack_sizes[pack] = size
                for entry in entries:
                    # Exact type checks: CBOR decodes to list and bytes, never subclasses.
                    if (type(entry) is list and len(entry) == 6 and entry[0] == BLOB_BODY
                            and type(entry[1]) is bytes):
                        if entry[1] not in bodies:
                            bodies[entry[1]] = (pack, entry)
                    else:  # a tree, or malformed (parse_entry says so)
                        ref = parse_entry(entry, pack, what=what)
                        trees.setdefault(ref.id, ref)
        self._index, self._index_files = trees, names
        self._raw_bodies = bodies

    def _find_ref(self, blob_id: bytes, kind: int) -> BlobRef | None:
        if self._index is None:
            self._load_reader_index()
        assert self._index is not None
        ref = self._index.get(blob_id)
        if ref is None and self._raw_bodies is not None:
            raw = self._raw_bodies.pop(blob_id, None)
            if raw is not None:
                ref = self._index[blob_id] = parse_entry(
                    raw[1], raw[0], what=f"The index entry of body {blob_id.hex()[:16]}")
        return ref

    def write_index(self, packs: list[tuple[bytes, int, list[list[object]]]],
                    supersedes: tuple[str, ...] = ()) -> str:
        assert self.identity is not None
        value = {"packs": [[name, size, entries] for name, size, entries in packs],
                 "supersedes": [bytes.fromhex(s) for s in supersedes]}
        data = write_signed(INDEX_MAGIC, encode_sealed_cbor(self.key, CTX_INDEX, value),
                            self.identity)
        name = hashlib.sha256(data).hexdigest()
        self.write_file(Path(INDEX_DIR) / name, data)
        return name

    # --- blobs ---------------------------------------------------------------------------

    def read_blob(self, blob_id: bytes, *, kind: int) -> bytes:
        """A blob's bytes, checked against its id."""
        ref = self._find_ref(blob_id, kind)
        if ref is None or ref.kind != kind:
            what_blob = "body" if kind == BLOB_BODY else "tree"
            raise ArchiveDamaged(f"The archive has no {what_blob} {blob_id.hex()[:16]}: "
                                 "no index lists it.")
        return self.read_blob_at(ref)

    def read_blob_at(self, ref: BlobRef) -> bytes:
        """The bytes of the blob at ``ref`` (a place an index file gives), checked
        against its id."""
        what_blob = "body" if ref.kind == BLOB_BODY else "tree"
        blob_id = ref.id
        key = (ref.pack, ref.segment_offset)
        if self._segment_cache is not None and self._segment_cache[0] == key:
            plain = self._segment_cache[1]
        else:
            what = f"Pack {ref.pack.hex()[:12]}"
            try:
                with open(self.pack_path(ref.pack), "rb") as handle:
                    handle.seek(ref.segment_offset)
                    sealed = handle.read(ref.segment_length)
            except FileNotFoundError:
                raise ArchiveDamaged(f"{what} is missing.") from None
            if len(sealed) != ref.segment_length:
                raise ArchiveDamaged(f"{what} is cut short.")
            plain = read_segment(self.key, sealed, what=f"A segment of {what.lower()}")
            self._segment_cache = (key, plain)
        data = plain[ref.offset:ref.offset + ref.length]
        if len(data) != ref.length or hashlib.sha256(data).digest() != blob_id:
            raise ArchiveDamaged(f"The {what_blob} {blob_id.hex()[:16]} in pack "
                                 f"{ref.pack.hex()[:12]} does not match its hash.")
        return data

    def read_tree(self, tree_id: bytes) -> list[TreeMessage]:
        import cbor2  # noqa: PLC0415 - only readers of trees need it

        data = self.read_blob(tree_id, kind=BLOB_TREE)
        try:
            value = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError, TypeError):
            raise ArchiveDamaged(f"Tree {tree_id.hex()[:16]} holds invalid CBOR.") from None
        return decode_tree(value, what=f"Tree {tree_id.hex()[:16]}")

    # --- snapshots -------------------------------------------------------------------------

    def snapshot_names(self) -> list[str]:
        directory = self.root / SNAPSHOT_DIR
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if _HEX16.match(p.name))

    def load_snapshot(self, name: str, *, keep: bool = True) -> Snapshot:
        """One snapshot, decrypted and verified; ``keep=False`` does not hold it in memory
        (a snapshot of thousands of users is large)."""
        cached = self._snapshots.get(name)
        if cached is not None:
            return cached
        what = f"Snapshot {name}"
        data = self._read(self.root / SNAPSHOT_DIR / name, what)
        payload = read_signed(data, SNAPSHOT_MAGIC, self.config.signing_public, what=what)
        snap = decode_snapshot(decode_sealed_cbor(self.key, CTX_SNAPSHOT, payload, what=what),
                               name=name)
        if keep:
            self._snapshots[name] = snap
        return snap

    def all_snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest first (ties by id).

        A snapshot file listed and then gone when read was removed by a ``forget``
        meanwhile (forget takes the writer lock, not the readers'): it is left out,
        as a listing a moment later would leave it out, rather than called damage."""
        snaps: list[Snapshot] = []
        for name in self.snapshot_names():
            try:
                snaps.append(self.load_snapshot(name))
            except ArchiveDamaged:
                if (self.root / SNAPSHOT_DIR / name).exists():
                    raise
        return sorted(snaps, key=lambda s: (s.time_ms, s.id))

    def write_snapshot(self, snap: Snapshot) -> None:
        assert self.identity is not None
        data = write_signed(SNAPSHOT_MAGIC,
                            encode_sealed_cbor(self.key, CTX_SNAPSHOT, snap.encode()),
                            self.identity)
        self.write_file(Path(SNAPSHOT_DIR) / snap.id, data)
        self._snapshots[snap.id] = snap

    def forget_snapshot(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / SNAPSHOT_DIR / name).unlink()
        self._snapshots.pop(name, None)

    # --- SnapshotSource ------------------------------------------------------------------

    def snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        return [s.info() for s in self.all_snapshots()]

    def find(self, at: str) -> SnapshotInfo:
        """A snapshot by id or unique id prefix, or the newest at or before an ISO time."""
        return self.find_snapshot(at).info()

    def find_snapshot(self, at: str) -> Snapshot:
        snaps = self.all_snapshots()
        text = at.strip().lower()
        if re.fullmatch(r"[0-9a-f]{4,16}", text):
            hits = [s for s in snaps if s.id.startswith(text)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise UsageError(f"{at!r} names {len(hits)} snapshots.",
                                 hint="Give more digits of the snapshot id.")
        if text == "latest" and snaps:
            return snaps[-1]
        moment = parse_when(at)
        if moment is None:
            raise UsageError(f"No snapshot has the id {at!r}.",
                             hint="Give a snapshot id from 'bundlesync snapshots', or an ISO "
                             "8601 date or date and time such as 2026-03-01 or "
                             "2026-03-01T14:00.")
        before = [s for s in snaps if s.time_ms <= moment]
        if not before:
            raise UsageError(f"No snapshot was taken at or before {at}.",
                             hint="List them with 'bundlesync snapshots ARCHIVE'.")
        return before[-1]

    def users(self, snapshot_id: str) -> list[str]:
        return sorted(self.load_snapshot(self.find_snapshot(snapshot_id).id).users)

    def mailboxes(self, snapshot_id: str, user: str) -> Iterator[ArchivedMailbox]:
        """The user's mailboxes, parents before children."""
        snap = self.find_snapshot(snapshot_id)
        entry = snap.users.get(user)
        if entry is None:
            raise UsageError(f"Snapshot {snap.id} holds no user {user!r}.",
                             hint="List its users with 'bundlesync snapshots ARCHIVE --json'.")
        for box in sorted(entry.mailboxes, key=lambda b: b.path):
            messages = tuple(
                ArchivedMessage(guid=m.guid, body=m.body.hex(), size=m.size,
                                flags=frozenset(m.flags), uid=m.uid,
                                internal_date=m.internal_date, key=m.key)
                for m in self.read_tree(box.tree))
            yield ArchivedMailbox(guid=box.guid, path=box.path, uidvalidity=box.uidvalidity,
                                  uidnext=box.uidnext, subscribed=box.subscribed,
                                  messages=messages)

    def subscriptions(self, snapshot_id: str, user: str) -> set[tuple[str, ...]]:
        """Every subscribed name of the user, including names with no mailbox."""
        snap = self.find_snapshot(snapshot_id)
        entry = snap.users.get(user)
        return set(entry.subscriptions) if entry else set()

    def read_body(self, sha256: str) -> bytes:
        try:
            blob_id = bytes.fromhex(sha256)
        except ValueError:
            raise UsageError(f"{sha256!r} is not a SHA-256.") from None
        return self.read_blob(blob_id, kind=BLOB_BODY)


def parse_when(text: str) -> int | None:
    """An ISO 8601 date or date-time as ms since the epoch (local time if no zone)."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        if len(text.strip()) == 10:  # a date alone: the whole day
            moment = moment + dt.timedelta(days=1) - dt.timedelta(microseconds=1000)
        moment = moment.astimezone()
    return int(moment.timestamp() * 1000)


# --- opening and creating ------------------------------------------------------------------


def archive_exists(root: Path) -> bool:
    return (root / CONFIG_NAME).is_file()


def read_config(root: Path) -> ArchiveConfig:
    path = root / CONFIG_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotAnArchive(f"{root} holds no bundlesync archive (no config file).") from None
    except NotADirectoryError:
        raise NotAnArchive(f"{root} is not a directory.") from None
    except OSError as exc:
        raise ArchiveError(f"Cannot read {path}: {exc.strerror}.") from None
    return decode_config(data)


def open_archive(root: Path, *, secret: Secret) -> Archive:
    """Open the archive at ``root`` with any one secret that can unwrap its key."""
    config = read_config(root)
    key = unwrap_archive_key(config, secret)
    identity = secret if isinstance(secret, SiteIdentity) else None
    return Archive(root, config, key, identity)


def create_archive(root: Path, *, identity: SiteIdentity,
                   recovery: list[Passphrase | RecoveryCard], kdf_log_n: int = 17,
                   now_ms: int | None = None) -> Archive:
    """Write a new archive's config (the directory may exist but must hold no archive)."""
    if archive_exists(root):
        raise ArchiveError(f"{root} already holds an archive.")
    if root.exists() and any(p.name != "lock" for p in root.iterdir()):
        raise ArchiveError(f"{root} is not empty and holds no archive.",
                           hint="Give an empty or new directory for a new archive.")
    root.mkdir(parents=True, exist_ok=True)
    archive_id = os.urandom(16)
    archive_key = os.urandom(32)
    stanzas: list[dict[str, object]] = [
        site_stanza(archive_key, archive_id, identity.exchange_public, identity.site_id)]
    for secret in recovery:
        if isinstance(secret, Passphrase):
            stanzas.append(passphrase_stanza(archive_key, archive_id, secret, log_n=kdf_log_n))
        else:
            stanzas.append(card_stanza(archive_key, archive_id, secret))
    config = ArchiveConfig(
        archive_id=archive_id,
        created_ms=now_ms if now_ms is not None else int(time.time() * 1000),
        site_name=identity.name, signing_public=identity.signing_public,
        exchange_public=identity.exchange_public, stanzas=tuple(stanzas))
    archive = Archive(root, config, archive_key, identity)
    for sub in (DATA_DIR, INDEX_DIR, SNAPSHOT_DIR, TMP_DIR):
        (root / sub).mkdir(exist_ok=True)
    archive.write_file(Path(CONFIG_NAME), encode_config(config, identity))
    return archive
