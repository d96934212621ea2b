"""The Store contract, checked on both adapters: what the operations layer relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundlesync.core.model import ANSWERED, DELETED, DRAFT, FLAGGED, PASSED, SEEN
from bundlesync.errors import StoreError
from bundlesync.stores.base import INBOX, FolderStamp, Store
from bundlesync.stores.errors import (
    FolderExists,
    FolderNotEmpty,
    FolderNotFound,
    KeyInUse,
    MessageMissing,
    UnknownUser,
    UnsafeName,
)
from bundlesync.stores.maildir import MaildirStore
from bundlesync.stores.memory import MemoryStore

USER = "alice@example.org"
ARCHIVE = ("Archive",)
ZURICH = ("Archive", "Zürich")
BODY = b"From: a@example.org\nSubject: hello\n\nbody\n"
GUID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(params=["maildir", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "maildir":
        result: Store = MaildirStore(f"{tmp_path}/%d/%n/Maildir", fsync=False)
    else:
        result = MemoryStore()
    result.ensure_user(USER)
    return result


def changed(before: FolderStamp | None, after: FolderStamp | None) -> bool:
    """A change shows as a new stamp, or (same clock tick) as a racy one."""
    assert before is not None
    assert after is not None
    return after != before or after.racy


def add(store: Store, key: str, *, path: tuple[str, ...] = INBOX, data: bytes = BODY,
        flags: frozenset[str] = frozenset(), date: int = 1_700_000_000) -> None:
    store.add_message(USER, path, key=key, data=data, flags=flags, internal_date=date)


def test_both_adapters_satisfy_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_a_new_user_has_an_empty_inbox(store: Store) -> None:
    assert store.users() == [USER]
    store.ensure_user(USER)  # idempotent
    [inbox] = store.folders(USER)
    assert inbox.path == INBOX
    assert store.messages(USER, INBOX) == []
    assert store.subscriptions(USER) == set()


def test_unknown_users_have_nothing(store: Store) -> None:
    assert store.folders("bob@example.org") == []
    assert store.folder_stamp("bob@example.org", INBOX) is None
    with pytest.raises(StoreError):
        store.messages("bob@example.org", INBOX)
    with pytest.raises(UnknownUser):
        store.create_folder("bob@example.org", ARCHIVE, guid=None, uidvalidity=None)


def test_folders_are_created_idempotently_and_listed_sorted(store: Store) -> None:
    store.create_folder(USER, ZURICH, guid=GUID, uidvalidity=42)
    store.create_folder(USER, ZURICH, guid=GUID, uidvalidity=42)
    store.create_folder(USER, ("Sent",), guid=None, uidvalidity=None)
    infos = store.folders(USER)
    assert [info.path for info in infos] == [ZURICH, INBOX, ("Sent",)]
    zurich = infos[0]
    assert (zurich.guid, zurich.uidvalidity) == (GUID, 42)
    sent = infos[2]
    assert (sent.guid, sent.uidvalidity) == (None, None)


def test_a_delivered_message_is_listed_read_and_dated(store: Store) -> None:
    store.create_folder(USER, ZURICH, guid=None, uidvalidity=None)
    flags = frozenset({SEEN, ANSWERED, FLAGGED, DELETED, DRAFT, PASSED, "$Label1", "Work"})
    stored = store.add_message(
        USER, ZURICH, key="k1", data=BODY, flags=flags, internal_date=1_600_000_000
    )
    assert stored.key == "k1"
    assert stored.guid == "k1"
    assert stored.flags == flags
    assert stored.size == len(BODY)
    assert stored.internal_date == 1_600_000_000
    assert store.messages(USER, ZURICH) == [stored]
    assert store.read_body(USER, ZURICH, "k1") == BODY


def test_adding_the_same_message_again_only_sets_its_flags(store: Store) -> None:
    add(store, "k1", flags=frozenset({SEEN}))
    again = store.add_message(
        USER, INBOX, key="k1", data=BODY, flags=frozenset({FLAGGED}), internal_date=1
    )
    assert again.flags == {FLAGGED}
    [listed] = store.messages(USER, INBOX)
    assert listed.flags == {FLAGGED}
    assert listed.internal_date == 1_700_000_000  # the first delivery's date stands


def test_a_key_holding_other_bytes_is_refused(store: Store) -> None:
    add(store, "k1")
    with pytest.raises(KeyInUse):
        add(store, "k1", data=BODY + b"changed\n")
    assert store.read_body(USER, INBOX, "k1") == BODY


def test_flags_are_set_exactly(store: Store) -> None:
    add(store, "k1", flags=frozenset({SEEN, "Work"}))
    store.set_flags(USER, INBOX, "k1", frozenset({FLAGGED, "$Label1"}))
    [message] = store.messages(USER, INBOX)
    assert message.flags == {FLAGGED, "$Label1"}
    store.set_flags(USER, INBOX, "k1", frozenset())
    [message] = store.messages(USER, INBOX)
    assert message.flags == frozenset()


def test_setting_flags_of_a_missing_message_says_so(store: Store) -> None:
    with pytest.raises(MessageMissing):
        store.set_flags(USER, INBOX, "nope", frozenset({SEEN}))
    with pytest.raises(MessageMissing):
        store.read_body(USER, INBOX, "nope")


def test_expunge_removes_and_is_idempotent(store: Store) -> None:
    add(store, "k1")
    add(store, "k2")
    store.expunge(USER, INBOX, "k1")
    store.expunge(USER, INBOX, "k1")
    store.expunge(USER, ("NoSuchFolder",), "k1")
    assert [message.key for message in store.messages(USER, INBOX)] == ["k2"]


def test_messages_are_sorted_by_key(store: Store) -> None:
    for key in ["b", "c", "a"]:
        add(store, key)
    assert [message.key for message in store.messages(USER, INBOX)] == ["a", "b", "c"]


def test_every_change_moves_the_stamp_or_makes_it_racy(store: Store) -> None:
    stamp = store.folder_stamp(USER, INBOX)
    add(store, "k1")
    assert changed(stamp, stamp := store.folder_stamp(USER, INBOX))
    store.set_flags(USER, INBOX, "k1", frozenset({SEEN}))
    assert changed(stamp, stamp := store.folder_stamp(USER, INBOX))
    store.expunge(USER, INBOX, "k1")
    assert changed(stamp, store.folder_stamp(USER, INBOX))
    assert store.folder_stamp(USER, ("Missing",)) is None


def test_at_most_26_keywords_per_folder_are_stored(store: Store) -> None:
    keywords = frozenset(f"kw{index:02d}" for index in range(30))
    stored = store.add_message(
        USER, INBOX, key="k1", data=BODY, flags=keywords | {SEEN}, internal_date=0
    )
    assert len(stored.flags - {SEEN}) == 26
    assert stored.flags <= keywords | {SEEN}
    [listed] = store.messages(USER, INBOX)
    assert listed.flags == stored.flags


def test_keywords_compare_without_case(store: Store) -> None:
    add(store, "k1", flags=frozenset({"Work"}))
    add(store, "k2", flags=frozenset({"work"}))
    assert {m.key: m.flags for m in store.messages(USER, INBOX)} == {
        "k1": {"Work"}, "k2": {"Work"}
    }


@pytest.mark.parametrize(("flag", "held"), [("\\Recent", set()), ("\\Bogus", set()),
                                            ("two words", {"two_words~"}), ("", {"_~"})])
def test_flags_a_maildir_cannot_hold_go_in_under_a_storable_name(
        store: Store, flag: str, held: set[str]) -> None:
    # Never a failure of the message (a peer's keyword must not poison a user):
    # an unknown system flag is left out, a keyword is stored as stores.names maps it.
    stored = store.add_message(USER, INBOX, key="k1", data=BODY,
                               flags=frozenset({flag, "\\Seen"}), internal_date=0)
    keywords = {f[: f.index("~") + 1] for f in stored.flags if f != "\\Seen"}
    assert keywords == held
    assert stored.flags == store.messages(USER, INBOX)[0].flags


def test_rename_moves_children_and_keeps_identity(store: Store) -> None:
    store.create_folder(USER, ARCHIVE, guid=GUID, uidvalidity=7)
    store.create_folder(USER, ZURICH, guid=None, uidvalidity=None)
    add(store, "k1", path=ZURICH)
    store.rename_folder(USER, ARCHIVE, ("Old", "Archive"))
    infos = {info.path: info for info in store.folders(USER)}
    assert set(infos) == {INBOX, ("Old", "Archive"), ("Old", "Archive", "Zürich")}
    assert infos[("Old", "Archive")].guid == GUID
    assert [m.key for m in store.messages(USER, ("Old", "Archive", "Zürich"))] == ["k1"]
    store.rename_folder(USER, ARCHIVE, ("Old", "Archive"))  # done already: no-op


def test_rename_refuses_clashes_missing_folders_and_inbox(store: Store) -> None:
    store.create_folder(USER, ARCHIVE, guid=None, uidvalidity=None)
    store.create_folder(USER, ("Sent",), guid=None, uidvalidity=None)
    with pytest.raises(FolderExists):
        store.rename_folder(USER, ARCHIVE, ("Sent",))
    with pytest.raises(FolderNotFound):
        store.rename_folder(USER, ("Nope",), ("Other",))
    with pytest.raises(StoreError):
        store.rename_folder(USER, INBOX, ("Other",))
    with pytest.raises(StoreError):
        store.rename_folder(USER, ARCHIVE, ("Archive", "Below"))
    assert {info.path for info in store.folders(USER)} == {INBOX, ARCHIVE, ("Sent",)}


def test_delete_removes_only_an_empty_folder(store: Store) -> None:
    store.create_folder(USER, ARCHIVE, guid=None, uidvalidity=None)
    store.create_folder(USER, ZURICH, guid=None, uidvalidity=None)
    add(store, "k1", path=ZURICH)
    with pytest.raises(FolderNotEmpty):
        store.delete_folder(USER, ZURICH)
    store.delete_folder(USER, ARCHIVE)  # its child stays
    store.delete_folder(USER, ARCHIVE)
    assert {info.path for info in store.folders(USER)} == {INBOX, ZURICH}
    with pytest.raises(StoreError):
        store.delete_folder(USER, INBOX)


def test_subscriptions_are_replaced_exactly(store: Store) -> None:
    store.set_subscriptions(USER, [INBOX, ZURICH, ("Not", "Existing")])
    assert store.subscriptions(USER) == {INBOX, ZURICH, ("Not", "Existing")}
    store.set_subscriptions(USER, [ZURICH])
    assert store.subscriptions(USER) == {ZURICH}


@pytest.mark.parametrize("key", ["../evil", ".hidden", "a/b", "k:2,S", "", "x\n"])
def test_unsafe_keys_are_refused_before_anything_is_written(store: Store, key: str) -> None:
    with pytest.raises(UnsafeName):
        add(store, key)
    assert store.messages(USER, INBOX) == []


def test_a_key_that_misstates_the_size_is_refused(store: Store) -> None:
    # Dovecot trusts S= and W= in a file name over the file itself.
    with pytest.raises(UnsafeName):
        add(store, f"k,S={len(BODY) + 1}")
    lines = BODY.count(b"\n")
    add(store, f"k,S={len(BODY)},W={len(BODY) + lines}")
    assert len(store.messages(USER, INBOX)) == 1


@pytest.mark.parametrize("path", [("..",), ("a/b",), ("a.b",), ("x", ""), ("Inbox",)])
def test_unsafe_folder_paths_are_refused(store: Store, path: tuple[str, ...]) -> None:
    with pytest.raises(UnsafeName):
        store.create_folder(USER, path, guid=None, uidvalidity=None)
    assert [info.path for info in store.folders(USER)] == [INBOX]


@pytest.mark.parametrize("user", ["../x@example.org", "a/b@example.org", ".x@example.org"])
def test_unsafe_users_are_refused(store: Store, user: str) -> None:
    with pytest.raises(StoreError):
        store.ensure_user(user)
    assert store.users() == [USER]


def test_names_listing_agrees_with_the_full_listing(store: Store) -> None:
    add(store, "k1", flags=frozenset({SEEN}))
    add(store, "k2", data=BODY + b"more\n")
    full = {m.key: (m.guid, m.flags) for m in store.messages(USER, INBOX)}
    assert len(full) == 2
    assert store.message_names(USER, INBOX) == full
    assert store.message_flags(USER, INBOX) == {key: flags for key, (_g, flags) in full.items()}
    info = store.message_info(USER, INBOX, "k2")
    assert info == next(m for m in store.messages(USER, INBOX) if m.key == "k2")
    assert info.size == len(BODY) + 5
    store.expunge(USER, INBOX, "k2")
    with pytest.raises(MessageMissing):
        store.message_info(USER, INBOX, "k2")


def test_many_messages_are_read_as_one_at_a_time(store: Store) -> None:
    store.create_folder(USER, ZURICH, guid=None, uidvalidity=None)
    big = BODY + b"x" * 100
    add(store, "k1", path=ZURICH, flags=frozenset({SEEN, "Work"}), date=1_600_000_000)
    add(store, "k2", path=ZURICH, data=big)
    add(store, "k3", path=ZURICH, flags=frozenset({FLAGGED}))
    store.expunge(USER, ZURICH, "k3")
    read = list(store.read_messages(USER, ZURICH, ["k1", "k3", "k2", "gone"],
                                    max_size=len(BODY) + 10))
    # k3 and "gone" are not there; k2 is above the size given, so not read.
    assert read == [(store.message_info(USER, ZURICH, "k1"), BODY),
                    (store.message_info(USER, ZURICH, "k2"), None)]
    assert read[0][0].flags == {SEEN, "Work"}
    assert read[0][0].internal_date == 1_600_000_000
    assert read[1][0].size == len(big)
    with pytest.raises(UnsafeName):
        list(store.read_messages(USER, ZURICH, ["../k1"], max_size=1000))
