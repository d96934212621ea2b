"""The spool: bodies appended per bundle, their places recorded in bulk."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bundlesync.core.model import Body
from bundlesync.operations.spool import SPOOL_ROWS, SpoolReader, SpoolWriter, read_spooled
from bundlesync.state.index import StateIndex


def _body(text: str) -> Body:
    data = text.encode()
    return Body(hashlib.sha256(data).hexdigest(), data)


def test_a_body_spooled_twice_keeps_its_first_place(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        first, again, other = _body("one"), _body("one"), _body("two")
        with index.transaction():
            writer = SpoolWriter(spool, index)
            writer.add(first)
            writer.add(again)  # the same body twice in one bundle: written once
            writer.finish()
        assert writer.path is not None
        assert writer.path.read_bytes() == b"one"
        with index.transaction():
            later = SpoolWriter(spool, index)
            later.add(_body("one"))  # spooled already by an earlier bundle
            later.add(other)
            later.finish()
        assert index.spooled(first.sha256) == (writer.path.name, 0, 3)
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
        with index.transaction():
            writer = SpoolWriter(spool, index)
            for body in bodies:
                writer.add(body)
            writer.finish()
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
        with index.transaction():
            writer = SpoolWriter(spool, index)
            writer.add(body)
            writer.finish()
        assert writer.path is not None
        writer.path.write_bytes(b"broken")
        reader = SpoolReader(spool, index)
        reader.expect([body.sha256])
        try:
            assert reader.read(body.sha256) is None
        finally:
            reader.close()
