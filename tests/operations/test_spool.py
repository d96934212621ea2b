"""The spool: a file per body, places recorded in bulk, each file handed out once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bundlesync.core.model import Body
from bundlesync.operations.spool import (
    SPOOL_ROWS,
    SpoolReader,
    SpoolWriter,
    clear_spool,
    read_spooled,
)
from bundlesync.state.index import StateIndex


def _body(text: str) -> Body:
    data = text.encode()
    return Body(hashlib.sha256(data).hexdigest(), data)


def _spool(spool: Path, index: StateIndex, *bodies: Body) -> SpoolWriter:
    with index.transaction():
        writer = SpoolWriter(spool, index)
        for body in bodies:
            writer.add(body)
        writer.finish()
    return writer


def test_a_body_spooled_twice_keeps_its_first_place(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        first, again, other = _body("one"), _body("one"), _body("two")
        # The same body twice in one bundle: written once.
        writer = _spool(spool, index, first, again)
        assert writer.directory is not None
        assert [p.name for p in writer.directory.iterdir()] == [first.sha256]
        assert (writer.directory / first.sha256).read_bytes() == b"one"
        assert (writer.directory / first.sha256).stat().st_mode & 0o777 == 0o600
        _spool(spool, index, _body("one"), other)  # "one" spooled already by a bundle before
        assert index.spooled(first.sha256) == (f"{writer.directory.name}/{first.sha256}", 0, 3)
        assert read_spooled(spool, index, other.sha256) == b"two"
        reader = SpoolReader(spool, index)
        reader.expect([first.sha256, other.sha256, "0" * 64])
        try:
            assert reader.read(first.sha256) == b"one"
            assert reader.read(other.sha256) == b"two"
            assert reader.read("0" * 64) is None
        finally:
            reader.close()


def test_many_bodies_are_recorded_in_batches_and_read_back(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    bodies = [_body(f"message {n}") for n in range(SPOOL_ROWS * 2 + 7)]
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        _spool(spool, index, *bodies)
        reader = SpoolReader(spool, index)
        reader.expect(b.sha256 for b in bodies)
        try:
            assert [reader.read(b.sha256) for b in bodies] == [b.data for b in bodies]
        finally:
            reader.close()


def test_a_damaged_spooled_body_is_not_used(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    body = _body("intact")
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        writer = _spool(spool, index, body)
        assert writer.directory is not None
        (writer.directory / body.sha256).write_bytes(b"broken")
        reader = SpoolReader(spool, index)
        reader.expect([body.sha256])
        try:
            assert reader.read(body.sha256) is None
            assert reader.take(body.sha256) is None
        finally:
            reader.close()


def test_each_spool_file_is_handed_out_once(tmp_path: Path) -> None:
    # Two messages with the same body (a list post to two users) must not share a
    # file: only the first delivery may take the spool file over.
    spool = tmp_path / "spool"
    body = _body("a list post")
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        writer = _spool(spool, index, body)
        assert writer.directory is not None
        reader = SpoolReader(spool, index)
        reader.expect([body.sha256])
        assert reader.take(body.sha256) == (b"a list post", str(writer.directory / body.sha256))
        assert reader.take(body.sha256) == (b"a list post", None)
        assert reader.read(body.sha256) == b"a list post"
        reader.close()


def test_an_abandoned_bundle_leaves_no_spool_file(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        with index.transaction():
            writer = SpoolWriter(spool, index)
            writer.add(_body("one"))
            writer.abandon()
        assert list(spool.iterdir()) == []


def test_files_left_by_a_killed_ingest_are_replaced_not_written_through(
        tmp_path: Path) -> None:
    # A killed ingest commits neither its bodies' places nor its number: the next
    # bundle gets the same number. A file left under that number may be a message's
    # file by now (a hard link made from an earlier spool that was not cleared
    # whole): it must keep its bytes.
    spool = tmp_path / "spool"
    body = _body("the new bundle's body")
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        left = spool / "1"
        left.mkdir(parents=True)
        (left / body.sha256).write_bytes(b"a message's bytes")
        message = tmp_path / "message"
        os.link(left / body.sha256, message)
        writer = _spool(spool, index, body)
        assert writer.directory == left
        assert read_spooled(spool, index, body.sha256) == body.data
        assert message.read_bytes() == b"a message's bytes"


def test_clear_removes_both_layouts_and_keeps_linked_messages(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    new, old = _body("own file"), _body("in a bundle file")
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        writer = _spool(spool, index, new)
        assert writer.directory is not None
        message = tmp_path / "message"
        os.link(writer.directory / new.sha256, message)
        # A spool the previous version wrote: bodies at offsets in one file per bundle.
        (spool / "7.bodies").write_bytes(b"xx" + old.data)
        with index.transaction():
            index.put_spooled_many([(old.sha256, "7.bodies", 2, len(old.data))])
        assert read_spooled(spool, index, old.sha256) == old.data
        reader = SpoolReader(spool, index)
        reader.expect([old.sha256, new.sha256])
        # A place in a shared bundle file is never handed out as a message's file.
        assert reader.take(old.sha256) == (old.data, None)
        reader.close()
        clear_spool(spool, index)
        assert list(spool.iterdir()) == []
        assert read_spooled(spool, index, new.sha256) is None
        assert message.read_bytes() == new.data
