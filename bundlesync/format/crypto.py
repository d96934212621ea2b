"""Encryption of the body to one or more recipients (bundle-v1 §7, bundle-v2 §5).

Version 2 seals the file key to each recipient with HPKE (RFC 9180) with the
header hash as ``info``, and checks a MAC of the clear header keyed from the
file key before anything is decrypted (as age does); the payload and inner
header keys are derived from the file key and the header hash.

Version 1:

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

import dataclasses
import hashlib
import hmac
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bundlesync.format.errors import DecryptionFailed, Malformed, NotARecipient
from bundlesync.format.header import (
    HPKE_ENC_SIZE,
    ClearHeader,
    EncryptionParams,
    HpkeStanza,
    Stanza,
    encode_stanzas,
    header_hash,
)
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
    """Seals a byte stream chunk by chunk; the last chunk is sealed by :meth:`finish`.

    With an ``executor``, chunks are sealed in its worker threads (ChaCha20-Poly1305
    releases the GIL), up to ``ahead`` at a time, and handed out in order. A
    chunk's nonce is its number, so the sealed bytes are the same either way.
    """

    def __init__(self, key: bytes, chunk_size: int, *, executor: Executor | None = None,
                 ahead: int = 4) -> None:
        self._key = key
        self._aead = ChaCha20Poly1305(key)
        self._chunk = chunk_size
        self._pending = bytearray()
        self._counter = 0
        self._executor = executor
        self._ahead = max(1, ahead)
        self._queued: deque[Future[bytes]] = deque()
        self._local = threading.local()

    def _seal_in_worker(self, counter: int, piece: bytes) -> bytes:
        aead = getattr(self._local, "aead", None)
        if aead is None:
            aead = self._local.aead = ChaCha20Poly1305(self._key)
        sealed: bytes = aead.encrypt(_nonce(counter, False), piece, None)
        return sealed

    def update(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        self._pending += data
        # Keep at least one byte back: only finish() knows which chunk is last.
        while len(self._pending) > self._chunk:
            piece = bytes(self._pending[:self._chunk])
            del self._pending[:self._chunk]
            if self._executor is None:
                yield self._aead.encrypt(_nonce(self._counter, False), piece, None)
            else:
                self._queued.append(
                    self._executor.submit(self._seal_in_worker, self._counter, piece))
                while len(self._queued) > self._ahead:
                    yield self._queued.popleft().result()
            self._counter += 1

    def drain(self) -> Iterator[bytes]:
        """The chunks still being sealed, in order (call before :meth:`finish`)."""
        while self._queued:
            yield self._queued.popleft().result()

    def finish(self) -> bytes:
        """The last chunk; any chunk still being sealed comes first."""
        sealed = self._aead.encrypt(_nonce(self._counter, True), bytes(self._pending), None)
        self._pending.clear()
        if self._queued:
            return b"".join([*self.drain(), sealed])
        return sealed

    def abandon(self) -> None:
        """Drop the chunks still being sealed (the bundle is not written after all)."""
        while self._queued:
            self._queued.popleft().cancel()


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


# --- format version 2 (bundle-v2 §5) ------------------------------------------------------

# RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
STANZA_INFO = b"bundlesync v2 stanza\x00"
MAC_INFO = b"bundlesync v2 header mac"
MAC_DOMAIN = b"bundlesync v2 mac\x00"
PAYLOAD_INFO_V2 = b"bundlesync v2 payload"
INNER_INFO_V2 = b"bundlesync v2 inner header"


@dataclass(frozen=True, slots=True)
class FileKeys:
    """The keys a version 2 file key and header hash give (bundle-v2 §5.3)."""

    mac: bytes
    payload: bytes
    inner: bytes


def file_keys(file_key: bytes, header_hash: bytes) -> FileKeys:
    """MAC, payload and inner-header keys of a file key for the header hash H."""
    return FileKeys(mac=_hkdf(file_key, salt=b"", info=MAC_INFO),
                    payload=_hkdf(file_key, salt=header_hash, info=PAYLOAD_INFO_V2),
                    inner=_hkdf(file_key, salt=header_hash, info=INNER_INFO_V2))


def header_mac(mac_key: bytes, header_hash: bytes, stanzas: bytes) -> bytes:
    """The MAC of the clear header (bundle-v2 §5.3): H and the stanzas, keyed from the
    file key, so a header is bound to the key that opens it and vice versa."""
    return hmac.new(mac_key, MAC_DOMAIN + header_hash + hashlib.sha256(stanzas).digest(),
                    hashlib.sha256).digest()


def seal_file_key(card: PeerCard, file_key: bytes, header_hash: bytes) -> HpkeStanza:
    """The file key sealed to ``card`` with HPKE, ``info`` bound to the header hash."""
    try:
        public = X25519PublicKey.from_public_bytes(card.exchange_public)
        out = _HPKE.encrypt(file_key, public, info=STANZA_INFO + header_hash)
    except ValueError:
        raise Malformed(f"Peer {card.name!r} has an unusable encryption key.",
                        hint="Ask that site for a fresh card.") from None
    return HpkeStanza(card.site_id, out[:HPKE_ENC_SIZE], out[HPKE_ENC_SIZE:])


def open_file_key(clear: ClearHeader, identity: SiteIdentity | None,
                  header_hash: bytes) -> FileKeys:
    """The keys of a version 2 bundle, from this site's stanza, after checking the MAC.

    NotARecipient if no stanza names this site; DecryptionFailed if it does not open
    or the header MAC does not verify -- before any byte of the body is decrypted.
    """
    stanza = None
    if identity is not None:
        stanza = next((s for s in clear.stanzas if s.recipient == identity.site_id), None)
    if identity is None or stanza is None:
        who = "this site" if identity is None else f"site {identity.name} ({identity.site_id})"
        raise NotARecipient(
            f"The bundle is encrypted to {len(clear.stanzas)} other site(s), not to {who}.")
    file_key = None
    # The site's current key first, then the keys it retired (bundle-v2 §3.6).
    for secret in (identity.exchange_secret, *identity.retired_exchange_secrets):
        try:
            private = X25519PrivateKey.from_private_bytes(secret)
            file_key = _HPKE.decrypt(stanza.enc + stanza.sealed, private,
                                     info=STANZA_INFO + header_hash)
            break
        except (InvalidTag, ValueError):
            file_key = None
    if file_key is None or len(file_key) != FILE_KEY_SIZE:
        raise DecryptionFailed(
            f"The bundle names site {identity.site_id} as a recipient, but this site's key "
            f"does not open it (or its header was altered).")
    keys = file_keys(file_key, header_hash)
    assert clear.mac is not None
    if not hmac.compare_digest(header_mac(keys.mac, header_hash,
                                          encode_stanzas(clear.stanzas)), clear.mac):
        raise DecryptionFailed("The bundle's header MAC does not verify: its header was "
                               "altered, or its key was not made for this header.")
    return keys


def seal_inner(key: bytes, inner: bytes) -> bytes:
    """The inner header sealed under its own key (used once: a zero nonce is safe)."""
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, inner, None)


def open_inner(key: bytes, sealed: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, sealed, None)
    except InvalidTag:
        raise DecryptionFailed("The bundle's inner header does not authenticate.") from None


def new_encryption_v2(clear: ClearHeader, recipients: Sequence[PeerCard], *,
                      random_bytes: RandomBytes) -> tuple[ClearHeader, FileKeys]:
    """Stanzas and MAC for ``clear`` (which names the recipients and chunk size)."""
    file_key = random_bytes(FILE_KEY_SIZE)
    h = header_hash(clear)
    by_id = {card.site_id: card for card in recipients}
    stanzas = tuple(seal_file_key(by_id[r], file_key, h) for r in clear.recipients)
    keys = file_keys(file_key, h)
    mac = header_mac(keys.mac, h, encode_stanzas(stanzas))
    return dataclasses.replace(clear, stanzas=stanzas, mac=mac), keys
