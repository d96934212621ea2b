"""Volume files: how the logical byte stream of a bundle lands on disk (bundle-v1 §3, §11).

Every bundle file -- a whole bundle or one volume of a split one -- starts with a
48-byte volume head, followed by its segment of the logical stream. The writer
keeps every volume under a temporary name (``.<name>.<random>.tmp``, which no
reader takes for a bundle) until all are complete and synced, then renames them,
the first volume last: a drop never shows a first volume whose siblings are not
all in place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bundlesync.format.errors import (
    BadMagic,
    BundleNotFound,
    BundleWriteFailed,
    DropUnreadable,
    Malformed,
    MissingVolume,
    Truncated,
    Unreadable,
    UnsupportedVersion,
    VolumeMismatch,
)
from bundlesync.format.limits import (
    FAT_MAX_FILE_SIZE,
    FORMAT_VERSION,
    MAGIC,
    TAG_SIZE,
    VOLUME_HEAD_SIZE,
    Limits,
)
from bundlesync.fsio import fsync_dir, write_all

SUFFIX = ".bsb"
TEMP_SUFFIX = ".tmp"
_HEAD = struct.Struct(">8sHHHH16sQQ")
assert _HEAD.size == VOLUME_HEAD_SIZE
_PART_RE = re.compile(r"(?P<stem>.+)\.part(?P<k>[0-9]+)of(?P<n>[0-9]+)\.bsb\Z")
_READ_BLOCK = 1 << 20
# FAT file systems as Linux names them in /proc/self/mounts (bundle-v1 §3.3).
# exFAT has no 4 GiB limit and is deliberately not listed.
FAT_TYPES = frozenset({"vfat", "msdos", "umsdos", "fat"})


# --- names ----------------------------------------------------------------------------


def bundle_stem(*, origin_name: str, origin_site: str, incarnation: int, seq: int, kind: str,
                recipients: tuple[str, ...]) -> str:
    """The file name of a bundle without suffix (bundle-v1 §11)."""
    base = f"{origin_name}_{origin_site[:8]}_{incarnation}-{seq:06d}"
    if kind != "sync":
        return f"{base}_{kind}"
    if not recipients:
        return f"{base}_to_any"
    if len(recipients) <= 3:
        return f"{base}_to_{'+'.join(r[:8] for r in recipients)}"
    return f"{base}_to_{len(recipients)}-sites"


def remove_leftover_temps(directory: Path, *, origin_name: str, origin_site: str) -> list[str]:
    """Remove the temporary files a killed write of this site left in ``directory``.

    Only names this site's writer makes (``.<origin>_<site8>_*.tmp``, bundle-v1
    §11) are touched, and only regular files: the caller holds the site lock, so
    no write of this site is under way, and other sites' files are never ours.
    """
    prefix = f".{origin_name}_{origin_site[:8]}_"
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        path = directory / name
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                removed.append(name)
        except FileNotFoundError:
            continue
    return removed


def volume_name(stem: str, index: int, count: int) -> str:
    if count == 1:
        return f"{stem}{SUFFIX}"
    return f"{stem}.part{index}of{count}{SUFFIX}"


def is_first_volume_name(name: str) -> bool:
    """Whether a directory entry is a bundle's first (or only) volume, by its name."""
    if not name.endswith(SUFFIX) or name.startswith("."):
        return False
    match = _PART_RE.match(name)
    return match is None or int(match["k"]) == 1


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"([0-9]+)", name) if part]


def find_bundles(directory: Path) -> list[Path]:
    """The bundles in a drop: first (or only) volumes, by name, in natural order.

    Temporary files of an interrupted write (``.*.tmp``) are never listed.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        raise DropUnreadable(f"The drop {directory} does not exist.") from None
    except OSError as exc:
        raise DropUnreadable(f"Cannot list the drop {directory}: {exc.strerror}.") from None
    found = [directory / n for n in names if is_first_volume_name(n)]
    return sorted((p for p in found if p.is_file()), key=lambda p: _natural_key(p.name))


_SYNC_NAME_RE = re.compile(
    r"(?P<origin>[A-Za-z0-9][A-Za-z0-9._-]{0,63})_(?P<site>[0-9a-f]{8})_"
    r"(?P<inc>[1-9][0-9]{0,18})-(?P<seq>[0-9]{6,19})_to_(?P<to>[0-9a-f]{8})"
    r"(?:\.part1of[0-9]+)?\.bsb\Z")


@dataclass(frozen=True, slots=True)
class SyncName:
    """What the file name of a sync bundle to one site says (bundle-v1 §11).

    UNTRUSTED, like everything in a drop: a name may only let a caller leave a
    file alone that the header would have let it leave alone too, never make it
    act on what the name claims.
    """

    origin_name: str
    site_prefix: str  # the first 8 hex digits of the origin's site id
    incarnation: int
    seq: int
    recipient_prefix: str  # the first 8 hex digits of the recipient's site id


def parse_sync_name(name: str) -> SyncName | None:
    """The parts of a sync bundle's name with one recipient, or None for any other name."""
    match = _SYNC_NAME_RE.match(name)
    if match is None or str(int(match["seq"])).zfill(6) != match["seq"]:
        return None  # not a name the writer makes (a copy, a rename, another kind)
    return SyncName(match["origin"], match["site"], int(match["inc"]), int(match["seq"]),
                    match["to"])


