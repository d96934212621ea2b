"""Setting a site up: ``init``, the key card, and the peers it trusts."""

from __future__ import annotations

import os
from collections.abc import Callable
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
        stats = scan_store(site, now_ms=now_ms, inventory=True, progress=progress)
    finally:
        site.index.close()
    return InitResult(paths.home, name, identity.site_id, identity.fingerprint, stats)


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
