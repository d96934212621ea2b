"""Delivering a message by hard-linking a file that holds its bytes (the spool's).

The linked file must end up exactly as a written one would -- owner, mode, date,
bytes -- and never be shared by two messages; where it cannot be linked, the
bytes are written as without it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bundlesync.stores import maildir
from bundlesync.stores.base import INBOX
from bundlesync.stores.maildir import MaildirStore

NOT_ROOT = os.geteuid() != 0
DATE = 1_700_000_000


def body(n: int) -> bytes:
    return f"Subject: {n}\n\nbody {n}\n".encode()


def spooled(tmp_path: Path, n: int) -> str:
    """A durable file holding ``body(n)`` in a directory of this user's, as the spool."""
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700, exist_ok=True)
    path = spool / f"body{n}"
    path.write_bytes(body(n))
    path.chmod(0o600)
    return str(path)


def message_file(store: MaildirStore, key: str) -> Path:
    cur = Path(store.folder_dir("", INBOX)) / "cur"
    (name,) = [name for name in os.listdir(cur) if name.startswith(key)]
    return cur / name


def test_a_batch_links_the_source_instead_of_writing_the_bytes(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    source = spooled(tmp_path, 1)
    with store.batch():
        stored = store.add_message("", INBOX, key="k1", data=body(1), flags=frozenset(),
                                   internal_date=DATE, source=source)
    assert stored.size == len(body(1))
    delivered = message_file(store, "k1")
    assert os.path.samefile(delivered, source)
    st = delivered.stat()
    assert st.st_nlink == 2  # the source and the message: the tmp/ name is gone
    assert st.st_mode & 0o777 == 0o600
    assert st.st_mtime_ns == DATE * 1_000_000_000  # Dovecot's received date
    assert store.messages("", INBOX)[0].internal_date == DATE
    assert store.read_body("", INBOX, "k1") == body(1)
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []


def test_a_delivery_outside_a_batch_links_the_source_too(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    source = spooled(tmp_path, 2)
    store.add_message("", INBOX, key="k2", data=body(2), flags=frozenset({"\\Seen"}),
                      internal_date=DATE, source=source)
    assert os.path.samefile(message_file(store, "k2"), source)
    assert message_file(store, "k2").name.endswith(":2,S")


def test_a_source_linked_elsewhere_already_is_copied_never_shared(tmp_path: Path) -> None:
    # The second message of the same body (a list post to two users), or a link a
    # killed run left: two messages must not share a file.
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    source = spooled(tmp_path, 3)
    with store.batch():
        store.add_message("", INBOX, key="first", data=body(3), flags=frozenset(),
                          internal_date=DATE, source=source)
        store.add_message("", INBOX, key="second", data=body(3), flags=frozenset(),
                          internal_date=DATE + 1, source=source)
    first, second = message_file(store, "first"), message_file(store, "second")
    assert os.path.samefile(first, source)
    assert not os.path.samefile(second, source)
    assert second.read_bytes() == body(3)
    assert second.stat().st_mtime_ns == (DATE + 1) * 1_000_000_000
    assert first.stat().st_mtime_ns == DATE * 1_000_000_000  # not changed by the copy


@pytest.mark.parametrize("error", [errno.EXDEV, errno.EPERM, errno.EMLINK])
def test_a_source_that_cannot_be_linked_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    source = spooled(tmp_path, 4)

    real = os.link

    def refuse(src: str, dst: str, **kwargs: bool) -> None:
        if src == source:
            raise OSError(error, os.strerror(error), src, dst)
        real(src, dst, **kwargs)

    monkeypatch.setattr(maildir.os, "link", refuse)
    with store.batch():
        store.add_message("", INBOX, key="k4", data=body(4), flags=frozenset(),
                          internal_date=DATE, source=source)
    monkeypatch.undo()
    delivered = message_file(store, "k4")
    assert not os.path.samefile(delivered, source)
    assert delivered.read_bytes() == body(4)
    assert delivered.stat().st_mtime_ns == DATE * 1_000_000_000
    assert Path(source).read_bytes() == body(4)


def test_a_source_of_another_size_is_not_linked(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    source = spooled(tmp_path, 5)
    Path(source).write_bytes(b"something else")
    with store.batch():
        store.add_message("", INBOX, key="k5", data=body(5), flags=frozenset(),
                          internal_date=DATE, source=source)
    assert message_file(store, "k5").read_bytes() == body(5)
    assert Path(source).read_bytes() == b"something else"


def test_a_failed_batch_keeps_the_source(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    source = spooled(tmp_path, 6)

    def deliver_then_fail() -> None:
        with store.batch(step=lambda name: None):
            store.add_message("", INBOX, key="k6", data=body(6), flags=frozenset(),
                              internal_date=DATE, source=source)
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        deliver_then_fail()
    assert store.messages("", INBOX) == []
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []
    assert Path(source).read_bytes() == body(6)
    assert Path(source).stat().st_nlink == 1


def test_written_is_passed_once_the_files_are_in_tmp_and_before_they_are_named(
        tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    source = spooled(tmp_path, 7)
    seen: list[tuple[str, list[str], int]] = []

    def step(name: str) -> None:
        seen.append((name, os.listdir(tmp_path / "Maildir" / "tmp"),
                     len(store.messages("", INBOX))))

    with store.batch(step=step):
        store.add_message("", INBOX, key="k7", data=body(7), flags=frozenset(),
                          internal_date=DATE, source=source)
        store.add_message("", INBOX, key="k8", data=body(8), flags=frozenset(),
                          internal_date=DATE)
    assert [name for name, _tmp, _named in seen] == ["written", "deliver", "deliver"]
    _name, in_tmp, named = seen[0]
    assert len(in_tmp) == 2
    assert named == 0
    assert os.path.samefile(message_file(store, "k7"), source)


@pytest.mark.skipif(NOT_ROOT, reason="chown needs root")
def test_a_linked_file_gets_the_owner_of_the_maildir(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    root.mkdir()
    os.chown(root, 4321, 4322)
    store = MaildirStore(str(root))
    store.ensure_user("")
    source = spooled(tmp_path, 9)
    with store.batch():
        store.add_message("", INBOX, key="k9", data=body(9), flags=frozenset(),
                          internal_date=DATE, source=source)
    st = message_file(store, "k9").stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322)
    assert os.path.samefile(message_file(store, "k9"), source)
    assert st.st_mode & 0o777 == 0o600
