"""Writing a bundle (bundle-v1 §10): records in, signed volume files out.

Memory stays constant whatever the bundle's size: records are encoded one at a
time, cut into frames of ``frame_size`` bytes, compressed, optionally encrypted
chunk by chunk, and written out as they come.

The header states the number of records of each kind, so it must be known
before the first body byte is written. Either the caller passes ``counts``
(direct mode: one pass, the header first), or the writer spools the finished
body region -- already compressed and, if asked, encrypted, so no plaintext mail
touches the drop -- into a temporary file next to the bundle, then writes the
header and copies the spool behind it (spool mode).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bundlesync.core.model import Body, Record, VersionVector
from bundlesync.errors import UsageError
from bundlesync.format.cose import sign_digest
from bundlesync.format.crypto import (
    StreamEncryptor,
    new_encryption,
    new_encryption_v2,
    seal_inner,
)
from bundlesync.format.errors import CountMismatch, DropUnreadable
from bundlesync.format.frames import FrameEncoder
from bundlesync.format.header import (
    BUNDLE_KINDS,
    FORMAT_V2,
    BundleHeader,
    BundleId,
    ClearHeader,
    EncryptionParams,
    encode_clear,
    encode_header,
    encode_inner,
)
from bundlesync.format.limits import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FRAME_SIZE,
    DEFAULT_LIMITS,
    DEFAULT_ZSTD_LEVEL,
    END_MAGIC,
    FORMAT_VERSION,
    MAGIC,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    MIN_VOLUME_SIZE,
    TAG_SIZE,
    VOLUME_HEAD_SIZE,
    Limits,
)
from bundlesync.format.records import OPTIONAL_KINDS, RECORD_KINDS, encode_record, record_kind
from bundlesync.format.volumes import (
    TEMP_SUFFIX,
    VolumeWriter,
    automatic_volume_size,
    bundle_stem,
    write_failed,
)
from bundlesync.fsio import write_all
from bundlesync.keys import PeerCard, SiteIdentity

RandomBytes = Callable[[int], bytes]
_U32 = struct.Struct(">I")
_SIGNED_PREFIX = MAGIC + struct.pack(">H", FORMAT_VERSION)
_SIGNED_PREFIX_V2 = MAGIC + struct.pack(">H", FORMAT_V2)
_COPY_BLOCK = 1 << 20
# Compression threads by default: one per CPU, up to this many. Frames of 2 MiB
# are compressed ahead of the writer by a few per thread, so memory stays bounded.
MAX_COMPRESS_THREADS = 4


@dataclass(frozen=True, slots=True)
class WrittenBundle:
    """A bundle on disk: its volume files, its header and its size.

    ``content_size`` is the size of the encoded records before compression.
    """

    paths: tuple[Path, ...]
    header: BundleHeader
    size: int
    content_size: int


@dataclass(frozen=True, slots=True)
class EncodedChange:
    """A change record already in its encoding (bundle-v1 §6), written as it is.

    A record has exactly one encoding (bundle-v1 §6.3), so a change kept in that
    encoding -- the state index's change log keeps each change so -- need not be
    decoded and encoded again to be sent. ``kind`` is its record kind
    ("message-added"), which the header counts.
    """

    kind: str
    encoded: bytes


@dataclass(frozen=True, slots=True)
class HashedBody:
    """A body whose SHA-256 the caller has just computed from these very bytes (as it
    read them), so the writer does not hash it a second time."""

    body: Body


Writable = Record | EncodedChange | HashedBody


def _compress_threads(asked: int | None) -> int:
    if asked is not None:
        if asked < 1:
            raise ValueError(f"compression threads {asked} is not at least 1")
        return asked
    return max(1, min(MAX_COMPRESS_THREADS, len(os.sched_getaffinity(0))))


class _Counter:
    def __init__(self, expected: Mapping[str, int] | None) -> None:
        self.counts = dict.fromkeys(RECORD_KINDS, 0)
        self.expected = expected

    def add(self, record: Record) -> None:
        self.add_kind(record_kind(record))

    def add_kind(self, kind: str) -> None:
        if kind not in self.counts:
            raise ValueError(f"unknown record kind {kind!r}")
        self.counts[kind] += 1
        if self.expected is not None and self.counts[kind] > self.expected.get(kind, 0):
            raise CountMismatch(f"The bundle writer received more {kind} records than the "
                                f"{self.expected.get(kind, 0)} announced.")

    def check(self) -> None:
        if self.expected is not None and any(
                self.counts[k] != self.expected.get(k, 0) for k in RECORD_KINDS):
            raise CountMismatch(f"The bundle writer was told {dict(self.expected)} records "
                                f"but received {self.counts}.")


class _BodyPipeline:
    """records -> encoded pieces -> frames -> (sealed chunks) -> ``sink``."""

    def __init__(self, sink: Callable[[bytes], None], *, frame_size: int, level: int,
                 payload_key: bytes | None, chunk_size: int, pad_to: int | None = None,
                 executor: Executor | None = None) -> None:
        self._sink = sink
        self._frames = FrameEncoder(frame_size=frame_size, level=level, executor=executor)
        self._encryptor = (None if payload_key is None
                           else StreamEncryptor(payload_key, chunk_size, executor=executor))
        self._pad_to = pad_to
        self._plain = 0

    @property
    def content_bytes(self) -> int:
        return self._frames.content_bytes

    def _emit(self, piece: bytes) -> None:
        self._plain += len(piece)
        if self._encryptor is None:
            self._sink(piece)
        else:
            for sealed in self._encryptor.update(piece):
                self._sink(sealed)

    def write(self, data: bytes) -> None:
        for piece in self._frames.write(data):
            self._emit(piece)

    def finish(self) -> None:
        for piece in self._frames.finish():
            self._emit(piece)
        if self._pad_to is not None and self._plain % self._pad_to:
            # bundle-v2 §6: zero bytes after the end frame hide the exact size.
            self._emit(bytes(self._pad_to - self._plain % self._pad_to))
        if self._encryptor is not None:
            for sealed in self._encryptor.drain():
                self._sink(sealed)
            self._sink(self._encryptor.finish())

    def abandon(self) -> None:
        self._frames.abandon()
        if self._encryptor is not None:
            self._encryptor.abandon()


def _check_arguments(*, identity: SiteIdentity, bundle_id: BundleId, kind: str,
                     frame_size: int, chunk_size: int, limits: Limits, format_version: int,
                     pad_to: int | None) -> None:
    if format_version not in (1, FORMAT_V2):
        raise ValueError(f"unknown bundle format version {format_version}")
    if pad_to is not None and (format_version != FORMAT_V2 or pad_to < 1):
        raise ValueError("padding needs format version 2 and a positive size")
    if bundle_id.site != identity.site_id:
        raise ValueError(f"bundle id site {bundle_id.site} is not this site "
                         f"({identity.site_id})")
    if kind not in BUNDLE_KINDS:
        raise ValueError(f"unknown bundle kind {kind!r}")
    if not 1 <= frame_size <= limits.max_frame_content:
        raise ValueError(f"frame size {frame_size} outside 1..{limits.max_frame_content}")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {chunk_size} outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")


@dataclass(frozen=True, slots=True)
class _Sealing:
    """How a bundle is encrypted: v1 parameters, or a v2 clear header and keys."""

    encryption: EncryptionParams | None = None
    payload_key: bytes | None = None
    inner_key: bytes | None = None
    clear: ClearHeader | None = None


def _sealing(format_version: int, *, encrypt: bool, bundle_id: BundleId, kind: str,
             recipients: list[PeerCard], chunk_size: int,
             random_bytes: RandomBytes) -> _Sealing:
    if format_version == FORMAT_V2:
        clear = ClearHeader(bundle_id=bundle_id, kind=kind,
                            recipients=tuple(sorted(c.site_id for c in recipients)),
                            chunk_size=chunk_size if encrypt else None)
        if not encrypt:
            return _Sealing(clear=clear)
        clear, keys = new_encryption_v2(clear, recipients, random_bytes=random_bytes)
        return _Sealing(payload_key=keys.payload, inner_key=keys.inner, clear=clear)
    if not encrypt:
        return _Sealing()
    encryption, payload_key = new_encryption(recipients, chunk_size=chunk_size,
                                             random_bytes=random_bytes)
    return _Sealing(encryption=encryption, payload_key=payload_key)


def write_bundle(
    directory: Path,
    *,
    identity: SiteIdentity,
    bundle_id: BundleId,
    kind: str,
    recipients: Sequence[PeerCard],
    ack: VersionVector,
    assumes: VersionVector,
    records: Iterable[Writable],
    created_ms: int,
    encrypt: bool = True,
    max_volume_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    counts: Mapping[str, int] | None = None,
    frame_size: int = DEFAULT_FRAME_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    level: int = DEFAULT_ZSTD_LEVEL,
    random_bytes: RandomBytes = secrets.token_bytes,
    limits: Limits = DEFAULT_LIMITS,
    format_version: int = 1,
    pad_to: int | None = None,
    threads: int | None = None,
) -> WrittenBundle:
    """Write ``records`` as a signed bundle into ``directory`` (bundle-v1 §10).

    ``records`` is consumed once, lazily. With ``counts`` (records per kind, keys
    of :data:`RECORD_KINDS`) the bundle is written in one pass and the counts are
    checked against the records; without, the body is spooled next to the bundle
    first. ``max_volume_size`` splits the bundle into volumes of at most that many
    bytes; when None, the size limit of a FAT drop is applied automatically.
    ``progress`` receives a growing count of bytes written so far (spool included).
    ``frame_size``, ``chunk_size``, ``level`` and ``random_bytes`` are for tests,
    tuning and reproducible vectors. ``format_version`` 2 writes bundle-v2 (clear
    header for routing, sealed inner header); ``pad_to`` (version 2 only) pads the
    body with zero bytes to a multiple of that many bytes. ``threads`` is how many
    threads compress frames (default: one per CPU, at most
    :data:`MAX_COMPRESS_THREADS`; 1 compresses in the calling thread); the bytes
    written are the same whatever it is.
    """
    _check_arguments(identity=identity, bundle_id=bundle_id, kind=kind,
                     frame_size=frame_size, chunk_size=chunk_size, limits=limits,
                     format_version=format_version, pad_to=pad_to)
    max_volume_size = _volume_size(directory, max_volume_size)
    unique = _unique_recipients(recipients, encrypt=encrypt)
    recipient_ids = tuple(sorted(unique))
    sealing = _sealing(format_version, encrypt=encrypt, bundle_id=bundle_id, kind=kind,
                       recipients=list(unique.values()), chunk_size=chunk_size,
                       random_bytes=random_bytes)
    encryption, payload_key = sealing.encryption, sealing.payload_key
    inner_key, clear = sealing.inner_key, sealing.clear
    stem = bundle_stem(origin_name=identity.name, origin_site=identity.site_id,
                       incarnation=bundle_id.incarnation, seq=bundle_id.seq, kind=kind,
                       recipients=recipient_ids)

    def make_header(final_counts: Mapping[str, int]) -> BundleHeader:
        return BundleHeader(
            bundle_id=bundle_id, created_ms=created_ms, kind=kind,
            origin_site=identity.site_id, origin_name=identity.name,
            origin_key=identity.signing_public, recipients=recipient_ids, ack=ack,
            assumes=assumes,
            counts={k: final_counts.get(k, 0) for k in RECORD_KINDS
                    if k not in OPTIONAL_KINDS or final_counts.get(k, 0)},
            frame_size=frame_size, encryption=encryption,
            format_version=format_version, sealed=format_version == FORMAT_V2 and encrypt)

    def encode_prefix(header: BundleHeader) -> tuple[bytes, bytes]:
        """(the bytes the bundle tag is made from, the stream before the body)."""
        if clear is None:
            header_bytes = encode_header(header)
            return header_bytes, _U32.pack(len(header_bytes)) + header_bytes
        clear_bytes = encode_clear(clear)
        inner = encode_inner(header)
        if inner_key is not None:
            inner = seal_inner(inner_key, inner)
        return clear_bytes, (_U32.pack(len(clear_bytes)) + clear_bytes
                             + _U32.pack(len(inner)) + inner)

    counter = _Counter(counts)
    report = _Progress(progress)

    def start_volumes(header_bytes: bytes, prefix: bytes) -> VolumeWriter:
        needed = VOLUME_HEAD_SIZE + len(prefix)
        if max_volume_size is not None and max_volume_size < needed:
            raise UsageError(f"A volume size of {max_volume_size} bytes cannot hold this "
                             f"bundle's header ({needed} bytes with the volume head).")
        return VolumeWriter(directory, stem=stem,
                            tag=hashlib.sha256(header_bytes).digest()[:TAG_SIZE],
                            max_volume_size=max_volume_size, progress=report.final)

    def feed(pipeline: _BodyPipeline) -> None:
        _feed(pipeline, records, counter, limits)

    volumes: VolumeWriter | None = None
    spool_path: Path | None = None
    workers = _compress_threads(threads)
    executor = (ThreadPoolExecutor(workers, thread_name_prefix="bundle-zstd")
                if workers > 1 else None)
    try:
        hasher = hashlib.sha256(_SIGNED_PREFIX if clear is None else _SIGNED_PREFIX_V2)
        if counts is not None:
            header = make_header(counts)
            header_bytes, prefix = encode_prefix(header)
            volumes = start_volumes(header_bytes, prefix)

            def signed(data: bytes) -> None:
                assert volumes is not None
                hasher.update(data)
                volumes.write(data)

            signed(prefix)
            pipeline = _BodyPipeline(signed, frame_size=frame_size, level=level,
                                     payload_key=payload_key, chunk_size=chunk_size,
                                     pad_to=pad_to, executor=executor)
            feed(pipeline)
        else:
            spool_path = directory / f".{stem}.spool.{secrets.token_hex(4)}{TEMP_SUFFIX}"
            pipeline = _spool(spool_path, feed, frame_size=frame_size, level=level,
                              payload_key=payload_key, chunk_size=chunk_size,
                              progress=report.spool, pad_to=pad_to, executor=executor)
            header = make_header(counter.counts)
            header_bytes, prefix = encode_prefix(header)
            volumes = start_volumes(header_bytes, prefix)
            hasher.update(prefix)
            volumes.write(prefix)
            _copy_spool(spool_path, volumes, hasher)
        trailer = sign_digest(identity, hasher.digest(), version=format_version)
        volumes.write(trailer + _U32.pack(len(trailer)) + END_MAGIC)
        paths = volumes.finish()
        size = volumes.bytes_on_disk
    except BaseException:
        if volumes is not None:
            volumes.abort()
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if spool_path is not None:
            with contextlib.suppress(OSError):
                spool_path.unlink()
    return WrittenBundle(paths=paths, header=header, size=size,
                         content_size=pipeline.content_bytes)


def _feed(pipeline: _BodyPipeline, records: Iterable[Writable],
          counter: _Counter, limits: Limits) -> None:
    """Every record through ``pipeline``, counted; frames in flight dropped on failure."""
    try:
        for record in records:
            if isinstance(record, EncodedChange):
                counter.add_kind(record.kind)
                pipeline.write(record.encoded)
                continue
            if isinstance(record, HashedBody):
                head, data = encode_record(record.body, limits, hashed=True)
                counter.add(record.body)
            else:
                head, data = encode_record(record, limits)
                counter.add(record)
            pipeline.write(head)
            if data:
                pipeline.write(data)
        pipeline.finish()
    except BaseException:
        pipeline.abandon()
        raise
    counter.check()


def _volume_size(directory: Path, asked: int | None) -> int | None:
    """The volume size to write with: the one asked for, else the drop's limit."""
    if not directory.is_dir():
        raise DropUnreadable(f"The drop {directory} does not exist or is not a directory.")
    if asked is None:
        return automatic_volume_size(directory)
    if asked < MIN_VOLUME_SIZE:
        raise UsageError(f"A volume size of {asked} bytes is too small "
                         f"(minimum {MIN_VOLUME_SIZE}).")
    return asked


