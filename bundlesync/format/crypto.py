"""Encryption of the body to one or more recipients (bundle-v1 §7).

* A random 32-byte *file key* is wrapped once per recipient: an ephemeral
  X25519 key agrees a secret with the recipient's X25519 key, HKDF-SHA256 turns
  it into a wrapping key, ChaCha20-Poly1305 seals the file key (§7.2).
* The *payload key* is HKDF-SHA256 of the file key with the header's salt.
* The compressed frame stream is cut into chunks of ``chunk_size`` plaintext
  bytes, each sealed with ChaCha20-Poly1305 under a nonce made of an 11-byte
  big-endian chunk counter and a 1-byte last-chunk flag (§7.3). Reordering,
  dropping or truncating chunks therefore fails authentication.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bundlesync.format.errors import DecryptionFailed, Malformed, NotARecipient
from bundlesync.format.header import EncryptionParams, Stanza
from bundlesync.format.limits import AEAD_TAG_SIZE
from bundlesync.keys import PeerCard, SiteIdentity

FILE_KEY_SIZE = 32
SALT_SIZE = 16
WRAP_INFO = b"bundlesync-v1 file key"
PAYLOAD_INFO = b"bundlesync-v1 payload"
_ZERO_NONCE = bytes(12)

RandomBytes = Callable[[int], bytes]


def _hkdf(ikm: bytes, *, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def new_encryption(recipients: Sequence[PeerCard], *, chunk_size: int,
                   random_bytes: RandomBytes) -> tuple[EncryptionParams, bytes]:
    """Fresh encryption parameters for ``recipients`` (sorted by site id) and the
    payload key. ``random_bytes`` supplies the file key, the salt and the ephemeral
    keys, in that order (injectable for reproducible test vectors)."""
    file_key = random_bytes(FILE_KEY_SIZE)
    salt = random_bytes(SALT_SIZE)
    stanzas = []
    for card in sorted(recipients, key=lambda c: c.site_id):
        ephemeral = X25519PrivateKey.from_private_bytes(random_bytes(32))
        ephemeral_public = _raw_public(ephemeral)
        try:
            shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(card.exchange_public))
        except ValueError:
            raise Malformed(f"Peer {card.name!r} has an unusable encryption key.",
                            hint="Ask that site for a fresh card.") from None
        wrap_key = _hkdf(shared, salt=ephemeral_public + card.exchange_public, info=WRAP_INFO)
        wrapped = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
        stanzas.append(Stanza(card.site_id, ephemeral_public, wrapped))
    params = EncryptionParams(chunk_size=chunk_size, salt=salt, stanzas=tuple(stanzas))
    return params, _hkdf(file_key, salt=salt, info=PAYLOAD_INFO)


def unwrap_payload_key(params: EncryptionParams, identity: SiteIdentity | None) -> bytes:
    """The payload key, recovered from this site's stanza (bundle-v1 §7.2)."""
    stanza = None
    if identity is not None:
        stanza = next((s for s in params.stanzas if s.recipient == identity.site_id), None)
    if identity is None or stanza is None:
        who = "this site" if identity is None else f"site {identity.name} ({identity.site_id})"
        raise NotARecipient(
            f"The bundle is encrypted to {len(params.stanzas)} other site(s), not to {who}.")
    try:
        shared = identity.key_agreement(stanza.ephemeral)
        wrap_key = _hkdf(shared, salt=stanza.ephemeral + identity.exchange_public,
                         info=WRAP_INFO)
        file_key = ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, stanza.wrapped, None)
    except (InvalidTag, ValueError):
        raise DecryptionFailed(
            f"The bundle names site {identity.site_id} as a recipient, but this site's key "
            f"does not open it.") from None
    return _hkdf(file_key, salt=params.salt, info=PAYLOAD_INFO)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class StreamEncryptor:
    """Seals a byte stream chunk by chunk; the last chunk is sealed by :meth:`finish`."""

    def __init__(self, key: bytes, chunk_size: int) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._chunk = chunk_size
        self._pending = bytearray()
        self._counter = 0

    def update(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        self._pending += data
        # Keep at least one byte back: only finish() knows which chunk is last.
        while len(self._pending) > self._chunk:
            piece = bytes(self._pending[:self._chunk])
            del self._pending[:self._chunk]
            yield self._aead.encrypt(_nonce(self._counter, False), piece, None)
            self._counter += 1

    def finish(self) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._counter, True), bytes(self._pending), None)
        self._pending.clear()
        return sealed


def decrypt_stream(chunks: Iterator[bytes], key: bytes) -> Iterator[bytes]:
    """Open the sealed chunks (as cut by :func:`split_ciphertext`) in order."""
    aead = ChaCha20Poly1305(key)
    counter = 0
    current = next(chunks, None)
    while current is not None:
        following = next(chunks, None)
        last = following is None
        try:
            plain = aead.decrypt(_nonce(counter, last), current, None)
        except InvalidTag:
            raise DecryptionFailed(
                f"Encrypted chunk {counter} of the body does not authenticate: the bundle "
                f"was altered, or it is not the one this site's key was given for.") from None
        yield plain
        counter += 1
        current = following


def chunk_sizes(region_length: int, chunk_size: int) -> Iterator[int]:
    """Ciphertext chunk lengths of a body region of ``region_length`` bytes (§7.3).

    Every chunk but the last holds ``chunk_size`` plaintext bytes; the last holds
    1..chunk_size. Raises Malformed for a length no writer produces.
    """
    sealed = chunk_size + AEAD_TAG_SIZE
    full, rest = divmod(region_length, sealed)
    if rest == 0:
        if full == 0:
            raise Malformed("The encrypted body is empty.")
        full, rest = full - 1, sealed
    if rest <= AEAD_TAG_SIZE:
        raise Malformed("The encrypted body ends with an empty or cut chunk.")
    for _ in range(full):
        yield sealed
    yield rest
