"""Site identities, public cards and the trust store (``formats/bundle-v2.md`` §3).

A site has two key pairs: Ed25519 to sign the bundles it writes, X25519 to
receive bundles encrypted to it. Its ``site_id`` -- the lowercase hex of the
first 16 bytes of the SHA-256 of the Ed25519 public key -- is the id used in
every Timestamp, Dot and Stream. People compare the *fingerprint*, a hash of
BOTH public keys (bundle-v2 §3.1): a card whose encryption key was swapped has
another fingerprint. A card is signed by its site's signing key over a
domain-separated statement of its name, site id, encryption key and creation
time (bundle-v2 §3.2); an unsigned (version 1) card is accepted only where it
was trusted before, and is upgraded when its site exports its card again.

On disk, under the site home (:func:`site_paths`):

* ``keys/site.key`` -- the secret keys, mode 0600, written atomically; refused
  when group or others may read it.
* ``keys/site.bsc`` -- the site's own public card, to hand to peers.
* ``peers/<name>.bsc`` -- the cards of trusted peers (:class:`TrustStore`).

``cryptography`` is imported inside the functions that sign, verify, derive or
seal, not at the top: a run that writes and reads no bundle (a no-change export
or import) knows this site and its peers by name and site id alone, and need not
load it (:func:`peek_identity`, ``TrustStore.list(verify=False)``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import re
import secrets
import stat
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bundlesync.errors import LocalError
from bundlesync.fsio import atomic_write, fsync_dir

KEY_FILE_NAME = "site.key"
OWN_CARD_NAME = "site.bsc"
CARD_SUFFIX = ".bsc"
KEY_SIZE = 32
# A card is a few hundred bytes of text; anything far larger is not a card.
MAX_CARD_BYTES = 64 * 1024
SITE_ID_HEX = 32

# Site names end up in bundle file names (bundle-v1 §11): keep them portable
# across file systems, FAT included, and unambiguous to a shell.
SITE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_SITE_ID_RE = re.compile(r"[0-9a-f]{32}\Z")

_KEY_FILE_TAG = "bundlesync-site-key"
_CARD_TAG = "bundlesync-card"
_FORMAT_VERSION = "1"
_CARD_VERSION = "2"
SIGNATURE_SIZE = 64
# bundle-v2 §3.1, §3.2: domain separation, so neither hash nor signature can be
# mistaken for one made for another purpose.
_FINGERPRINT_DOMAIN = b"bundlesync fingerprint v2\x00"
_CARD_DOMAIN = b"bundlesync card v2\x00"
# bundle-v2 §3.5: an optional passphrase on the key file.
PASSPHRASE_ENV = "BUNDLESYNC_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
PASSPHRASE_SCRYPT_N = 2**15
_KEY_FILE_AAD = b"bundlesync site key v2\x00"
_REVOCATION_DOMAIN = b"bundlesync revocation v2\x00"
_REVOCATION_TAG = "bundlesync-revocation"
_SUCCESSION_DOMAIN = b"bundlesync succession v2\x00"
REVOKED_DIR = "revoked"
# bundle-v2 §3.7: revocations travel in drops as "<site id>.bsr" beside the cards.
REVOCATION_SUFFIX = ".bsr"
MAX_STATEMENT_SIZE = 4096
RETIRED_DIR = "retired"

RandomBytes = Callable[[int], bytes]


# --- errors ---------------------------------------------------------------------------


class KeyMissing(LocalError):
    """The site has no identity (no key file)."""

    default_hint = "Run 'bundlesync init' to create this site's keys, or pass --home."


class KeyFileInsecure(LocalError):
    """The key file may be read by other users: it is refused until fixed."""

    default_hint = "Run the chmod 600 the message shows, as the user that owns the site."


class KeyFileInvalid(LocalError):
    """The key file exists but cannot be parsed."""

    default_hint = "Restore the key file from the site's backup; do not edit it by hand."


class KeyFileLocked(LocalError):
    """The key file is protected by a passphrase and none (or a wrong one) was given."""

    default_hint = ("Give the passphrase in the environment variable BUNDLESYNC_PASSPHRASE "
                    "(for example from a secrets manager); nothing was changed.")


class KeyExists(LocalError):
    """Saving an identity would replace an existing one."""

    default_hint = (
        "A site keeps one identity for life: peers trust its key. Move the old key "
        "directory away first if you really mean to replace it."
    )


class InvalidCard(LocalError):
    """A site card file cannot be parsed or is inconsistent."""

    default_hint = ("Ask the peer's administrator for a fresh card "
                    "('bundlesync key export' writes it).")


class InvalidSiteName(LocalError):
    """A site name that cannot be used in file names and cards."""

    default_hint = (
        "Use 1 to 64 characters: letters, digits, '.', '_' and '-', starting with a "
        "letter or digit."
    )


class PeerConflict(LocalError):
    """Adding a card would clash with a peer already trusted."""

    default_hint = (
        "Each peer needs a unique name and its own key. If a peer's key really changed, "
        "remove the old card first ('bundlesync peer remove NAME') after checking the new "
        "fingerprint with that site's administrator."
    )


class PeerNotFound(LocalError):
    """No trusted peer by that name."""

    default_hint = "List the trusted peers with 'bundlesync peer list'."


class KeyRevoked(LocalError):
    """The card's signing key was revoked by its site."""

    default_hint = ("Ask the site's administrator for the card of its new site; a revoked "
                    "key is never trusted again.")


class TrustStoreInvalid(LocalError):
    """The trust store directory holds a file that is not a valid, unique card."""

    default_hint = "Remove or fix the file named in the message, then try again."


# --- ids ------------------------------------------------------------------------------


def site_id_of(signing_public: bytes) -> str:
    """The site id of an Ed25519 public key (bundle-v1 §13.1)."""
    return hashlib.sha256(signing_public).hexdigest()[:SITE_ID_HEX]


def ed25519_signed(public: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public``'s Ed25519 signature of ``message``."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - see the module docstring
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PublicKey,
    )
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def fingerprint_of(site_id: str) -> str:
    """The site id in groups of four hex digits (bundle-v1 §13.1).

    This names a signing key only; what people compare before trusting a card is
    :func:`card_fingerprint`, which also covers the encryption key.
    """
    return " ".join(site_id[i:i + 4] for i in range(0, len(site_id), 4))


def card_fingerprint(signing_public: bytes, exchange_public: bytes) -> str:
    """The fingerprint of a site's two public keys (bundle-v2 §3.1), in groups of four."""
    digest = hashlib.sha256(_FINGERPRINT_DOMAIN + signing_public + exchange_public)
    return fingerprint_of(digest.hexdigest()[:SITE_ID_HEX])