def _unique_recipients(recipients: Sequence[PeerCard], *, encrypt: bool) -> dict[str, PeerCard]:
    unique = {card.site_id: card for card in recipients}
    if encrypt and not unique:
        raise UsageError("An encrypted bundle needs at least one recipient.",
                         hint="Name the peer sites to export to, or export unencrypted.")
    return unique


class _Progress:
    """Bytes written so far: the spool's first (if any), then the volumes' on top."""

    def __init__(self, callback: Callable[[int], None] | None) -> None:
        self.callback = callback
        self.spooled = 0

    def spool(self, n: int) -> None:
        self.spooled = n
        if self.callback is not None:
            self.callback(n)

    def final(self, n: int) -> None:
        if self.callback is not None:
            self.callback(self.spooled + n)


def _spool(path: Path, feed: Callable[[_BodyPipeline], None], *, frame_size: int, level: int,
           payload_key: bytes | None, chunk_size: int,
           progress: Callable[[int], None], pad_to: int | None,
           executor: Executor | None) -> _BodyPipeline:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise write_failed(exc, f"a spool file in {path.parent}") from None
    written = 0

    def sink(data: bytes) -> None:
        nonlocal written
        try:
            write_all(fd, data)
        except OSError as exc:
            raise write_failed(exc, f"a spool file in {path.parent}") from None
        written += len(data)
        progress(written)

    try:
        pipeline = _BodyPipeline(sink, frame_size=frame_size, level=level,
                                 payload_key=payload_key, chunk_size=chunk_size, pad_to=pad_to,
                                 executor=executor)
        feed(pipeline)
    finally:
        os.close(fd)
    return pipeline


def _copy_spool(path: Path, volumes: VolumeWriter, hasher: hashlib._Hash) -> None:
    try:
        with path.open("rb") as spool:
            while block := spool.read(_COPY_BLOCK):
                hasher.update(block)
                volumes.write(block)
    except OSError as exc:
        raise write_failed(exc, f"the bundle from its spool {path.name}") from None
