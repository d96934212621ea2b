"""No name poisons a user: what the receiving store cannot hold is stored under a
deterministic storable name (the same at every site) and round-trips; what still
fails is reported per mailbox or message, and the rest of the user's changes go in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bundlesync.core.model import MailboxCreated, MailboxRef
from bundlesync.operations.demo import USERS, demo_message
from bundlesync.stores.maildir import MaildirStore
from tests.hardening.helpers import add_instance, inject, set_limits
from tests.operations.conftest import Sites

ALICE, BOB = USERS
DEPTH = 1200  # deeper than Python's recursion limit: a recursive walk anywhere fails it


def _pair(sites: Sites) -> tuple[MaildirStore, MaildirStore]:
    alpha, bravo = sites.add("alpha"), sites.add("bravo")
    sites.befriend("alpha", "bravo")
    return alpha, bravo


def _folders(store: MaildirStore, user: str) -> list[tuple[str, ...]]:
    return [info.path for info in store.folders(user)]


def _count(store: MaildirStore, user: str) -> int:
    return sum(len(store.messages(user, path)) for path in _folders(store, user))


def _exchange(sites: Sites) -> None:
    """Both ways, twice: every change and its echo has travelled."""
    for _ in range(2):
        sites.export("alpha")
        sites.import_("bravo")
        sites.export("bravo")
        sites.import_("alpha")


def test_a_long_name_meeting_a_same_name_folder_does_not_stop_the_user(sites: Sites) -> None:
    alpha, bravo = _pair(sites)
    name = ("x" * 195,)
    for site, store in (("alpha", alpha), ("bravo", bravo)):
        store.ensure_user(ALICE)
        store.create_folder(ALICE, name, guid=None, uidvalidity=None)
        sites.deliver(site, ALICE, name, 1 if site == "alpha" else 2)
    _exchange(sites)
    # Later mail still arrives, both ways, and nothing is reported as failed.
    sites.deliver("alpha", ALICE, ("INBOX",), 3)
    sites.export("alpha")
    result = sites.import_("bravo")
    assert not result.report.failures, result.report.lines()
    assert result.report.added == 1
    assert _count(alpha, ALICE) == _count(bravo, ALICE) == 3
    assert all(len(c.encode()) <= 200 for path in _folders(bravo, ALICE) for c in path)


def test_a_non_ascii_keyword_is_stored_under_a_storable_name(sites: Sites) -> None:
    alpha, bravo = _pair(sites)
    key = sites.deliver("alpha", ALICE, ("INBOX",), 1)
    inbox = Path(alpha.maildir_path(ALICE))
    (inbox / "dovecot-keywords").write_text("0 \u00dcn\u00ef\n", encoding="utf-8")
    [name] = os.listdir(inbox / "cur")
    os.rename(inbox / "cur" / name, inbox / "cur" / f"{key}:2,a")
    sites.export("alpha")
    result = sites.import_("bravo")
    assert not result.report.failures, result.report.lines()
    assert result.report.added == 1
    [message] = bravo.messages(ALICE, ("INBOX",))
    [keyword] = message.flags
    assert keyword.startswith("_n_~")
    # Round trip: bravo's next export carries no flag change back; alpha keeps "Ünï".
    exported = sites.export("bravo")
    assert exported.scan.flag_changes == 0
    sites.import_("alpha")
    assert alpha.messages(ALICE, ("INBOX",))[0].flags == frozenset({"\u00dcn\u00ef"})
    # And later mail still arrives.
    sites.deliver("alpha", ALICE, ("INBOX",), 2)
    sites.export("alpha")
    assert sites.import_("bravo").report.added == 1


def test_peer_supplied_dot_names_are_stored_and_round_trip(sites: Sites) -> None:
    _alpha, bravo = _pair(sites)
    sites.deliver("alpha", ALICE, ("INBOX",), 1)
    data, _ = demo_message(ALICE, 1)
    names = ["..", "a.b", ".", "Inbox", "x/..", "\u00e4" * 120]
    ops = []
    for number, name in enumerate(names):
        guid = f"{number + 1:032x}"
        ops.append(MailboxCreated(MailboxRef(ALICE, guid), None, name, 7))
        ops.append(add_instance(ALICE, guid, f"copy{number}", data))
    inject(sites, "alpha", ops)
    sites.export("alpha")
    result = sites.import_("bravo")
    assert not result.report.failures, result.report.lines()
    folders = _folders(bravo, ALICE)
    # "Inbox" is INBOX (IMAP names it without regard to case); "x/.." needs no "x".
    assert len(folders) == len(names), folders
    assert result.report.added == _count(bravo, ALICE) == 1 + len(names)
    for path in folders:
        store_dir = Path(bravo.folder_dir(ALICE, path))
        assert store_dir.parent == Path(bravo.maildir_path(ALICE)) or path == ("INBOX",)
    # Nothing travels back as a rename, and alpha's names stay as they were.
    exported = sites.export("bravo")
    assert exported.scan.mailboxes_renamed == 0
    assert exported.scan.mailboxes_created == 0
    # Later mail still arrives.
    sites.deliver("alpha", ALICE, ("INBOX",), 2)
    sites.export("alpha")
    assert sites.import_("bravo").report.added == 1


@pytest.mark.slow
def test_a_folder_nested_1200_deep_fails_alone(sites: Sites) -> None:
    assert sys.getrecursionlimit() < DEPTH  # a recursive walk anywhere would fail
    _alpha, bravo = _pair(sites)
    sites.deliver("alpha", ALICE, ("INBOX",), 1)
    sites.deliver("alpha", BOB, ("INBOX",), 2)
    ops = []
    parent = None
    for level in range(DEPTH):
        guid = f"{level + 1:032x}"
        ops.append(MailboxCreated(MailboxRef(ALICE, guid), parent, "n", 7))
        parent = guid
    inject(sites, "alpha", ops)
    set_limits(sites, "bravo", max_folder_depth=32)
    sites.export("alpha")
    result = sites.import_("bravo")
    # Every folder the store can hold is there; the rest are reported, one by one.
    assert 0 < len(result.report.failures) <= DEPTH - 32
    assert all("mailbox" in what for what in result.report.failures)
    assert _count(bravo, ALICE) == 1 and _count(bravo, BOB) == 1
    # Later mail still arrives for the same user.
    sites.deliver("alpha", ALICE, ("INBOX",), 3)
    sites.export("alpha")
    assert sites.import_("bravo").report.added == 1
    assert _count(bravo, ALICE) == 2
