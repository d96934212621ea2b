"""Users with little to apply share one store batch and one commit per pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from bundlesync.core.model import ANSWERED
from bundlesync.errors import StoreError
from bundlesync.operations import apply
from bundlesync.operations.demo import USERS
from bundlesync.operations.importer import ImportResult, import_drop
from bundlesync.operations.site import open_site, site_lock
from bundlesync.stores.base import FolderPath
from bundlesync.stores.maildir import MaildirStore
from tests.operations.conftest import Sites, tick

ALICE, BOB = USERS
INBOX: FolderPath = ("INBOX",)


class CountingStore(MaildirStore):
    """A Maildir store that counts its outermost batches and can fail one user's expunges."""

    def __init__(self, location: str, *, broken: str | None = None) -> None:
        super().__init__(location)
        self.batches = 0
        self.broken = broken
        self._depth = 0

    def batch(self, *, step: Callable[[str], None] | None = None
              ) -> AbstractContextManager[None]:
        @contextmanager
        def counted() -> Iterator[None]:
            self._depth += 1
            if self._depth == 1:
                self.batches += 1
            try:
                with MaildirStore.batch(self, step=step):
                    yield
            finally:
                self._depth -= 1
        return counted()

    def expunge(self, user: str, path: FolderPath, key: str) -> None:
        if user == self.broken:
            raise StoreError(f"cannot unlink in the Maildir of {user}: read-only file system")
        super().expunge(user, path, key)


def _changed_both_users(sites: Sites) -> None:
    """Alpha and bravo in step, then a flag change, an expunge and a delivery per user."""
    alpha = sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.in_step("alpha", "bravo")
    for number, user in enumerate(USERS):
        first, second = alpha.messages(user, INBOX)[:2]
        alpha.set_flags(user, INBOX, first.key, first.flags | {ANSWERED})
        alpha.expunge(user, INBOX, second.key)
        sites.deliver("alpha", user, ("Sent",), 700 + number)
    sites.export("alpha")


def _import_with(sites: Sites, store: MaildirStore, commits: list[str]) -> ImportResult:
    with site_lock(sites.homes["bravo"]):
        site = open_site(sites.homes["bravo"], store=store)
        site.index.trace(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        try:
            return import_drop(site, sites.drop, now_ms=tick())
        finally:
            site.index.trace(None)
            site.index.close()


def test_small_changes_of_two_users_share_the_store_batches_and_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, tuple[int, int]] = {}
    for way in ("alone", "together"):
        (tmp_path / way).mkdir()
        sites = Sites(tmp_path / way)
        _changed_both_users(sites)
        if way == "alone":
            monkeypatch.setattr(apply, "GROUP_MESSAGES", 0)  # every user a group of one
        else:
            monkeypatch.undo()
        location = str(sites.root / "bravo" / "mail" / "%d" / "%n" / "Maildir")
        store, commits = CountingStore(location), []
        result = _import_with(sites, store, commits)
        assert sites.digest("bravo") == sites.digest("alpha")
        assert (result.report.added, result.report.expunged,
                result.report.flag_changes) == (2, 2, 2)
        assert sites.export("bravo").scan.changes == 0
        seen[way] = (store.batches, len(commits))
    # Alone: a batch for each user's placements and one for its removals, and three
    # commits per user (placements, removals, the end); together: one of each pass.
    assert seen["alone"][0] == 4
    assert seen["together"][0] == 2
    assert seen["alone"][1] - seen["together"][1] == 4


def test_a_users_failure_in_a_shared_pass_is_named_and_the_other_is_applied(
        sites: Sites) -> None:
    _changed_both_users(sites)
    location = str(sites.root / "bravo" / "mail" / "%d" / "%n" / "Maildir")
    store = CountingStore(location, broken=BOB)
    result = _import_with(sites, store, [])
    # The placements of both were committed together; bob's expunge failed in the
    # shared removals, which were then done again user by user.
    assert list(result.report.failures) == [BOB]
    assert "read-only" in result.report.failures[BOB]
    # Each change reported once, though the removals were tried twice.
    assert (result.report.added, result.report.expunged, result.report.flag_changes) == (2, 1, 2)
    alpha, bravo = sites.digest("alpha"), sites.digest("bravo")
    assert {k: v for k, v in alpha.items() if k[0] == ALICE} == {  # type: ignore[attr-defined]
        k: v for k, v in bravo.items() if k[0] == ALICE}  # type: ignore[attr-defined]
    assert alpha != bravo
    # The disk is repaired: the next run finishes bob's expunge from the journal.
    sites.import_("bravo")
    assert sites.digest("bravo") == alpha


def _batches_of_import(sites: Sites) -> int:
    """Import at bravo through a store that counts its batches; bravo converges."""
    store = CountingStore(str(sites.root / "bravo" / "mail" / "%d" / "%n" / "Maildir"))
    _import_with(sites, store, [])
    assert sites.digest("bravo") == sites.digest("alpha")
    return store.batches


def test_a_user_with_a_large_change_is_applied_alone(sites: Sites,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _changed_both_users(sites)
    # Each user's three pending instances count as a large change here.
    monkeypatch.setattr(apply, "APPLY_BATCH", 2)
    # Each user alone: a batch for the two placements, one for the expunge.
    assert _batches_of_import(sites) == 4


def test_a_group_holds_the_pending_mail_of_at_most_so_many_mailboxes(
        sites: Sites, monkeypatch: pytest.MonkeyPatch) -> None:
    _changed_both_users(sites)
    # Each user's changes are in two mailboxes (INBOX and Sent): two users would
    # make a group of four, so each user is a group of its own.
    monkeypatch.setattr(apply, "GROUP_FOLDERS", 3)
    assert _batches_of_import(sites) == 4
