"""Reading a bundle (bundle-v1 §10): check everything, then stream the records.

A drop is not trusted to return the same bytes twice (a stick's firmware, a
FUSE file system or a writer racing the import may serve different content on
each read), so the drop is read ONCE (bundle-v1 §10.2):

1. :func:`verify_bundle` copies the bundle's logical stream into private
   storage of this process (memory, or an unnamed temporary file for large
   bundles), then checks the header, the trailer and the signer, hashes every
   signed byte of the copy and checks the COSE_Sign1 -- before a single body
   byte is decrypted, decompressed or decoded. The header it returns is the
   verified one: the only header a caller may act on.
2. :meth:`OpenBundle.records` reads the body from that copy, decrypts,
   decompresses and decodes it frame by frame with bounded memory, and checks
   every Body's SHA-256 and the record counts. A signed bundle can still be
   malformed, and that shows only at the end of the iteration: callers must
   treat the records (and anything derived from them, such as clock
   observations) as applied only once the iterator is exhausted without error.

:func:`read_header` reads the drop directly and is UNVERIFIED: it may only be
used to list a drop or to leave a bundle alone, never to record anything.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Generic, Protocol, Self, TypeVar

from bundlesync.core.model import Body, Record
from bundlesync.format import cbor
from bundlesync.format.cose import CoseSign1, parse_sign1, signature_valid
from bundlesync.format.crypto import (
    chunk_sizes,
    decrypt_stream,
    open_file_key,
    open_inner,
    unwrap_payload_key,
)
from bundlesync.format.errors import (
    BodyHashMismatch,
    LimitExceeded,
    Malformed,
    SignatureInvalid,
    Truncated,
    UnknownSigner,
    UnsupportedVersion,
    VolumeMismatch,
)
from bundlesync.format.frames import ByteSource, iter_frames
from bundlesync.format.header import (
    FORMAT_V2,
    BundleHeader,
    BundleId,
    ClearHeader,
    decode_any_header,
    decode_inner,
    header_hash,
)
from bundlesync.format.limits import (
    DEFAULT_LIMITS,
    END_MAGIC,
    FORMAT_VERSION,
    HEADER_LENGTH_SIZE,
    MAGIC,
    TAG_SIZE,
    TRAILER_FIXED_SIZE,
    VOLUME_HEAD_SIZE,
    Limits,
)
from bundlesync.format.records import (
    RECORD_KINDS,
    body_hash_matches,
    decode_record,
    record_kind,
)
from bundlesync.format.volumes import (
    LogicalStream,
    Volume,
    locate_volumes,
    read_volume,
)
from bundlesync.keys import PeerCard, SiteIdentity, TrustLookup, site_id_of

_U32 = struct.Struct(">I")
_SIGNED_PREFIX = MAGIC + struct.pack(">H", FORMAT_VERSION)
_SIGNED_PREFIX_V2 = MAGIC + struct.pack(">H", FORMAT_V2)


# --- the header alone -----------------------------------------------------------------


def read_header(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> BundleHeader:
    """The header of the version 1 bundle at ``path`` -- UNVERIFIED: for showing only.

    Reads at most the volume head and ``limits.max_header`` bytes of the first
    volume. Nothing in the result may be trusted before :func:`open_bundle`. A
    version 2 bundle has no public header to show (UnsupportedVersion); use
    :func:`list_bundle`, which reads both versions.
    """
    listing = list_bundle(path, limits=limits)
    if listing.header is None:
        raise UnsupportedVersion(f"{path.name} is a version 2 bundle: its header is sealed "
                                 f"and is read only when the bundle is opened.")
    return listing.header


@dataclass(frozen=True, slots=True)
class BundleListing:
    """What a drop listing learns of a bundle without verifying it (bundle-v2 §4.1).

    UNVERIFIED: it may only be used to leave a bundle alone or to order work.
    ``header`` is the whole (unverified) header of a version 1 bundle.
    """

    bundle_id: BundleId
    kind: str
    recipients: tuple[str, ...]
    encrypted: bool
    format_version: int
    header: BundleHeader | None = None

    @property
    def origin_site(self) -> str:
        return self.bundle_id.site


def list_bundle(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> BundleListing:
    """The routing facts of the bundle at ``path`` (either version) -- UNVERIFIED."""
    volume, size = read_volume(path)
    header_bytes = _read_header_bytes(LogicalStream([volume]), volume, size, limits)
    decoded = decode_any_header(header_bytes, limits)
    if isinstance(decoded, ClearHeader):
        return BundleListing(decoded.bundle_id, decoded.kind, decoded.recipients,
                             decoded.encrypted, FORMAT_V2)
    return BundleListing(decoded.bundle_id, decoded.kind, decoded.recipients,
                         decoded.encrypted, 1, decoded)


def _read_header_bytes(stream: _Readable, first: Volume, first_size: int,
                       limits: Limits) -> bytes:
    head = first.head
    if head.index != 1:
        raise_wrong_volume(first)
    available = min(head.length, max(first_size - VOLUME_HEAD_SIZE, 0))
    if available < HEADER_LENGTH_SIZE:
        raise Truncated(f"{first.path.name} ends before its header.")
    (length,) = _U32.unpack(stream.read_at(0, HEADER_LENGTH_SIZE))
    if length > limits.max_header:
        raise LimitExceeded(f"The bundle header is {length} bytes long (limit "
                            f"{limits.max_header}).")
    end = HEADER_LENGTH_SIZE + length
    if end > head.length:
        if head.count > 1:
            raise Malformed("The bundle header does not fit in the first volume.")
        raise Truncated(f"{first.path.name} ends inside its header.")
    if end > available:
        raise Truncated(f"{first.path.name} ends inside its header.")
    return stream.read_at(HEADER_LENGTH_SIZE, length)


def raise_wrong_volume(volume: Volume) -> None:
    raise VolumeMismatch(f"{volume.path.name} is volume {volume.head.index} of "
                         f"{volume.head.count}; open the first volume instead.")


# --- the private copy -----------------------------------------------------------------

# Bundles up to this size are copied into memory, larger ones into an unnamed file:
# memory stays bounded whatever the size of the bundle.
PRIVATE_COPY_IN_MEMORY = 1024 * 1024
_COPY_BLOCK = 1 << 20


class _Readable(Protocol):
    """What verification needs of the logical stream (a drop's volumes or a copy)."""

    length: int

    def read_at(self, offset: int, size: int) -> bytes: ...

    def iter_range(self, start: int, end: int) -> Iterator[bytes]: ...


class PrivateCopy:
    """A bundle's logical stream, copied once from the drop into storage only this
    process can reach (bundle-v1 §10.2): every check and every record is read from
    here, so what was verified is what is used, whatever the drop serves later."""

    def __init__(self, source: LogicalStream, *, scratch: Path | None = None,
                 in_memory: int = PRIVATE_COPY_IN_MEMORY) -> None:
        self.length = source.length
        # An unnamed temporary file (O_TMPFILE where available, mode 0600): no other
        # process can open it by name.
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by close()
            max_size=in_memory, dir=None if scratch is None else str(scratch))
        try:
            copied = 0
            for block in source.iter_range(0, source.length):
                self._file.write(block)
                copied += len(block)
            if copied != self.length:
                raise Truncated("The bundle became shorter while it was being read.")
        except BaseException:
            self._file.close()
            raise

    def read_at(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at logical ``offset``."""
        if not 0 <= offset <= offset + size <= self.length:
            raise Truncated("The bundle is shorter than its structure says.")
        self._file.seek(offset)
        data = self._file.read(size)
        if len(data) != size:
            raise Truncated("The bundle is shorter than its structure says.")
        return data

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes of ``[start, end)`` in blocks."""
        if not 0 <= start <= end <= self.length:
            raise Truncated("The bundle is shorter than its structure says.")
        position = start
        while position < end:
            size = min(_COPY_BLOCK, end - position)
            yield self.read_at(position, size)
            position += size

    def close(self) -> None:
        self._file.close()


# --- verification ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle whose structure and signature were checked (body not yet read).

    ``header`` is the whole header of a version 1 bundle; a version 2 bundle has
    only its ``clear`` header until it is opened (its inner header is sealed).
    """

    header: BundleHeader | None
    signer: PeerCard
    paths: tuple[Path, ...]
    size: int
    body_size: int
    _stream: PrivateCopy = field(repr=False, compare=False)
    _body_start: int = field(repr=False, compare=False)
    _body_end: int = field(repr=False, compare=False)
    _digest: bytes = field(repr=False, compare=False)
    _prefix_hash: hashlib._Hash = field(repr=False, compare=False)
    clear: ClearHeader | None = None
    _inner: bytes = field(default=b"", repr=False, compare=False)

    @property
    def format_version(self) -> int:
        return 1 if self.clear is None else FORMAT_V2

    @property
    def bundle_id(self) -> BundleId:
        if self.clear is not None:
            return self.clear.bundle_id
        assert self.header is not None
        return self.header.bundle_id

    def close(self) -> None:
        """Release the private copy (OpenBundle.close does it for an opened bundle)."""
        self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _same_name(origin_name: str, card: PeerCard) -> PeerCard:
    """The header's origin name must be the name the signer's card was signed with
    (bundle-v2 §8). An unsigned version 1 card proves no name: its name is local."""
    if card.signed and origin_name != card.own_name:
        raise Malformed(f"The bundle says it comes from {origin_name!r}, but it is signed by "
                        f"{card.own_name!r}.")
    return card


def _trusted_signer(header: BundleHeader, sign1: CoseSign1 | None, trust: TrustLookup,
                    identity: SiteIdentity | None) -> PeerCard:
    if site_id_of(header.origin_key) != header.origin_site:
        raise Malformed("The bundle's origin site id does not belong to its origin key.")
    if sign1 is not None and sign1.kid != bytes.fromhex(header.origin_site):
        raise Malformed("The signature's key id is not the bundle's origin site.")
    if identity is not None and identity.signing_public == header.origin_key:
        return identity.card()
    card = trust.by_signing_key(header.origin_key)
    if card is not None:
        return card
    claimed = f"{header.origin_name!r} (site id {header.origin_site})"
    namesake = trust.by_name(header.origin_name)
    if namesake is not None:
        raise UnknownSigner(
            f"The bundle claims to come from {claimed}, but the trusted peer "
            f"{namesake.name!r} has another key (site id {namesake.site_id}).",
            hint="If that site really changed its key, check the new fingerprint with its "
                 "administrator, then replace its card. Otherwise, do not use this bundle. "
                 "Nothing was changed.")
    raise UnknownSigner(f"The bundle is signed by {claimed}, which is not a trusted peer "
                        f"of this site.")


def _trusted_signer_v2(clear: ClearHeader, sign1: CoseSign1 | None, trust: TrustLookup,
                       identity: SiteIdentity | None) -> PeerCard:
    """The signer of a version 2 bundle: the trusted site named by its id (bundle-v2 §7)."""
    site = clear.bundle_id.site
    if sign1 is not None and sign1.kid != bytes.fromhex(site):
        raise Malformed("The signature's key id is not the bundle's origin site.")
    if identity is not None and identity.site_id == site:
        return identity.card()
    card = trust.by_site_id(site)
    if card is not None:
        return card
    raise UnknownSigner(f"The bundle is signed by site id {site}, which is not a trusted "
                        f"peer of this site.")


def _signer(header: BundleHeader | ClearHeader, sign1: CoseSign1 | None, trust: TrustLookup,
            identity: SiteIdentity | None) -> PeerCard:
    if isinstance(header, ClearHeader):
        return _trusted_signer_v2(header, sign1, trust, identity)
    return _trusted_signer(header, sign1, trust, identity)


def verify_bundle(path: Path, *, trust: TrustLookup, identity: SiteIdentity | None = None,
                  limits: Limits = DEFAULT_LIMITS, scratch: Path | None = None
                  ) -> VerifiedBundle:
    """Copy the bundle at ``path`` (its first volume) privately and verify the copy.

    Order (bundle-v1 §10.2): volumes; a quick look at the drop's header that can
    only refuse (a signer this site does not trust is refused before the copy);
    the private copy; then header, trailer, signer, one hashing pass and the
    signature, all on the copy. ``scratch`` is where a large copy is spilled
    (default: the system's temporary directory). Raises BundleRejected
    subclasses. The result holds the copy: close it, or open it with
    :meth:`OpenBundle.from_verified` and close that.
    """
    volumes = locate_volumes(path, limits)
    stream = LogicalStream(volumes)
    first_size = VOLUME_HEAD_SIZE + volumes[0].head.length
    # Unverified, and used only to refuse early: nothing is learned from it.
    _signer(decode_any_header(_read_header_bytes(stream, volumes[0], first_size, limits),
                              limits), None, trust, identity)
    copy = PrivateCopy(stream, scratch=scratch)
    try:
        return _verify_copy(copy, volumes, trust=trust, identity=identity, limits=limits)
    except BaseException:
        copy.close()
        raise


def _verify_copy(copy: PrivateCopy, volumes: list[Volume], *, trust: TrustLookup,
                 identity: SiteIdentity | None, limits: Limits) -> VerifiedBundle:
    first_size = VOLUME_HEAD_SIZE + volumes[0].head.length
    header_bytes = _read_header_bytes(copy, volumes[0], first_size, limits)
    decoded = decode_any_header(header_bytes, limits)
    body_start = HEADER_LENGTH_SIZE + len(header_bytes)
    inner = b""
    version = 1
    if isinstance(decoded, ClearHeader):
        # bundle-v2 §4: the (sealed) inner header follows the clear one.
        version = FORMAT_V2
        if copy.length < body_start + HEADER_LENGTH_SIZE:
            raise Truncated("The bundle ends before its inner header.")
        (inner_length,) = _U32.unpack(copy.read_at(body_start, HEADER_LENGTH_SIZE))
        if inner_length > limits.max_header:
            raise LimitExceeded(f"The bundle's inner header is {inner_length} bytes long "
                                f"(limit {limits.max_header}).")
        if copy.length < body_start + HEADER_LENGTH_SIZE + inner_length:
            raise Truncated("The bundle ends inside its inner header.")
        inner = copy.read_at(body_start + HEADER_LENGTH_SIZE, inner_length)
        body_start += HEADER_LENGTH_SIZE + inner_length
    if copy.length < body_start + TRAILER_FIXED_SIZE:
        raise Truncated("The bundle ends before its signature.")
    tail = copy.read_at(copy.length - TRAILER_FIXED_SIZE, TRAILER_FIXED_SIZE)
    if tail[4:] != END_MAGIC:
        raise Truncated("The bundle does not end with its signature: it was not completely "
                        "written or copied.")
    (sign_length,) = _U32.unpack(tail[:4])
    if sign_length > limits.max_trailer:
        raise Malformed(f"The bundle's signature claims {sign_length} bytes.")
    body_end = copy.length - TRAILER_FIXED_SIZE - sign_length
    if body_end < body_start:
        raise Malformed("The bundle's signature overlaps its header.")
    sign1 = parse_sign1(copy.read_at(body_end, sign_length), limits, version=version)
    signer = _signer(decoded, sign1, trust, identity)

    hasher = hashlib.sha256(_SIGNED_PREFIX if version == 1 else _SIGNED_PREFIX_V2)
    hasher.update(copy.read_at(0, body_start))
    prefix_hash = hasher.copy()
    for block in copy.iter_range(body_start, body_end):
        hasher.update(block)
    digest = hasher.digest()
    if digest != sign1.payload:
        raise SignatureInvalid(f"The bundle's bytes do not match the signature of "
                               f"{signer.name!r}: it was damaged or altered.")
    if not signature_valid(sign1, signer.signing_public):
        raise SignatureInvalid(f"The bundle's signature is not a valid signature by "
                               f"{signer.name!r}.")
    if hashlib.sha256(header_bytes).digest()[:TAG_SIZE] != volumes[0].head.tag:
        raise Malformed("The volume head does not belong to this bundle's header.")
    if not isinstance(decoded, ClearHeader):
        # After the signature, so that an altered name reads as the alteration it is.
        _same_name(decoded.origin_name, signer)
    return VerifiedBundle(
        header=None if isinstance(decoded, ClearHeader) else decoded, signer=signer,
        paths=tuple(v.path for v in volumes),
        size=sum(VOLUME_HEAD_SIZE + v.head.length for v in volumes),
        body_size=body_end - body_start, _stream=copy, _body_start=body_start,
        _body_end=body_end, _digest=digest, _prefix_hash=prefix_hash,
        clear=decoded if isinstance(decoded, ClearHeader) else None, _inner=inner)


# --- opening --------------------------------------------------------------------------


class OpenBundle:
    """A verified bundle this site may read. Use as a context manager.

    ``records()`` streams the records (validated, Body SHA-256 checked) and
    raises BundleRejected subclasses on anything wrong, the last check being at
    the end of the iteration (see the module docstring).
    """

    def __init__(self, verified: VerifiedBundle, payload_key: bytes | None,
                 limits: Limits, header: BundleHeader | None = None) -> None:
        self.verified = verified
        self._payload_key = payload_key
        found = header if header is not None else verified.header
        assert found is not None
        self._header = found
        self._limits = limits
        self._active: list[Iterator[object]] = []
        # Decompressed bytes of the record stream read so far by records().
        self.content_size = 0

    @classmethod
    def from_verified(cls, verified: VerifiedBundle, *, identity: SiteIdentity | None,
                      limits: Limits = DEFAULT_LIMITS) -> OpenBundle:
        """Open an already verified bundle (NotARecipient if this site cannot read it)."""
        try:
            if verified.clear is not None:
                return cls._open_v2(verified, verified.clear, identity=identity, limits=limits)
            assert verified.header is not None
            payload_key = None
            if verified.header.encryption is not None:
                payload_key = unwrap_payload_key(verified.header.encryption, identity)
        except BaseException:
            verified.close()
            raise
        return cls(verified, payload_key, limits)

    @classmethod
    def _open_v2(cls, verified: VerifiedBundle, clear: ClearHeader, *,
                 identity: SiteIdentity | None, limits: Limits) -> OpenBundle:
        """Unseal the file key (MAC checked first) and the inner header (bundle-v2 §8)."""
        payload_key = None
        inner = verified._inner
        if clear.encrypted:
            keys = open_file_key(clear, identity, header_hash(clear))
            payload_key = keys.payload
            inner = open_inner(keys.inner, inner)
        header = decode_inner(inner, clear, origin_key=verified.signer.signing_public,
                              limits=limits)
        _same_name(header.origin_name, verified.signer)
        return cls(verified, payload_key, limits, header)

    @property
    def header(self) -> BundleHeader:
        """The verified header (for version 2: the clear and inner headers together)."""
        return self._header

    @property
    def signer(self) -> PeerCard:
        return self.verified.signer

    @property
    def paths(self) -> tuple[Path, ...]:
        return self.verified.paths

    @property
    def size(self) -> int:
        return self.verified.size

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for iterator in self._active:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        self._active.clear()
        self.verified.close()

    def records(self) -> Iterator[Record]:
        """The records, in order (see the class docstring)."""
        iterator = self._records()
        self._active.append(iterator)
        return iterator

    def records_as_received(self) -> Iterator[tuple[Record, bytes]]:
        """The records with their encodings: (record, bytes) in order.

        For a change or a want, ``bytes`` is the record exactly as the bundle
        carries it; the decoder accepts one encoding per record only (bundle-v1
        §6.3), so these are the bytes the record encodes to, and a caller that
        keeps the record encoded need not encode it again. For a body it is empty
        (the body's bytes are its data). Checked as :meth:`records` is.
        """
        iterator = self._entries()
        self._active.append(iterator)
        return iterator

    def frames(self) -> Iterator[bytes]:
        """The decompressed frame contents (for statistics; records() checks more)."""
        v = self.verified
        hasher = v._prefix_hash.copy()
        blocks = v._stream.iter_range(v._body_start, v._body_end)

        def hashed() -> Iterator[bytes]:
            for block in blocks:
                hasher.update(block)
                yield block

        plain: Iterator[bytes] = hashed()
        chunk = None
        if v.clear is not None:
            chunk = v.clear.chunk_size
        elif self.header.encryption is not None:
            chunk = self.header.encryption.chunk_size
        if chunk is not None:
            assert self._payload_key is not None
            sealed = ByteSource(plain, short=lambda: Truncated("The encrypted body is cut."))
            sizes = chunk_sizes(v._body_end - v._body_start, chunk)
            plain = decrypt_stream((sealed.read(n) for n in sizes), self._payload_key)
        source = ByteSource(plain, short=lambda: Malformed("The body ends inside a frame."))
        yield from iter_frames(source, frame_size=self.header.frame_size, limits=self._limits)
        if v.clear is not None:
            if not source.rest_is_zero():  # bundle-v2 §6: only zero padding may follow
                raise Malformed("The body has data other than padding after its end frame.")
        elif not source.at_end():
            raise Malformed("The body has data after its end frame.")
        if hasher.digest() != v._digest:
            # The private copy cannot change under us; this guards the local disk.
            raise SignatureInvalid("The bundle changed while it was being read; its records "
                                   "must not be used.")

    def _records(self) -> Iterator[Record]:
        entries = self._entries()
        try:
            for record, _encoding in entries:
                yield record
        finally:
            entries.close()

    def _entries(self) -> Generator[tuple[Record, bytes], None, None]:
        limits = self._limits
        expected = self.header.counts
        seen = dict.fromkeys(RECORD_KINDS, 0)
        buffer = bytearray()
        number = 0
        self.content_size = 0
        for frame in self.frames():
            self.content_size += len(frame)
            buffer += frame
            cursor = cbor.Cursor(buffer)
            while cursor.pos < len(buffer):
                start = cursor.pos
                try:
                    record = decode_record(cursor, limits)
                except cbor.IncompleteError:
                    cursor.pos = start
                    break
                except cbor.CborLimitError as exc:
                    raise LimitExceeded(f"Record {number} of the bundle: {exc}.") from None
                except cbor.CborError as exc:
                    raise Malformed(f"Record {number} of the bundle is invalid: {exc}."
                                    ) from None
                kind = record_kind(record)
                seen[kind] += 1
                if seen[kind] > expected.get(kind, 0):
                    raise Malformed(f"The bundle holds more {kind} records than the "
                                    f"{expected.get(kind, 0)} its header announces.")
                if isinstance(record, Body):
                    if not body_hash_matches(record):
                        raise BodyHashMismatch(f"Record {number}: a message body does not "
                                               f"match its SHA-256 {record.sha256}.")
                    encoding = b""
                else:
                    # Released at once, so the buffer can grow again below.
                    with memoryview(buffer) as view:
                        encoding = view[start:cursor.pos].tobytes()
                number += 1
                yield record, encoding
            del buffer[:cursor.pos]
        if buffer:
            raise Malformed("The body ends inside a record.")
        differ = [f"{seen[k]} {k} (header: {expected.get(k, 0)})" for k in RECORD_KINDS
                  if seen[k] != expected.get(k, 0)]
        if differ:
            raise Malformed(f"The bundle holds other numbers of records than its header "
                            f"announces: {', '.join(differ)}.")


def open_bundle(path: Path, *, identity: SiteIdentity | None, trust: TrustLookup,
                limits: Limits = DEFAULT_LIMITS, scratch: Path | None = None) -> OpenBundle:
    """Copy the bundle at ``path`` privately, verify it and open it for its records.

    The signature (signer in ``trust``, or this site itself) and the whole copy
    are checked before this returns; an encrypted bundle must name this site as
    a recipient (NotARecipient otherwise). ``header`` of the result is the
    verified header: act on it, never on :func:`read_header`'s.
    """
    verified = verify_bundle(path, trust=trust, identity=identity, limits=limits,
                             scratch=scratch)
    return OpenBundle.from_verified(verified, identity=identity, limits=limits)


# Records a reader thread may have decoded ahead of the caller: bytes of bodies
# (a change record counts as 1 KiB), so memory stays bounded whatever the sizes.
# Each MiB allowed here cost about 2 MiB of peak RSS in a first import (the bodies,
# the frames they were cut from, the allocator's arenas), and 8 MiB -- a few
# hundred bodies -- kept the reader as far ahead as 32 MiB did.
READ_AHEAD_BYTES = 8 * 1024 * 1024
_CHANGE_WEIGHT = 1024
# Records are handed over in batches of at most this many: a lock round and a
# thread switch per record cost more than the decoding of a small change record.
READ_AHEAD_BATCH = 256

T = TypeVar("T")


def record_weight(record: Record) -> int:
    """What a record counts for against the read-ahead bound."""
    return len(record.data) if isinstance(record, Body) else _CHANGE_WEIGHT


def received_weight(entry: tuple[Record, bytes]) -> int:
    """:func:`record_weight` of a (record, encoding) pair of ``records_as_received``."""
    return record_weight(entry[0])


class _Handover(Generic[T]):
    """The batches between the reader thread and the caller, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.lock = threading.Condition()
        self.max_bytes = max_bytes
        self.ready: deque[tuple[list[T], BaseException | None, int]] = deque()
        self.waiting = 0  # bytes of the batches ready
        self.stopped = False
        self.done = False

    def put(self, batch: list[T], size: int) -> bool:
        """Hand a batch over, waiting while the bound is reached; False once stopped."""
        with self.lock:
            # Only while the caller has something to take: no wait for ever.
            while self.waiting and self.waiting + size > self.max_bytes and not self.stopped:
                self.lock.wait()
            if self.stopped:
                return False
            self.ready.append((batch, None, size))
            self.waiting += size
            self.lock.notify_all()
            return True

    def finish(self, failure: BaseException | None) -> None:
        """The reader is done; its error (if any) goes to the caller after the rest."""
        with self.lock:
            if failure is not None:
                self.ready.append(([], failure, 0))
            self.done = True
            self.lock.notify_all()

    def take(self) -> tuple[list[T], BaseException | None] | None:
        """The next ready batch (and the reader's error after it); None at the end."""
        with self.lock:
            while not self.ready and not self.done:
                self.lock.wait()
            if not self.ready:
                return None
            items, failure, size = self.ready.popleft()
            self.waiting -= size
            self.lock.notify_all()
            return items, failure

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            self.lock.notify_all()


def read_ahead(items: Iterator[T], *, weigh: Callable[[T], int],
               max_bytes: int = READ_AHEAD_BYTES) -> Generator[T, None, None]:
    """``items`` (records), decoded by a thread of its own ahead of the caller.

    Decompression, decryption and hashing release the GIL: they run while the
    caller folds and spools the records before them. Items cross in batches (of
    ``READ_AHEAD_BATCH`` items, or fewer once they weigh a 32nd of
    ``max_bytes``): at most ``max_bytes`` (as ``weigh`` counts them) wait, besides
    the batch being filled and the one the caller is taking; a single larger
    item is let through alone. An error of the reader is raised to the caller
    at the item where it happened, in order; when the caller stops early (an
    error of its own, or ``close``), the thread is stopped and joined before
    this returns, so the bundle can be closed.
    """
    handover: _Handover[T] = _Handover(max_bytes)
    batch_bytes = max(max_bytes // 32, 1)

    def produce() -> None:
        failure: BaseException | None = None
        batch: list[T] = []
        held = 0
        try:
            for item in items:
                batch.append(item)
                held += weigh(item)
                if held >= batch_bytes or len(batch) >= READ_AHEAD_BATCH:
                    if not handover.put(batch, held):
                        return
                    batch, held = [], 0
        except BaseException as exc:  # handed to the caller, raised there
            failure = exc
        finally:
            # What was read before an error goes first, so it is raised in its place.
            if batch and not handover.put(batch, held):
                failure = None
            handover.finish(failure)

    thread = threading.Thread(target=produce, name="bundle-reader", daemon=True)
    thread.start()
    try:
        while (taken := handover.take()) is not None:
            batch, failure = taken
            yield from batch
            if failure is not None:
                raise failure
    finally:
        handover.stop()
        thread.join()
        closer = getattr(items, "close", None)
        if closer is not None:
            closer()
