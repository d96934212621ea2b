"""What MaildirStore writes on disk and how it reads what others (Dovecot, an LDA) wrote."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bundlesync.core.model import DELETED, FLAGGED, SEEN
from bundlesync.errors import StoreError
from bundlesync.stores.base import INBOX
from bundlesync.stores.errors import FolderLocked, FolderNotEmpty, KeyInUse, UnsafeName
from bundlesync.stores.maildir import MaildirStore

BODY = b"Subject: hi\n\nbody\n"
GUID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return tmp_path / "Maildir"


@pytest.fixture
def store(maildir: Path) -> MaildirStore:
    result = MaildirStore(str(maildir), fsync=False, lock_timeout=0.3)
    result.ensure_user("")
    return result


def files(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def put(path: Path, data: bytes = BODY) -> Path:
    """A file as another program (Dovecot, an LDA) would leave it."""
    path.write_bytes(data)
    return path


# --- layout ----------------------------------------------------------------------------


def test_a_new_maildir_has_cur_new_tmp_with_private_modes(
    maildir: Path, store: MaildirStore
) -> None:
    assert files(maildir) == ["cur", "new", "tmp"]
    for sub in ("cur", "new", "tmp"):
        assert stat.S_IMODE((maildir / sub).stat().st_mode) == 0o700
    assert store.users() == [""]


def test_delivery_lands_in_cur_with_sorted_letters_and_the_internal_date(
    maildir: Path, store: MaildirStore
) -> None:
    store.add_message(
        "", INBOX, key="k1", data=BODY, flags=frozenset({SEEN, FLAGGED, "$Label1", "Work"}),
        internal_date=1_234_567_890,
    )
    assert files(maildir / "cur") == ["k1:2,FSab"]
    assert files(maildir / "tmp") == []
    message = maildir / "cur" / "k1:2,FSab"
    assert message.read_bytes() == BODY
    assert message.stat().st_mtime == 1_234_567_890
    assert stat.S_IMODE(message.stat().st_mode) == 0o600
    assert (maildir / "dovecot-keywords").read_text() == "0 $Label1\n1 Work\n"
    assert not (maildir / "dovecot-uidlist.lock").exists()
    assert not (maildir / "dovecot-keywords.lock").exists()


def test_folders_are_maildir_plus_plus_directories_in_modified_utf7(
    maildir: Path, store: MaildirStore
) -> None:
    store.create_folder("", ("Archive", "Zürich"), guid=GUID, uidvalidity=42)
    folder = maildir / ".Archive.Z&APw-rich"
    assert files(folder) == ["cur", "dovecot-uidlist", "maildirfolder", "new", "tmp"]
    assert (folder / "dovecot-uidlist").read_text() == f"3 V42 N1 G{GUID}\n"
    assert files(maildir / "tmp") == []  # the staging directory is gone
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_folder_dovecot_already_numbered_keeps_its_uidlist(
    maildir: Path, store: MaildirStore
) -> None:
    folder = maildir / ".Sent"
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True)
    original = f"3 V99 N5 G{'f' * 32}\n"
    (folder / "dovecot-uidlist").write_text(original)
    store.create_folder("", ("Sent",), guid=GUID, uidvalidity=42)
    assert (folder / "dovecot-uidlist").read_text() == original


# --- reading what others wrote -------------------------------------------------------------


def test_messages_in_new_and_cur_with_any_name_shape_are_read(
    maildir: Path, store: MaildirStore
) -> None:
    (maildir / "dovecot-keywords").write_text("0 $Label1\n1 Work\n")
    put(maildir / "new" / "1795881272.M213455P7310.vm,S=17,W=20")
    put(maildir / "new" / "flagged:2,Sb")
    put(maildir / "cur" / "plain:2,RT")
    put(maildir / "cur" / ".hidden-temp")
    flags = {m.key: m.flags for m in store.messages("", INBOX)}
    assert flags == {
        "1795881272.M213455P7310.vm,S=17,W=20": frozenset(),
        "flagged": {SEEN, "Work"},
        "plain": {"\\Answered", DELETED},
    }


def test_read_messages_sees_files_renamed_or_delivered_after_the_listing(
    maildir: Path, store: MaildirStore
) -> None:
    put(maildir / "cur" / "a:2,")
    put(maildir / "cur" / "b:2,")
    put(maildir / "cur" / "c:2,")
    assert [m.key for m in store.messages("", INBOX)] == ["a", "b", "c"]  # listing held
    # Meanwhile another program flags b, expunges c and delivers d; the folder's
    # stamp may not even have moved (a coarse clock).
    stamp = os.stat(maildir / "cur").st_mtime_ns
    os.rename(maildir / "cur" / "b:2,", maildir / "cur" / "b:2,S")
    os.unlink(maildir / "cur" / "c:2,")
    put(maildir / "new" / "d", data=BODY + b"d")
    os.utime(maildir / "cur", ns=(stamp, stamp))
    read = {m.key: (m.flags, data) for m, data in
            store.read_messages("", INBOX, ["a", "b", "c", "d"], max_size=1000)}
    assert read == {"a": (frozenset(), BODY), "b": ({SEEN}, BODY),
                    "d": (frozenset(), BODY + b"d")}


def test_guids_come_from_the_uidlist_g_extension(maildir: Path, store: MaildirStore) -> None:
    put(maildir / "cur" / "copied,S=18:2,S")
    put(maildir / "cur" / "own:2,")
    (maildir / "dovecot-uidlist").write_text(
        f"3 V1 N3 G{GUID}\n1 Goriginal-guid :copied,S=18\n2 :own\n"
    )
    guids = {m.key: m.guid for m in store.messages("", INBOX)}
    assert guids == {"copied,S=18": "original-guid", "own": "own"}
    [inbox] = store.folders("")
    assert (inbox.guid, inbox.uidvalidity) == (GUID, 1)


def test_flag_changes_stay_in_new_and_keep_unknown_letters(
    maildir: Path, store: MaildirStore
) -> None:
    (maildir / "dovecot-keywords").write_text("0 $Label1\n")
    put(maildir / "new" / "k1:2,SXac,extra")
    store.set_flags("", INBOX, "k1", frozenset({FLAGGED, "$Label1"}))
    assert files(maildir / "new") == ["k1:2,FXac,extra"]
    [message] = store.messages("", INBOX)
    assert message.flags == {FLAGGED, "$Label1"}


def test_a_file_without_flags_is_left_alone_when_nothing_changes(
    maildir: Path, store: MaildirStore
) -> None:
    put(maildir / "new" / "fresh")
    store.set_flags("", INBOX, "fresh", frozenset())
    assert files(maildir / "new") == ["fresh"]


def test_undecodable_and_special_directories_are_not_folders(
    maildir: Path, store: MaildirStore
) -> None:
    for name in (".Good", ".bad&", ".INBOX", ".Inbox", "..DOVECOT-TRASHED", ".x..y", "plain"):
        (maildir / name).mkdir()
    (maildir / ".file").write_text("")
    assert [info.path for info in store.folders("")] == [("Good",), INBOX]


def test_subscriptions_file_is_dovecots_version_2(maildir: Path, store: MaildirStore) -> None:
    store.set_subscriptions("", [("Work", "Sub"), ("Zürich",), INBOX])
    text = (maildir / "subscriptions").read_text()
    assert text == "V\t2\n\nINBOX\nWork\tSub\nZ&APw-rich\n"
    inode = (maildir / "subscriptions").stat().st_ino
    store.set_subscriptions("", [INBOX, ("Zürich",), ("Work", "Sub")])
    assert (maildir / "subscriptions").stat().st_ino == inode  # unchanged: not rewritten


# --- keywords file --------------------------------------------------------------------------


def test_new_keywords_are_appended_after_the_highest_index_with_a_newer_mtime(
    maildir: Path, store: MaildirStore
) -> None:
    keywords = maildir / "dovecot-keywords"
    keywords.write_text("0 $Label1\n3 Work\n")
    future = int(time.time()) + 100
    os.utime(keywords, (future, future))
    store.add_message("", INBOX, key="k1", data=BODY, flags=frozenset({"Work", "New"}),
                      internal_date=0)
    assert keywords.read_text() == "0 $Label1\n3 Work\n4 New\n"
    assert keywords.stat().st_mtime == future + 1
    assert files(maildir / "cur") == ["k1:2,de"]


def test_a_stale_uidlist_lock_of_a_dead_process_is_taken_over(
    maildir: Path, store: MaildirStore
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    lock = maildir / "dovecot-uidlist.lock"
    lock.write_text(f"{dead.stdout.strip()}:{os.uname().nodename}")
    old = time.time() - 10
    os.utime(lock, (old, old))
    store.set_subscriptions("", [])  # unrelated: does not need the lock
    store.add_message("", INBOX, key="k1", data=BODY, flags=frozenset({"Work"}),
                      internal_date=0)
    assert not lock.exists()
    assert (maildir / "dovecot-keywords").read_text() == "0 Work\n"


def test_a_live_uidlist_lock_makes_keyword_changes_wait_then_fail(
    maildir: Path, store: MaildirStore
) -> None:
    lock = maildir / "dovecot-uidlist.lock"
    lock.write_text(f"{os.getpid()}:{os.uname().nodename}")
    with pytest.raises(FolderLocked):
        store.add_message("", INBOX, key="k1", data=BODY, flags=frozenset({"Work"}),
                          internal_date=0)
    assert files(maildir / "cur") == []
    assert lock.exists()
    # Known keywords and system flags need no lock.
    store.add_message("", INBOX, key="k2", data=BODY, flags=frozenset({SEEN}), internal_date=0)
    assert files(maildir / "cur") == ["k2:2,S"]


# --- racy stamps ----------------------------------------------------------------------------


def test_a_stamp_is_racy_within_two_seconds_of_the_change_on_a_coarse_file_system(
        maildir: Path) -> None:
    now = [0]
    store = MaildirStore(str(maildir), fsync=False, now_ns=lambda: now[0])
    store.ensure_user("")
    # A file system keeping whole seconds, faked on this disk: whole-second mtimes.
    mtime = (maildir / "cur").stat().st_mtime_ns // 1_000_000_000 * 1_000_000_000
    for sub in ("cur", "new"):
        os.utime(maildir / sub, ns=(mtime, mtime))
    now[0] = mtime + 1_000_000_000
    stamp = store.folder_stamp("", INBOX)
    assert stamp is not None
    assert stamp.racy
    now[0] = mtime + 2_500_000_000
    later = store.folder_stamp("", INBOX)
    assert later is not None
    assert not later.racy
    assert later.marks == stamp.marks == (
        (maildir / "cur").stat().st_mtime_ns, (maildir / "new").stat().st_mtime_ns
    )


def test_a_stamp_with_sub_second_mtimes_is_racy_for_50_ms_only(maildir: Path) -> None:
    now = [0]
    store = MaildirStore(str(maildir), fsync=False, now_ns=lambda: now[0])
    store.ensure_user("")
    mtime = 1_800_000_000_123_456_789  # what a file system with nanosecond mtimes keeps
    for sub in ("cur", "new"):
        os.utime(maildir / sub, ns=(mtime, mtime))
    if (maildir / "cur").stat().st_mtime_ns != mtime:
        pytest.skip("the test directory's file system keeps no nanosecond mtimes")
    now[0] = mtime + 40_000_000
    young = store.folder_stamp("", INBOX)
    assert young is not None
    assert young.racy
    now[0] = mtime + 60_000_000
    settled = store.folder_stamp("", INBOX)
    assert settled is not None
    assert not settled.racy


# --- other programs working on the store ------------------------------------------------------


def test_a_file_renamed_behind_our_back_is_found_by_its_key(
    maildir: Path, store: MaildirStore
) -> None:
    store.add_message("", INBOX, key="k1", data=BODY, flags=frozenset({SEEN}), internal_date=0)
    store.messages("", INBOX)  # the store now remembers k1:2,S
    cur = maildir / "cur"
    marks = cur.stat().st_mtime_ns
    (cur / "k1:2,S").rename(cur / "k1:2,ST")
    # Same tick on a coarse file system: the directory mtime does not move.
    os.utime(cur, ns=(marks, marks))
    store.set_flags("", INBOX, "k1", frozenset({FLAGGED}))
    assert files(cur) == ["k1:2,F"]
    assert store.read_body("", INBOX, "k1") == BODY
    (cur / "k1:2,F").rename(cur / "k1:2,FS")
    os.utime(cur, ns=(marks, marks))
    store.add_message("", INBOX, key="k1", data=BODY, flags=frozenset(), internal_date=0)
    assert files(cur) == ["k1:2,"]
    (cur / "k1:2,").rename(cur / "k1:2,R")
    os.utime(cur, ns=(marks, marks))
    store.expunge("", INBOX, "k1")
    assert files(cur) == []


def test_a_delivery_never_replaces_a_file_that_appeared_unseen(
    maildir: Path, store: MaildirStore
) -> None:
    store.messages("", INBOX)  # the store now believes INBOX is empty
    cur = maildir / "cur"
    marks = cur.stat().st_mtime_ns
    put(cur / "k1:2,S", b"other bytes\n")
    os.utime(cur, ns=(marks, marks))  # same clock tick: unseen by the index
    with pytest.raises(KeyInUse):
        store.add_message("", INBOX, key="k1", data=BODY, flags=frozenset({SEEN}),
                          internal_date=0)
    assert (cur / "k1:2,S").read_bytes() == b"other bytes\n"
    assert files(maildir / "tmp") == []
    os.utime(cur, ns=(marks, marks))
    same = store.add_message("", INBOX, key="k1", data=b"other bytes\n",
                             flags=frozenset({SEEN}), internal_date=0)
    assert same.flags == {SEEN}
    assert files(cur) == ["k1:2,S"]


RENAMER = """
import os, sys, time
cur, seconds, pause = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + seconds
while time.monotonic() < end:
    for name in os.listdir(cur):
        new = name[:-1] + ("T" if name.endswith("S") else "S")
        try:
            os.rename(os.path.join(cur, name), os.path.join(cur, new))
        except FileNotFoundError:
            pass  # we renamed it first
        if pause:
            time.sleep(pause)
