"""The bundle header: its value types and its canonical CBOR map (bundle-v1 §4).

The header is public (it is not encrypted): it says who wrote the bundle, for
whom, what the origin acknowledges, how many records of each kind follow and how
the body is compressed and encrypted. It never names a user, a mailbox or a
message (bundle-v1 §14).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bundlesync.core.model import Stream, VersionVector
from bundlesync.format import cbor
from bundlesync.format.errors import LimitExceeded, Malformed, UnsupportedVersion
from bundlesync.format.limits import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    READABLE_RECORDS_VERSIONS,
    RECORDS_VERSION,
    Limits,
)
from bundlesync.format.records import (
    KIND_WANT,
    OPTIONAL_KINDS,
    RECORD_KINDS,
    site_bytes,
    site_hex,
)
from bundlesync.keys import SITE_NAME_RE

KIND_SYNC = "sync"
KIND_ARCHIVE = "archive"
BUNDLE_KINDS = (KIND_SYNC, KIND_ARCHIVE)
COMPRESSION_ZSTD = "zstd"
ENCRYPTION_ALG = "x25519-hkdf-sha256-chacha20poly1305-stream"
# bundle-v1 §4.3: capabilities a reader must understand. v1 defines none.
KNOWN_CAPABILITIES: frozenset[str] = frozenset()

_HEADER_KEYS = frozenset({
    "records", "id", "created", "kind", "origin", "recipients", "ack", "assumes",
    "counts", "compression", "encryption", "capabilities",
})
_UINT64_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True, order=True)
class BundleId:
    """The unique name of a bundle: the origin's n-th bundle in one incarnation."""

    site: str
    incarnation: int
    seq: int


@dataclass(frozen=True, slots=True)
class Stanza:
    """The file key wrapped for one recipient (bundle-v1 §7.2)."""

    recipient: str  # site id
    ephemeral: bytes  # X25519 public key, 32 bytes
    wrapped: bytes  # ChaCha20-Poly1305 ciphertext of the file key, 48 bytes


@dataclass(frozen=True, slots=True)
class EncryptionParams:
    """How the body is encrypted (bundle-v1 §7)."""

    chunk_size: int
    salt: bytes
    stanzas: tuple[Stanza, ...]
    alg: str = ENCRYPTION_ALG


@dataclass(frozen=True, slots=True)
class BundleHeader:
    """Everything the header says (bundle-v1 §4.2). ``counts`` has every record kind."""

    bundle_id: BundleId
    created_ms: int
    kind: str
    origin_site: str
    origin_name: str
    origin_key: bytes
    recipients: tuple[str, ...]
    ack: VersionVector
    assumes: VersionVector
    counts: Mapping[str, int] = field(hash=False)
    frame_size: int
    encryption: EncryptionParams | None = None
    capabilities: tuple[str, ...] = ()
    records_version: int = RECORDS_VERSION
    compression: str = COMPRESSION_ZSTD
    # Bundle format version (bundle-v2 §4); a version 2 header is the clear header
    # and the inner header together, and ``sealed`` says the body was encrypted.
    format_version: int = 1
    sealed: bool = False

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None or self.sealed

    @property
    def record_count(self) -> int:
        return sum(self.counts.values())


# --- encoding -------------------------------------------------------------------------


def _vv_to_cbor(vv: VersionVector) -> list[list[object]]:
    return [[site_bytes(s.site, "version vector site"), s.incarnation, n]
            for s, n in vv.entries]


def encode_header(header: BundleHeader) -> bytes:
    """The canonical CBOR encoding of ``header`` (bundle-v1 §4.2)."""
    encryption: object = None
    if header.encryption is not None:
        e = header.encryption
        encryption = {
            "alg": e.alg,
            "chunk": e.chunk_size,
            "salt": e.salt,
            "stanzas": [[site_bytes(s.recipient, "recipient"), s.ephemeral, s.wrapped]
                        for s in e.stanzas],
        }
    value = {
        "records": header.records_version,
        "id": [site_bytes(header.bundle_id.site, "bundle id site"),
               header.bundle_id.incarnation, header.bundle_id.seq],
        "created": header.created_ms,
        "kind": header.kind,
        "origin": {"site": site_bytes(header.origin_site, "origin site"),
                   "name": header.origin_name, "key": header.origin_key},
        "recipients": [site_bytes(r, "recipient") for r in header.recipients],
        "ack": _vv_to_cbor(header.ack),
        "assumes": _vv_to_cbor(header.assumes),
        "counts": {kind: header.counts.get(kind, 0) for kind in RECORD_KINDS
                   if kind not in OPTIONAL_KINDS or header.counts.get(kind, 0)},
        "compression": {"alg": header.compression, "frame": header.frame_size},
        "encryption": encryption,
        "capabilities": sorted(header.capabilities),
    }
    return cbor.encode(value)


