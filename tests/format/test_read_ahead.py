"""Records decoded by a reader thread ahead of the importer (format.reader.read_ahead)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import pytest

from bundlesync.core.model import Body, Record, Want
from bundlesync.format.errors import BodyHashMismatch
from bundlesync.format.reader import read_ahead, record_weight


def body(n: int, size: int = 100) -> Body:
    data = bytes([n % 256]) * size
    return Body(hashlib.sha256(data).hexdigest(), data)


def test_every_record_comes_through_in_order() -> None:
    records: list[Record] = [body(n) if n % 3 else Want("ab" * 32) for n in range(500)]
    assert list(read_ahead(iter(records), weigh=record_weight, max_bytes=1000)) == records


def test_no_more_than_the_bound_is_decoded_ahead() -> None:
    produced: list[int] = []
    gate = threading.Event()

    def source() -> Iterator[Record]:
        for n in range(100):
            produced.append(n)
            yield body(n, size=100)
        gate.set()

    reader = read_ahead(source(), weigh=record_weight, max_bytes=1000)
    first = next(reader)
    assert first == body(0)
    # Blocked once 1,000 bytes wait: at most 10 waiting, plus the one handed out
    # and the one being put.
    gate.wait(0.3)
    assert len(produced) <= 12
    assert len(list(reader)) == 99


def test_a_body_larger_than_the_bound_goes_through_alone() -> None:
    records = [body(1, size=5000), body(2, size=10), body(3, size=5000)]
    assert list(read_ahead(iter(records), weigh=record_weight, max_bytes=1000)) == records


def test_an_error_of_the_reader_is_raised_at_its_place() -> None:
    def source() -> Iterator[Record]:
        yield body(1)
        yield body(2)
        raise BodyHashMismatch("Record 3: a message body does not match its SHA-256.")

    reader = read_ahead(source(), weigh=record_weight)
    assert next(reader) == body(1)
    assert next(reader) == body(2)
    with pytest.raises(BodyHashMismatch, match="Record 3"):
        next(reader)


def test_stopping_early_stops_the_thread_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[Record]:
        try:
            n = 0
            while True:
                n += 1
                yield body(n)
        finally:
            closed.set()

    before = threading.active_count()
    reader = read_ahead(endless(), weigh=record_weight, max_bytes=500)
    assert next(reader) == body(1)
    reader.close()
    assert closed.is_set()
    assert threading.active_count() == before
