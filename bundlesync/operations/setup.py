"""Setting a site up: ``init``, the key card, and the peers it trusts."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundlesync.errors import UsageError
from bundlesync.keys import (
    PeerCard,
    PeerNotFound,
    TrustStore,
    generate_identity,
    load_identity,
    save_identity,
    site_paths,
)
from bundlesync.operations.config import CONFIG_NAME, MailboxFilter, SiteConfig, write_config
from bundlesync.operations.scan import ScanStats, scan_store
from bundlesync.operations.site import STATE_NAME, open_site, require_uninitialised
from bundlesync.state.index import StateIndex
from bundlesync.stores.base import Store
from bundlesync.stores.location import MailLocation


@dataclass
class InitResult:
    home: Path
    name: str
    site_id: str
    fingerprint: str
    scan: ScanStats


def init_site(home: Path | None, *, name: str, store_location: str,
              include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
              iinclude: tuple[str, ...] = (), iexclude: tuple[str, ...] = (), now_ms: int,
              store: Store | None = None,
              progress: Callable[[str], None] | None = None) -> InitResult:
    """Create keys, configuration and the index, then take the store's inventory.

    The inventory records what is already in the store with the inventory timestamp,
    so a site set up on a copy of another site's store adds nothing when they meet.
    """
    paths = site_paths(home)
    require_uninitialised(paths.home)
    if store is None:
        check_store_location(store_location)
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.home.chmod(0o700)
    identity = generate_identity(name, created_ms=now_ms)
    save_identity(identity, paths.keys)
    paths.peers.mkdir(exist_ok=True)
    StateIndex(paths.home / STATE_NAME, create=True).close()
    config = SiteConfig(name=name, store=store_location,
                        filters=MailboxFilter(tuple(include), tuple(exclude), tuple(iinclude),
                                                tuple(iexclude)))
    write_config(paths.home / CONFIG_NAME, config)
    site = open_site(paths.home, store=store)
    try:
        with _ReadAhead(site.store, site.config.users.select(site.store.users())) as ahead:

            def scanning(user: str) -> None:
                ahead.scanning(user)
                if progress is not None:
                    progress(user)

            stats = scan_store(site, now_ms=now_ms, inventory=True, progress=scanning)
    finally:
        site.index.close()
    return InitResult(paths.home, name, identity.site_id, identity.fingerprint, stats)


class _ReadAhead:
    """Has the store read each user's files ahead while the inventory works on the
    previous user, so that reading the disk and the inventory's work overlap (a
    cold store is read about as fast as by ``cat``). At most one user ahead: the
    page cache is not filled with mail the scan reaches much later."""

    def __init__(self, store: Store, users: Sequence[str]) -> None:
        self._store = store
        self._users = list(users)
        self._changed = threading.Condition()
        self._scanned = -1  # index of the user the scan is at
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="store-read-ahead", daemon=True)

    def __enter__(self) -> _ReadAhead:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._changed:
            self._stop = True
            self._changed.notify_all()
        self._thread.join()

    def scanning(self, user: str) -> None:
        """The scan has started on ``user``."""
        with self._changed:
            self._scanned += 1
            self._changed.notify_all()

    def _run(self) -> None:
        for number, user in enumerate(self._users):
            with self._changed:
                while not self._stop and number > self._scanned + 1:
                    self._changed.wait()
                if self._stop:
                    return
            self._store.prefetch(user)


def check_store_location(location: str) -> None:
    """Refuse a store location ``init`` cannot work with, before anything is written.

    The template must parse, and the directory above its first variable (for a
    plain path: the Maildir's parent) must exist: a mistyped path would otherwise
    set up a site over an empty store, silently, with 0 users.
    """
    parsed = MailLocation.parse(location)  # UnsupportedLocation: exit 4, nothing written
    root = (os.path.dirname(parsed.static_root.rstrip("/")) or "/") if parsed.single_user \
        else parsed.static_root
    if not os.path.isdir(root):
        raise UsageError(
            f"the store location {location} cannot be right: {root} does not exist",
            hint="Check the path (e.g. /var/vmail/%d/%n/Maildir); nothing was set up.")


def own_card(home: Path | None) -> PeerCard:
    return load_identity(site_paths(home).keys).card()


def add_peer(home: Path | None, card_path: Path, *, name: str | None) -> PeerCard:
    """Trust the site whose key card is at ``card_path`` (under ``name`` if given)."""
    card = PeerCard.read(card_path)
    if name is not None:
        card = card.renamed(name)
    own = load_identity(site_paths(home).keys)
    if card.site_id == own.site_id:
        raise UsageError("that card is this site's own key card",
                         hint="Add the card exported by the other site.")
    TrustStore(site_paths(home).peers).add(card)
    return card


def remove_peer(home: Path | None, name: str) -> PeerCard:
    store = TrustStore(site_paths(home).peers)
    if store.by_name(name) is None:
        raise PeerNotFound(f"no trusted peer is called {name!r}",
                           hint="See 'bundlesync peer list'.")
    return store.remove(name)
