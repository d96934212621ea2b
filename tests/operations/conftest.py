"""Two or three real sites on Maildir stores in a temporary directory."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from bundlesync.operations.demo import demo_message, populate, store_digest
from bundlesync.operations.export import ExportResult, export_drop
from bundlesync.operations.importer import ImportResult, import_drop
from bundlesync.operations.setup import add_peer, init_site, own_card
from bundlesync.operations.site import open_site, site_lock
from bundlesync.stores.maildir import MaildirStore

_clock = itertools.count(1_800_000_000_000, 1_000)


def tick() -> int:
    return next(_clock)


class Sites:
    """A little network of sites sharing one drop directory (the USB stick)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.drop = root / "drop"
        self.drop.mkdir()
        self.homes: dict[str, Path] = {}
        self.stores: dict[str, MaildirStore] = {}

    def add(self, name: str, *, populate_per_folder: int = 0,
            exclude: tuple[str, ...] = ()) -> MaildirStore:
        location = self.root / name / "mail" / "%d" / "%n" / "Maildir"
        (self.root / name / "mail").mkdir(parents=True)
        store = MaildirStore(str(location))
        if populate_per_folder:
            populate(store, per_folder=populate_per_folder)
        home = self.root / name / "home"
        with site_lock(home):
            init_site(home, name=name, store_location=str(location), exclude=exclude,
                      now_ms=tick())
        self.homes[name] = home
        self.stores[name] = store
        return store

    def add_copy_of(self, name: str, source: str) -> MaildirStore:
        """A site set up on a full copy of another site's store (the usual seeding)."""
        shutil.copytree(self.root / source / "mail", self.root / name / "mail", symlinks=True)
        location = self.root / name / "mail" / "%d" / "%n" / "Maildir"
        home = self.root / name / "home"
        with site_lock(home):
            init_site(home, name=name, store_location=str(location), now_ms=tick())
        self.homes[name] = home
        self.stores[name] = MaildirStore(str(location))
        return self.stores[name]

    def befriend(self, a: str, b: str) -> None:
        card_a, card_b = self.root / f"{a}.card", self.root / f"{b}.card"
        own_card(self.homes[a]).write(card_a)
        own_card(self.homes[b]).write(card_b)
        add_peer(self.homes[a], card_b, name=b)
        add_peer(self.homes[b], card_a, name=a)

    def export(self, name: str, drop: Path | None = None, **kwargs: object) -> ExportResult:
        with site_lock(self.homes[name]):
            site = open_site(self.homes[name])
            try:
                return export_drop(site, drop or self.drop, now_ms=tick(), **kwargs)  # type: ignore[arg-type]
            finally:
                site.index.close()

    def import_(self, name: str, drop: Path | None = None, **kwargs: object) -> ImportResult:
        with site_lock(self.homes[name]):
            site = open_site(self.homes[name])
            try:
                return import_drop(site, drop or self.drop, now_ms=tick(), **kwargs)  # type: ignore[arg-type]
            finally:
                site.index.close()

    def digest(self, name: str) -> object:
        return store_digest(self.stores[name])

    def in_step(self, a: str, b: str) -> None:
        """Befriend ``a`` and ``b`` and exchange everything, acknowledgements included."""
        self.befriend(a, b)
        self.export(a)
        self.import_(b)
        self.export(b)
        self.import_(a)

    def deliver(self, name: str, user: str, folder: tuple[str, ...], number: int,
                flags: frozenset[str] = frozenset()) -> str:
        data, when = demo_message(user, number)
        key = f"{when}.M{number}P9.{name}"
        store = self.stores[name]
        store.ensure_user(user)
        store.add_message(user, folder, key=key, data=data, flags=flags, internal_date=when)
        return key


@pytest.fixture
def sites(tmp_path: Path) -> Sites:
    return Sites(tmp_path)
