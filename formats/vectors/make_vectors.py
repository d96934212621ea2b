#!/usr/bin/env python3
"""Generate the bundle-v1 golden vectors (run ONCE; tests never regenerate them).

    python3 formats/vectors/make_vectors.py [--force]

Everything is deterministic: fixed TEST ONLY keys (test-keys.json), fixed
times, and for encryption a fixed stream of "random" bytes. The expected
decodes (*.json) are written from the *inputs* given to the writer, and the
expected errors of the invalid vectors are stated by hand in INVALID below --
nothing here runs the reader. Invalid vectors that must be validly signed (so
that the reader gets past the signature to the fault) are assembled from their
parts and signed with the test key of site A.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import zstandard  # noqa: E402

from bundlesync.core.model import (  # noqa: E402
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
)
from bundlesync.format import cbor  # noqa: E402
from bundlesync.format.cose import sign_digest  # noqa: E402
from bundlesync.format.header import BundleHeader, BundleId, encode_header  # noqa: E402
from bundlesync.format.limits import (  # noqa: E402
    DEFAULT_LIMITS,
    END_MAGIC,
    FORMAT_VERSION,
    MAGIC,
)
from bundlesync.format.records import RECORD_KINDS, encode_record, record_kind  # noqa: E402
from bundlesync.format.volumes import VolumeHead  # noqa: E402
from bundlesync.format.writer import write_bundle  # noqa: E402
from bundlesync.keys import SiteIdentity  # noqa: E402

CREATED_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z
FRAME = 1024
CHUNK = 256


# --- TEST ONLY keys -------------------------------------------------------------------


def test_keys() -> dict[str, SiteIdentity]:
    """Sites A, B, C with keys derived from fixed strings. TEST ONLY."""
    keys = {}
    for letter, name in (("A", "site-a"), ("B", "site-b"), ("C", "site-c")):
        keys[letter] = SiteIdentity(
            name=name,
            signing_secret=hashlib.sha256(f"bundlesync TEST ONLY {letter} signing".encode())
            .digest(),
            exchange_secret=hashlib.sha256(f"bundlesync TEST ONLY {letter} exchange".encode())
            .digest(),
        )
    return keys


class FixedRandom:
    """SHA-256 in counter mode over a fixed seed: reproducible "random" bytes."""

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.counter = 0

    def __call__(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            out += hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:size]


# --- records --------------------------------------------------------------------------


def sample_records(a: SiteIdentity, b: SiteIdentity) -> list[Record]:
    """One record of every operation kind, bodies of several shapes."""
    sa, sb = a.site_id, b.site_id
    alice_inbox = MailboxRef("alice@example.org", hashlib.md5(b"inbox").hexdigest())  # noqa: S324
    alice_drafts = MailboxRef("alice@example.org", hashlib.md5(b"drafts").hexdigest())  # noqa: S324
    bob_sent = MailboxRef("bob", hashlib.md5(b"sent").hexdigest())  # noqa: S324
    bodies = [
        b"From: bob@example.org\r\nSubject: hello\r\n\r\nHi Alice.\r\n",
        b"",
        bytes(range(256)) * 20,  # 5 KiB of binary: spans several 1 KiB frames
        "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße aus Köln ✉\r\n".encode(),
    ]
    digests = [hashlib.sha256(x).hexdigest() for x in bodies]
    m0 = MessageRef(alice_inbox, "1764000000.M1P2.mx1", digests[0])
    m1 = MessageRef(alice_drafts, "1764000001.M3P4.mx1,S=0", digests[1])
    m2 = MessageRef(bob_sent, "msg-binary", digests[2])
    m3 = MessageRef(alice_inbox, "1764000003.M5P6.mx1", digests[3])

    def change(counter: int, op: object, *, site: str = sa, wall: int = 0) -> Change:
        return Change(Dot(site, 1, counter), Timestamp(CREATED_MS - 10_000 + wall, counter, site),
                      op)  # type: ignore[arg-type]

    return [
        change(1, MailboxCreated(alice_inbox, None, "INBOX", 1_700_000_001, None)),
        change(2, MailboxCreated(alice_drafts, alice_inbox.guid, "Entwürfe/日本", 4_294_967_295,
                                 "\\Drafts")),
        change(3, MailboxCreated(bob_sent, None, "Sent", 1, "\\Sent")),
        Body(digests[0], bodies[0]),
        change(4, MessageAdded(m0, len(bodies[0]), 1_764_000_000, frozenset({"\\Seen"}))),
        Body(digests[1], bodies[1]),
        change(5, MessageAdded(m1, 0, -86_400, frozenset())),
        Body(digests[2], bodies[2]),
        change(6, MessageAdded(m2, len(bodies[2]), 0,
                               frozenset({"\\Answered", "$Label1", "Work", "\\Flagged"}))),
        Body(digests[3], bodies[3]),
        change(7, MessageAdded(m3, len(bodies[3]), 1_764_000_003, frozenset({"Größe"}))),
        change(8, FlagsChanged(m0, frozenset({"\\Flagged", "$Important"}),
                               frozenset({"\\Seen"}))),
        change(9, SubscriptionSet(alice_drafts, True)),
        change(10, SubscriptionSet(bob_sent, False)),
        change(11, MailboxRenamed(alice_drafts, None, "Drafts")),
        change(2, MessageExpunged(m2), site=sb, wall=5),
        change(12, MailboxDeleted(bob_sent)),
    ]


def counts_of(records: list[Record]) -> dict[str, int]:
    counts = dict.fromkeys(RECORD_KINDS, 0)
    for record in records:
        counts[record_kind(record)] += 1
    return counts


# --- expected decodes (from the inputs) -----------------------------------------------


def mailbox_json(m: MailboxRef) -> dict[str, object]:
    return {"user": m.user, "guid": m.guid}


def message_json(m: MessageRef) -> dict[str, object]:
    return {"mailbox": mailbox_json(m.mailbox), "guid": m.guid, "body": m.body}


def op_json(op: object) -> dict[str, object]:
    if isinstance(op, MailboxCreated):
        return {"op": "mailbox-created", "mailbox": mailbox_json(op.mailbox),
                "parent": op.parent, "name": op.name, "uidvalidity": op.uidvalidity,
                "special_use": op.special_use}
    if isinstance(op, MailboxRenamed):
        return {"op": "mailbox-renamed", "mailbox": mailbox_json(op.mailbox),
                "parent": op.parent, "name": op.name}
    if isinstance(op, MailboxDeleted):
        return {"op": "mailbox-deleted", "mailbox": mailbox_json(op.mailbox)}
    if isinstance(op, SubscriptionSet):
        return {"op": "subscription-set", "mailbox": mailbox_json(op.mailbox),
                "subscribed": op.subscribed}
    if isinstance(op, MessageAdded):
        return {"op": "message-added", "message": message_json(op.message), "size": op.size,
                "internal_date": op.internal_date, "flags": sorted(op.flags)}
    if isinstance(op, MessageExpunged):
        return {"op": "message-expunged", "message": message_json(op.message)}
    assert isinstance(op, FlagsChanged)
    return {"op": "flags-changed", "message": message_json(op.message),
            "added": sorted(op.added), "removed": sorted(op.removed)}


def record_json(record: Record) -> dict[str, object]:
    if isinstance(record, Body):
        return {"type": "body", "sha256": record.sha256,
                "data_base64": base64.b64encode(record.data).decode("ascii")}
    return {"type": "change",
            "dot": [record.dot.site, record.dot.incarnation, record.dot.counter],
            "ts": [record.ts.wall_ms, record.ts.counter, record.ts.site],
            **op_json(record.op)}


def vv_json(vv: VersionVector) -> list[list[object]]:
    return [[s.site, s.incarnation, n] for s, n in vv.entries]


def expected_json(*, origin: SiteIdentity, bundle_id: BundleId, kind: str,
                  recipients: list[str], ack: VersionVector, assumes: VersionVector,
                  records: list[Record], encrypted: bool, volumes: int) -> dict[str, object]:
    return {
        "header": {
            "bundle_id": [bundle_id.site, bundle_id.incarnation, bundle_id.seq],
            "created_ms": CREATED_MS,
            "kind": kind,
            "origin_site": origin.site_id,
            "origin_name": origin.name,
            "origin_key": origin.signing_public.hex(),
            "recipients": sorted(recipients),
            "ack": vv_json(ack),
            "assumes": vv_json(assumes),
            "counts": counts_of(records),
            "encrypted": encrypted,
            "frame_size": FRAME,
        },
        "signer": origin.name,
        "volumes": volumes,
        "records": [record_json(r) for r in records],
    }


# --- crafted (validly signed, deliberately faulty) bundles ----------------------------

_U32 = struct.Struct(">I")


def frame(content: bytes, *, level: int = 3) -> bytes:
    blob = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(content)
    return struct.pack(">II", len(blob), len(content)) + blob


def assemble(signer: SiteIdentity, header_bytes: bytes, body: bytes) -> bytes:
    """One volume file: head, header, body, COSE_Sign1 trailer -- signed by ``signer``."""
    stream = _U32.pack(len(header_bytes)) + header_bytes + body
    digest = hashlib.sha256(MAGIC + struct.pack(">H", FORMAT_VERSION) + stream).digest()
    cose = sign_digest(signer, digest)
    stream += cose + _U32.pack(len(cose)) + END_MAGIC
    tag = hashlib.sha256(header_bytes).digest()[:16]
    return VolumeHead(1, 1, tag, len(stream), 0).pack() + stream


def plain_header(a: SiteIdentity, b: SiteIdentity, *, seq: int, counts: dict[str, int],
                 frame_size: int = FRAME) -> BundleHeader:
    return BundleHeader(
        bundle_id=BundleId(a.site_id, 1, seq), created_ms=CREATED_MS, kind="sync",
        origin_site=a.site_id, origin_name=a.name, origin_key=a.signing_public,
        recipients=(b.site_id,), ack=VersionVector(), assumes=VersionVector(),
        counts=counts, frame_size=frame_size)


def duplicate_key_header(header: BundleHeader) -> bytes:
    """The header with its "kind" entry repeated -- otherwise canonical."""
    good = encode_header(header)
    value = cbor.decode(good, cbor.DecodeBounds(max_depth=8, max_items=1000, max_text=4096,
                                                max_bytes=4096))
    assert isinstance(value, dict)
    pairs = sorted((cbor.encode(k), cbor.encode(v)) for k, v in value.items())
    out = bytearray(cbor.head(cbor.MAJOR_MAP, len(pairs) + 1))
    for key, item in pairs:
        out += key + item
        if key == cbor.encode("kind"):
            out += key + cbor.encode("archive")
    return bytes(out)


def records_body(records: list[Record]) -> bytes:
    stream = b"".join(b"".join(encode_record(r, DEFAULT_LIMITS)) for r in records)
    return b"".join(frame(stream[i:i + FRAME]) for i in range(0, len(stream), FRAME)) + bytes(8)


# --- the vectors ----------------------------------------------------------------------


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


def build(out: Path) -> list[dict[str, object]]:
    keys = test_keys()
    a, b, c = keys["A"], keys["B"], keys["C"]
    records = sample_records(a, b)
    ack = VersionVector.of({Stream(a.site_id, 1): 12, Stream(b.site_id, 1): 2})
    assumes = VersionVector.of({Stream(a.site_id, 1): 0, Stream(b.site_id, 1): 1})
    manifest: list[dict[str, object]] = []
    valid = out / "valid"
    invalid = out / "invalid"
    valid.mkdir(parents=True)
    invalid.mkdir(parents=True)

    def write(directory: Path, *, seq: int, recs: list[Record], encrypt: bool,
              recipients: list[SiteIdentity], max_volume_size: int | None = None,
              signer: SiteIdentity = a, kind: str = "sync") -> tuple[Path, ...]:
        directory.mkdir(parents=True, exist_ok=True)
        written = write_bundle(
            directory, identity=signer, bundle_id=BundleId(signer.site_id, 1, seq), kind=kind,
            recipients=[r.card() for r in recipients], ack=ack, assumes=assumes,
            records=iter(recs), created_ms=CREATED_MS, encrypt=encrypt,
            max_volume_size=max_volume_size, frame_size=FRAME, chunk_size=CHUNK,
            random_bytes=FixedRandom(f"bundlesync TEST ONLY random {seq}".encode()),
            counts=counts_of(recs))
        return written.paths

    def single(name: str, paths: tuple[Path, ...], directory: Path) -> Path:
        assert len(paths) == 1
        target = directory / f"{name}.bsb"
        paths[0].rename(target)
        return target

    def valid_vector(name: str, *, seq: int, recs: list[Record], encrypt: bool,
                     max_volume_size: int | None = None) -> None:
        tmp = Path(tempfile.mkdtemp(dir=out))
        paths = write(tmp, seq=seq, recs=recs, encrypt=encrypt, recipients=[b],
                      max_volume_size=max_volume_size)
        if len(paths) == 1:
            final = single(name, paths, valid)
            shutil.rmtree(tmp)
            rel = final.relative_to(out)
        else:
            target = valid / name
            tmp.rename(target)
            rel = (target / paths[0].name).relative_to(out)
        expect = expected_json(origin=a, bundle_id=BundleId(a.site_id, 1, seq), kind="sync",
                               recipients=[b.site_id], ack=ack, assumes=assumes, records=recs,
                               encrypted=encrypt, volumes=len(paths))
        (valid / f"{name}.json").write_text(json.dumps(expect, indent=1, ensure_ascii=False)
                                            + "\n", encoding="utf-8")
        manifest.append({"name": name, "path": str(rel), "open_as": "B", "trust": ["A"],
                         "expect": f"valid/{name}.json"})

    valid_vector("plain", seq=1, recs=records, encrypt=False)
    valid_vector("encrypted", seq=2, recs=records, encrypt=True)
    valid_vector("empty", seq=3, recs=[], encrypt=False)
    valid_vector("multivolume", seq=4, recs=records, encrypt=True, max_volume_size=2048)

    plain = (valid / "plain.bsb").read_bytes()
    head_size = 48
    (header_length,) = _U32.unpack(plain[head_size:head_size + 4])
    header_start = head_size + 4
    body_start = header_start + header_length
    (cose_length,) = _U32.unpack(plain[-12:-8])
    cose_start = len(plain) - 12 - cose_length

    def invalid_vector(name: str, data: bytes, error: str, why: str, *, open_as: str = "B",
                       trust: tuple[str, ...] = ("A",)) -> None:
        (invalid / f"{name}.bsb").write_bytes(data)
        manifest.append({"name": name, "path": f"invalid/{name}.bsb", "open_as": open_as,
                         "trust": list(trust), "error": error, "why": why})

    invalid_vector("bad_magic", flip(plain, 1), "BadMagic", "magic byte 1 altered")
    invalid_vector("unsupported_version", plain[:8] + b"\x00\x02" + plain[10:],
                   "UnsupportedVersion", "format version 2 in the volume head")
    invalid_vector("truncated", plain[:len(plain) // 2], "Truncated",
                   "file cut in half (the volume head states the full length)")
    short = plain[:cose_start]
    head = VolumeHead(1, 1, plain[16:32], len(short) - head_size, 0).pack()
    invalid_vector("truncated_trailer", head + short[head_size:], "Truncated",
                   "the signature trailer is missing and the head was made consistent")
    name_at = plain.index(a.name.encode(), header_start)
    invalid_vector("header_flip", flip(plain, name_at), "SignatureInvalid",
                   "one bit of the origin name in the header flipped")
    invalid_vector("body_flip", flip(plain, body_start + 20), "SignatureInvalid",
                   "one bit of the first frame flipped")
    invalid_vector("signature_flip", flip(plain, len(plain) - 12 - 10), "SignatureInvalid",
                   "one bit of the Ed25519 signature flipped")
    invalid_vector("trailing_garbage", plain + b"\x00", "Malformed",
                   "one byte after the end the volume head states")

    # Signed by C, which the reader does not trust.
    tmp = Path(tempfile.mkdtemp(dir=out))
    paths = write(tmp, seq=5, recs=records, encrypt=False, recipients=[b], signer=c)
    invalid_vector("unknown_signer", paths[0].read_bytes(), "UnknownSigner",
                   "validly signed by test key C, which is not trusted")
    shutil.rmtree(tmp)

    # Encrypted to C only; B opens it.
    tmp = Path(tempfile.mkdtemp(dir=out))
    paths = write(tmp, seq=6, recs=records, encrypt=True, recipients=[c])
    invalid_vector("wrong_recipient", paths[0].read_bytes(), "NotARecipient",
                   "encrypted to C only, opened by B")
    shutil.rmtree(tmp)

    # Validly signed bundles with a fault behind the signature.
    one = [records[3]]  # a Body
    counts = counts_of(one)
    header = encode_header(plain_header(a, b, seq=7, counts=counts))
    oversized = struct.pack(">II", 100, 16 * 1024 * 1024) + bytes(100) + bytes(8)
    invalid_vector("oversized_frame", assemble(a, header, oversized), "LimitExceeded",
                   "a frame declaring 16 MiB of content (frame size 1 KiB)")
    bomb_header = encode_header(plain_header(a, b, seq=8, counts=counts,
                                             frame_size=2 * 1024 * 1024))
    zeros = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(
        bytes(16 * 1024 * 1024))
    bomb = struct.pack(">II", len(zeros), 1024) + zeros + bytes(8)
    invalid_vector("decompression_bomb", assemble(a, bomb_header, bomb), "LimitExceeded",
                   f"a {len(zeros)}-byte zstd frame of 16 MiB declared as 1 KiB")
    dup = duplicate_key_header(plain_header(a, b, seq=9, counts=counts))
    invalid_vector("duplicate_key", assemble(a, dup, records_body(one)), "Malformed",
                   "the header map has the key \"kind\" twice")
    assert b"Alice" in records[3].data  # type: ignore[union-attr]
    forged = Body(records[3].sha256, records[3].data.replace(b"Alice", b"Alicia"))  # type: ignore[union-attr]
    forged_stream = b"\x83\x00" + cbor.encode(bytes.fromhex(forged.sha256)) + cbor.encode(
        forged.data)
    forged_body = frame(forged_stream) + bytes(8)
    invalid_vector("body_hash_mismatch",
                   assemble(a, encode_header(plain_header(a, b, seq=10, counts=counts)),
                            forged_body),
                   "BodyHashMismatch", "a body whose bytes do not hash to its name")
    two = counts_of(one)
    two["body"] = 2
    invalid_vector("count_mismatch",
                   assemble(a, encode_header(plain_header(a, b, seq=11, counts=two)),
                            records_body(one)),
                   "Malformed", "the header announces 2 bodies, the body holds 1")
    # The first two entries of the canonical header, swapped.
    value = cbor.decode(header, cbor.DecodeBounds(max_depth=8, max_items=1000,
                                                  max_text=4096, max_bytes=4096))
    assert isinstance(value, dict)
    pairs = sorted((cbor.encode(k), cbor.encode(v)) for k, v in value.items())
    pairs[0], pairs[1] = pairs[1], pairs[0]
    unsorted = bytearray(cbor.head(cbor.MAJOR_MAP, len(pairs)))
    for key, item in pairs:
        unsorted += key + item
    invalid_vector("unsorted_header", assemble(a, bytes(unsorted), records_body(one)),
                   "Malformed", "two header keys out of deterministic order")

    # A multi-volume bundle whose volume 2 is missing.
    target = invalid / "missing_volume"
    tmp = Path(tempfile.mkdtemp(dir=out))
    paths = write(tmp, seq=12, recs=records, encrypt=False, recipients=[b],
                  max_volume_size=1024)
    tmp.rename(target)
    assert len(paths) >= 3
    (target / paths[1].name).unlink()
    manifest.append({"name": "missing_volume", "path": f"invalid/missing_volume/{paths[0].name}",
                     "open_as": "B", "trust": ["A"], "error": "MissingVolume",
                     "why": f"volume 2 of {len(paths)} deleted"})
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true",
                        help="replace existing vectors (they are meant to be made once)")
    args = parser.parse_args()
    keys = test_keys()
    targets = [HERE / "valid", HERE / "invalid", HERE / "manifest.json"]
    if any(t.exists() for t in targets) and not args.force:
        sys.exit("vectors exist; they are made once. Pass --force to replace them.")
    for t in targets:
        if t.is_dir():
            shutil.rmtree(t)
        elif t.exists():
            t.unlink()
    work = Path(tempfile.mkdtemp(dir=HERE))
    try:
        manifest = build(work)
        for name in ("valid", "invalid"):
            (work / name).rename(HERE / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    (HERE / "test-keys.json").write_text(json.dumps({
        "WARNING": "TEST ONLY keys, published on purpose. Never use them for a real site.",
        **{letter: {"name": k.name, "site_id": k.site_id,
                    "signing_secret": k.signing_secret.hex(),
                    "exchange_secret": k.exchange_secret.hex(),
                    "signing_public": k.signing_public.hex(),
                    "exchange_public": k.exchange_public.hex()}
           for letter, k in keys.items()},
    }, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(manifest)} vectors into {HERE}")


if __name__ == "__main__":
    main()

