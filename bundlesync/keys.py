"""Site identities, public cards and the trust store (``formats/bundle-v1.md`` §13).

A site has two key pairs: Ed25519 to sign the bundles it writes, X25519 to
receive bundles encrypted to it. Its ``site_id`` -- the lowercase hex of the
first 16 bytes of the SHA-256 of the Ed25519 public key -- is the id used in
every Timestamp, Dot and Stream. People compare the *fingerprint*: the site id
in groups of four.

On disk, under the site home (:func:`site_paths`):

* ``keys/site.key`` -- the secret keys, mode 0600, written atomically; refused
  when group or others may read it.
* ``keys/site.bsc`` -- the site's own public card, to hand to peers.
* ``peers/<name>.bsc`` -- the cards of trusted peers (:class:`TrustStore`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

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

RandomBytes = Callable[[int], bytes]


# --- errors ---------------------------------------------------------------------------


class KeyMissing(LocalError):
    """The site has no identity (no key file)."""

    default_hint = "Run 'bundlesync init' to create this site's keys, or pass --home."


class KeyFileInsecure(LocalError):
    """The key file may be read by other users: it is refused until fixed."""


class KeyFileInvalid(LocalError):
    """The key file exists but cannot be parsed."""

    default_hint = "Restore the key file from the site's backup; do not edit it by hand."


class KeyExists(LocalError):
    """Saving an identity would replace an existing one."""

    default_hint = (
        "A site keeps one identity for life: peers trust its key. Move the old key "
        "directory away first if you really mean to replace it."
    )


class InvalidCard(LocalError):
    """A site card file cannot be parsed or is inconsistent."""

    default_hint = "Ask the peer's administrator for a fresh card ('bundlesync card')."


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


class TrustStoreInvalid(LocalError):
    """The trust store directory holds a file that is not a valid, unique card."""

    default_hint = "Remove or fix the file named in the message, then try again."


# --- ids ------------------------------------------------------------------------------


def site_id_of(signing_public: bytes) -> str:
    """The site id of an Ed25519 public key (bundle-v1 §13.1)."""
    return hashlib.sha256(signing_public).hexdigest()[:SITE_ID_HEX]


def fingerprint_of(site_id: str) -> str:
    """The site id in groups of four hex digits, for people to compare aloud."""
    return " ".join(site_id[i:i + 4] for i in range(0, len(site_id), 4))


def is_site_id(value: str) -> bool:
    return bool(_SITE_ID_RE.match(value))


def check_site_name(name: str) -> str:
    """Return ``name`` if it is a valid site name, else raise InvalidSiteName."""
    if not SITE_NAME_RE.match(name):
        raise InvalidSiteName(f"{name!r} is not a valid site name.")
    return name


# --- cards ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerCard:
    """A site's public identity: what a peer needs to verify and encrypt to it."""

    name: str
    signing_public: bytes
    exchange_public: bytes

    def __post_init__(self) -> None:
        check_site_name(self.name)
        if len(self.signing_public) != KEY_SIZE or len(self.exchange_public) != KEY_SIZE:
            raise InvalidCard(f"card {self.name!r}: public keys must be {KEY_SIZE} bytes")

    @property
    def site_id(self) -> str:
        return site_id_of(self.signing_public)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.site_id)

    def to_text(self) -> str:
        """The card as a small text file a person can mail, print or carry."""
        return "".join(
            (
                "# bundlesync site card. Give it to the administrators of peer sites;\n",
                "# they should confirm the fingerprint with you by another channel.\n",
                f"{_CARD_TAG}: {_FORMAT_VERSION}\n",
                f"name: {self.name}\n",
                f"site-id: {self.site_id}\n",
                f"fingerprint: {self.fingerprint}\n",
                f"signing-key: {_b64(self.signing_public)}\n",
                f"exchange-key: {_b64(self.exchange_public)}\n",
            )
        )

    @classmethod
    def from_text(cls, text: str, *, source: str = "card") -> PeerCard:
        """Parse :meth:`to_text` output; the site id and fingerprint must match the key."""
        fields = _parse_fields(text, source=source, error=InvalidCard)
        if fields.get(_CARD_TAG) != _FORMAT_VERSION:
            raise InvalidCard(f"{source} is not a bundlesync site card (version 1).")
        name = _require(fields, "name", source, InvalidCard)
        try:
            check_site_name(name)
        except InvalidSiteName as exc:
            raise InvalidCard(f"{source}: {exc.message}") from None
        card = cls(
            name=name,
            signing_public=_unb64(_require(fields, "signing-key", source, InvalidCard),
                                  source, InvalidCard),
            exchange_public=_unb64(_require(fields, "exchange-key", source, InvalidCard),
                                   source, InvalidCard),
        )
        claimed_id = fields.get("site-id")
        if claimed_id is not None and claimed_id != card.site_id:
            raise InvalidCard(
                f"{source}: its site id {claimed_id} does not belong to its signing key "
                f"(which has site id {card.site_id}); the card was altered."
            )
        claimed_fp = fields.get("fingerprint")
        if claimed_fp is not None and claimed_fp != card.fingerprint:
            raise InvalidCard(f"{source}: its fingerprint does not match its signing key.")
        return card

    def write(self, path: Path) -> None:
        """Write the card atomically (mode 0644: it is public)."""
        write_file_atomically(path, self.to_text().encode("utf-8"), mode=0o644)

    @classmethod
    def read(cls, path: Path) -> PeerCard:
        """Read a card file: a regular file of at most MAX_CARD_BYTES (a card is a few
        hundred bytes; /dev/zero or a FIFO given by mistake must not hang or fill memory)."""
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
        return cls.from_text(text, source=str(path))