def named_volumes(first: Path) -> list[Path]:
    """The files of the bundle whose first volume is ``first``, by their names
    (bundle-v1 §11): ``first`` itself and those of its numbered siblings that exist.
    For deleting a bundle; reading checks volumes by their heads instead."""
    match = _PART_RE.match(first.name)
    if match is None:
        return [first]
    count = int(match["n"])
    siblings = (first.parent / volume_name(match["stem"], k, count) for k in range(2, count + 1))
    return [first, *(p for p in siblings if p.exists())]


# --- file systems ---------------------------------------------------------------------


def _unescape_mount(field: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def filesystem_type(path: Path, *, mounts: Path = Path("/proc/self/mounts")) -> str | None:
    """The type of the file system holding ``path`` (Linux), or None if unknown."""
    try:
        target = os.path.realpath(path)
        lines = mounts.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape_mount(fields[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fields[2])
    return None if best is None else best[1]


def automatic_volume_size(directory: Path, *, mounts: Path = Path("/proc/self/mounts")
                          ) -> int | None:
    """The largest file ``directory`` can hold if it is on FAT, else None (no limit known)."""
    if filesystem_type(directory, mounts=mounts) in FAT_TYPES:
        return FAT_MAX_FILE_SIZE
    return None


# --- volume heads ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VolumeHead:
    index: int
    count: int
    tag: bytes
    length: int
    offset: int

    def pack(self) -> bytes:
        return _HEAD.pack(MAGIC, FORMAT_VERSION, self.index, self.count, 0, self.tag,
                          self.length, self.offset)


@dataclass(frozen=True, slots=True)
class Volume:
    path: Path
    head: VolumeHead


def parse_volume_head(data: bytes, *, source: str) -> VolumeHead:
    """Check and decode a volume head (bundle-v1 §3.1)."""
    if len(data) < len(MAGIC):
        if MAGIC.startswith(data):
            raise Truncated(f"{source} is only {len(data)} bytes long: not even a volume head.")
        raise BadMagic(f"{source} is not a bundlesync bundle.")
    if data[:len(MAGIC)] != MAGIC:
        raise BadMagic(f"{source} is not a bundlesync bundle (it does not start with the "
                       f"bundle magic bytes).")
    if len(data) < VOLUME_HEAD_SIZE:
        raise Truncated(f"{source} ends inside its volume head ({len(data)} bytes).")
    _, version, index, count, flags, tag, length, offset = _HEAD.unpack(data[:VOLUME_HEAD_SIZE])
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(f"{source} is bundle format version {version}; this "
                                 f"bundlesync reads version {FORMAT_VERSION}.")
    if flags != 0:
        raise UnsupportedVersion(f"{source} uses volume flags {flags:#06x}, which this "
                                 f"bundlesync does not know.")
    if not 1 <= index <= count:
        raise Malformed(f"{source}: volume number {index} of {count} is impossible.")
    return VolumeHead(index=index, count=count, tag=tag, length=length, offset=offset)


def _open_for_read(path: Path) -> int:
    """Open a volume for reading; only a regular file is ever read.

    O_NONBLOCK makes opening a FIFO or a device return at once instead of waiting
    for a writer (a FIFO named like a bundle would otherwise hang the import while
    it holds the site lock); fstat then refuses anything but a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BundleNotFound(f"{path} does not exist.") from None
    except IsADirectoryError:
        raise BundleNotFound(f"{path} is a directory, not a bundle.") from None
    except OSError as exc:
        raise Unreadable(f"Cannot open {path}: {exc.strerror}.") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise Unreadable(f"Cannot read {path}: {exc.strerror}.") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise Unreadable(f"{path} is not a regular file (a FIFO, device or socket); "
                         "it is not read.")
    return fd


def read_volume(path: Path) -> tuple[Volume, int]:
    """Read ``path``'s volume head; return it with the file's size."""
    fd = _open_for_read(path)
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, VOLUME_HEAD_SIZE, 0)
    except OSError as exc:
        raise Unreadable(f"Cannot read {path}: {exc.strerror}.") from None
    finally:
        os.close(fd)
    return Volume(path, parse_volume_head(data, source=str(path))), size


def _check_size(volume: Volume, size: int) -> None:
    head = volume.head
    expected = VOLUME_HEAD_SIZE + head.length
    where = (f"{volume.path.name}" if head.count == 1
             else f"Volume {head.index} of {head.count} ({volume.path.name})")
    if size < expected:
        raise Truncated(f"{where} is truncated: it has {size} bytes of {expected}.")
    if size > expected:
        raise Malformed(f"{where} has {size - expected} unexpected bytes after its end.")


def locate_volumes(first_path: Path, limits: Limits) -> list[Volume]:
    """All volumes of the bundle whose first volume is ``first_path``, checked to
    belong together, in order, complete and of the sizes their heads state."""
    first, size = read_volume(first_path)
    head = first.head
    if head.index != 1:
        expected = _PART_RE.match(first_path.name)
        name = (volume_name(expected["stem"], 1, head.count) if expected
                else "the first volume")
        raise VolumeMismatch(f"{first_path.name} is volume {head.index} of {head.count}; "
                             f"open {name} instead.")
    if head.offset != 0:
        raise Malformed(f"{first_path.name}: the first volume does not start the bundle.")
    if head.count > limits.max_volumes:
        raise Malformed(f"{first_path.name} claims {head.count} volumes.")
    _check_size(first, size)
    volumes = [first]
    scanned: dict[int, Path] | None = None
    stem_match = _PART_RE.match(first_path.name)
    offset = head.length
    for index in range(2, head.count + 1):
        expected_name = (volume_name(stem_match["stem"], index, head.count) if stem_match
                         else f"volume {index}")
        candidate = first_path.parent / expected_name if stem_match else None
        found: tuple[Volume, int] | None = None
        if candidate is not None and _is_regular(candidate):
            found = read_volume(candidate)
            if found[0].head.tag != head.tag:
                found = None
        if found is None:
            # Renamed files: recognise the volume by its head instead of its name.
            if scanned is None:
                scanned = _scan_siblings(first_path, head.tag, head.count)
            path = scanned.get(index)
            if path is None:
                raise MissingVolume(
                    f"Volume {index} of {head.count} of this bundle is missing: expected "
                    f"{expected_name} next to {first_path.name}.")
            found = read_volume(path)
        volume, vsize = found
        vh = volume.head
        if vh.tag != head.tag or vh.count != head.count or vh.index != index:
            raise VolumeMismatch(f"{volume.path.name} is not volume {index} of {head.count} "
                                 f"of the bundle {first_path.name}.")
        if vh.offset != offset:
            raise Malformed(f"{volume.path.name}: volume {index} does not continue where "
                            f"volume {index - 1} ends.")
        _check_size(volume, vsize)
        offset += vh.length
        volumes.append(volume)
    return volumes


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _scan_siblings(first_path: Path, tag: bytes, count: int) -> dict[int, Path]:
    found: dict[int, Path] = {}
    try:
        entries = sorted(first_path.parent.iterdir())
    except OSError:
        return found
    for path in entries:
        if path == first_path or not path.name.endswith(SUFFIX) or path.name.startswith("."):
            continue
        try:
            volume, _ = read_volume(path)
        except (BadMagic, Truncated, UnsupportedVersion, Malformed, Unreadable,
                BundleNotFound):
            continue
        if volume.head.tag == tag and volume.head.count == count:
            found.setdefault(volume.head.index, path)
    return found


class LogicalStream:
    """The concatenated segments of a bundle's volumes, read by logical offset."""

    def __init__(self, volumes: list[Volume]) -> None:
        self.volumes = volumes
        self.length = sum(v.head.length for v in volumes)

    def read_at(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at logical ``offset`` (Truncated if they are not there)."""
        return b"".join(self.iter_range(offset, offset + size, block=max(size, 1)))

    def iter_range(self, start: int, end: int, *, block: int = _READ_BLOCK) -> Iterator[bytes]:
        """The bytes of ``[start, end)`` in blocks of at most ``block`` bytes."""
        if not 0 <= start <= end <= self.length:
            raise Truncated("The bundle is shorter than its structure says.")
        base = 0
        for volume in self.volumes:
            seg_end = base + volume.head.length
            if seg_end > start and base < end:
                lo = max(start, base) - base
                hi = min(end, seg_end) - base
                yield from _read_file_range(volume, VOLUME_HEAD_SIZE + lo,
                                            VOLUME_HEAD_SIZE + hi, block)
            base = seg_end
            if base >= end:
                break


def _read_file_range(volume: Volume, start: int, end: int, block: int) -> Iterator[bytes]:
    fd = _open_for_read(volume.path)
    try:
        position = start
        while position < end:
            try:
                data = os.pread(fd, min(block, end - position), position)
            except OSError as exc:
                raise Unreadable(f"Cannot read {volume.path}: {exc.strerror}.") from None
            if not data:
                raise Truncated(f"{volume.path.name} became shorter while it was being read.")
            position += len(data)
            yield data
    finally:
        os.close(fd)


# --- writing --------------------------------------------------------------------------


def write_failed(exc: OSError, what: str) -> BundleWriteFailed:
    """Translate an OSError during writing into an error a person can act on."""
    if exc.errno == errno.ENOSPC:
        return BundleWriteFailed(f"The drop is full: {what} could not be written.",
                                 hint="Free space on the drive or use a larger one; nothing "
                                      "was left behind under a bundle name.")
    if exc.errno == errno.EFBIG:
        return BundleWriteFailed(
            f"The file system refused a file this large while writing {what}.",
            hint="Pass a maximum volume size (e.g. --max-volume-size 4000M on FAT drives); "
                 "nothing was left behind under a bundle name.")
    return BundleWriteFailed(f"Cannot write {what}: {exc.strerror or exc}.")


@dataclass(slots=True)
class _Pending:
    temp: Path
    length: int
    offset: int


class VolumeWriter:
    """Writes the logical stream into volumes of at most ``max_volume_size`` bytes.

    Nothing is visible under a bundle name until :meth:`finish`; :meth:`abort`
    removes every temporary file.
    """

    def __init__(self, directory: Path, *, stem: str, tag: bytes, max_volume_size: int | None,
                 progress: Callable[[int], None] | None = None) -> None:
        assert len(tag) == TAG_SIZE
        self.directory = directory
        self.stem = stem
        self.tag = tag
        self.capacity = None if max_volume_size is None else max_volume_size - VOLUME_HEAD_SIZE
        self.progress = progress
        self.written = 0
        self._token = secrets.token_hex(4)
        self._done: list[_Pending] = []
        self._fd: int | None = None
        self._current: _Pending | None = None

    @property
    def bytes_on_disk(self) -> int:
        return self.written

    def _temp_path(self, index: int) -> Path:
        return self.directory / f".{self.stem}.{index}.{self._token}{TEMP_SUFFIX}"

    def _open_next(self) -> None:
        index = len(self._done) + 1
        offset = sum(p.length for p in self._done)
        pending = _Pending(self._temp_path(index), 0, offset)
        try:
            fd = os.open(pending.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise write_failed(exc, f"volume {index} in {self.directory}") from None
        self._fd, self._current = fd, pending
        # The head is rewritten with the final count and length in finish().
        self._write_fd(VolumeHead(index, 0, self.tag, 0, offset).pack())

    def _write_fd(self, data: bytes | memoryview) -> None:
        assert self._fd is not None
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise write_failed(exc, f"a bundle into {self.directory}") from None
        self.written += len(data)
        if self.progress is not None:
            self.progress(self.written)

    def _close_current(self) -> None:
        if self._fd is None or self._current is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise write_failed(exc, f"a bundle into {self.directory}") from None
        finally:
            os.close(self._fd)
            self._fd = None
        self._done.append(self._current)
        self._current = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._current is None:
                self._open_next()
            assert self._current is not None
            room = len(view) if self.capacity is None else self.capacity - self._current.length
            if room <= 0:
                self._close_current()
                continue
            piece = view[:room]
            self._write_fd(piece)
            self._current.length += len(piece)
            view = view[len(piece):]

    def finish(self) -> tuple[Path, ...]:
        """Finalise the heads, sync, and rename every volume into place."""
        if self._current is None and not self._done:
            self._open_next()
        self._close_current()
        count = len(self._done)
        finals = [self.directory / volume_name(self.stem, i + 1, count) for i in range(count)]
        try:
            for index, pending in enumerate(self._done, start=1):
                fd = os.open(pending.temp, os.O_WRONLY)
                try:
                    os.pwrite(fd, VolumeHead(index, count, self.tag, pending.length,
                                             pending.offset).pack(), 0)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            # The first volume last: until it appears, find_bundles sees nothing.
            for pending, final in reversed(list(zip(self._done, finals, strict=True))):
                os.replace(pending.temp, final)
            fsync_dir(self.directory)
        except OSError as exc:
            raise write_failed(exc, f"a bundle into {self.directory}") from None
        self._done = []
        return tuple(finals)

    def abort(self) -> None:
        """Remove every temporary volume (best effort: we are already failing)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        for pending in [*self._done, *([self._current] if self._current else [])]:
            with contextlib.suppress(OSError):
                pending.temp.unlink()
        self._done = []
        self._current = None
