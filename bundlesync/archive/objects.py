"""The archive's files as bytes: sealing, signatures, packs, indexes, snapshots.

Pure functions over bytes (``formats/archive-v1.md``); the directory and its
crash-safe writes are in :mod:`bundlesync.archive.repository`.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import cbor2
import zstandard
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bundlesync.archive.errors import ArchiveDamaged
from bundlesync.format import cbor
from bundlesync.format.cose import ALG_EDDSA, COSE_SIGN1_TAG, HEADER_ALG, HEADER_KID
from bundlesync.keys import SiteIdentity

CONFIG_MAGIC = b"BSARCHV1"
PACK_MAGIC = b"BSPACKV1"
INDEX_MAGIC = b"BSINDXV1"
SNAPSHOT_MAGIC = b"BSSNAPV1"
EXTERNAL_AAD = b"bundlesync archive v1"  # archive-v1 §3.3
CTX_SEGMENT = b"bundlesync-archive-v1 segment"
CTX_PACK_HEADER = b"bundlesync-archive-v1 pack header"
CTX_INDEX = b"bundlesync-archive-v1 index"
CTX_SNAPSHOT = b"bundlesync-archive-v1 snapshot"
DATA_INFO = b"bundlesync-archive-v1 data"
NONCE_SIZE = 12
TAG_SIZE = 16

# archive-v1 §13
MAX_CONFIG = 64 * 1024
MAX_SIGNED_FILE = 256 * 1024 * 1024
MAX_PACK_HEADER = 64 * 1024 * 1024
MAX_SEGMENT_PLAIN = 8 * 1024 * 1024
SEGMENT_TARGET = 1024 * 1024
ZSTD_LEVEL = 3

BLOB_BODY = 0
BLOB_TREE = 1

_U32 = struct.Struct(">I")
RandomBytes = Callable[[int], bytes]


def data_key(archive_key: bytes, archive_id: bytes) -> bytes:
    """The key every sealed object uses (archive-v1 §3.2)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=archive_id,
                info=DATA_INFO).derive(archive_key)


def seal(key: bytes, context: bytes, plaintext: bytes, *,
         random_bytes: RandomBytes = os.urandom) -> bytes:
    nonce = random_bytes(NONCE_SIZE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, context)


def unseal(key: bytes, context: bytes, sealed: bytes, *, what: str) -> bytes:
    if len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise ArchiveDamaged(f"{what} is cut short.")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], context)
    except InvalidTag:
        raise ArchiveDamaged(f"{what} does not authenticate: it was altered or damaged.") from None


# --- signatures (archive-v1 §3.3) --------------------------------------------------------


def _protected(site_id: str) -> bytes:
    return cbor.encode({HEADER_ALG: ALG_EDDSA, HEADER_KID: bytes.fromhex(site_id)})


def _sig_structure(protected: bytes, digest: bytes) -> bytes:
    return cbor.encode(["Signature1", protected, EXTERNAL_AAD, digest])


def sign(identity: SiteIdentity, signed: bytes) -> bytes:
    """A tagged COSE_Sign1 over SHA-256(``signed``) by the site."""
    digest = hashlib.sha256(signed).digest()
    protected = _protected(identity.site_id)
    signature = identity.sign(_sig_structure(protected, digest))
    return cbor.encode(cbor.Tagged(COSE_SIGN1_TAG, [protected, {}, digest, signature]))


def verify(signing_public: bytes, signed: bytes, signature: bytes, *, what: str) -> None:
    """Raise ArchiveDamaged unless ``signature`` is the site's over ``signed``."""
    bounds = cbor.DecodeBounds(max_depth=4, max_items=8, max_text=64, max_bytes=256,
                               tags=frozenset({COSE_SIGN1_TAG}))
    try:
        value = cbor.decode(signature, bounds)
    except cbor.CborError:
        raise ArchiveDamaged(f"{what}: its signature is unreadable.") from None
    items = value.value if isinstance(value, cbor.Tagged) else None
    if (not isinstance(items, list) or len(items) != 4 or not isinstance(items[0], bytes)
            or not isinstance(items[2], bytes) or not isinstance(items[3], bytes)):
        raise ArchiveDamaged(f"{what}: its signature is not a COSE_Sign1.")
    protected, unprotected, digest, sig = items
    if unprotected != {}:
        raise ArchiveDamaged(f"{what}: its signature has unprotected header parameters.")
    if digest != hashlib.sha256(signed).digest():
        raise ArchiveDamaged(f"{what} does not match its signature: it was altered.")
    try:
        Ed25519PublicKey.from_public_bytes(signing_public).verify(
            sig, _sig_structure(protected, digest))
    except (InvalidSignature, ValueError):
        raise ArchiveDamaged(f"{what} is not signed by the archive's site.") from None


# --- signed, sealed files (index, snapshot: archive-v1 §6, §7) ---------------------------


def write_signed(magic: bytes, payload: bytes, identity: SiteIdentity) -> bytes:
    head = magic + _U32.pack(len(payload)) + payload
    return head + sign(identity, head)


def read_signed(data: bytes, magic: bytes, signing_public: bytes, *, what: str,
                limit: int = MAX_SIGNED_FILE) -> bytes:
    """The payload of a signed file, after its signature is checked."""
    if len(data) > limit:
        raise ArchiveDamaged(f"{what} is larger than any writer makes.")
    if len(data) < len(magic) + 4 or data[:len(magic)] != magic:
        raise ArchiveDamaged(f"{what} is not an archive file of this kind (bad magic).")
    (length,) = _U32.unpack_from(data, len(magic))
    end = len(magic) + 4 + length
    if end > len(data):
        raise ArchiveDamaged(f"{what} is cut short.")
    verify(signing_public, data[:end], data[end:], what=what)
    return data[len(magic) + 4:end]