# --- identity -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteIdentity:
    """This site's secret keys and name. ``repr`` never shows the secrets."""

    name: str
    signing_secret: bytes = field(repr=False)
    exchange_secret: bytes = field(repr=False)
    signing_public: bytes = field(init=False, repr=False)
    exchange_public: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_site_name(self.name)
        if len(self.signing_secret) != KEY_SIZE or len(self.exchange_secret) != KEY_SIZE:
            raise KeyFileInvalid(f"site {self.name!r}: secret keys must be {KEY_SIZE} bytes")
        raw = serialization.Encoding.Raw
        signing = Ed25519PrivateKey.from_private_bytes(self.signing_secret)
        exchange = X25519PrivateKey.from_private_bytes(self.exchange_secret)
        object.__setattr__(self, "signing_public", signing.public_key().public_bytes(
            raw, serialization.PublicFormat.Raw))
        object.__setattr__(self, "exchange_public", exchange.public_key().public_bytes(
            raw, serialization.PublicFormat.Raw))

    @property
    def site_id(self) -> str:
        return site_id_of(self.signing_public)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.site_id)

    def card(self) -> PeerCard:
        return PeerCard(name=self.name, signing_public=self.signing_public,
                        exchange_public=self.exchange_public)

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature of ``message`` by this site."""
        return Ed25519PrivateKey.from_private_bytes(self.signing_secret).sign(message)

    def key_agreement(self, peer_public: bytes) -> bytes:
        """X25519 shared secret with ``peer_public``.

        Raises ValueError when the result is all zeros (a low-order public key).
        """
        private = X25519PrivateKey.from_private_bytes(self.exchange_secret)
        try:
            return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except (UnsupportedAlgorithm, ValueError) as exc:
            raise ValueError(str(exc)) from None


def generate_identity(name: str, *, random_bytes: RandomBytes = secrets.token_bytes
                      ) -> SiteIdentity:
    """A new site identity with fresh Ed25519 and X25519 keys.

    ``random_bytes`` exists for deterministic test keys; leave it alone otherwise.
    """
    return SiteIdentity(name=check_site_name(name), signing_secret=random_bytes(KEY_SIZE),
                        exchange_secret=random_bytes(KEY_SIZE))


def save_identity(identity: SiteIdentity, directory: Path, *, overwrite: bool = False) -> Path:
    """Write the key file (0600, atomically) and the site's own card into ``directory``.

    Returns the key file's path. Refuses to replace an existing key file unless
    ``overwrite``: peers trust the old key.
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
            f"signing-secret: {_b64(identity.signing_secret)}\n",
            f"exchange-secret: {_b64(identity.exchange_secret)}\n",
        )
    )
    write_file_atomically(key_path, text.encode("utf-8"), mode=0o600)
    identity.card().write(directory / OWN_CARD_NAME)
    return key_path


def load_identity(directory: Path) -> SiteIdentity:
    """Read the site identity from ``directory``, refusing an exposed key file."""
    key_path = directory / KEY_FILE_NAME
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
    name = _require(fields, "name", source, KeyFileInvalid)
    try:
        identity = SiteIdentity(
            name=check_site_name(name),
            signing_secret=_unb64(_require(fields, "signing-secret", source, KeyFileInvalid),
                                  source, KeyFileInvalid),
            exchange_secret=_unb64(_require(fields, "exchange-secret", source, KeyFileInvalid),
                                   source, KeyFileInvalid),
        )
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

    def _load(self) -> list[tuple[Path, PeerCard]]:
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
                card = PeerCard.read(path)
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

    def list(self) -> list[PeerCard]:
        """Every trusted peer, sorted by name."""
        return sorted((card for _, card in self._load()), key=lambda c: c.name)

    def add(self, card: PeerCard) -> bool:
        """Trust ``card``. Returns False if that exact card was already trusted.

        Refuses (PeerConflict) a card whose name, site id or either key belongs to
        another trusted peer.
        """
        for _, known in self._load():
            if known == card:
                return False
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


def _unb64(text: str, source: str, error: type[LocalError]) -> bytes:
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise error(f"{source}: a key is not valid base64.") from None
    if len(data) != KEY_SIZE:
        raise error(f"{source}: a key is {len(data)} bytes long, not {KEY_SIZE}.")
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
