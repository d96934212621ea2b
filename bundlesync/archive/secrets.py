"""The archive key, its config file and the stanzas that wrap it (archive-v1 §3, §4).

The archive key is wrapped once for the site (X25519) and once per recovery
secret: a passphrase (scrypt, memory-hard) or a recovery key card (32 random
bytes printed as text). Any one of them opens the archive.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass, field

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from bundlesync.archive.errors import ArchiveDamaged, WrongSecret
from bundlesync.archive.objects import CONFIG_MAGIC, MAX_CONFIG, RandomBytes, sign, verify
from bundlesync.errors import UsageError
from bundlesync.keys import SiteIdentity, fingerprint_of, site_id_of

FORMAT_NAME = "bundlesync-archive"
FORMAT_VERSION = 1
SITE_INFO = b"bundlesync-archive-v1 site"
CARD_INFO = b"bundlesync-archive-v1 card"
CARD_PREFIX = "bsak1"
DEFAULT_LOG_N = 17
MIN_LOG_N, MAX_LOG_N = 14, 22
DEFAULT_PACK_SIZE = 16 * 1024 * 1024
_ZERO_NONCE = bytes(12)
_U32 = struct.Struct(">I")


# --- recovery secrets --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Passphrase:
    """A passphrase recovery secret."""

    text: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RecoveryCard:
    """A recovery key card's 32-byte secret."""

    secret: bytes = field(repr=False)

    @property
    def card_id(self) -> bytes:
        return hashlib.sha256(self.secret).digest()[:8]

    def to_text(self) -> str:
        """``bsak1-`` + base32 of the secret + a 2-character check, in groups of four."""
        body = base64.b32encode(self.secret).decode("ascii").rstrip("=").lower()
        check = base64.b32encode(hashlib.sha256(self.secret).digest()[:5]).decode()[:2].lower()
        chars = body + check
        return CARD_PREFIX + "-" + "-".join(chars[i:i + 6] for i in range(0, len(chars), 6))

    @classmethod
    def from_text(cls, text: str) -> RecoveryCard:
        for raw in text.splitlines():
            line = "".join(raw.split()).lower()
            if not line.startswith(CARD_PREFIX + "-"):
                continue
            chars = line[len(CARD_PREFIX) + 1:].replace("-", "")
            body, check = chars[:-2], chars[-2:]
            try:
                secret = base64.b32decode(body.upper() + "====")
            except ValueError:
                break
            card = cls(secret)
            if len(secret) == 32 and card.to_text().replace("-", "")[-2:] == check:
                return card
            break
        raise UsageError("This is not a bundlesync recovery key card (or it was mistyped).",
                         hint="Copy the line starting with 'bsak1-' exactly as printed.")

    def card_text(self, *, archive_id: str) -> str:
        return "".join((
            "# bundlesync archive recovery key card. SECRET: with it, anyone who has the\n",
            "# archive can read all of its mail. Print it, keep it off-site, then delete\n",
            "# this file. Restore on any machine: --recovery-key-file THIS-FILE\n",
            f"# archive: {archive_id}\n",
            f"{self.to_text()}\n",
        ))


Secret = Passphrase | RecoveryCard | SiteIdentity


def new_card() -> RecoveryCard:
    return RecoveryCard(os.urandom(32))


# --- config ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchiveConfig:
    archive_id: bytes
    created_ms: int
    site_name: str
    signing_public: bytes
    exchange_public: bytes
    stanzas: tuple[dict[str, object], ...]
    pack_size: int = DEFAULT_PACK_SIZE

    @property
    def site_id(self) -> str:
        return site_id_of(self.signing_public)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.site_id)

    def body(self) -> dict[str, object]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "archive": self.archive_id,
            "created": self.created_ms,
            "site": {"name": self.site_name, "signing": self.signing_public,
                     "exchange": self.exchange_public},
            "stanzas": list(self.stanzas),
            "pack_size": self.pack_size,
        }

    def recovery_kinds(self) -> list[str]:
        return sorted({str(s["type"]) for s in self.stanzas if s["type"] != "site"})


def encode_config(config: ArchiveConfig, identity: SiteIdentity) -> bytes:
    body = cbor2.dumps(config.body(), canonical=True)
    head = CONFIG_MAGIC + _U32.pack(len(body)) + body
    return head + sign(identity, head)


def decode_config(data: bytes, *, what: str = "The archive's config") -> ArchiveConfig:
    if len(data) > MAX_CONFIG or data[:len(CONFIG_MAGIC)] != CONFIG_MAGIC or len(data) < 12:
        raise ArchiveDamaged(f"{what} is not a bundlesync archive config.")
    (length,) = _U32.unpack_from(data, len(CONFIG_MAGIC))
    end = len(CONFIG_MAGIC) + 4 + length
    try:
        body = cbor2.loads(data[len(CONFIG_MAGIC) + 4:end])
        site = body["site"]
        config = ArchiveConfig(
            archive_id=body["archive"], created_ms=body["created"],
            site_name=site["name"], signing_public=site["signing"],
            exchange_public=site["exchange"], stanzas=tuple(body["stanzas"]),
            pack_size=body.get("pack_size", DEFAULT_PACK_SIZE))
        if body["format"] != FORMAT_NAME:
            raise ArchiveDamaged(f"{what} is not a bundlesync archive config.")
        if body["version"] != FORMAT_VERSION:
            raise ArchiveDamaged(f"{what} is of archive format version {body['version']}, "
                                 "which this bundlesync does not read.",
                                 hint="Upgrade bundlesync.")
        if (not isinstance(config.archive_id, bytes) or len(config.archive_id) != 16
                or not isinstance(config.signing_public, bytes)
                or len(config.signing_public) != 32
                or not all(isinstance(s, dict) for s in config.stanzas)):
            raise ArchiveDamaged(f"{what} is malformed.")
    except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise ArchiveDamaged(f"{what} is malformed.") from None
    verify(config.signing_public, data[:end], data[end:], what=what)
    return config


