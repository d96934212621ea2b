"""Deliveries that land while bundlesync works, and failures confined to one user."""

from __future__ import annotations

from pathlib import Path

from bundlesync.core.model import SEEN
from bundlesync.errors import StoreError
from bundlesync.operations.demo import USERS, demo_message
from bundlesync.operations.importer import import_drop
from bundlesync.operations.site import open_site, site_lock
from bundlesync.stores.base import FolderPath
from bundlesync.stores.maildir import MaildirStore
from tests.operations.conftest import Sites, tick

ALICE, BOB = USERS


class DeliveringStore(MaildirStore):
    """A Maildir store on which a delivery agent drops mail while bundlesync applies."""

    def __init__(self, location: str, lda: MaildirStore, user: str) -> None:
        super().__init__(location)
        self.lda = lda
        self.user = user
        self.delivered: list[str] = []

    def add_message(self, user: str, path: FolderPath, *, key: str, data: bytes,
                    flags: frozenset[str], internal_date: int,
                    source: str | None = None):  # type: ignore[no-untyped-def]
        stored = super().add_message(user, path, key=key, data=data, flags=flags,
                                     internal_date=internal_date, source=source)
        self.lda_delivers()
        return stored

    def lda_delivers(self) -> None:
        if not self.delivered:
            body, when = demo_message(self.user, 5_555)
            lda_key = f"{when}.M5555P77.lda"
            self.lda.add_message(self.user, ("INBOX",), key=lda_key, data=body,
                                 flags=frozenset(), internal_date=when)
            self.delivered.append(lda_key)


class FailingStore(MaildirStore):
    """A store whose disk for one user has gone read-only."""

    def __init__(self, location: str, broken: str) -> None:
        super().__init__(location)
        self.broken = broken

    def add_message(self, user: str, path: FolderPath, *, key: str, data: bytes,
                    flags: frozenset[str], internal_date: int,
                    source: str | None = None):  # type: ignore[no-untyped-def]
        if user == self.broken:
            raise StoreError(f"cannot write into the Maildir of {user}: read-only file system")
        return super().add_message(user, path, key=key, data=data, flags=flags,
                                   internal_date=internal_date, source=source)


def location(sites: Sites, name: str) -> str:
    return str(sites.root / name / "mail" / "%d" / "%n" / "Maildir")


def test_a_delivery_during_an_import_is_kept_and_sent_on(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    lda = MaildirStore(location(sites, "bravo"))
    store = DeliveringStore(location(sites, "bravo"), lda, ALICE)
    with site_lock(sites.homes["bravo"]):
        site = open_site(sites.homes["bravo"], store=store)
        try:
            import_drop(site, sites.drop, now_ms=tick())
        finally:
            site.index.close()
    assert store.delivered
    keys = {m.key for m in lda.messages(ALICE, ("INBOX",))}
    assert store.delivered[0] in keys  # untouched by the import
    result = sites.export("bravo")
    assert result.scan.added == 1  # recorded as bravo's own new mail
    sites.import_("alpha")
    assert store.delivered[0] in {m.key for m in sites.stores["alpha"].messages(ALICE, ("INBOX",))}


def test_one_users_failure_does_not_stop_the_others(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    store = FailingStore(location(sites, "bravo"), broken=BOB)
    with site_lock(sites.homes["bravo"]):
        site = open_site(sites.homes["bravo"], store=store)
        try:
            result = import_drop(site, sites.drop, now_ms=tick())
        finally:
            site.index.close()
    assert list(result.report.failures) == [BOB]
    assert "read-only" in result.report.failures[BOB]
    alpha_digest = sites.digest("alpha")
    bravo_digest = sites.digest("bravo")
    alice_a = {k: v for k, v in alpha_digest.items() if k[0] == ALICE}  # type: ignore[attr-defined]
    alice_b = {k: v for k, v in bravo_digest.items() if k[0] == ALICE}  # type: ignore[attr-defined]
    assert alice_a == alice_b
    # The disk is repaired: the next run finishes bob's mail from the journal.
    sites.import_("bravo")
    assert sites.digest("bravo") == alpha_digest


def test_changes_applied_by_an_import_are_not_exported_back(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    result = sites.export("bravo")
    assert result.scan.changes == 0
    assert result.bundles[0].changes == 0


def test_flag_change_by_the_user_after_an_import_travels(sites: Sites, tmp_path: Path) -> None:
    del tmp_path
    sites.add("alpha", populate_per_folder=2)
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    message = bravo.messages(BOB, ("Sent",))[0]
    bravo.set_flags(BOB, ("Sent",), message.key, message.flags ^ {SEEN})
    result = sites.export("bravo")
    assert result.scan.flag_changes == 1
    sites.import_("alpha")
    assert sites.digest("alpha") == sites.digest("bravo")


class VanishingStore(MaildirStore):
    """A store in which one message is expunged by the user while the export writes."""

    def __init__(self, location: str, victim: str) -> None:
        super().__init__(location)
        self.victim = victim

    def read_body(self, user: str, path: FolderPath, key: str) -> bytes:
        if key == self.victim:
            self.expunge(user, path, key)
        return super().read_body(user, path, key)


def test_a_message_expunged_while_the_export_writes_is_left_out(sites: Sites) -> None:
    from bundlesync.operations.export import export_drop

    alpha = sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    victim = alpha.messages(ALICE, ("INBOX",))[0].key
    store = VanishingStore(location(sites, "alpha"), victim)
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"], store=store)
        try:
            result = export_drop(site, sites.drop, now_ms=tick())
        finally:
            site.index.close()
    total = sum(len(v) for v in sites.digest("alpha").values())  # type: ignore[attr-defined]
    assert result.bundles[0].bodies == total  # one fewer than planned, written all the same
    sites.import_("bravo")
    sites.export("alpha")  # the expunge is recorded and travels
    sites.import_("bravo")
    assert sites.digest("bravo") == sites.digest("alpha")
