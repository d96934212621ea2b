"""Reading a bundle (bundle-v1 §10): check everything, then stream the records.

Reading is two passes over the file (the second usually from the page cache):

1. :func:`verify_bundle` checks the volumes, the header, the trailer and the
   signer, then hashes every signed byte and checks the COSE_Sign1 -- before a
   single body byte is decrypted, decompressed or decoded.
2. :meth:`OpenBundle.records` reads the body again, decrypts, decompresses and
   decodes it frame by frame with bounded memory, checks every Body's SHA-256,
   the record counts, and hashes the bytes once more: if the file changed
   between the passes the iterator raises SignatureInvalid at its end. Callers
   must therefore treat the records as applied only once the iterator is
   exhausted without error (the import journal does).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from bundlesync.core.model import Body, Record
from bundlesync.format import cbor
from bundlesync.format.cose import CoseSign1, parse_sign1, signature_valid
from bundlesync.format.crypto import chunk_sizes, decrypt_stream, unwrap_payload_key
from bundlesync.format.errors import (
    BodyHashMismatch,
    DropUnreadable,
    LimitExceeded,
    Malformed,
    SignatureInvalid,
    Truncated,
    UnknownSigner,
    VolumeMismatch,
)
from bundlesync.format.frames import ByteSource, iter_frames
from bundlesync.format.header import BundleHeader, decode_header
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
    is_first_volume_name,
    locate_volumes,
    read_volume,
)
from bundlesync.keys import PeerCard, SiteIdentity, TrustLookup, site_id_of

_U32 = struct.Struct(">I")
_SIGNED_PREFIX = MAGIC + struct.pack(">H", FORMAT_VERSION)


# --- the header alone -----------------------------------------------------------------


def read_header(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> BundleHeader:
    """The header of the bundle at ``path`` -- UNVERIFIED: for listing a drop only.

    Reads at most the volume head and ``limits.max_header`` bytes of the first
    volume. Nothing in the result may be trusted before :func:`open_bundle`.
    """
    volume, size = read_volume(path)
    header_bytes = _read_header_bytes(LogicalStream([volume]), volume, size, limits)
    return decode_header(header_bytes, limits)


def _read_header_bytes(stream: LogicalStream, first: Volume, first_size: int,
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


# --- verification ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle whose structure and signature were checked (body not yet read)."""

    header: BundleHeader
    signer: PeerCard
    paths: tuple[Path, ...]
    size: int
    body_size: int
    _stream: LogicalStream = field(repr=False, compare=False)
    _body_start: int = field(repr=False, compare=False)
    _body_end: int = field(repr=False, compare=False)
    _digest: bytes = field(repr=False, compare=False)
    _prefix_hash: hashlib._Hash = field(repr=False, compare=False)


def _trusted_signer(header: BundleHeader, sign1: CoseSign1, trust: TrustLookup,
                    identity: SiteIdentity | None) -> PeerCard:
    if site_id_of(header.origin_key) != header.origin_site:
        raise Malformed("The bundle's origin site id does not belong to its origin key.")
    if sign1.kid != bytes.fromhex(header.origin_site):
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


def verify_bundle(path: Path, *, trust: TrustLookup, identity: SiteIdentity | None = None,
                  limits: Limits = DEFAULT_LIMITS) -> VerifiedBundle:
    """Check the bundle at ``path`` (its first volume) before any body byte is used.

    Order (bundle-v1 §10.2): volumes, header, trailer, signer, then one hashing
    pass and the signature. Raises BundleRejected subclasses.
    """
    volumes = locate_volumes(path, limits)
    stream = LogicalStream(volumes)
    first_size = VOLUME_HEAD_SIZE + volumes[0].head.length
    header_bytes = _read_header_bytes(stream, volumes[0], first_size, limits)
    header = decode_header(header_bytes, limits)
    body_start = HEADER_LENGTH_SIZE + len(header_bytes)
    if stream.length < body_start + TRAILER_FIXED_SIZE:
        raise Truncated("The bundle ends before its signature.")
    tail = stream.read_at(stream.length - TRAILER_FIXED_SIZE, TRAILER_FIXED_SIZE)
    if tail[4:] != END_MAGIC:
        raise Truncated("The bundle does not end with its signature: it was not completely "
                        "written or copied.")
    (sign_length,) = _U32.unpack(tail[:4])
    if sign_length > limits.max_trailer:
        raise Malformed(f"The bundle's signature claims {sign_length} bytes.")
    body_end = stream.length - TRAILER_FIXED_SIZE - sign_length
    if body_end < body_start:
        raise Malformed("The bundle's signature overlaps its header.")
    sign1 = parse_sign1(stream.read_at(body_end, sign_length), limits)
    signer = _trusted_signer(header, sign1, trust, identity)

    hasher = hashlib.sha256(_SIGNED_PREFIX)
    hasher.update(stream.read_at(0, body_start))
    prefix_hash = hasher.copy()
    for block in stream.iter_range(body_start, body_end):
        hasher.update(block)
    digest = hasher.digest()
    if digest != sign1.payload:
        raise SignatureInvalid(f"The bundle's bytes do not match the signature of "
                               f"{signer.name!r}: it was damaged or altered.")
    if not signature_valid(sign1, header.origin_key):
        raise SignatureInvalid(f"The bundle's signature is not a valid signature by "
                               f"{signer.name!r}.")
    if hashlib.sha256(header_bytes).digest()[:TAG_SIZE] != volumes[0].head.tag:
        raise Malformed("The volume head does not belong to this bundle's header.")
    return VerifiedBundle(
        header=header, signer=signer, paths=tuple(v.path for v in volumes),
        size=sum(VOLUME_HEAD_SIZE + v.head.length for v in volumes),
        body_size=body_end - body_start, _stream=stream, _body_start=body_start,
        _body_end=body_end, _digest=digest, _prefix_hash=prefix_hash)


