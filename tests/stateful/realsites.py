"""Three real sites for the product state machine, and what is compared after an exchange.

Each site is what an installation is: a home (keys, configuration, the SQLite
index) and a Maildir store on disk, driven through the shipped operations
(``init_site``, ``add_peer``, ``export_drop``, ``import_drop``). Local changes are
made in the Maildirs by :class:`~stateful.mailclient.MailClient`, as Dovecot
would make them. ``s0`` is the relay (headquarters): the other sites trust it
and only it, so changes between them travel ``s1 -> s0 -> s2`` with their
origin dots.

Setting up three sites costs key generation and three inventories, so it is
done once and the whole tree is copied back before each example (the
configuration holds absolute paths, so the copy always goes to one place).
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from pathlib import Path
from typing import Any
from unittest import mock

from core.fakestore import projection

from bundlesync.core.merge import Replica
from bundlesync.core.model import Change, MessageAdded, VersionVector
from bundlesync.keys import SiteIdentity, generate_identity
from bundlesync.operations.export import ExportResult, export_drop
from bundlesync.operations.importer import ImportResult, import_drop
from bundlesync.operations.setup import add_peer, init_site, own_card
from bundlesync.operations.site import open_site, site_lock
from bundlesync.state.codec import decode_change

from .mailclient import INBOX, FolderPath, MailClient

USER = "user@example.org"
SITES = ("s0", "s1", "s2")
HQ = "s0"

# What one site's store shows: folder -> {(message key, body SHA-256): flags}.
Snapshot = dict[FolderPath, dict[tuple[str, str], frozenset[str]]]


def message(key: str) -> bytes:
    """A small message whose body is unique to ``key``."""
    return (f"From: someone@example.net\r\nTo: {USER}\r\nSubject: {key}\r\n"
            f"Message-ID: <{key}@example.net>\r\n\r\nBody of {key}.\r\n").encode()


class Network:
    """The sites under ``root / "run"``; a pristine copy under ``root / "template"``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "run"
        self.template = root / "template"
        self._clock = itertools.count(1_800_000_000_000, 1_000)
        if not self.template.exists():
            shutil.rmtree(self.run, ignore_errors=True)  # a build that failed half-way
            self._build()
            shutil.copytree(self.run, self.template, symlinks=True)

    def now(self) -> int:
        return next(self._clock)

    def reset(self) -> None:
        """Back to three freshly initialised sites, seeded from one store."""
        if self.run.exists():
            shutil.rmtree(self.run)
        shutil.copytree(self.template, self.run, symlinks=True)
        for extra in ("drops", "backups"):
            shutil.rmtree(self.root / extra, ignore_errors=True)
            (self.root / extra).mkdir()

    # --- set-up (once) --------------------------------------------------------------
    def home(self, name: str) -> Path:
        return self.run / name / "home"

    def location(self, name: str) -> str:
        return str(self.run / name / "mail" / "%d" / "%n" / "Maildir")

    def client(self, name: str) -> MailClient:
        return MailClient(self.run / name / "mail" / "example.org" / "user" / "Maildir")

    def _build(self) -> None:
        # One store with INBOX and Archive, copied to every site (design rule 9).
        seed = self.run / HQ / "mail" / "example.org" / "user" / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (seed / sub).mkdir(parents=True)
        first = MailClient(seed)
        (seed / "dovecot-uidlist").write_text("3 V1000 N1 G" + "1" * 32 + "\n")
        first.create_folder(("Archive",), 1001)
        first.deliver(INBOX, "seed1", message("seed1"))
        first.deliver(("Archive",), "seed2", message("seed2"))
        first.set_flags(INBOX, "seed1", frozenset({"\\Seen"}))
        for name in SITES[1:]:
            shutil.copytree(self.run / HQ / "mail", self.run / name / "mail")
        for name in SITES:
            # Keys from the site's name: site ids break ties, and a run must
            # draw the same ties every time (deterministic CI).
            def keys(name: str, *args: Any, site: str = name, **kwargs: Any) -> SiteIdentity:
                seed = itertools.count()
                return generate_identity(name, *args, random_bytes=lambda n: hashlib.sha256(
                    f"{site} {next(seed)}".encode()).digest()[:n], **kwargs)

            with site_lock(self.home(name)), mock.patch(
                    "bundlesync.operations.setup.generate_identity", keys):
                init_site(self.home(name), name=name, store_location=self.location(name),
                          now_ms=self.now())
        for leaf in SITES[1:]:
            self._befriend(HQ, leaf)

    def _befriend(self, a: str, b: str) -> None:
        card_a, card_b = self.root / f"{a}.card", self.root / f"{b}.card"
        own_card(self.home(a)).write(card_a)
        own_card(self.home(b)).write(card_b)
        add_peer(self.home(a), card_b, name=b)
        add_peer(self.home(b), card_a, name=a)

    # --- operations -----------------------------------------------------------------
    def export(self, name: str, peer: str, drop: Path) -> ExportResult:
        with site_lock(self.home(name)):
            site = open_site(self.home(name))
            try:
                return export_drop(site, drop, to=[peer], now_ms=self.now())
            finally:
                site.index.close()

    def import_(self, name: str, drop: Path) -> ImportResult:
        with site_lock(self.home(name)):
            site = open_site(self.home(name))
            try:
                result = import_drop(site, drop, now_ms=self.now())
            finally:
                site.index.close()
        assert not result.rejected, [b.as_dict() for b in result.rejected]
        return result

    def changes(self, name: str) -> list[Change]:
        """Every change in the site's log."""
        site = open_site(self.home(name))
        try:
            return [decode_change(logged.record)
                    for logged in site.index.changes_not_covered(VersionVector())]
        finally:
            site.index.close()

    def message_keys(self, name: str) -> set[str]:
        """The message keys (GUIDs) of every add in the site's log."""
        return {c.op.message.guid for c in self.changes(name) if isinstance(c.op, MessageAdded)}

    # --- backups --------------------------------------------------------------------
    def back_up(self, name: str, label: str) -> None:
        """A copy of the site's home and store, as a nightly backup would hold them."""
        target = self.root / "backups" / label
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.run / name, target, symlinks=True)

    def restore(self, name: str, label: str) -> None:
        shutil.rmtree(self.run / name)
        shutil.copytree(self.root / "backups" / label, self.run / name, symlinks=True)

    # --- what is compared -----------------------------------------------------------
    def snapshot(self, name: str) -> Snapshot:
        client = self.client(name)
        out: Snapshot = {}
        for path in client.folders():
            out[path] = {
                (key, hashlib.sha256(file.read_bytes()).hexdigest()): flags
                for key, (file, flags) in client.files(path).items()
            }
        return out


def reference(changes: list[Change]) -> tuple[Replica, Snapshot]:
    """The core's replica fed ``changes``, and the store it says a site must show."""
    replica = Replica.of(changes)
    folders, files, _ = projection(replica, USER)
    return replica, {path: dict(files.get(path, {})) for path in folders}