"""


def start_renamer(cur: Path, seconds: float, pause: float) -> subprocess.Popen[bytes]:
    """Another process (think: Dovecot) flipping a flag letter of every file, over and over."""
    return subprocess.Popen(
        [sys.executable, "-c", RENAMER, str(cur), str(seconds), str(pause)],
        stdout=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_listings_never_miss_a_message_another_process_keeps_renaming(
    maildir: Path, store: MaildirStore
) -> None:
    keys = [f"m{index:04d}" for index in range(300)]
    for key in keys:
        put(maildir / "cur" / f"{key}:2,S")
    renamer = start_renamer(maildir / "cur", 1.5, 0)
    listings = 0
    try:
        while renamer.poll() is None:
            assert [m.key for m in store.messages("", INBOX)] == keys
            listings += 1
    finally:
        renamer.kill()
        renamer.wait()
    assert listings > 0


@pytest.mark.slow
def test_flag_changes_racing_another_process_never_duplicate_or_lose_a_file(
    maildir: Path, store: MaildirStore
) -> None:
    keys = [f"m{index:04d}" for index in range(50)]
    for key in keys:
        put(maildir / "cur" / f"{key}:2,S")
    renamer = start_renamer(maildir / "cur", 1.0, 0.0005)
    changes = 0
    try:
        while renamer.poll() is None:
            store.set_flags("", INBOX, keys[changes % len(keys)], frozenset({FLAGGED}))
            changes += 1
    finally:
        renamer.kill()
        renamer.wait()
    assert changes > 0
    assert sorted(name.split(":")[0] for name in os.listdir(maildir / "cur")) == keys


def test_deliveries_in_progress_and_unflagged_new_mail_are_never_touched(
    maildir: Path, store: MaildirStore
) -> None:
    put(maildir / "tmp" / "1795.M1P2.lda")  # an LDA still writing
    put(maildir / "new" / "1795.M1P3.lda")  # just delivered
    store.create_folder("", ("Other",), guid=None, uidvalidity=None)
    store.add_message("", INBOX, key="mine", data=BODY, flags=frozenset({SEEN}), internal_date=0)
    store.set_flags("", INBOX, "mine", frozenset({"Work"}))
    store.expunge("", INBOX, "mine")
    store.delete_folder("", ("Other",))
    assert files(maildir / "tmp") == ["1795.M1P2.lda"]
    assert files(maildir / "new") == ["1795.M1P3.lda"]


# --- folders --------------------------------------------------------------------------------


def test_delete_refuses_a_folder_with_a_delivery_in_progress_or_a_foreign_file(
    maildir: Path, store: MaildirStore
) -> None:
    store.create_folder("", ("Junk",), guid=GUID, uidvalidity=1)
    folder = maildir / ".Junk"
    put(folder / "tmp" / "in-progress")
    with pytest.raises(FolderNotEmpty):
        store.delete_folder("", ("Junk",))
    (folder / "tmp" / "in-progress").unlink()
    (folder / "notes.txt").write_text("admin notes")
    with pytest.raises(FolderNotEmpty):
        store.delete_folder("", ("Junk",))
    (folder / "notes.txt").unlink()
    (folder / "dovecot.index.log").write_bytes(b"\0")
    store.delete_folder("", ("Junk",))
    assert not folder.exists()
    assert files(maildir / "tmp") == []


def test_an_interrupted_rename_is_finished_by_running_it_again(
    maildir: Path, store: MaildirStore
) -> None:
    store.create_folder("", ("A",), guid=None, uidvalidity=None)
    store.create_folder("", ("A", "B"), guid=None, uidvalidity=None)
    store.create_folder("", ("A", "B", "C"), guid=None, uidvalidity=None)
    (maildir / ".A").rename(maildir / ".Z")  # the parent went, the children did not
    store.rename_folder("", ("A",), ("Z",))
    assert [info.path for info in store.folders("")] == [
        INBOX, ("Z",), ("Z", "B"), ("Z", "B", "C")
    ]


def test_writes_never_follow_a_symlink_out_of_the_maildir(
    tmp_path: Path, maildir: Path, store: MaildirStore
) -> None:
    outside = tmp_path / "outside"
    for sub in ("cur", "new", "tmp"):
        (outside / sub).mkdir(parents=True)
    (maildir / ".Evil").symlink_to(outside)
    with pytest.raises(UnsafeName):
        store.add_message("", ("Evil",), key="k1", data=BODY, flags=frozenset(),
                          internal_date=0)
    with pytest.raises(StoreError):
        store.delete_folder("", ("Evil",))
    assert [files(outside / sub) for sub in ("cur", "new", "tmp")] == [[], [], []]


def test_os_errors_become_store_errors_that_say_what_failed(
    maildir: Path, store: MaildirStore
) -> None:
    (maildir / "tmp").rmdir()
    (maildir / "tmp").write_text("a file where tmp/ should be")
    with pytest.raises(StoreError) as caught:
        store.add_message("", INBOX, key="k1", data=BODY, flags=frozenset(), internal_date=0)
    assert "could not deliver message k1" in caught.value.message
    assert not isinstance(caught.value.__cause__, StoreError)
    assert isinstance(caught.value.__cause__, OSError)


# --- ownership --------------------------------------------------------------------------------

NOT_ROOT = os.geteuid() != 0


@pytest.mark.skipif(NOT_ROOT, reason="chown needs root")
def test_what_we_create_belongs_to_the_owner_of_the_store_root(tmp_path: Path) -> None:
    root = tmp_path / "vmail"
    root.mkdir()
    os.chown(root, 4321, 4322)
    store = MaildirStore(f"{root}/%d/%n/Maildir", fsync=False)
    store.ensure_user("alice@example.org")
    store.create_folder("alice@example.org", ("Work",), guid=GUID, uidvalidity=3)
    store.add_message("alice@example.org", ("Work",), key="k1", data=BODY,
                      flags=frozenset({"Label"}), internal_date=0)
    store.set_subscriptions("alice@example.org", [("Work",)])
    owners = {
        (path.stat().st_uid, path.stat().st_gid)
        for path in [root / "example.org", *root.joinpath("example.org").rglob("*")]
    }
    assert owners == {(4321, 4322)}
