"""Check a vector's COSE_Sign1 from the spec text alone (bundle-v1 §8), with cbor2 and
cryptography -- none of bundlesync's signing or parsing code."""

from __future__ import annotations

import hashlib
import json
import struct

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.format.helpers import VECTORS

SPEC_MAGIC = bytes([0x89, 0x42, 0x53, 0x42, 0x0D, 0x0A, 0x1A, 0x0A])


def split_trailer(path_name: str) -> tuple[bytes, bytes, bytes]:
    """(signed bytes, header bytes, COSE_Sign1 bytes) of a single-volume vector."""
    data = (VECTORS / path_name).read_bytes()
    assert data[:8] == SPEC_MAGIC
    (segment_length,) = struct.unpack(">Q", data[32:40])
    stream = data[48:]
    assert len(stream) == segment_length
    assert stream[-8:] == b"BSB-END\n"
    (cose_length,) = struct.unpack(">I", stream[-12:-8])
    cose = stream[-12 - cose_length:-12]
    (header_length,) = struct.unpack(">I", stream[:4])
    header = stream[4:4 + header_length]
    signed = SPEC_MAGIC + b"\x00\x01" + stream[:-12 - cose_length]
    return signed, header, cose


@pytest.mark.parametrize("vector", ["valid/plain.bsb", "valid/encrypted.bsb", "valid/empty.bsb"])
def test_cose_sign1_verifies_from_the_spec_text(vector: str) -> None:
    keys = json.loads((VECTORS / "test-keys.json").read_text(encoding="utf-8"))
    site_a = keys["A"]
    signed, header_bytes, cose = split_trailer(vector)

    tagged = cbor2.loads(cose)
    assert isinstance(tagged, cbor2.CBORTag)
    assert tagged.tag == 18
    protected, unprotected, payload, signature = tagged.value
    assert unprotected == {}
    assert cbor2.loads(protected) == {1: -8, 4: bytes.fromhex(site_a["site_id"])}
    assert protected == b"\xa2\x01\x27\x04\x50" + bytes.fromhex(site_a["site_id"])
    assert payload == hashlib.sha256(signed).digest()
    assert len(signature) == 64

    sig_structure = cbor2.dumps(["Signature1", protected, b"bundlesync bundle v1", payload])
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(site_a["signing_public"]))
    key.verify(signature, sig_structure)  # raises if invalid

    # The header names the same origin key, and the site id is derived from it.
    header = cbor2.loads(header_bytes)
    assert header["origin"]["key"].hex() == site_a["signing_public"]
    assert hashlib.sha256(header["origin"]["key"]).digest()[:16].hex() == site_a["site_id"]

    # A different external_aad (or payload) does not verify: the check is not vacuous.
    with pytest.raises(InvalidSignature):
        key.verify(signature, cbor2.dumps(["Signature1", protected, b"", payload]))


def test_header_is_deterministic_cbor() -> None:
    _, header_bytes, _ = split_trailer("valid/plain.bsb")
    assert cbor2.dumps(cbor2.loads(header_bytes), canonical=True) == header_bytes
