"""Decode the version 2 vectors from the spec text alone (formats/bundle-v2.md §4-§8),
with cbor2, zstandard and cryptography's primitives -- none of bundlesync's code.

HPKE (RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
ChaCha20-Poly1305) is written out here from the RFC and checked against the RFC's
own test vector (A.2.1) before it opens the vectors' stanzas.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import struct
from typing import Any

import cbor2
import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from tests.format.helpers import VECTORS

SPEC_MAGIC = bytes([0x89, 0x42, 0x53, 0x42, 0x0D, 0x0A, 0x1A, 0x0A])
KEM_SUITE = b"KEM" + (0x0020).to_bytes(2, "big")
HPKE_SUITE = b"HPKE" + (0x0020).to_bytes(2, "big") + (0x0001).to_bytes(2, "big") + \
    (0x0003).to_bytes(2, "big")


# --- RFC 9180 from its text -----------------------------------------------------------------


def labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), b"HPKE-v1" + suite + label + ikm, hashlib.sha256).digest()


def labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled).derive(prk)


def hpke_base_context(sk_r: bytes, enc: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    """(shared_secret, key, base_nonce) of the receiver in base mode."""
    private = X25519PrivateKey.from_private_bytes(sk_r)
    dh = private.exchange(X25519PublicKey.from_public_bytes(enc))
    pk_r = private.public_key().public_bytes_raw()
    eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    shared = labeled_expand(KEM_SUITE, eae_prk, b"shared_secret", enc + pk_r, 32)
    context = (b"\x00" + labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"")
               + labeled_extract(HPKE_SUITE, b"", b"info_hash", info))
    secret = labeled_extract(HPKE_SUITE, shared, b"secret", b"")
    return (shared, labeled_expand(HPKE_SUITE, secret, b"key", context, 32),
            labeled_expand(HPKE_SUITE, secret, b"base_nonce", context, 12))


def hpke_open(sk_r: bytes, enc: bytes, info: bytes, aad: bytes, ct: bytes) -> bytes:
    _, key, nonce = hpke_base_context(sk_r, enc, info)
    return ChaCha20Poly1305(key).decrypt(nonce, ct, aad)  # sequence number 0


def test_the_hpke_written_here_matches_rfc_9180_a_2_1() -> None:
    sk_r = bytes.fromhex("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb")
    enc = bytes.fromhex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a")
    info = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
    shared, key, nonce = hpke_base_context(sk_r, enc, info)
    assert shared.hex() == "0bbe78490412b4bbea4812666f7916932b828bba79942424abb65244930d69a7"
    assert key.hex() == "ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91"
    assert nonce.hex() == "5c4d98150661b848853b547f"
    ct = bytes.fromhex("1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db"
                       "21993c62ce81883d2dd1b51a28")
    assert hpke_open(sk_r, enc, info, b"Count-0", ct) == b"Beauty is truth, truth beauty"


# --- the bundle, from bundle-v2.md -------------------------------------------------------


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    return HKDFExpand(hashes.SHA256(), 32, info).derive(prk)


def decode(path_name: str, reader: dict[str, str]) -> dict[str, Any]:
    data = (VECTORS / path_name).read_bytes()
    assert data[:8] == SPEC_MAGIC
    (segment_length,) = struct.unpack(">Q", data[32:40])
    stream = data[48:]
    assert len(stream) == segment_length
    assert stream[-8:] == b"BSB-END\n"
    (cose_length,) = struct.unpack(">I", stream[-12:-8])
    cose = stream[-12 - cose_length:-12]
    (clear_length,) = struct.unpack(">I", stream[:4])
    clear_bytes = stream[4:4 + clear_length]
    assert data[16:32] == hashlib.sha256(clear_bytes).digest()[:16]  # the bundle tag
    at = 4 + clear_length
    (inner_length,) = struct.unpack(">I", stream[at:at + 4])
    inner = stream[at + 4:at + 4 + inner_length]
    body = stream[at + 4 + inner_length:-12 - cose_length]

    clear = cbor2.loads(clear_bytes)
    assert set(clear) == {"v", "id", "kind", "recipients", "enc"}  # §4.1: nothing else
    assert clear["v"] == 2
    origin = clear["id"][0]

    # §7: COSE_Sign1, alg Ed25519 (-19), exact protected bytes, v2 external_aad.
    tagged = cbor2.loads(cose)
    assert tagged.tag == 18
    protected, unprotected, payload, signature = tagged.value
    assert protected == b"\xa2\x01\x32\x04\x50" + origin
    assert unprotected == {}
    assert payload == hashlib.sha256(SPEC_MAGIC + b"\x00\x02"
                                     + stream[:-12 - cose_length]).digest()
    keys = json.loads((VECTORS / "test-keys.json").read_text(encoding="utf-8"))
    signer = next(k for k in keys.values() if isinstance(k, dict)
                  and k["site_id"] == origin.hex())
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(signer["signing_public"])).verify(
        signature, cbor2.dumps(["Signature1", protected, b"bundlesync bundle v2", payload]))

    enc = clear["enc"]
    chunk = None if enc is None else enc["chunk"]
    h = hashlib.sha256(b"bundlesync v2 header\x00" + cbor2.dumps(
        [clear["id"], clear["kind"], clear["recipients"], chunk], canonical=True)).digest()
    plain = body
    if enc is not None:
        me = bytes.fromhex(reader["site_id"])
        stanza = next(s for s in enc["stanzas"] if s[0] == me)
        file_key = hpke_open(bytes.fromhex(reader["exchange_secret"]), stanza[1],
                             b"bundlesync v2 stanza\x00" + h, b"", stanza[2])
        mac_key = hkdf(file_key, b"", b"bundlesync v2 header mac")
        expected_mac = hmac.new(mac_key, b"bundlesync v2 mac\x00" + h + hashlib.sha256(
            cbor2.dumps(enc["stanzas"], canonical=True)).digest(), hashlib.sha256).digest()
        assert hmac.compare_digest(expected_mac, enc["mac"])
        inner = ChaCha20Poly1305(hkdf(file_key, h, b"bundlesync v2 inner header")).decrypt(
            bytes(12), inner, None)
        payload_key = ChaCha20Poly1305(hkdf(file_key, h, b"bundlesync v2 payload"))
        sealed = [body[i:i + chunk + 16] for i in range(0, len(body), chunk + 16)]
        plain = b"".join(
            payload_key.decrypt(i.to_bytes(11, "big") + (b"\x01" if i == len(sealed) - 1
                                                           else b"\x00"), piece, None)
            for i, piece in enumerate(sealed))

    record_stream = bytearray()
    position = 0
    while True:
        compressed, content = struct.unpack(">II", plain[position:position + 8])
        position += 8
        if compressed == 0 and content == 0:
            break
        frame = plain[position:position + compressed]
        position += compressed
        out = zstandard.ZstdDecompressor().decompress(frame, max_output_size=content)
        assert len(out) == content
        record_stream += out
    assert not any(plain[position:])  # §6: only zero padding after the end frame
    decoder = cbor2.CBORDecoder(io.BytesIO(bytes(record_stream)))
    records = []
    while decoder.fp.tell() < len(record_stream):
        records.append(decoder.decode())
    return {"clear": clear, "inner": cbor2.loads(inner), "records": records,
            "padding": len(plain) - position}


@pytest.mark.parametrize("name", ["plain", "encrypted", "padded"])
def test_v2_vectors_decode_from_the_spec_text(name: str) -> None:
    keys = json.loads((VECTORS / "test-keys.json").read_text(encoding="utf-8"))
    expected = json.loads((VECTORS / "v2" / "valid" / f"{name}.json").read_text(
        encoding="utf-8"))
    got = decode(f"v2/valid/{name}.bsb", keys["B"])
    h = expected["header"]
    assert [got["clear"]["id"][0].hex(), *got["clear"]["id"][1:]] == h["bundle_id"]
    assert [r.hex() for r in got["clear"]["recipients"]] == h["recipients"]
    inner = got["inner"]
    assert set(inner) == {"records", "created", "origin", "ack", "assumes", "counts",
                          "compression", "capabilities"}
    assert inner["created"] == h["created_ms"]
    assert inner["origin"] == {"name": h["origin_name"]}
    assert [[s.hex(), i, n] for s, i, n in inner["ack"]] == h["ack"]
    assert inner["compression"] == {"alg": "zstd", "frame": h["frame_size"]}
    assert [r[0] for r in got["records"]] == [
        0 if r["type"] == "body" else 1 for r in expected["records"]]
    if name == "padded":
        assert got["padding"] > 0
