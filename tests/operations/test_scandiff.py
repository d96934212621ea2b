"""The scan's decisions on values alone: no disk, no index."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from bundlesync.core.model import (
    Change,
    Dot,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxRef,
    MailboxRenamed,
    MessageAdded,
    MessageExpunged,
    MessageRef,
    Operation,
    SubscriptionSet,
    Timestamp,
    derived_mailbox_guid,
)
from bundlesync.core.names import resolve_mailboxes
from bundlesync.core.state import MailboxState, apply_to_mailbox
from bundlesync.operations.scandiff import (
    Arrived,
    IndexView,
    Listing,
    UserDiff,
    diff_files,
    diff_subscriptions,
    diff_user,
    folders_to_list,
    match_folders,
    match_renamed,
    name_new_folders,
)
from bundlesync.state.index import FileRow, FolderRow
from bundlesync.stores.base import FolderInfo, FolderPath, FolderStamp, StoredMessage

USER = "alice"
SITE = "5" * 32
NOW = 1_800_000_000_000
INBOX_GUID = "1" * 32
WORK_GUID = "2" * 32
SEEN = frozenset({"\\Seen"})


def body(n: int) -> str:
    return f"{n:064x}"


def row(folder: str, key: str, n: int, flags: frozenset[str] = frozenset()) -> FileRow:
    return FileRow(USER, folder, key, folder, key, body(n), flags, 100 + n, 1_700_000_000)


def disk_folder(path: FolderPath, marks: tuple[int, ...], guid: str | None = None) -> FolderInfo:
    return FolderInfo(path, guid, None, FolderStamp(marks))


def states(*boxes: tuple[str, str]) -> dict[str, MailboxState]:
    made = {}
    for n, (guid, name) in enumerate(boxes, start=1):
        op = MailboxCreated(MailboxRef(USER, guid), None, name, 7)
        made[guid] = apply_to_mailbox(None, Change(Dot(SITE, 1, n), Timestamp(n, 0, SITE), op))
    return made


def view(folders: Sequence[FolderRow], boxes: Mapping[str, MailboxState]) -> IndexView:
    return IndexView(USER, {f.guid: f for f in folders}, boxes,
                     resolve_mailboxes(boxes, live=()))


def scan(index: IndexView, disk: Sequence[FolderInfo], listings: Mapping[FolderPath, Listing],
         files: Mapping[str, Sequence[FileRow]],
         on_disk: Mapping[tuple[FolderPath, str], tuple[int, str]]) -> UserDiff:
    """The diff of a scan, with ``on_disk`` the (size, body) of files the disk holds."""
    match = match_folders(index.folders, disk, wants=lambda _p: True)
    listed = {info.path for info in folders_to_list(index.folders, match)}
    match = match_renamed(match, listings, files)
    new = name_new_folders(match, index.folders, user=USER, site_id=SITE, now_ms=NOW)
    everything = {**match.matched, **new}
    recorded = {guid: {r.key: r.flags for r in rows} for guid, rows in files.items()}
    asked: list[tuple[str, str]] = []

    def rows_of(wanted: Collection[tuple[str, str]]) -> list[FileRow]:
        asked.extend(wanted)
        return [r for rows in files.values() for r in rows if (r.folder, r.key) in wanted]

    found = diff_files(index.folders, everything, listings, recorded, rows_of)
    assert {n.info.path for n in found.new_files} <= listed
    # Full rows are read only for the files that vanished or changed flags.
    assert sorted(asked) == sorted([(c.row.folder, c.row.key) for c in found.flag_changes]
                                   + [(r.folder, r.key) for r in found.gone])
    arrived = {}
    for n in found.new_files:
        size, sha = on_disk[(n.info.path, n.key)]
        flags = listings[n.info.path][n.key]
        arrived[(n.folder, n.key)] = Arrived(
            StoredMessage(n.key, n.key, flags, size, 1_700_000_000),
            found.known_body(n.key, size) or sha)
    return diff_user(index, match, new, found, arrived=arrived, vanished_files=files, now_ms=NOW)


def ops(diff: UserDiff) -> list[Operation]:
    return [op for group in diff.planned for op in group.ops]


INBOX_ROW = FolderRow(INBOX_GUID, ("INBOX",), (1, 1), None)
WORK_ROW = FolderRow(WORK_GUID, ("Work",), (2, 2), None)
BOXES = states((INBOX_GUID, "INBOX"), (WORK_GUID, "Work"))


def test_an_unchanged_store_is_no_change_and_no_listing() -> None:
    index = view([INBOX_ROW, WORK_ROW], BOXES)
    disk = [disk_folder(("INBOX",), (1, 1), INBOX_GUID), disk_folder(("Work",), (2, 2))]
    match = match_folders(index.folders, disk, wants=lambda _p: True)
    assert folders_to_list(index.folders, match) == []
    diff = scan(index, disk, {}, {}, {})
    assert (diff.planned, diff.folder_rows, diff.file_rows) == ([], [], [])


def test_adds_expunges_and_flag_changes_of_a_folder_whose_stamp_moved() -> None:
    index = view([INBOX_ROW], BOXES)
    files = {INBOX_GUID: [row(INBOX_GUID, "k1", 1), row(INBOX_GUID, "k2", 2)]}
    listing = {"k1": SEEN, "k3": frozenset()}
    diff = scan(index, [disk_folder(("INBOX",), (1, 9))], {("INBOX",): listing}, files,
                {(("INBOX",), "k3"): (50, body(3))})
    box = MailboxRef(USER, INBOX_GUID)
    assert ops(diff) == [
        FlagsChanged(MessageRef(box, "k1", body(1)), added=SEEN, removed=frozenset()),
        MessageAdded(MessageRef(box, "k3", body(3)), 50, 1_700_000_000, frozenset()),
        MessageExpunged(MessageRef(box, "k2", body(2))),
    ]
    assert diff.folder_rows == [FolderRow(INBOX_GUID, ("INBOX",), (1, 9), None)]
    assert [r.key for r in diff.dropped_files] == ["k2"]


def test_a_move_reuses_the_body_it_had() -> None:
    index = view([INBOX_ROW, WORK_ROW], BOXES)
    files = {INBOX_GUID: [row(INBOX_GUID, "k1", 1)], WORK_GUID: []}
    listings = {("INBOX",): {}, ("Work",): {"k1": frozenset()}}
    # The disk's hash is never asked for: a wrong one here would show up.
    diff = scan(index, [disk_folder(("INBOX",), (1, 5)), disk_folder(("Work",), (2, 5))],
                listings, files, {(("Work",), "k1"): (101, "not read")})
    assert ops(diff) == [
        MessageAdded(MessageRef(MailboxRef(USER, WORK_GUID), "k1", body(1)), 101,
                     1_700_000_000, frozenset()),
        MessageExpunged(MessageRef(MailboxRef(USER, INBOX_GUID), "k1", body(1))),
    ]


def test_two_vanished_copies_under_one_key_are_both_expunged() -> None:
    index = view([INBOX_ROW, WORK_ROW], BOXES)
    files = {INBOX_GUID: [row(INBOX_GUID, "k1", 1)], WORK_GUID: [row(WORK_GUID, "k1", 1)]}
    diff = scan(index, [disk_folder(("INBOX",), (1, 5)), disk_folder(("Work",), (2, 5))],
                {("INBOX",): {}, ("Work",): {}}, files, {})
    assert sorted(r.folder for r in diff.dropped_files) == [INBOX_GUID, WORK_GUID]
    assert sum(isinstance(op, MessageExpunged) for op in ops(diff)) == 2


def test_a_folder_renamed_on_disk_is_found_by_its_files() -> None:
    index = view([INBOX_ROW, WORK_ROW], BOXES)
    files = {WORK_GUID: [row(WORK_GUID, "k1", 1), row(WORK_GUID, "k2", 2)]}
    listings = {("Jobs",): {"k1": frozenset(), "k2": frozenset()}}
    diff = scan(index, [disk_folder(("INBOX",), (1, 1)), disk_folder(("Jobs",), (3, 3))],
                listings, files, {})
    assert ops(diff) == [MailboxRenamed(MailboxRef(USER, WORK_GUID), None, "Jobs")]
    assert diff.folder_rows == [FolderRow(WORK_GUID, ("Jobs",), (3, 3), None)]


def test_a_new_folder_gets_the_derived_guid_and_a_vanished_one_is_deleted() -> None:
    index = view([INBOX_ROW, WORK_ROW], BOXES)
    files = {WORK_GUID: [row(WORK_GUID, "k1", 1)]}
    diff = scan(index, [disk_folder(("INBOX",), (1, 1)), disk_folder(("Fresh",), (4, 4))],
                {("Fresh",): {}}, files, {})
    fresh = derived_mailbox_guid(USER, ("Fresh",))
    assert ops(diff) == [
        MailboxCreated(MailboxRef(USER, fresh), None, "Fresh", NOW // 1000),
        MessageExpunged(MessageRef(MailboxRef(USER, WORK_GUID), "k1", body(1))),
        MailboxDeleted(MailboxRef(USER, WORK_GUID)),
    ]
    assert diff.dropped_folders == [WORK_GUID]


def test_a_subscription_on_disk_is_recorded_for_the_folder() -> None:
    index = view([INBOX_ROW, WORK_ROW], BOXES)
    planned = diff_subscriptions(USER, {("INBOX",): INBOX_GUID, ("Work",): WORK_GUID},
                                 index.resolved, {("Work",)})
    assert [group.ops for group in planned] == [
        (SubscriptionSet(MailboxRef(USER, WORK_GUID), True),)]