# --- stanzas (archive-v1 §4) ---------------------------------------------------------------


def _hkdf(ikm: bytes, *, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _wrap(wrap_key: bytes, archive_key: bytes, archive_id: bytes) -> bytes:
    return ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, archive_key, archive_id)


def _unwrap(wrap_key: bytes, wrapped: object, archive_id: bytes) -> bytes | None:
    if not isinstance(wrapped, bytes):
        return None
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, wrapped, archive_id)
    except InvalidTag:
        return None


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def site_stanza(archive_key: bytes, archive_id: bytes, exchange_public: bytes, site_id: str,
                *, random_bytes: RandomBytes = os.urandom) -> dict[str, object]:
    ephemeral = X25519PrivateKey.from_private_bytes(random_bytes(32))
    ephemeral_public = ephemeral.public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(exchange_public))
    wrap_key = _hkdf(shared, salt=ephemeral_public + exchange_public, info=SITE_INFO)
    return {"type": "site", "site": bytes.fromhex(site_id), "ephemeral": ephemeral_public,
            "wrapped": _wrap(wrap_key, archive_key, archive_id)}


def passphrase_stanza(archive_key: bytes, archive_id: bytes, passphrase: Passphrase, *,
                      log_n: int = DEFAULT_LOG_N,
                      random_bytes: RandomBytes = os.urandom) -> dict[str, object]:
    if not passphrase.text:
        raise UsageError("The passphrase is empty.", hint="Choose a long passphrase.")
    salt = random_bytes(16)
    n, r, p = 1 << log_n, 8, 1
    wrap_key = _scrypt(passphrase.text, salt, n, r, p)
    return {"type": "passphrase", "kdf": "scrypt", "salt": salt, "n": n, "r": r, "p": p,
            "wrapped": _wrap(wrap_key, archive_key, archive_id)}


def card_stanza(archive_key: bytes, archive_id: bytes, card: RecoveryCard) -> dict[str, object]:
    wrap_key = _hkdf(card.secret, salt=archive_id, info=CARD_INFO)
    return {"type": "card", "card": card.card_id,
            "wrapped": _wrap(wrap_key, archive_key, archive_id)}


def _scrypt_params(stanza: dict[str, object]) -> tuple[bytes, int, int, int] | None:
    salt, n, r, p = stanza.get("salt"), stanza.get("n"), stanza.get("r"), stanza.get("p")
    if (stanza.get("kdf") != "scrypt" or not isinstance(salt, bytes)
            or not isinstance(n, int) or not isinstance(r, int) or not isinstance(p, int)):
        return None
    # archive-v1 §4: bounded, or a damaged config could ask for any amount of memory.
    if n & (n - 1) or not (1 << MIN_LOG_N) <= n <= (1 << MAX_LOG_N):
        return None
    if not (1 <= r <= 32 and 1 <= p <= 16):
        return None
    return salt, n, r, p


def unwrap_archive_key(config: ArchiveConfig, secret: Secret) -> bytes:
    """The archive key, opened with ``secret``. Raises WrongSecret."""
    archive_id = config.archive_id
    for stanza in config.stanzas:
        kind = stanza.get("type")
        key = None
        if isinstance(secret, SiteIdentity) and kind == "site":
            if stanza.get("site") != bytes.fromhex(secret.site_id):
                continue
            ephemeral = stanza.get("ephemeral")
            if not isinstance(ephemeral, bytes) or len(ephemeral) != 32:
                continue
            try:
                shared = secret.key_agreement(ephemeral)
            except ValueError:
                continue
            wrap_key = _hkdf(shared, salt=ephemeral + secret.exchange_public, info=SITE_INFO)
            key = _unwrap(wrap_key, stanza.get("wrapped"), archive_id)
        elif isinstance(secret, Passphrase) and kind == "passphrase":
            params = _scrypt_params(stanza)
            if params is None:
                continue
            key = _unwrap(_scrypt(secret.text, *params), stanza.get("wrapped"), archive_id)
        elif isinstance(secret, RecoveryCard) and kind == "card":
            if stanza.get("card") != secret.card_id:
                continue
            wrap_key = _hkdf(secret.secret, salt=archive_id, info=CARD_INFO)
            key = _unwrap(wrap_key, stanza.get("wrapped"), archive_id)
        if key is not None and len(key) == 32:
            return key
    if isinstance(secret, SiteIdentity):
        raise WrongSecret(f"The archive was not written for site {secret.name} "
                          f"({secret.fingerprint}); it belongs to site {config.site_name} "
                          f"({config.fingerprint}).")
    what = "passphrase" if isinstance(secret, Passphrase) else "recovery key card"
    raise WrongSecret(f"The {what} does not open this archive.")
