"""Shared pieces of the format tests: the TEST ONLY keys, record strategies, a
stand-alone assembler for validly signed but deliberately faulty bundles."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import zstandard
from hypothesis import strategies as st

from bundlesync.core.model import (
    Body,
    Change,
    Dot,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxRef,
    MailboxRenamed,
    MessageAdded,
    MessageExpunged,
    MessageRef,
    Record,
    Stream,
    SubscriptionSet,
    Timestamp,
    VersionVector,
    Want,
)
from bundlesync.format import RECORD_KINDS, record_kind
from bundlesync.format.cose import sign_digest
from bundlesync.format.limits import (
    END_MAGIC,
    FORMAT_VERSION,
    MAGIC,
    MAX_DOT_COUNTER,
    MAX_INCARNATION,
    MAX_WALL_MS,
)
from bundlesync.format.records import OPTIONAL_KINDS
from bundlesync.format.volumes import VolumeHead
from bundlesync.keys import SiteIdentity, TrustedCards

VECTORS = Path(__file__).resolve().parents[2] / "formats" / "vectors"


def load_test_keys() -> dict[str, SiteIdentity]:
    """Sites A, B, C of formats/vectors/test-keys.json (TEST ONLY keys)."""
    data = json.loads((VECTORS / "test-keys.json").read_text(encoding="utf-8"))
    return {
        letter: SiteIdentity(name=entry["name"],
                             signing_secret=bytes.fromhex(entry["signing_secret"]),
                             exchange_secret=bytes.fromhex(entry["exchange_secret"]))
        for letter, entry in data.items() if letter != "WARNING"
    }


KEYS = load_test_keys()
A, B, C = KEYS["A"], KEYS["B"], KEYS["C"]


def trust(*sites: SiteIdentity) -> TrustedCards:
    return TrustedCards([s.card() for s in sites])


def manifest() -> list[dict[str, object]]:
    data = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


def counts_of(records: list[Record]) -> dict[str, int]:
    counts = dict.fromkeys(RECORD_KINDS, 0)
    for record in records:
        counts[record_kind(record)] += 1
    # A header leaves out an optional kind it holds none of (bundle-v1 §4.2).
    return {k: n for k, n in counts.items() if n or k not in OPTIONAL_KINDS}


# --- strategies -----------------------------------------------------------------------

hex16 = st.binary(min_size=16, max_size=16).map(bytes.hex)
hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
# Any Unicode that can be UTF-8 encoded (no lone surrogates).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
uint64 = st.integers(0, 2**64 - 1)
small = st.integers(0, 1000)
mailboxes = st.builds(MailboxRef, texts, hex16)
messages = st.builds(MessageRef, mailboxes, texts, hex32)
flag_sets = st.frozensets(texts, max_size=5)
operations = st.one_of(
    st.builds(MailboxCreated, mailboxes, st.none() | hex16, texts, st.integers(0, 2**32 - 1),
              st.none() | texts),
    st.builds(MailboxRenamed, mailboxes, st.none() | hex16, texts),
    st.builds(MailboxDeleted, mailboxes),
    st.builds(SubscriptionSet, mailboxes, st.booleans()),
    st.builds(MessageAdded, messages, uint64, st.integers(-(2**63), 2**63 - 1), flag_sets),
    st.builds(MessageExpunged, messages),
    st.builds(FlagsChanged, messages, flag_sets, flag_sets),
)
# bundle-v1 §9 bounds the numbers of a change (the state index stores them).
changes = st.builds(Change, st.builds(Dot, hex16, small | st.integers(0, MAX_INCARNATION),
                                      small | st.integers(0, MAX_DOT_COUNTER)),
                    st.builds(Timestamp, st.integers(0, MAX_WALL_MS), small, hex16), operations)
bodies = st.binary(max_size=3000).map(lambda data: Body(hashlib.sha256(data).hexdigest(), data))
wants = st.builds(Want, hex32)
records = st.one_of(changes, bodies, wants)
version_vectors = st.dictionaries(st.builds(Stream, hex16, small), st.integers(1, 2**40),
                                  max_size=4).map(VersionVector.of)


# --- hand assembly of signed bundles ----------------------------------------------------

_U32 = struct.Struct(">I")


def zstd_frame(content: bytes) -> bytes:
    blob = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(content)
    return struct.pack(">II", len(blob), len(content)) + blob


def frames_of(stream: bytes, frame_size: int) -> bytes:
    pieces = [zstd_frame(stream[i:i + frame_size]) for i in range(0, len(stream), frame_size)]
    return b"".join(pieces) + bytes(8)


def assemble(signer: SiteIdentity, header_bytes: bytes, body: bytes) -> bytes:
    """A single-volume bundle from its parts, validly signed by ``signer``."""
    stream = _U32.pack(len(header_bytes)) + header_bytes + body
    digest = hashlib.sha256(MAGIC + struct.pack(">H", FORMAT_VERSION) + stream).digest()
    cose = sign_digest(signer, digest)
    stream += cose + _U32.pack(len(cose)) + END_MAGIC
    tag = hashlib.sha256(header_bytes).digest()[:16]
    return VolumeHead(1, 1, tag, len(stream), 0).pack() + stream