def card_statement(*, name: str, site_id: str, exchange_public: bytes, created_ms: int
                   ) -> bytes:
    """The bytes a card's signature covers (bundle-v2 §3.2)."""
    encoded = name.encode("utf-8")
    return b"".join((_CARD_DOMAIN, struct.pack(">H", len(encoded)), encoded,
                     bytes.fromhex(site_id), exchange_public, struct.pack(">Q", created_ms)))


def is_site_id(value: str) -> bool:
    return bool(_SITE_ID_RE.match(value))


def check_site_name(name: str) -> str:
    """Return ``name`` if it is a valid site name, else raise InvalidSiteName."""
    if not SITE_NAME_RE.match(name):
        raise InvalidSiteName(f"{name!r} is not a valid site name.")
    return name


def read_statement(path: Path, what: str) -> str:
    """The text of a small file from an untrusted place: a regular file, never reached
    through a symlink, at most MAX_STATEMENT_SIZE bytes, UTF-8 (InvalidCard otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise InvalidCard(f"The {what} file {path} does not exist.",
                          hint="Check the path of the file.") from None
    except OSError as exc:
        raise InvalidCard(f"Cannot open the {what} file {path}: {exc.strerror}.") from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        data = os.read(fd, MAX_STATEMENT_SIZE + 1) if regular else b""
    except OSError as exc:
        raise InvalidCard(f"Cannot read the {what} file {path}: {exc.strerror}.") from None
    finally:
        os.close(fd)
    if not regular:
        raise InvalidCard(f"{path} is not a regular file.")
    if len(data) > MAX_STATEMENT_SIZE:
        raise InvalidCard(f"{path} is too large to be a {what}.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCard(f"{path} is not a {what} (it is not text).") from None


# --- succession -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Succession:
    """The old signing key's statement that a new key pair continues its site (bundle-v2 §3.8).

    The site id stays the one the site was created with, so its streams, dots and
    timestamps keep their ids; peers accept the new signing key for that site id
    once this statement verifies with the key they trusted.
    """

    site_id: str
    old_signing: bytes
    new_signing: bytes
    new_exchange: bytes
    created_ms: int
    signature: bytes = b""

    _PACKED = 16 + 3 * KEY_SIZE + 8 + SIGNATURE_SIZE

    def statement(self) -> bytes:
        return b"".join((_SUCCESSION_DOMAIN, self._body()))

    def _body(self) -> bytes:
        return b"".join((bytes.fromhex(self.site_id), self.old_signing, self.new_signing,
                         self.new_exchange, struct.pack(">Q", self.created_ms)))

    def signature_valid(self) -> bool:
        """Whether the OLD key signed this statement."""
        return ed25519_signed(self.old_signing, self.signature, self.statement())

    def to_field(self) -> str:
        """The ``succession`` field of a card or key file: base64 of body || signature."""
        return _b64(self._body() + self.signature)

    @classmethod
    def from_field(cls, text: str, *, source: str, error: type[LocalError]) -> Succession:
        data = _unb64(text, source, error, size=cls._PACKED)
        created = struct.unpack(">Q", data[112:120])[0]
        if created >= 2**63:
            raise error(f"{source}: the succession's time is not a number of milliseconds.")
        return cls(site_id=data[:16].hex(), old_signing=data[16:48], new_signing=data[48:80],
                   new_exchange=data[80:112], created_ms=created, signature=data[120:])


# --- cards ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerCard:
    """A site's public identity: what a peer needs to verify and encrypt to it.

    ``name`` is the name this site knows the peer by; ``signed_name`` (None: the
    same) is the name the peer signed for itself. ``signature`` is empty for an
    unsigned version 1 card, which only a trust store that held it before reads.
    """

    name: str
    signing_public: bytes
    exchange_public: bytes
    created_ms: int = 0
    signature: bytes = b""
    signed_name: str | None = None
    # A successor key's card: the old key's statement that this key continues its
    # site id (bundle-v2 §3.8). None: the site id is the hash of the signing key.
    succession: Succession | None = None

    def __post_init__(self) -> None:
        check_site_name(self.name)
        if len(self.signing_public) != KEY_SIZE or len(self.exchange_public) != KEY_SIZE:
            raise InvalidCard(f"card {self.name!r}: public keys must be {KEY_SIZE} bytes")
        if self.succession is not None and self.succession.new_signing != self.signing_public:
            raise InvalidCard(f"card {self.name!r}: its succession names another key.")

    @property
    def site_id(self) -> str:
        if self.succession is not None:
            return self.succession.site_id
        return site_id_of(self.signing_public)

    @property
    def fingerprint(self) -> str:
        """What people compare: covers both keys (bundle-v2 §3.1)."""
        return card_fingerprint(self.signing_public, self.exchange_public)

    @property
    def own_name(self) -> str:
        """The name the site gave itself (what its bundles carry as origin name)."""
        return self.signed_name if self.signed_name is not None else self.name

    @property
    def signed(self) -> bool:
        return bool(self.signature)

    def statement(self) -> bytes:
        return card_statement(name=self.own_name, site_id=self.site_id,
                              exchange_public=self.exchange_public, created_ms=self.created_ms)

    def signature_valid(self) -> bool:
        """Whether ``signature`` is the site's signature of this card's statement."""
        return ed25519_signed(self.signing_public, self.signature, self.statement())

    def renamed(self, name: str) -> PeerCard:
        """The same card known locally under ``name`` (the signature stays valid)."""
        if name == self.name:
            return self
        return dataclasses.replace(self, name=name, signed_name=self.own_name)

    def to_text(self) -> str:
        """The card as a small text file a person can mail, print or carry."""
        head = ("# bundlesync site card. Give it to the administrators of peer sites;\n"
                "# they should confirm the fingerprint with you by another channel.\n")
        if not self.signed:
            # Only a trust store writes this: the version 1 card it was given.
            return "".join((head, f"{_CARD_TAG}: {_FORMAT_VERSION}\n",
                            f"name: {self.name}\n", f"site-id: {self.site_id}\n",
                            f"fingerprint: {fingerprint_of(self.site_id)}\n",
                            f"signing-key: {_b64(self.signing_public)}\n",
                            f"exchange-key: {_b64(self.exchange_public)}\n"))
        local = f"local-name: {self.name}\n" if self.signed_name is not None else ""
        return "".join((
            head, f"{_CARD_TAG}: {_CARD_VERSION}\n",
            f"name: {self.own_name}\n",
            local,
            f"site-id: {self.site_id}\n",
            f"fingerprint: {self.fingerprint}\n",
            f"signing-key: {_b64(self.signing_public)}\n",
            f"exchange-key: {_b64(self.exchange_public)}\n",
            f"created: {self.created_ms}\n",
            f"signature: {_b64(self.signature)}\n",
            "" if self.succession is None else f"succession: {self.succession.to_field()}\n",
        ))

    @classmethod
    def from_text(cls, text: str, *, source: str = "card",
                  accept_unsigned: bool = False, verify: bool = True) -> PeerCard:
        """Parse :meth:`to_text` output, checking ids, fingerprint and signature.

        A version 1 (unsigned) card is refused unless ``accept_unsigned`` (a trust
        store reading the card it was given before cards were signed). With
        ``verify=False`` the Ed25519 signatures (card, succession) are not checked:
        only for a card of this site's trust store that is used for its name and
        site id alone, never to verify or encrypt (``TrustStore.list``).
        """
        fields = _parse_fields(text, source=source, error=InvalidCard)
        version = fields.get(_CARD_TAG)
        if version not in (_FORMAT_VERSION, _CARD_VERSION):
            raise InvalidCard(f"{source} is not a bundlesync site card (version 1 or 2).")
        name = _require(fields, "name", source, InvalidCard)
        local_name = fields.get("local-name", name)
        for each in (name, local_name):
            try:
                check_site_name(each)
            except InvalidSiteName as exc:
                raise InvalidCard(f"{source}: {exc.message}") from None
        signing = _unb64(_require(fields, "signing-key", source, InvalidCard),
                         source, InvalidCard)
        exchange = _unb64(_require(fields, "exchange-key", source, InvalidCard),
                          source, InvalidCard)
        succession = None
        if "succession" in fields and version == _CARD_VERSION:
            succession = Succession.from_field(fields["succession"], source=source,
                                               error=InvalidCard)
            if succession.new_signing != signing or (
                    verify and not succession.signature_valid()):
                raise InvalidCard(f"{source}: its succession statement does not verify for "
                                  f"its signing key; the card was altered.")
        claimed_id = fields.get("site-id")
        if succession is not None:
            if claimed_id != succession.site_id:
                raise InvalidCard(f"{source}: its site id is not the one its succession "
                                  f"continues.")
        elif claimed_id is not None and claimed_id != site_id_of(signing):
            raise InvalidCard(
                f"{source}: its site id {claimed_id} does not belong to its signing key "
                f"(which has site id {site_id_of(signing)}); the card was altered."
            )
        if version == _FORMAT_VERSION:
            return cls._unsigned(fields, name, signing, exchange, source=source,
                                 accept=accept_unsigned)
        created = _require(fields, "created", source, InvalidCard)
        if not created.isdigit() or int(created) >= 2**63:
            raise InvalidCard(f"{source}: its creation time {created!r} is not a number of "
                              f"milliseconds.")
        card = cls(name=local_name, signing_public=signing, exchange_public=exchange,
                   created_ms=int(created),
                   signature=_unb64(_require(fields, "signature", source, InvalidCard),
                                    source, InvalidCard, size=SIGNATURE_SIZE),
                   signed_name=None if local_name == name else name, succession=succession)
        claimed_fp = fields.get("fingerprint")
        if claimed_fp is not None and claimed_fp != card.fingerprint:
            raise InvalidCard(f"{source}: its fingerprint does not match its keys; the card "
                              f"was altered.")
        if verify and not card.signature_valid():
            raise InvalidCard(
                f"{source}: the card's signature does not match its name and keys; the card "
                f"was altered (or damaged) after its site signed it.",
                hint="Do not trust this card. Get the card again from the site's "
                     "administrator and compare its fingerprint by another channel.")
        return card

    @classmethod
    def _unsigned(cls, fields: dict[str, str], name: str, signing: bytes, exchange: bytes,
                  *, source: str, accept: bool) -> PeerCard:
        if not accept:
            raise InvalidCard(
                f"{source} is an unsigned card (version 1): nothing shows that its "
                f"encryption key belongs to {name!r}.",
                hint=f"Ask the administrator of {name!r} to export the site's card again "
                     f"with this version of bundlesync ('bundlesync site card'), compare "
                     f"the new fingerprint by another channel, then add that card.")
        claimed_fp = fields.get("fingerprint")
        if claimed_fp is not None and claimed_fp != fingerprint_of(site_id_of(signing)):
            raise InvalidCard(f"{source}: its fingerprint does not match its signing key.")
        return cls(name=name, signing_public=signing, exchange_public=exchange)

    def write(self, path: Path) -> None:
        """Write the card atomically (mode 0644: it is public)."""
        write_file_atomically(path, self.to_text().encode("utf-8"), mode=0o644)

    @classmethod
    def read(cls, path: Path, *, accept_unsigned: bool = False, verify: bool = True
             ) -> PeerCard:
        """Read a card file (see :meth:`from_text`): a regular file of at most
        MAX_CARD_BYTES (a card is a few hundred bytes; /dev/zero or a FIFO given by
        mistake must not hang or fill memory)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise InvalidCard(f"Card file {path} is not a regular file.",
                                      hint="Give the path of the .card file itself.")
                data = handle.read(MAX_CARD_BYTES + 1)
            if len(data) > MAX_CARD_BYTES:
                raise InvalidCard(f"Card file {path} is larger than {MAX_CARD_BYTES} bytes; "
                                  "it is not a card.",
                                  hint="Give the path of the .card file itself.")
            text = data.decode("utf-8")
        except FileNotFoundError:
            raise InvalidCard(f"Card file {path} does not exist.",
                              hint="Check the path of the card file.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidCard(f"Cannot read card file {path}: {exc}") from None
        return cls.from_text(text, source=str(path), accept_unsigned=accept_unsigned,
                             verify=verify)


# --- revocation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revocation:
    """A site's statement that its signing key must no longer be trusted (bundle-v2 §3.7).

    Signed by the revoked key itself: whoever holds the key -- the site, or a thief
    -- can only make it less trusted.
    """

    signing_public: bytes
    created_ms: int
    signature: bytes

    @property
    def site_id(self) -> str:
        return site_id_of(self.signing_public)

    def statement(self) -> bytes:
        return (_REVOCATION_DOMAIN + bytes.fromhex(self.site_id)
                + struct.pack(">Q", self.created_ms))

    def signature_valid(self) -> bool:
        return ed25519_signed(self.signing_public, self.signature, self.statement())

    def to_text(self) -> str:
        return "".join((
            "# bundlesync revocation: the site's signing key below must not be trusted.\n",
            f"{_REVOCATION_TAG}: {_FORMAT_VERSION}\n", f"site-id: {self.site_id}\n",
            f"signing-key: {_b64(self.signing_public)}\n", f"created: {self.created_ms}\n",
            f"signature: {_b64(self.signature)}\n"))

    @classmethod
    def read(cls, path: Path) -> Revocation:
        """Read a revocation file: a regular file (never through a symlink), bounded."""
        return cls.from_text(read_statement(path, "revocation"), source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str = "revocation") -> Revocation:
        """Parse :meth:`to_text` output; the signature must verify (InvalidCard)."""
        fields = _parse_fields(text, source=source, error=InvalidCard)
        if fields.get(_REVOCATION_TAG) != _FORMAT_VERSION:
            raise InvalidCard(f"{source} is not a bundlesync revocation.")
        created = _require(fields, "created", source, InvalidCard)
        if not created.isdigit() or int(created) >= 2**63:
            raise InvalidCard(f"{source}: its creation time {created!r} is not a number.")
        revocation = cls(
            signing_public=_unb64(_require(fields, "signing-key", source, InvalidCard),
                                  source, InvalidCard),
            created_ms=int(created),
            signature=_unb64(_require(fields, "signature", source, InvalidCard), source,
                             InvalidCard, size=SIGNATURE_SIZE))
        if fields.get("site-id", revocation.site_id) != revocation.site_id:
            raise InvalidCard(f"{source}: its site id does not belong to its key.")
        if not revocation.signature_valid():
            raise InvalidCard(f"{source}: its signature does not verify; it was altered.")
        return revocation


# --- identity -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteIdentity:
    """This site's secret keys and name. ``repr`` never shows the secrets."""

    name: str
    signing_secret: bytes = field(repr=False)
    exchange_secret: bytes = field(repr=False)
    # When the card was made (ms); 0 for a key file from before cards were signed.
    created_ms: int = 0
    # Set when this key pair succeeded an older one (bundle-v2 §3.8): the site id
    # is then the one the succession continues.
    succession: Succession | None = None
    # Encryption secrets this site had before (keys/retired/): bundles peers sealed
    # to them before they took the new card still open (bundle-v2 §3.6).
    retired_exchange_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    signing_public: bytes = field(init=False, repr=False)
    exchange_public: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_site_name(self.name)
        if len(self.signing_secret) != KEY_SIZE or len(self.exchange_secret) != KEY_SIZE:
            raise KeyFileInvalid(f"site {self.name!r}: secret keys must be {KEY_SIZE} bytes")
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
            Ed25519PrivateKey,
        )
        from cryptography.hazmat.primitives.asymmetric.x25519 import (  # noqa: PLC0415
            X25519PrivateKey,
        )
        raw = serialization.Encoding.Raw
        signing = Ed25519PrivateKey.from_private_bytes(self.signing_secret)
        exchange = X25519PrivateKey.from_private_bytes(self.exchange_secret)
        object.__setattr__(self, "signing_public", signing.public_key().public_bytes(
            raw, serialization.PublicFormat.Raw))
        object.__setattr__(self, "exchange_public", exchange.public_key().public_bytes(
            raw, serialization.PublicFormat.Raw))
        if self.succession is not None and self.succession.new_signing != self.signing_public:
            raise KeyFileInvalid(f"site {self.name!r}: the succession names another key")

    @property
    def site_id(self) -> str:
        if self.succession is not None:
            return self.succession.site_id
        return site_id_of(self.signing_public)

    @property
    def fingerprint(self) -> str:
        return card_fingerprint(self.signing_public, self.exchange_public)

    def with_new_exchange_key(self, *, created_ms: int,
                              random_bytes: RandomBytes = secrets.token_bytes) -> SiteIdentity:
        """This site with a fresh encryption key made at ``created_ms`` (bundle-v2 §3.6).

        Its card, signed by the unchanged signing key, is the update peers take in
        with :meth:`TrustStore.update`; bundles already sent stay readable only
        with the old key.
        """
        return SiteIdentity(name=self.name, signing_secret=self.signing_secret,
                            exchange_secret=random_bytes(KEY_SIZE), created_ms=created_ms,
                            succession=self.succession)

    def successor(self, *, created_ms: int,
                  random_bytes: RandomBytes = secrets.token_bytes) -> SiteIdentity:
        """This site with a new signing AND encryption key, keeping its site id (§3.8).

        The old signing key signs the succession statement the new card carries;
        peers that trust the old key take the new card on the strength of it.
        """
        new = SiteIdentity(name=self.name, signing_secret=random_bytes(KEY_SIZE),
                           exchange_secret=random_bytes(KEY_SIZE), created_ms=created_ms)
        unsigned = Succession(self.site_id, self.signing_public, new.signing_public,
                              new.exchange_public, created_ms)
        signed = dataclasses.replace(unsigned, signature=self.sign(unsigned.statement()))
        return dataclasses.replace(new, succession=signed)

    def revocation(self, *, created_ms: int) -> Revocation:
        """This site's statement that its signing key must no longer be trusted."""
        unsigned = Revocation(self.signing_public, created_ms, b"")
        return Revocation(self.signing_public, created_ms, self.sign(unsigned.statement()))

    def card(self) -> PeerCard:
        """This site's card, signed (bundle-v2 §3.2)."""
        statement = card_statement(name=self.name, site_id=self.site_id,
                                   exchange_public=self.exchange_public,
                                   created_ms=self.created_ms)
        return PeerCard(name=self.name, signing_public=self.signing_public,
                        exchange_public=self.exchange_public, created_ms=self.created_ms,
                        signature=self.sign(statement), succession=self.succession)

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature of ``message`` by this site."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
            Ed25519PrivateKey,
        )
        return Ed25519PrivateKey.from_private_bytes(self.signing_secret).sign(message)

    def key_agreement(self, peer_public: bytes) -> bytes:
        """X25519 shared secret with ``peer_public``.

        Raises ValueError when the result is all zeros (a low-order public key).
        """
        from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric.x25519 import (  # noqa: PLC0415
            X25519PrivateKey,
            X25519PublicKey,
        )
        private = X25519PrivateKey.from_private_bytes(self.exchange_secret)
        try:
            return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except (UnsupportedAlgorithm, ValueError) as exc:
            raise ValueError(str(exc)) from None