# --- opening --------------------------------------------------------------------------


class OpenBundle:
    """A verified bundle this site may read. Use as a context manager.

    ``records()`` streams the records (validated, Body SHA-256 checked) and
    raises BundleRejected subclasses on anything wrong, the last check being at
    the end of the iteration (see the module docstring).
    """

    def __init__(self, verified: VerifiedBundle, payload_key: bytes | None,
                 limits: Limits) -> None:
        self.verified = verified
        self._payload_key = payload_key
        self._limits = limits
        self._active: list[Iterator[Record]] = []
        # Decompressed bytes of the record stream read so far by records().
        self.content_size = 0

    @classmethod
    def from_verified(cls, verified: VerifiedBundle, *, identity: SiteIdentity | None,
                      limits: Limits = DEFAULT_LIMITS) -> OpenBundle:
        """Open an already verified bundle (NotARecipient if this site cannot read it)."""
        payload_key = None
        if verified.header.encryption is not None:
            payload_key = unwrap_payload_key(verified.header.encryption, identity)
        return cls(verified, payload_key, limits)

    @property
    def header(self) -> BundleHeader:
        return self.verified.header

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

    def records(self) -> Iterator[Record]:
        iterator = self._records()
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
        enc = v.header.encryption
        if enc is not None:
            assert self._payload_key is not None
            sealed = ByteSource(plain, short=lambda: Truncated("The encrypted body is cut."))
            sizes = chunk_sizes(v._body_end - v._body_start, enc.chunk_size)
            plain = decrypt_stream((sealed.read(n) for n in sizes), self._payload_key)
        source = ByteSource(plain, short=lambda: Malformed("The body ends inside a frame."))
        yield from iter_frames(source, frame_size=v.header.frame_size, limits=self._limits)
        if not source.at_end():
            raise Malformed("The body has data after its end frame.")
        if hasher.digest() != v._digest:
            raise SignatureInvalid("The bundle changed while it was being read; its records "
                                   "must not be used.")

    def _records(self) -> Iterator[Record]:
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
                if isinstance(record, Body) and not body_hash_matches(record):
                    raise BodyHashMismatch(f"Record {number}: a message body does not match "
                                           f"its SHA-256 {record.sha256}.")
                number += 1
                yield record
            del buffer[:cursor.pos]
        if buffer:
            raise Malformed("The body ends inside a record.")
        differ = [f"{seen[k]} {k} (header: {expected.get(k, 0)})" for k in RECORD_KINDS
                  if seen[k] != expected.get(k, 0)]
        if differ:
            raise Malformed(f"The bundle holds other numbers of records than its header "
                            f"announces: {', '.join(differ)}.")


def open_bundle(path: Path, *, identity: SiteIdentity | None, trust: TrustLookup,
                limits: Limits = DEFAULT_LIMITS) -> OpenBundle:
    """Verify the bundle at ``path`` and open it for reading its records.

    The signature (signer in ``trust``, or this site itself) and the whole file
    are checked before this returns; an encrypted bundle must name this site as
    a recipient (NotARecipient otherwise).
    """
    verified = verify_bundle(path, trust=trust, identity=identity, limits=limits)
    return OpenBundle.from_verified(verified, identity=identity, limits=limits)


# --- drops ----------------------------------------------------------------------------


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