def encode_sealed_cbor(key: bytes, context: bytes, value: object) -> bytes:
    return seal(key, context, cbor2.dumps(value, canonical=True))


def decode_sealed_cbor(key: bytes, context: bytes, sealed: bytes, *, what: str) -> object:
    plain = unseal(key, context, sealed, what=what)
    try:
        return cbor2.loads(plain)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError):
        raise ArchiveDamaged(f"{what} holds invalid CBOR.") from None


# --- packs (archive-v1 §5) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Where one blob is: its pack and its place in one segment."""

    kind: int
    id: bytes
    pack: bytes
    segment_offset: int
    segment_length: int
    offset: int
    length: int

    def entry(self) -> list[object]:
        return [self.kind, self.id, self.segment_offset, self.segment_length,
                self.offset, self.length]


def parse_entry(entry: object, pack: bytes, *, what: str) -> BlobRef:
    # Called once per blob of the archive when the index is loaded (every restore and
    # check): the same checks as before, unrolled, cost a third of a generator's.
    if isinstance(entry, list) and len(entry) == 6:
        kind, blob_id, segment_offset, segment_length, offset, length = entry
        if (isinstance(segment_offset, int) and isinstance(segment_length, int)
                and isinstance(offset, int) and isinstance(length, int)
                and kind in (BLOB_BODY, BLOB_TREE)
                and isinstance(blob_id, bytes) and len(blob_id) == 32):
            return BlobRef(kind, blob_id, pack, segment_offset, segment_length, offset, length)
    raise ArchiveDamaged(f"{what} lists a malformed blob entry.")


class PackBuilder:
    """Collects blobs into zstd segments and seals them into one pack file in memory."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._parts: list[bytes] = [PACK_MAGIC]
        self._size = len(PACK_MAGIC)
        self._segment = bytearray()
        self._pending: list[tuple[int, bytes, int, int]] = []  # kind, id, offset, length
        self._entries: list[list[object]] = []
        self._raw: list[tuple[bytes, list[tuple[int, bytes, int, int]]]] = []
        self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.blob_bytes = 0

    @property
    def size(self) -> int:
        return self._size + len(self._segment) // 2  # a guess of the compressed size

    def __len__(self) -> int:
        return len(self._entries) + len(self._pending) + sum(len(p) for _r, p in self._raw)

    def add(self, kind: int, blob_id: bytes, data: bytes) -> None:
        if self._segment and len(self._segment) + len(data) > SEGMENT_TARGET:
            self._flush_segment()
        self._pending.append((kind, blob_id, len(self._segment), len(data)))
        self._segment += data
        self.blob_bytes += len(data)

    def _flush_segment(self) -> None:
        # Only cut here; compressing and sealing wait for finish(), which the backup runs
        # in its writer thread (zstd releases the GIL).
        if not self._pending:
            return
        self._raw.append((bytes(self._segment), list(self._pending)))
        self._size += len(self._segment) // 2  # a guess: mail compresses to about half
        self._pending.clear()
        self._segment.clear()

    def finish(self) -> tuple[bytes, list[list[object]]]:
        """The pack's bytes and its entries (segment offsets filled in)."""
        self._flush_segment()
        size = len(PACK_MAGIC)
        self._raw.reverse()
        while self._raw:  # each raw segment is dropped as soon as it is sealed (memory)
            raw, pending = self._raw.pop()
            sealed = seal(self._key, CTX_SEGMENT, self._compressor.compress(raw))
            del raw
            self._parts.append(sealed)
            for kind, blob_id, inner, length in pending:
                self._entries.append([kind, blob_id, size, len(sealed), inner, length])
            size += len(sealed)
        header = encode_sealed_cbor(self._key, CTX_PACK_HEADER, self._entries)
        data = b"".join([*self._parts, header, _U32.pack(len(header))])
        return data, list(self._entries)


def read_segment(key: bytes, sealed: bytes, *, what: str) -> bytes:
    compressed = unseal(key, CTX_SEGMENT, sealed, what=what)
    try:
        return zstandard.ZstdDecompressor().decompress(compressed,
                                                       max_output_size=MAX_SEGMENT_PLAIN)
    except zstandard.ZstdError:
        raise ArchiveDamaged(f"{what} does not decompress.") from None


def read_pack_header(key: bytes, data: bytes, *, what: str) -> list[object]:
    if len(data) < len(PACK_MAGIC) + 4 or data[:len(PACK_MAGIC)] != PACK_MAGIC:
        raise ArchiveDamaged(f"{what} is not a pack (bad magic).")
    (length,) = _U32.unpack_from(data, len(data) - 4)
    if length > MAX_PACK_HEADER or length > len(data) - len(PACK_MAGIC) - 4:
        raise ArchiveDamaged(f"{what} has an impossible header length.")
    value = decode_sealed_cbor(key, CTX_PACK_HEADER, data[len(data) - 4 - length:-4],
                               what=f"{what} (header)")
    if not isinstance(value, list):
        raise ArchiveDamaged(f"{what} has a malformed header.")
    return value


def hex_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