def generate_identity(name: str, *, random_bytes: RandomBytes = secrets.token_bytes,
                      created_ms: int = 0) -> SiteIdentity:
    """A new site identity with fresh Ed25519 and X25519 keys, made at ``created_ms``.

    ``random_bytes`` exists for deterministic test keys; leave it alone otherwise.
    """
    return SiteIdentity(name=check_site_name(name), signing_secret=random_bytes(KEY_SIZE),
                        exchange_secret=random_bytes(KEY_SIZE), created_ms=created_ms)


def _passphrase_key(passphrase: str, salt: bytes, n: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # noqa: PLC0415
    return Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(passphrase.encode("utf-8"))


def _seal_secrets(identity: SiteIdentity, passphrase: str) -> str:
    """``sealed-secrets`` of a protected key file (bundle-v2 §3.5)."""
    salt = secrets.token_bytes(16)
    key = _passphrase_key(passphrase, salt, PASSPHRASE_SCRYPT_N)
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: PLC0415
    sealed = ChaCha20Poly1305(key).encrypt(
        bytes(12), identity.signing_secret + identity.exchange_secret,
        _KEY_FILE_AAD + bytes.fromhex(identity.site_id))
    return _b64(salt + sealed)


def _open_secrets(text: str, site_id: str | None, passphrase: str | None, source: str,
                  n: int) -> tuple[bytes, bytes]:
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        raise KeyFileLocked(f"The site key {source} is protected by a passphrase.")
    try:
        blob = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyFileInvalid(f"{source}: the sealed secrets are not valid base64.") from None
    if len(blob) != 16 + 2 * KEY_SIZE + 16 or site_id is None or not is_site_id(site_id):
        raise KeyFileInvalid(f"{source}: the sealed secrets are damaged.")
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: PLC0415
    try:
        plain = ChaCha20Poly1305(_passphrase_key(passphrase, blob[:16], n)).decrypt(
            bytes(12), blob[16:], _KEY_FILE_AAD + bytes.fromhex(site_id))
    except InvalidTag:
        raise KeyFileLocked(f"The passphrase does not open the site key {source}.",
                            hint=f"Check the passphrase in {PASSPHRASE_ENV}; nothing was "
                                 f"changed.") from None
    return plain[:KEY_SIZE], plain[KEY_SIZE:]


def save_identity(identity: SiteIdentity, directory: Path, *, overwrite: bool = False,
                  passphrase: str | None = None) -> Path:
    """Write the key file (0600, atomically) and the site's own card into ``directory``.

    Returns the key file's path. Refuses to replace an existing key file unless
    ``overwrite``: peers trust the old key. With ``passphrase`` the secret keys are
    sealed under it (bundle-v2 §3.5); loading then needs the passphrase.
    """
    key_path = directory / KEY_FILE_NAME
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalError(f"Cannot create key directory {directory}: {exc.strerror}") from None
    if key_path.exists() and not overwrite:
        raise KeyExists(f"Site key {key_path} already exists.")
    text = "".join(
        (
            "# bundlesync site key. SECRET: whoever holds this file can sign bundles as\n",
            "# this site and read bundles sent to it. Keep it mode 0600 and back it up.\n",
            f"{_KEY_FILE_TAG}: {_FORMAT_VERSION}\n",
            f"name: {identity.name}\n",
            f"site-id: {identity.site_id}\n",
            *((f"signing-secret: {_b64(identity.signing_secret)}\n",
               f"exchange-secret: {_b64(identity.exchange_secret)}\n") if passphrase is None
              else (f"scrypt-n: {PASSPHRASE_SCRYPT_N}\n",
                    f"sealed-secrets: {_seal_secrets(identity, passphrase)}\n")),
            f"created: {identity.created_ms}\n",
            "" if identity.succession is None
            else f"succession: {identity.succession.to_field()}\n",
        )
    )
    write_file_atomically(key_path, text.encode("utf-8"), mode=0o600)
    identity.card().write(directory / OWN_CARD_NAME)
    return key_path


def load_identity(directory: Path, *, passphrase: str | None = None) -> SiteIdentity:
    """Read the site identity from ``directory``, refusing an exposed key file.

    A key file protected by a passphrase needs ``passphrase`` or the environment
    variable ``BUNDLESYNC_PASSPHRASE`` (KeyFileLocked otherwise). The encryption
    secrets of the retired key files (``retired/``) of the same site id come
    with it, so bundles sealed to them still open.
    """
    identity = _load_key_file(directory, passphrase=passphrase)
    try:
        retired = sorted((directory / RETIRED_DIR).glob("site-*.key"))
    except OSError:
        retired = []
    secrets_before: list[bytes] = []
    for path in retired:
        try:
            old = _load_key_file(path.parent, passphrase=passphrase, file_name=path.name)
        except LocalError:
            continue  # an unreadable old key only costs the bundles sealed to it
        if old.site_id == identity.site_id and old.exchange_secret != identity.exchange_secret:
            secrets_before.append(old.exchange_secret)
    if not secrets_before:
        return identity
    return dataclasses.replace(identity, retired_exchange_secrets=tuple(secrets_before))


def _read_key_fields(directory: Path, file_name: str = KEY_FILE_NAME
                     ) -> tuple[dict[str, str], str]:
    """The fields of a key file and its name for messages; refuses an exposed file."""
    key_path = directory / file_name
    try:
        fd = os.open(key_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyMissing(f"This site has no key: {key_path} does not exist.") from None
    except OSError as exc:
        raise KeyFileInvalid(f"Cannot open key file {key_path}: {exc.strerror}.",
                             hint="Check the file's owner and permissions.") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if stat.S_IMODE(mode) & 0o077:
            raise KeyFileInsecure(
                f"Key file {key_path} may be read by other users "
                f"(mode {stat.S_IMODE(mode):04o}); it is refused.",
                hint=f"Run: chmod 600 '{key_path}' (and consider whether the key was exposed).",
            )
        try:
            text = handle.read(64 * 1024).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileInvalid(f"Cannot read key file {key_path}: {exc}") from None
    source = str(key_path)
    fields = _parse_fields(text, source=source, error=KeyFileInvalid)
    if fields.get(_KEY_FILE_TAG) != _FORMAT_VERSION:
        raise KeyFileInvalid(f"{source} is not a bundlesync site key file (version 1).")
    return fields, source


def peek_identity(directory: Path) -> tuple[str, str] | None:
    """This site's name and site id as its key file records them, without the keys.

    The file is refused as :func:`load_identity` refuses it when exposed or not a
    key file; its secrets are neither opened (no passphrase is asked for) nor
    checked against the recorded site id -- :func:`load_identity` does that, and
    every run that signs, decrypts or hands out a card calls it. None when the
    file records no site id or an invalid name, or is sealed by a passphrase
    (then load the identity: a locked key is reported at the start of the run).
    """
    fields, _source = _read_key_fields(directory)
    name, site_id = fields.get("name"), fields.get("site-id")
    if name is None or site_id is None or not is_site_id(site_id) or (
            not SITE_NAME_RE.match(name)) or "sealed-secrets" in fields:
        return None
    return name, site_id


def own_card_bytes(directory: Path) -> bytes | None:
    """This site's card as ``keys/site.bsc`` holds it, if it is the card of the key
    file beside it: same name, site id and creation time (a new key or encryption
    key has a new creation time). None otherwise (then make it from the keys).

    What the card file says is not re-signed here; it was written, signed, with
    the key file (:func:`save_identity`), and peers check its signature.
    """
    try:
        fields, _source = _read_key_fields(directory)
        text = read_statement(directory / OWN_CARD_NAME, "card")
        card = PeerCard.from_text(text, verify=False)
    except (LocalError, OSError):
        return None
    if (card.own_name, card.site_id, str(card.created_ms)) != (
            fields.get("name"), fields.get("site-id"), fields.get("created", "0")):
        return None
    return text.encode("utf-8")


def _load_key_file(directory: Path, *, passphrase: str | None,
                   file_name: str = KEY_FILE_NAME) -> SiteIdentity:
    fields, source = _read_key_fields(directory, file_name)
    name = _require(fields, "name", source, KeyFileInvalid)
    created = fields.get("created", "0")
    if not created.isdigit() or int(created) >= 2**63:
        raise KeyFileInvalid(f"{source}: the creation time {created!r} is not a number.")
    if "sealed-secrets" in fields:
        n = fields.get("scrypt-n", "")
        if not n.isdigit() or not 2**14 <= int(n) <= 2**22 or int(n) & (int(n) - 1):
            raise KeyFileInvalid(f"{source}: the scrypt cost {n!r} is not supported.")
        signing, exchange = _open_secrets(fields["sealed-secrets"], fields.get("site-id"),
                                          passphrase, source, int(n))
    else:
        signing = _unb64(_require(fields, "signing-secret", source, KeyFileInvalid),
                         source, KeyFileInvalid)
        exchange = _unb64(_require(fields, "exchange-secret", source, KeyFileInvalid),
                          source, KeyFileInvalid)
    succession = None
    if "succession" in fields:
        succession = Succession.from_field(fields["succession"], source=source,
                                           error=KeyFileInvalid)
    try:
        identity = SiteIdentity(name=check_site_name(name), signing_secret=signing,
                                exchange_secret=exchange, created_ms=int(created),
                                succession=succession)
    except InvalidSiteName as exc:
        raise KeyFileInvalid(f"{source}: {exc.message}") from None
    claimed = fields.get("site-id")
    if claimed is not None and claimed != identity.site_id:
        raise KeyFileInvalid(f"{source}: the recorded site id does not match the key.")
    return identity


# --- trust ----------------------------------------------------------------------------


class TrustLookup(Protocol):
    """What a bundle reader needs from a set of trusted cards."""

    def by_signing_key(self, key: bytes) -> PeerCard | None: ...

    def by_site_id(self, site_id: str) -> PeerCard | None: ...

    def by_name(self, name: str) -> PeerCard | None: ...


class _Lookups:
    """Lookups shared by the trust store and an in-memory set of cards."""

    def list(self) -> list[PeerCard]:
        raise NotImplementedError

    def by_site_id(self, site_id: str) -> PeerCard | None:
        return next((c for c in self.list() if c.site_id == site_id), None)

    def by_name(self, name: str) -> PeerCard | None:
        return next((c for c in self.list() if c.name == name), None)

    def by_signing_key(self, key: bytes) -> PeerCard | None:
        return next((c for c in self.list() if c.signing_public == key), None)


class TrustedCards(_Lookups):
    """A fixed, in-memory set of trusted cards (e.g. ``--trust CARD`` on the CLI)."""

    def __init__(self, cards: Iterable[PeerCard] = ()) -> None:
        self._cards = sorted(set(cards), key=lambda c: c.name)

    def list(self) -> list[PeerCard]:
        return list(self._cards)


class TrustStore(_Lookups):
    """The peers this site trusts: one ``<name>.bsc`` card file each in ``directory``.

    The directory is read on every call, so cards added by another process are
    seen; it holds a handful of small files.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _load(self, *, verify: bool = True) -> list[tuple[Path, PeerCard]]:
        try:
            paths = sorted(p for p in self.directory.iterdir()
                           if p.name.endswith(CARD_SUFFIX) and not p.name.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TrustStoreInvalid(
                f"Cannot list the trust store {self.directory}: {exc.strerror}.") from None
        loaded: list[tuple[Path, PeerCard]] = []
        for path in paths:
            try:
                # A card trusted before cards were signed stays trusted until its
                # site's signed card replaces it (add()).
                card = PeerCard.read(path, accept_unsigned=True, verify=verify)
            except InvalidCard as exc:
                raise TrustStoreInvalid(f"Trust store file {path} is not a valid card: "
                                        f"{exc.message}") from None
            for other_path, other in loaded:
                if other.name == card.name or other.signing_public == card.signing_public:
                    raise TrustStoreInvalid(
                        f"Trust store files {other_path} and {path} hold the same peer "
                        f"name or key.")
            loaded.append((path, card))
        return loaded

    def list(self, *, verify: bool = True) -> list[PeerCard]:
        """Every trusted peer, sorted by name.

        ``verify=False`` skips the cards' signatures (and so the ``cryptography``
        import): for a run that needs only the peers' names and site ids, such as
        deciding that every peer is up to date. A card used to verify a bundle or
        encrypt to its site must come from a verifying call.
        """
        return sorted((card for _, card in self._load(verify=verify)), key=lambda c: c.name)

    def add(self, card: PeerCard) -> bool:
        """Trust ``card``. Returns False if that exact card was already trusted.

        Refuses (PeerConflict) a card whose name, site id or either key belongs to
        another trusted peer.
        """
        if not card.signed:
            raise InvalidCard(f"The card of {card.name!r} is not signed; it cannot be added.",
                              hint="Add the card its site exports with this version.")
        if self.is_revoked(card.signing_public):
            raise KeyRevoked(f"The signing key of {card.name!r} (site id {card.site_id}) was "
                             f"revoked by its site.")
        for known_path, known in self._load():
            if known == card:
                return False
            if (not known.signed and known.name == card.name
                    and known.signing_public == card.signing_public
                    and known.exchange_public == card.exchange_public):
                # The signed card of a peer trusted by an unsigned one: an upgrade.
                card.write(known_path)
                return True
            clash = []
            if known.name == card.name:
                clash.append(f"the name {card.name!r}")
            if known.signing_public == card.signing_public:
                clash.append(f"the signing key (site id {card.site_id})")
            if known.exchange_public == card.exchange_public:
                clash.append("the encryption key")
            if clash:
                raise PeerConflict(
                    f"Card {card.name!r} ({card.fingerprint}) clashes with trusted peer "
                    f"{known.name!r} ({known.fingerprint}): same {' and '.join(clash)}.")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalError(f"Cannot create {self.directory}: {exc.strerror}") from None
        card.write(self.directory / f"{card.name}{CARD_SUFFIX}")
        return True

    def update(self, card: PeerCard) -> PeerCard:
        """Take a trusted peer's new encryption key (bundle-v2 §3.6); returns the old card.

        ``card`` must be signed by the signing key this store already trusts for
        that peer, under the same signed name, and be newer (``created``) than the
        card it replaces: an older card (a replay of a superseded key) is refused.
        """
        if not card.signed or not card.signature_valid() or (
                card.succession is not None and not card.succession.signature_valid()):
            raise InvalidCard(f"The card of {card.name!r} is not signed; it cannot update "
                              f"a key.")
        if self.is_revoked(card.signing_public):
            raise KeyRevoked(f"The signing key of {card.name!r} (site id {card.site_id}) was "
                             f"revoked by its site.")
        loaded = self._load()
        for known_path, known in loaded:
            # A successor key (bundle-v2 §3.8) replaces the key it names as its
            # predecessor, for the same site id; any other card must be signed by
            # the trusted key itself.
            successor = (card.succession is not None and known.site_id == card.site_id
                         and known.signing_public != card.signing_public)
            if known.signing_public != card.signing_public and not successor:
                continue
            if successor:
                assert card.succession is not None
                if card.succession.old_signing != known.signing_public:
                    raise PeerConflict(
                        f"The new card of {known.name!r} continues another key than the one "
                        f"trusted for that site (a succession this site has not seen?).",
                        hint="Ask the site for the card of each key it had in turn; nothing "
                             "was changed.")
                for other_path, other in loaded:
                    if other_path != known_path and card.signing_public in (
                            other.signing_public, other.exchange_public):
                        raise PeerConflict(f"The new key of {known.name!r} belongs to "
                                           f"trusted peer {other.name!r}.")
            if card.own_name != known.own_name:
                raise PeerConflict(f"The new card names the site {card.own_name!r}, but its "
                                   f"key belongs to {known.own_name!r}.")
            if card.created_ms <= known.created_ms:
                raise PeerConflict(
                    f"The card of {known.name!r} is not newer than the trusted one: it "
                    f"cannot replace it (an old card shown again?).",
                    hint="Ask the site for its current card; nothing was changed.")
            card.renamed(known.name).write(known_path)
            return known
        raise PeerNotFound(f"No trusted peer has the signing key of card {card.name!r} "
                           f"({card.fingerprint}).",
                           hint="A new site is added with 'bundlesync peer add'.")

    def is_revoked(self, signing_public: bytes) -> bool:
        """Whether a revocation of this signing key was taken in."""
        return (self.directory / REVOKED_DIR / site_id_of(signing_public)).is_file()

    def revoke(self, revocation: Revocation) -> PeerCard | None:
        """Take in a site's revocation (bundle-v2 §3.7): stop trusting its key for good.

        Returns the card that was removed (None if the key was not trusted; the
        revocation is remembered all the same, so the key cannot be added later).
        """
        if not revocation.signature_valid():
            raise InvalidCard("The revocation's signature does not verify; it was altered.")
        removed = None
        for path, card in self._load():
            if card.signing_public == revocation.signing_public:
                removed = card
                try:
                    path.unlink()
                except OSError as exc:
                    raise LocalError(f"Cannot remove {path}: {exc.strerror}") from None
        revoked = self.directory / REVOKED_DIR
        try:
            revoked.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalError(f"Cannot create {revoked}: {exc.strerror}") from None
        write_file_atomically(revoked / revocation.site_id,
                              revocation.to_text().encode("utf-8"), mode=0o644)
        return removed

    def revocations(self) -> tuple[Revocation, ...]:
        """Every revocation taken in (or made here), by site id.

        A remembered file that no longer verifies is skipped: it revokes nothing
        the store can show, and ``is_revoked`` still refuses its key.
        """
        try:
            paths = sorted((self.directory / REVOKED_DIR).iterdir())
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise TrustStoreInvalid(f"Cannot list {self.directory / REVOKED_DIR}: "
                                    f"{exc.strerror}.") from None
        found: tuple[Revocation, ...] = ()
        for path in paths:
            if path.name.startswith(".") or not is_site_id(path.name):
                continue
            try:
                found += (Revocation.read(path),)
            except InvalidCard:
                continue
        return found

    def remove(self, name: str) -> PeerCard:
        """Stop trusting the peer called ``name``; returns its card."""
        for path, card in self._load():
            if card.name == name:
                try:
                    path.unlink()
                    fsync_dir(self.directory)
                except OSError as exc:
                    raise LocalError(f"Cannot remove {path}: {exc.strerror}") from None
                return card
        raise PeerNotFound(f"No trusted peer is called {name!r}.")


# --- site layout ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SitePaths:
    """Where a site keeps its identity and its trusted peers."""

    home: Path
    keys: Path
    peers: Path

    def trust_store(self) -> TrustStore:
        return TrustStore(self.peers)


def site_paths(home: Path | None) -> SitePaths:
    """Resolve the site home: ``home``, else ``$BUNDLESYNC_HOME``, else the per-user
    application directory (:func:`default_home`)."""
    if home is None:
        env = os.environ.get("BUNDLESYNC_HOME")
        home = Path(env) if env else default_home()
    return SitePaths(home=home, keys=home / "keys", peers=home / "peers")


def default_home() -> Path:
    """The per-user application directory, where click's ``get_app_dir`` puts it
    (so homes made by earlier versions are found): ``$XDG_CONFIG_HOME/bundlesync``
    (else ``~/.config/bundlesync``); on macOS ``~/Library/Application
    Support/bundlesync``; on Windows ``%APPDATA%/bundlesync``. Computed here so that
    the key layer needs no command-line library."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "bundlesync"
    if sys.platform.startswith("win"):
        return Path(os.environ.get("APPDATA") or Path.home()) / "bundlesync"
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "bundlesync"


# --- small file helpers ---------------------------------------------------------------


def write_file_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one.

    Temporary name in the same directory (starting with '.' and ending in '.tmp',
    so no reader takes it for the real file), fsync, rename, fsync the directory.
    """
    try:
        atomic_write(path, data, mode=mode)
    except OSError as exc:
        raise LocalError(f"Cannot write {path}: {exc.strerror or exc}.",
                         hint="Check free space and permissions of the directory.") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, source: str, error: type[LocalError], *, size: int = KEY_SIZE
           ) -> bytes:
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise error(f"{source}: a key is not valid base64.") from None
    if len(data) != size:
        raise error(f"{source}: a key is {len(data)} bytes long, not {size}.")
    return data


def _parse_fields(text: str, *, source: str, error: type[LocalError]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise error(f"{source}, line {number}: expected 'field: value'.")
        key = key.strip()
        if key in fields:
            raise error(f"{source}, line {number}: field {key!r} appears twice.")
        fields[key] = value.strip()
    return fields


def _require(fields: dict[str, str], key: str, source: str, error: type[LocalError]) -> str:
    try:
        return fields[key]
    except KeyError:
        raise error(f"{source} has no {key!r} field.") from None


# --- keys over time: helpers the commands and operations share ------------------------


def key_file_sealed(directory: Path) -> bool:
    """Whether the key file in ``directory`` is sealed under a passphrase (bundle-v2 §3.5).

    Read without the passphrase: only the field names are looked at.
    """
    key_path = directory / KEY_FILE_NAME
    try:
        text = key_path.read_bytes()[:64 * 1024].decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise KeyMissing(f"This site has no key: {key_path} does not exist.") from None
    except OSError as exc:
        raise KeyFileInvalid(f"Cannot read key file {key_path}: {exc.strerror}.") from None
    return any(line.strip().startswith("sealed-secrets:") for line in text.splitlines())


def retire_key_file(directory: Path, identity: SiteIdentity) -> Path:
    """Keep a copy of the current key file before it is replaced (0600).

    After a new encryption key, bundles peers sealed to the old one before they
    took the new card can still be opened by hand with the retired file.
    """
    key_path = directory / KEY_FILE_NAME
    try:
        data = key_path.read_bytes()
    except OSError as exc:
        raise KeyFileInvalid(f"Cannot read key file {key_path}: {exc.strerror}.") from None
    retired = directory / RETIRED_DIR
    try:
        retired.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalError(f"Cannot create {retired}: {exc.strerror}") from None
    target = retired / f"site-{identity.created_ms}.key"
    write_file_atomically(target, data, mode=0o600)
    return target


def place_revocations(trust: TrustStore, drop: Path) -> list[Path]:
    """Write every revocation this site knows into ``drop`` (bundle-v2 §3.7), except
    those already there with the same bytes; returns the files written.

    A revocation only ever makes a key less trusted, so passing on every one
    known -- this site's own and those taken in from others -- lets it reach
    sites behind a relay too.
    """
    written = []
    for revocation in trust.revocations():
        path = drop / f"{revocation.site_id}{REVOCATION_SUFFIX}"
        data = revocation.to_text().encode("utf-8")
        try:
            if path.read_bytes() == data:
                continue  # already there: not rewritten (nor synced) on every run
        except OSError:
            pass  # missing or unreadable: written below
        write_file_atomically(path, data, mode=0o644)
        written.append(path)
    return written


@dataclass(frozen=True, slots=True)
class RevocationTaken:
    """What taking in one revocation found in a drop did."""

    site_id: str
    # The name of the peer whose card was removed; None if it was not trusted.
    removed: str | None

    def note(self, *, dry_run: bool = False) -> str:
        if dry_run:
            return f"a revocation of the key of site {self.site_id} would be taken in"
        if self.removed is None:
            return (f"a revocation of the key of site {self.site_id} was taken in; that key "
                    f"will not be trusted")
        return (f"peer {self.removed} (site {self.site_id}) revoked its key: its card was "
                f"removed and its bundles are refused from now on")


def take_revocations(trust: TrustStore, drop: Path, *, dry_run: bool = False
                     ) -> tuple[list[RevocationTaken], list[str]]:
    """Take in every validly signed revocation in ``drop`` not known yet (bundle-v2 §3.7).

    Returns what was taken and a note for each file that was ignored: a drop
    is untrusted, so a damaged or forged statement is skipped, never fatal.
    With ``dry_run`` nothing is written; the result says what would be.
    """
    taken: list[RevocationTaken] = []
    ignored: list[str] = []
    try:
        names = sorted(n for n in os.listdir(drop)
                       if n.endswith(REVOCATION_SUFFIX) and not n.startswith("."))
    except OSError:
        return taken, ignored  # the import reports an unreadable drop itself
    for name in names:
        try:
            revocation = Revocation.read(drop / name)
        except InvalidCard as exc:
            ignored.append(f"ignored {name}: {exc.message}")
            continue
        if trust.is_revoked(revocation.signing_public):
            continue
        if dry_run:
            card = trust.by_signing_key(revocation.signing_public)
            removed = None if card is None else card
        else:
            removed = trust.revoke(revocation)
        taken.append(RevocationTaken(revocation.site_id,
                                     None if removed is None else removed.name))
    return taken, ignored


def take_card_updates(trust: TrustStore, drop: Path, *, dry_run: bool = False
                      ) -> list[str]:
    """Take the newer cards of trusted peers found in ``drop`` (bundle-v2 §3.6, §3.8).

    Only a card the trusted key vouches for is taken: signed by the key trusted
    for that site id (a new encryption key), or carrying a succession signed by
    it (a successor key). Cards of other sites, older cards and this site's own
    are left alone; a drop is untrusted, so a card that is not an update is never
    an error. Returns a note for each update.
    """
    notes: list[str] = []
    try:
        names = sorted(n for n in os.listdir(drop)
                       if n.endswith(CARD_SUFFIX) and not n.startswith("."))
    except OSError:
        return notes
    # Cards are first read without checking signatures, to pass over those that
    # could be no update whatever their signatures say (this site's own, peers'
    # cards already trusted, strangers'): a run with no key change loads no
    # cryptography. A card that may be an update is read again, checked.
    unchecked = {card.site_id: card for card in trust.list(verify=False)}
    for name in names:
        try:
            text = read_statement(drop / name, "card")
            card = PeerCard.from_text(text, source=str(drop / name), verify=False)
        except InvalidCard:
            continue  # an unsigned, damaged or foreign card is nobody's update
        seen = unchecked.get(card.site_id)
        if seen is None or (seen.signing_public == card.signing_public and (
                card.created_ms <= seen.created_ms)):
            continue
        try:
            card = PeerCard.from_text(text, source=str(drop / name))
        except InvalidCard:
            continue
        known = trust.by_site_id(card.site_id)
        if known is None or (known.signing_public == card.signing_public and (
                card.created_ms <= known.created_ms)):
            continue
        if known.signing_public != card.signing_public and (
                card.succession is None or card.succession.old_signing != known.signing_public):
            continue
        if not dry_run:
            try:
                trust.update(card)
            except (PeerConflict, PeerNotFound, KeyRevoked, InvalidCard) as exc:
                notes.append(f"ignored {name}: {exc.message}")
                continue
        what = ("a new signing key (a successor its old key signed)"
                if known.signing_public != card.signing_public else "a new encryption key")
        done = "would be" if dry_run else "was"
        notes.append(f"peer {known.name} (site {card.site_id}) has {what}; its card {done} "
                     f"updated, fingerprint {card.fingerprint}")
    return notes


def take_key_changes(trust: TrustStore, drop: Path, *, dry_run: bool = False) -> list[str]:
    """Everything a drop says about keys, taken before its bundles are read.

    Revocations first (a revoked key's card is then no update), then newer cards
    of trusted peers. Returns notes for the import's report.
    """
    taken, ignored = take_revocations(trust, drop, dry_run=dry_run)
    return [t.note(dry_run=dry_run) for t in taken] + ignored + take_card_updates(
        trust, drop, dry_run=dry_run)