# --- decoding -------------------------------------------------------------------------


def decode_header(data: bytes, limits: Limits) -> BundleHeader:
    """Decode and validate a header (bundle-v1 §4). Raises BundleRejected subclasses."""
    bounds = cbor.DecodeBounds(max_depth=limits.max_depth, max_items=limits.max_header_items,
                               max_text=limits.max_text, max_bytes=limits.max_text)
    try:
        value = cbor.decode(data, bounds)
    except cbor.CborLimitError as exc:
        raise LimitExceeded(f"The bundle header exceeds a limit: {exc}.") from None
    except cbor.CborError as exc:
        raise Malformed(f"The bundle header is not valid deterministic CBOR: {exc}.") from None
    return _HeaderReader(limits).header(value)


class _HeaderReader:
    """Checks the decoded header map field by field, with precise messages."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def fail(self, what: str) -> Malformed:
        return Malformed(f"The bundle header is malformed: {what}.")

    def map(self, value: object, keys: frozenset[str], what: str) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.fail(f"{what} is not a map")
        missing = keys - value.keys()
        extra = value.keys() - keys
        if missing:
            raise self.fail(f"{what} lacks {', '.join(sorted(missing))}")
        if extra:
            raise self.fail(f"{what} has unknown keys {sorted(map(str, extra))}")
        return {str(k): v for k, v in value.items()}

    def uint(self, value: object, what: str, *, maximum: int = _UINT64_MAX) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(f"{what} is not an unsigned integer")
        if value > maximum:
            raise LimitExceeded(f"The bundle header's {what} is {value} (limit {maximum}).")
        return value

    def text(self, value: object, what: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"{what} is not a text string")
        return value

    def raw(self, value: object, size: int, what: str) -> bytes:
        if not isinstance(value, bytes) or len(value) != size:
            raise self.fail(f"{what} is not a {size}-byte string")
        return value

    def array(self, value: object, what: str, *, maximum: int) -> list[object]:
        if not isinstance(value, list):
            raise self.fail(f"{what} is not an array")
        if len(value) > maximum:
            raise LimitExceeded(
                f"The bundle header's {what} has {len(value)} items (limit {maximum}).")
        return value

    def site_name(self, value: object) -> str:
        # Names are shown to people and used in file names: the card rule, so
        # that no control character or path separator reaches a terminal or a path.
        name = self.text(value, "origin name")
        if not SITE_NAME_RE.match(name):
            raise self.fail(f"origin name {name!r} is not a valid site name")
        return name

    def site(self, value: object, what: str) -> str:
        return site_hex(self.raw(value, 16, what))

    def vv(self, value: object, what: str) -> VersionVector:
        items = self.array(value, what, maximum=self.limits.max_header_items)
        entries: list[tuple[Stream, int]] = []
        for index, item in enumerate(items):
            entry = self.array(item, f"{what}[{index}]", maximum=3)
            if len(entry) != 3:
                raise self.fail(f"{what}[{index}] is not [site, incarnation, counter]")
            stream = Stream(self.site(entry[0], f"{what}[{index}] site"),
                            self.uint(entry[1], f"{what}[{index}] incarnation"))
            counter = self.uint(entry[2], f"{what}[{index}] counter")
            if counter == 0:
                raise self.fail(f"{what}[{index}] has a zero counter")
            # Strictly increasing streams: one encoding per vector, no duplicates.
            if entries and stream <= entries[-1][0]:
                raise self.fail(f"{what} is not sorted by stream or repeats one")
            entries.append((stream, counter))
        return VersionVector(tuple(entries))

    def records_version(self, value: object) -> int:
        records_version = self.uint(value, "records version")
        if records_version not in READABLE_RECORDS_VERSIONS:
            raise UnsupportedVersion(
                f"The bundle uses record schema version {records_version}; this bundlesync "
                f"reads versions {', '.join(map(str, READABLE_RECORDS_VERSIONS))}.")
        return records_version

    def capabilities(self, value: object) -> tuple[str, ...]:
        capabilities = self.array(value, "capabilities", maximum=self.limits.max_header_items)
        caps = tuple(self.text(c, "a capability") for c in capabilities)
        if list(caps) != sorted(set(caps)):
            raise self.fail("capabilities are not sorted and unique")
        unknown = [c for c in caps if c not in KNOWN_CAPABILITIES]
        if unknown:
            raise UnsupportedVersion(
                f"The bundle needs features this bundlesync does not have: "
                f"{', '.join(map(repr, unknown))}.")
        return caps

    def bundle_id(self, value: object) -> BundleId:
        ident = self.array(value, "id", maximum=3)
        if len(ident) != 3:
            raise self.fail("id is not [site, incarnation, seq]")
        return BundleId(self.site(ident[0], "id site"), self.uint(ident[1], "incarnation"),
                        self.uint(ident[2], "sequence number"))

    def kind(self, value: object) -> str:
        kind = self.text(value, "kind")
        if kind not in BUNDLE_KINDS:
            raise UnsupportedVersion(f"The bundle is of kind {kind!r}, which this bundlesync "
                                     f"does not know.")
        return kind

    def recipients(self, value: object) -> tuple[str, ...]:
        recipients = tuple(
            self.site(r, "a recipient")
            for r in self.array(value, "recipients", maximum=self.limits.max_recipients))
        if list(recipients) != sorted(set(recipients)):
            raise self.fail("recipients are not sorted and unique")
        return recipients

    def counts(self, counts_value: object, records_version: int) -> dict[str, int]:
        optional_present = (frozenset(counts_value) & OPTIONAL_KINDS
                            if isinstance(counts_value, dict) else frozenset())
        required = frozenset(RECORD_KINDS) - OPTIONAL_KINDS
        counts_map = self.map(counts_value, required | optional_present, "counts")
        counts = {kind_name: self.uint(counts_map[kind_name], f"count of {kind_name}",
                                       maximum=self.limits.max_records)
                  for kind_name in RECORD_KINDS if kind_name in counts_map}
        if any(counts.get(kind_name) == 0 for kind_name in OPTIONAL_KINDS):
            raise self.fail("counts name an optional record kind with a count of 0")
        if records_version < 2 and KIND_WANT in counts:
            raise self.fail("a schema 1 bundle cannot hold want records")
        return counts

    def chunk_size(self, value: object) -> int:
        chunk = self.uint(value, "chunk size", maximum=MAX_CHUNK_SIZE)
        if chunk < MIN_CHUNK_SIZE:
            raise self.fail(f"chunk size {chunk} is below {MIN_CHUNK_SIZE}")
        return chunk

    def compression(self, value: object) -> tuple[str, int]:
        compression = self.map(value, frozenset({"alg", "frame"}), "compression")
        alg = self.text(compression["alg"], "compression algorithm")
        if alg != COMPRESSION_ZSTD:
            raise UnsupportedVersion(f"The bundle is compressed with {alg!r}, which this "
                                     f"bundlesync cannot read.")
        frame_size = self.uint(compression["frame"], "frame size",
                               maximum=self.limits.max_frame_content)
        if frame_size == 0:
            raise self.fail("frame size is zero")
        return alg, frame_size

    def clear(self, value: object) -> ClearHeader:
        top = self.map(value, _CLEAR_KEYS, "the header")
        version = self.uint(top["v"], "format version")
        if version != FORMAT_V2:
            raise UnsupportedVersion(f"The bundle header is of format version {version}; "
                                     f"this bundlesync reads versions 1 and 2.")
        bundle_id = self.bundle_id(top["id"])
        recipients = self.recipients(top["recipients"])
        clear = ClearHeader(bundle_id=bundle_id, kind=self.kind(top["kind"]),
                            recipients=recipients)
        if top["enc"] is None:
            return clear
        enc = self.map(top["enc"], _ENC_KEYS, "enc")
        chunk = self.chunk_size(enc["chunk"])
        stanzas = []
        for index, item in enumerate(self.array(enc["stanzas"], "stanzas",
                                                maximum=self.limits.max_recipients)):
            entry = self.array(item, f"stanza {index}", maximum=3)
            if len(entry) != 3:
                raise self.fail(f"stanza {index} is not [recipient, enc, sealed key]")
            stanzas.append(HpkeStanza(
                self.site(entry[0], f"stanza {index} recipient"),
                self.raw(entry[1], HPKE_ENC_SIZE, f"stanza {index} enc"),
                self.raw(entry[2], SEALED_FILE_KEY_SIZE, f"stanza {index} sealed key")))
        if tuple(s.recipient for s in stanzas) != recipients or not stanzas:
            raise self.fail("the stanzas do not match the recipients one for one")
        return ClearHeader(bundle_id=bundle_id, kind=clear.kind, recipients=recipients,
                           chunk_size=chunk, stanzas=tuple(stanzas),
                           mac=self.raw(enc["mac"], MAC_SIZE, "header MAC"))

    def inner(self, value: object, clear: ClearHeader, origin_key: bytes) -> BundleHeader:
        top = self.map(value, _INNER_KEYS, "the inner header")
        records_version = self.records_version(top["records"])
        caps = self.capabilities(top["capabilities"])
        origin = self.map(top["origin"], frozenset({"name"}), "origin")
        alg, frame_size = self.compression(top["compression"])
        return BundleHeader(
            bundle_id=clear.bundle_id,
            created_ms=self.uint(top["created"], "creation time"),
            kind=clear.kind,
            origin_site=clear.bundle_id.site,
            origin_name=self.site_name(origin["name"]),
            origin_key=origin_key,
            recipients=clear.recipients,
            ack=self.vv(top["ack"], "ack"),
            assumes=self.vv(top["assumes"], "assumes"),
            counts=MappingProxyType(self.counts(top["counts"], records_version)),
            frame_size=frame_size,
            capabilities=caps,
            records_version=records_version,
            compression=alg,
            format_version=FORMAT_V2,
            sealed=clear.encrypted,
        )

    def header(self, value: object) -> BundleHeader:
        top = self.map(value, _HEADER_KEYS, "the header")
        records_version = self.records_version(top["records"])
        caps = self.capabilities(top["capabilities"])
        bundle_id = self.bundle_id(top["id"])
        kind = self.kind(top["kind"])
        origin = self.map(top["origin"], frozenset({"site", "name", "key"}), "origin")
        origin_site = self.site(origin["site"], "origin site")
        if origin_site != bundle_id.site:
            raise self.fail("the bundle id's site is not the origin site")
        origin_key = self.raw(origin["key"], 32, "origin key")
        recipients = self.recipients(top["recipients"])
        counts = self.counts(top["counts"], records_version)
        alg, frame_size = self.compression(top["compression"])
        encryption = None
        if top["encryption"] is not None:
            encryption = self.encryption(top["encryption"], recipients)
        return BundleHeader(
            bundle_id=bundle_id,
            created_ms=self.uint(top["created"], "creation time"),
            kind=kind,
            origin_site=origin_site,
            origin_name=self.site_name(origin["name"]),
            origin_key=origin_key,
            recipients=recipients,
            ack=self.vv(top["ack"], "ack"),
            assumes=self.vv(top["assumes"], "assumes"),
            counts=MappingProxyType(counts),
            frame_size=frame_size,
            encryption=encryption,
            capabilities=caps,
            records_version=records_version,
            compression=alg,
        )

    def encryption(self, value: object, recipients: tuple[str, ...]) -> EncryptionParams:
        enc = self.map(value, frozenset({"alg", "chunk", "salt", "stanzas"}), "encryption")
        alg = self.text(enc["alg"], "encryption algorithm")
        if alg != ENCRYPTION_ALG:
            raise UnsupportedVersion(f"The bundle is encrypted with {alg!r}, which this "
                                     f"bundlesync cannot read.")
        chunk = self.chunk_size(enc["chunk"])
        stanzas = []
        for index, item in enumerate(self.array(enc["stanzas"], "stanzas",
                                                maximum=self.limits.max_recipients)):
            entry = self.array(item, f"stanza {index}", maximum=3)
            if len(entry) != 3:
                raise self.fail(f"stanza {index} is not [recipient, ephemeral, wrapped]")
            stanzas.append(Stanza(self.site(entry[0], f"stanza {index} recipient"),
                                  self.raw(entry[1], 32, f"stanza {index} ephemeral key"),
                                  self.raw(entry[2], 48, f"stanza {index} wrapped key")))
        if tuple(s.recipient for s in stanzas) != recipients or not stanzas:
            raise self.fail("the stanzas do not match the recipients one for one")
        return EncryptionParams(chunk_size=chunk, salt=self.raw(enc["salt"], 16, "salt"),
                                stanzas=tuple(stanzas), alg=alg)


# --- format version 2 (bundle-v2 §4, §5) ------------------------------------------------

FORMAT_V2 = 2
_CLEAR_KEYS = frozenset({"v", "id", "kind", "recipients", "enc"})
_ENC_KEYS = frozenset({"chunk", "stanzas", "mac"})
_INNER_KEYS = frozenset({"records", "created", "origin", "ack", "assumes", "counts",
                         "compression", "capabilities"})
HEADER_HASH_DOMAIN = b"bundlesync v2 header\x00"
HPKE_ENC_SIZE = 32
SEALED_FILE_KEY_SIZE = 48
MAC_SIZE = 32


@dataclass(frozen=True, slots=True)
class HpkeStanza:
    """The file key sealed to one recipient with HPKE (bundle-v2 §5.2)."""

    recipient: str  # site id
    enc: bytes  # the HPKE encapsulated key, 32 bytes
    sealed: bytes  # the sealed file key, 48 bytes


@dataclass(frozen=True, slots=True)
class ClearHeader:
    """What a version 2 bundle shows to anyone (bundle-v2 §4.1): enough to route it."""

    bundle_id: BundleId
    kind: str
    recipients: tuple[str, ...]
    chunk_size: int | None = None  # None: the body is not encrypted
    stanzas: tuple[HpkeStanza, ...] = ()
    mac: bytes | None = None

    @property
    def encrypted(self) -> bool:
        return self.chunk_size is not None

    @property
    def origin_site(self) -> str:
        return self.bundle_id.site


def _id_cbor(bundle_id: BundleId) -> list[object]:
    return [site_bytes(bundle_id.site, "bundle id site"), bundle_id.incarnation, bundle_id.seq]


def header_hash(clear: ClearHeader) -> bytes:
    """H (bundle-v2 §4.2): SHA-256 over everything of the clear header but the
    stanzas and the MAC, which are made from it."""
    core = cbor.encode([_id_cbor(clear.bundle_id), clear.kind,
                        [site_bytes(r, "recipient") for r in clear.recipients],
                        clear.chunk_size])
    return hashlib.sha256(HEADER_HASH_DOMAIN + core).digest()


def encode_stanzas(stanzas: tuple[HpkeStanza, ...]) -> bytes:
    """The canonical CBOR of the stanza array (the MAC covers these bytes)."""
    return cbor.encode([[site_bytes(s.recipient, "recipient"), s.enc, s.sealed]
                        for s in stanzas])


def encode_clear(clear: ClearHeader) -> bytes:
    """The canonical CBOR encoding of a version 2 clear header (bundle-v2 §4.1)."""
    enc: object = None
    if clear.chunk_size is not None:
        enc = {"chunk": clear.chunk_size,
               "stanzas": [[site_bytes(s.recipient, "recipient"), s.enc, s.sealed]
                           for s in clear.stanzas],
               "mac": clear.mac}
    return cbor.encode({"v": FORMAT_V2, "id": _id_cbor(clear.bundle_id), "kind": clear.kind,
                        "recipients": [site_bytes(r, "recipient") for r in clear.recipients],
                        "enc": enc})


def encode_inner(header: BundleHeader) -> bytes:
    """The canonical CBOR of a version 2 inner header (bundle-v2 §4.3)."""
    return cbor.encode({
        "records": header.records_version,
        "created": header.created_ms,
        "origin": {"name": header.origin_name},
        "ack": _vv_to_cbor(header.ack),
        "assumes": _vv_to_cbor(header.assumes),
        "counts": {kind: header.counts.get(kind, 0) for kind in RECORD_KINDS
                   if kind not in OPTIONAL_KINDS or header.counts.get(kind, 0)},
        "compression": {"alg": header.compression, "frame": header.frame_size},
        "capabilities": sorted(header.capabilities),
    })


def _bounds(limits: Limits) -> cbor.DecodeBounds:
    return cbor.DecodeBounds(max_depth=limits.max_depth, max_items=limits.max_header_items,
                             max_text=limits.max_text, max_bytes=limits.max_text)


def decode_any_header(data: bytes, limits: Limits) -> BundleHeader | ClearHeader:
    """A version 1 header, or a version 2 clear header (told apart by its "v" key)."""
    try:
        value = cbor.decode(data, _bounds(limits))
    except cbor.CborLimitError as exc:
        raise LimitExceeded(f"The bundle header exceeds a limit: {exc}.") from None
    except cbor.CborError as exc:
        raise Malformed(f"The bundle header is not valid deterministic CBOR: {exc}.") from None
    reader = _HeaderReader(limits)
    if isinstance(value, dict) and "v" in value:
        return reader.clear(value)
    return reader.header(value)


def decode_inner(data: bytes, clear: ClearHeader, *, origin_key: bytes,
                 limits: Limits) -> BundleHeader:
    """The full header of a version 2 bundle from its clear and inner headers."""
    try:
        value = cbor.decode(data, _bounds(limits))
    except cbor.CborLimitError as exc:
        raise LimitExceeded(f"The bundle's inner header exceeds a limit: {exc}.") from None
    except cbor.CborError as exc:
        raise Malformed(f"The bundle's inner header is not valid deterministic CBOR: {exc}."
                        ) from None
    return _HeaderReader(limits).inner(value, clear, origin_key)
