"""MemoryStore's test hooks: other programs changing the store behind the operations' back."""

from __future__ import annotations

import pytest

from bundlesync.core.model import FLAGGED, SEEN
from bundlesync.stores.base import INBOX
from bundlesync.stores.errors import FolderNotFound
from bundlesync.stores.memory import MemoryStore

BODY = b"Subject: x\n\nbody\n"


@pytest.fixture
def store() -> MemoryStore:
    result = MemoryStore()
    result.ensure_user("")
    return result


def test_a_simulated_delivery_moves_the_stamp_and_may_carry_another_guid(
    store: MemoryStore,
) -> None:
    before = store.folder_stamp("", INBOX)
    store.simulate_delivery("", INBOX, key="copied", data=BODY, flags=frozenset({SEEN}),
                            internal_date=5, guid="original")
    assert store.folder_stamp("", INBOX) != before
    [message] = store.messages("", INBOX)
    assert (message.key, message.guid, message.flags, message.internal_date) == (
        "copied", "original", frozenset({SEEN}), 5
    )


def test_simulated_flag_changes_and_expunges_move_the_stamp(store: MemoryStore) -> None:
    store.simulate_delivery("", INBOX, key="k", data=BODY)
    stamps = [store.folder_stamp("", INBOX)]
    store.simulate_flags("", INBOX, "k", frozenset({FLAGGED}))
    stamps.append(store.folder_stamp("", INBOX))
    store.simulate_expunge("", INBOX, "k")
    stamps.append(store.folder_stamp("", INBOX))
    assert len(set(stamps)) == 3
    assert store.messages("", INBOX) == []


def test_an_unchanged_folder_keeps_its_stamp(store: MemoryStore) -> None:
    store.simulate_delivery("", INBOX, key="k", data=BODY, flags=frozenset({SEEN}))
    before = store.folder_stamp("", INBOX)
    store.set_flags("", INBOX, "k", frozenset({SEEN}))
    store.add_message("", INBOX, key="k", data=BODY, flags=frozenset({SEEN}), internal_date=0)
    store.expunge("", INBOX, "absent")
    assert store.folder_stamp("", INBOX) == before


def test_folder_identity_appears_when_dovecot_records_it(store: MemoryStore) -> None:
    store.simulate_new_folder("", ("Sent",))
    assert [(f.path, f.guid) for f in store.folders("")] == [(INBOX, None), (("Sent",), None)]
    store.simulate_folder_identity("", ("Sent",), guid="ab" * 16, uidvalidity=9)
    sent = store.folders("")[1]
    assert (sent.guid, sent.uidvalidity) == ("ab" * 16, 9)


def test_a_simulated_rename_keeps_the_messages(store: MemoryStore) -> None:
    store.create_folder("", ("A",), guid=None, uidvalidity=None)
    store.simulate_delivery("", ("A",), key="k", data=BODY)
    store.simulate_rename("", ("A",), ("B",))
    with pytest.raises(FolderNotFound):
        store.messages("", ("A",))
    assert [m.key for m in store.messages("", ("B",))] == ["k"]


def test_racy_makes_every_stamp_racy(store: MemoryStore) -> None:
    stamp = store.folder_stamp("", INBOX)
    assert stamp is not None
    assert not stamp.racy
    store.racy = True
    racy = store.folder_stamp("", INBOX)
    assert racy is not None
    assert racy.racy
    assert all(info.stamp.racy for info in store.folders(""))
