"""The bundle header: its value types and its canonical CBOR map (bundle-v1 §4).

The header is public (it is not encrypted): it says who wrote the bundle, for
whom, what the origin acknowledges, how many records of each kind follow and how
the body is compressed and encrypted. It never names a user, a mailbox or a
message (bundle-v1 §14).
"""

from __future__ import annotations

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

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

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

    def header(self, value: object) -> BundleHeader:
        top = self.map(value, _HEADER_KEYS, "the header")
        records_version = self.uint(top["records"], "records version")
        if records_version not in READABLE_RECORDS_VERSIONS:
            raise UnsupportedVersion(
                f"The bundle uses record schema version {records_version}; this bundlesync "
                f"reads versions {', '.join(map(str, READABLE_RECORDS_VERSIONS))}.")
        capabilities = self.array(top["capabilities"], "capabilities",
                                  maximum=self.limits.max_header_items)
        caps = tuple(self.text(c, "a capability") for c in capabilities)
        if list(caps) != sorted(set(caps)):
            raise self.fail("capabilities are not sorted and unique")
        unknown = [c for c in caps if c not in KNOWN_CAPABILITIES]
        if unknown:
            raise UnsupportedVersion(
                f"The bundle needs features this bundlesync does not have: "
                f"{', '.join(map(repr, unknown))}.")
        ident = self.array(top["id"], "id", maximum=3)
        if len(ident) != 3:
            raise self.fail("id is not [site, incarnation, seq]")
        bundle_id = BundleId(self.site(ident[0], "id site"), self.uint(ident[1], "incarnation"),
                             self.uint(ident[2], "sequence number"))
        kind = self.text(top["kind"], "kind")
        if kind not in BUNDLE_KINDS:
            raise UnsupportedVersion(f"The bundle is of kind {kind!r}, which this bundlesync "
                                     f"does not know.")
        origin = self.map(top["origin"], frozenset({"site", "name", "key"}), "origin")
        origin_site = self.site(origin["site"], "origin site")
        if origin_site != bundle_id.site:
            raise self.fail("the bundle id's site is not the origin site")
        origin_key = self.raw(origin["key"], 32, "origin key")
        recipients = tuple(
            self.site(r, "a recipient")
            for r in self.array(top["recipients"], "recipients",
                                maximum=self.limits.max_recipients))
        if list(recipients) != sorted(set(recipients)):
            raise self.fail("recipients are not sorted and unique")
        counts_value = top["counts"]
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
        compression = self.map(top["compression"], frozenset({"alg", "frame"}), "compression")
        alg = self.text(compression["alg"], "compression algorithm")
        if alg != COMPRESSION_ZSTD:
            raise UnsupportedVersion(f"The bundle is compressed with {alg!r}, which this "
                                     f"bundlesync cannot read.")
        frame_size = self.uint(compression["frame"], "frame size",
                               maximum=self.limits.max_frame_content)
        if frame_size == 0:
            raise self.fail("frame size is zero")
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
        chunk = self.uint(enc["chunk"], "chunk size", maximum=MAX_CHUNK_SIZE)
        if chunk < MIN_CHUNK_SIZE:
            raise self.fail(f"chunk size {chunk} is below {MIN_CHUNK_SIZE}")
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
