"""The trailer's COSE_Sign1 signature (RFC 9052; bundle-v1 §8, bundle-v2 §7).

The COSE payload is the 32-byte SHA-256 of every signed byte of the bundle (an
embedded digest, not a detached payload), so the signature is small and can be
checked after one hashing pass. The protected header is ``{1: -8, 4: kid}``
(alg EdDSA, key id = the origin's 16-byte site id); the unprotected header is
empty; external_aad is the ASCII string ``bundlesync bundle v1``, which keeps a
bundle signature from being taken for any other COSE message signed by the key.

Version 2 (bundle-v2 §7) uses the fully specified algorithm ``Ed25519`` (-19,
RFC 9864) and external_aad ``bundlesync bundle v2``. In both versions the
protected header must be exactly the bytes the writer produces, not merely a
map with the right keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bundlesync.format import cbor
from bundlesync.format.errors import Malformed
from bundlesync.format.limits import Limits
from bundlesync.keys import SiteIdentity

COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_KID = 4
ALG_EDDSA = -8
ALG_ED25519 = -19
EXTERNAL_AAD = b"bundlesync bundle v1"
EXTERNAL_AAD_V2 = b"bundlesync bundle v2"
_ALGS = {1: ALG_EDDSA, 2: ALG_ED25519}
_AADS = {1: EXTERNAL_AAD, 2: EXTERNAL_AAD_V2}
SIGNATURE_CONTEXT = "Signature1"
DIGEST_SIZE = 32
SIGNATURE_SIZE = 64


@dataclass(frozen=True, slots=True)
class CoseSign1:
    """A parsed COSE_Sign1 trailer."""

    protected: bytes
    kid: bytes
    payload: bytes
    signature: bytes
    version: int = 1


def protected_header(site_id: str, *, version: int = 1) -> bytes:
    """The exact protected header bytes of a bundle of format ``version``."""
    return cbor.encode({HEADER_ALG: _ALGS[version], HEADER_KID: bytes.fromhex(site_id)})


def sig_structure(protected: bytes, payload: bytes, *, version: int = 1) -> bytes:
    """The bytes Ed25519 signs (RFC 9052 §4.4)."""
    return cbor.encode([SIGNATURE_CONTEXT, protected, _AADS[version], payload])


def sign_digest(identity: SiteIdentity, digest: bytes, *, version: int = 1) -> bytes:
    """The encoded, tagged COSE_Sign1 over ``digest`` by ``identity``."""
    protected = protected_header(identity.site_id, version=version)
    signature = identity.sign(sig_structure(protected, digest, version=version))
    return cbor.encode(cbor.Tagged(COSE_SIGN1_TAG, [protected, {}, digest, signature]))


def parse_sign1(data: bytes, limits: Limits, *, version: int = 1) -> CoseSign1:
    """Parse and check the shape of a trailer's COSE_Sign1. Raises Malformed."""
    bounds = cbor.DecodeBounds(max_depth=4, max_items=8, max_text=64,
                               max_bytes=limits.max_trailer, tags=frozenset({COSE_SIGN1_TAG}))
    try:
        value = cbor.decode(data, bounds)
    except cbor.CborError as exc:
        raise Malformed(f"The bundle's signature is not valid deterministic CBOR: {exc}."
                        ) from None
    if not isinstance(value, cbor.Tagged) or value.tag != COSE_SIGN1_TAG:
        raise Malformed("The bundle's signature is not a tagged COSE_Sign1.")
    items = value.value
    if not isinstance(items, list) or len(items) != 4:
        raise Malformed("The bundle's COSE_Sign1 does not have four items.")
    protected, unprotected, payload, signature = items
    if unprotected != {}:
        raise Malformed("The bundle's COSE_Sign1 has unprotected header parameters.")
    if not isinstance(protected, bytes):
        raise Malformed("The bundle's COSE_Sign1 protected header is not a byte string.")
    try:
        params = cbor.decode(protected, bounds)
    except cbor.CborError as exc:
        raise Malformed(f"The bundle's COSE protected header is invalid: {exc}.") from None
    if (not isinstance(params, dict) or set(params) != {HEADER_ALG, HEADER_KID}
            or params[HEADER_ALG] not in _ALGS.values()):
        raise Malformed("The bundle's COSE protected header is not {alg: EdDSA, kid}.")
    kid = params[HEADER_KID]
    if not isinstance(kid, bytes) or len(kid) != 16:
        raise Malformed("The bundle's COSE key id is not a 16-byte site id.")
    if params[HEADER_ALG] != _ALGS[version] or protected != protected_header(kid.hex(),
                                                                         version=version):
        # The spec fixes the bytes (bundle-v1 §8.2, bundle-v2 §7), not just the keys.
        raise Malformed("The bundle's COSE protected header is not exactly the one this "
                        "format version specifies.")
    if not isinstance(payload, bytes) or len(payload) != DIGEST_SIZE:
        raise Malformed("The bundle's COSE payload is not a SHA-256 digest.")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise Malformed("The bundle's COSE signature is not 64 bytes.")
    return CoseSign1(protected=protected, kid=kid, payload=payload, signature=signature,
                     version=version)


def signature_valid(sign1: CoseSign1, public_key: bytes) -> bool:
    """Whether ``sign1`` is a valid Ed25519 signature by ``public_key``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            sign1.signature, sig_structure(sign1.protected, sign1.payload,
                                           version=sign1.version))
    except (InvalidSignature, ValueError):
        return False
    return True
