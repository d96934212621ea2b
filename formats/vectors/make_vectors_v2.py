#!/usr/bin/env python3
"""Generate the bundle-v2 golden vectors (run ONCE; tests never regenerate them).

    python3 formats/vectors/make_vectors_v2.py [--force]

Same TEST ONLY keys, times and records as the version 1 vectors
(make_vectors.py). The file key comes from a fixed stream of "random" bytes,
but HPKE draws its ephemeral keys from the system: running this again writes
other bytes with the same meaning. The checked-in files are the vectors. The
expected decodes are written from the writer's inputs; the expected errors of
the invalid vectors are stated by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

import cbor2  # noqa: E402
from make_vectors import (  # noqa: E402
    CHUNK,
    CREATED_MS,
    FRAME,
    FixedRandom,
    counts_of,
    expected_json,
    sample_records,
    test_keys,
)

from bundlesync.core.model import Record, Stream, VersionVector  # noqa: E402
from bundlesync.format.cose import sign_digest  # noqa: E402
from bundlesync.format.header import BundleId  # noqa: E402
from bundlesync.format.limits import END_MAGIC, MAGIC  # noqa: E402
from bundlesync.format.volumes import VolumeHead  # noqa: E402
from bundlesync.format.writer import write_bundle  # noqa: E402
from bundlesync.keys import SiteIdentity  # noqa: E402

_U32 = struct.Struct(">I")


def parts(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(clear header, inner, body, COSE_Sign1) of a single-volume version 2 bundle."""
    stream = data[48:]
    (clear_length,) = _U32.unpack(stream[:4])
    clear = stream[4:4 + clear_length]
    at = 4 + clear_length
    (inner_length,) = _U32.unpack(stream[at:at + 4])
    inner = stream[at + 4:at + 4 + inner_length]
    (cose_length,) = _U32.unpack(stream[-12:-8])
    return (clear, inner, stream[at + 4 + inner_length:-12 - cose_length],
            stream[-12 - cose_length:-12])


def assemble(signer: SiteIdentity, clear: bytes, inner: bytes, body: bytes, *,
             cose_version: int = 2) -> bytes:
    stream = _U32.pack(len(clear)) + clear + _U32.pack(len(inner)) + inner + body
    digest = hashlib.sha256(MAGIC + struct.pack(">H", 2) + stream).digest()
    # cose_version 1: a version 1 COSE_Sign1 (alg EdDSA) over the version 2 digest.
    cose = sign_digest(signer, digest, version=cose_version)
    stream += cose + _U32.pack(len(cose)) + END_MAGIC
    return VolumeHead(1, 1, hashlib.sha256(clear).digest()[:16], len(stream), 0).pack() + stream


def build(out: Path) -> list[dict[str, object]]:
    keys = test_keys()
    a, b, c = keys["A"], keys["B"], keys["C"]
    records = sample_records(a, b)
    ack = VersionVector.of({Stream(a.site_id, 1): 12, Stream(b.site_id, 1): 2})
    assumes = VersionVector.of({Stream(a.site_id, 1): 0, Stream(b.site_id, 1): 1})
    manifest: list[dict[str, object]] = []
    (out / "valid").mkdir(parents=True)
    (out / "invalid").mkdir(parents=True)

    def write(*, seq: int, recs: list[Record], encrypt: bool, pad_to: int | None = None,
              identity: SiteIdentity = a) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            written = write_bundle(
                Path(tmp), identity=identity, bundle_id=BundleId(a.site_id, 1, seq),
                kind="sync", recipients=[b.card()], ack=ack, assumes=assumes,
                records=iter(recs), created_ms=CREATED_MS, encrypt=encrypt,
                frame_size=FRAME, chunk_size=CHUNK, counts=counts_of(recs),
                random_bytes=FixedRandom(f"bundlesync TEST ONLY v2 random {seq}".encode()),
                format_version=2, pad_to=pad_to, max_volume_size=1 << 30)
            return written.paths[0].read_bytes()

    for name, seq, encrypt, pad_to in (("plain", 1, False, None),
                                       ("encrypted", 2, True, None),
                                       ("padded", 3, True, 4096)):
        (out / "valid" / f"{name}.bsb").write_bytes(
            write(seq=seq, recs=records, encrypt=encrypt, pad_to=pad_to))
        expect = expected_json(origin=a, bundle_id=BundleId(a.site_id, 1, seq), kind="sync",
                               recipients=[b.site_id], ack=ack, assumes=assumes,
                               records=records, encrypted=encrypt, volumes=1)
        expect["format_version"] = 2
        (out / "valid" / f"{name}.json").write_text(
            json.dumps(expect, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        manifest.append({"name": name, "path": f"v2/valid/{name}.bsb",
                         "expect": f"v2/valid/{name}.json", "open_as": "B", "trust": ["A"]})

    def invalid(name: str, data: bytes, error: str, why: str, *, open_as: str = "B",
                trusted: tuple[str, ...] = ("A",)) -> None:
        (out / "invalid" / f"{name}.bsb").write_bytes(data)
        manifest.append({"name": name, "path": f"v2/invalid/{name}.bsb", "open_as": open_as,
                         "trust": list(trusted), "error": error, "why": why})

    encrypted = write(seq=10, recs=records[:3], encrypt=True)
    clear, inner, body, _ = parts(encrypted)
    resigned = cbor2.loads(clear)
    resigned["id"][0] = bytes.fromhex(c.site_id)
    invalid("resigned_by_c", assemble(c, cbor2.dumps(resigned, canonical=True), inner, body),
            "DecryptionFailed", "site C (trusted by B, not a recipient) put its own site id "
            "into A's clear header and signed it: the stanza's HPKE info (the header hash) "
            "no longer matches", trusted=("A", "C"))
    mac = cbor2.loads(clear)
    mac["enc"]["mac"] = bytes([mac["enc"]["mac"][0] ^ 1]) + mac["enc"]["mac"][1:]
    invalid("mac_flip", assemble(a, cbor2.dumps(mac, canonical=True), inner, body),
            "DecryptionFailed", "one bit of the header MAC flipped, validly re-signed by A")
    invalid("not_a_recipient", encrypted, "NotARecipient", "encrypted to B, opened by C",
            open_as="C")
    invalid("eddsa_alg", assemble(a, clear, inner, body, cose_version=1), "Malformed",
            "a version 2 bundle whose COSE protected header is version 1's {1: -8, 4: kid}")
    namesake = SiteIdentity(name="site-x", signing_secret=a.signing_secret,
                            exchange_secret=a.exchange_secret)
    invalid("wrong_origin_name", write(seq=11, recs=[], encrypt=True, identity=namesake),
            "Malformed", "signed by A's key, but the inner header names the origin site-x")
    plain = write(seq=12, recs=records[:2], encrypt=False, pad_to=512)
    clear, inner, body, _ = parts(plain)
    assert body.endswith(b"\x00")
    invalid("nonzero_padding", assemble(a, clear, inner, body[:-1] + b"\x01"), "Malformed",
            "a plain padded bundle whose last padding byte is 1, validly re-signed by A")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="replace existing vectors")
    args = parser.parse_args()
    out = HERE / "v2"
    if out.exists():
        if not args.force:
            sys.exit(f"{out} exists; the vectors are made once (use --force to replace them)")
        shutil.rmtree(out)
    manifest = build(out)
    print(f"wrote {len(manifest)} version 2 vectors into {out}")


if __name__ == "__main__":
    main()
