"""Nothing outside the store: a symlink inside a Maildir is never followed.

bundlesync runs as root. A local user who owns a Maildir can put a link where a
folder, its cur/ or a message file should be; following it would ship any file
of the system to the peer as mail, and an expunge at the peer would delete it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundlesync.operations.demo import USERS
from bundlesync.stores.errors import UnsafeName
from bundlesync.stores.maildir import MaildirStore
from tests.operations.conftest import Sites

ALICE, _BOB = USERS
SECRET = b"Subject: root-only secret\r\n\r\nthe shadow file\r\n"


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    for sub in ("cur", "new", "tmp"):
        (outside / sub).mkdir(parents=True)
    (outside / "cur" / "1700000000.secret:2,").write_bytes(SECRET)
    return outside


def _bodies(store: MaildirStore) -> list[bytes]:
    return [store.read_body(user, info.path, message.key)
            for user in store.users() for info in store.folders(user)
            for message in store.messages(user, info.path)]


@pytest.mark.parametrize("where", ["cur", "folder", "file"])
def test_a_symlink_in_a_maildir_never_ships_a_file_from_outside(
        sites: Sites, tmp_path: Path, where: str) -> None:
    alpha = sites.add("alpha")
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.deliver("alpha", ALICE, ("INBOX",), 1)
    alpha.create_folder(ALICE, ("Work",), guid=None, uidvalidity=None)
    outside = _outside(tmp_path)
    work = Path(alpha.folder_dir(ALICE, ("Work",)))
    if where == "cur":
        os.rmdir(work / "cur")
        (work / "cur").symlink_to(outside / "cur")
    elif where == "folder":
        os.rename(work, tmp_path / "moved-away")
        work.symlink_to(outside)
    else:
        (work / "cur" / "1700000001.link:2,").symlink_to(outside / "cur" / "1700000000.secret:2,")

    exported = sites.export("alpha")
    assert any("symlink" in warning for warning in exported.scan.warnings), \
        exported.scan.warnings
    sites.import_("bravo")
    assert SECRET not in _bodies(bravo)
    assert len(_bodies(bravo)) == 1  # the real message did travel


def test_an_expunge_never_deletes_through_a_symlinked_cur(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"), fsync=False)
    store.ensure_user("")
    store.create_folder("", ("Work",), guid=None, uidvalidity=None)
    store.add_message("", ("Work",), key="1700000000.secret", data=SECRET,
                      flags=frozenset(), internal_date=0)
    outside = _outside(tmp_path)
    work = Path(store.folder_dir("", ("Work",)))
    (work / "cur" / "1700000000.secret:2,").unlink()
    os.rmdir(work / "cur")
    (work / "cur").symlink_to(outside / "cur")

    store.expunge("", ("Work",), "1700000000.secret")
    assert (outside / "cur" / "1700000000.secret:2,").read_bytes() == SECRET
    with pytest.raises(UnsafeName):
        store.read_body("", ("Work",), "1700000000.secret")
    with pytest.raises(UnsafeName):
        store.set_flags("", ("Work",), "1700000000.secret", frozenset({"\\Seen"}))
    assert any("symlink" in warning for warning in store.take_warnings())


def test_a_symlinked_tmp_is_never_written_through(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"), fsync=False)
    store.ensure_user("")
    outside = _outside(tmp_path)
    root = Path(store.maildir_path(""))
    os.rmdir(root / "tmp")
    (root / "tmp").symlink_to(outside / "tmp")
    with pytest.raises(UnsafeName):
        store.add_message("", ("INBOX",), key="k1", data=b"x", flags=frozenset(),
                          internal_date=0)
    assert list((outside / "tmp").iterdir()) == []


def test_a_fifo_in_cur_is_skipped_not_read(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"), fsync=False)
    store.ensure_user("")
    root = Path(store.maildir_path(""))
    os.mkfifo(root / "cur" / "1700000002.fifo:2,")
    assert store.message_names("", ("INBOX",)) == {}
    assert any("not a plain file" in warning for warning in store.take_warnings())


def test_a_folder_with_a_raw_utf8_name_is_skipped_with_a_word(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"), fsync=False)
    store.ensure_user("")
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "Maildir" / ".Z\u00fcrich" / sub).mkdir(parents=True)
    assert [info.path for info in store.folders("")] == [("INBOX",)]
    [warning] = store.take_warnings()
    assert "Z\u00fcrich" in warning and "UTF-7" in warning
