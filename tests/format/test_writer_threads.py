"""Frames compressed in worker threads, and changes written in their stored encoding:
the same bytes as the one-thread writer, and a clean stop when the records fail."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bundlesync.core.model import (
    Body,
    Change,
    Dot,
    MailboxRef,
    MessageAdded,
    MessageRef,
    Record,
    Timestamp,
    VersionVector,
)
from bundlesync.format import (
    DEFAULT_LIMITS,
    BundleId,
    CountMismatch,
    EncodedChange,
    find_bundles,
    open_bundle,
    record_kind,
    write_bundle,
)
from bundlesync.format.crypto import StreamEncryptor
from bundlesync.format.frames import FrameEncoder
from bundlesync.format.records import encode_record
from tests.format.helpers import A, B, counts_of, trust

MAILBOX = MailboxRef("u@example.org", "cd" * 16)


def _records(n: int, *, seed: int = 7) -> list[Record]:
    """Bodies that compress a little (text with random words) and their adds."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9)))
             for _ in range(500)]
    out: list[Record] = []
    for i in range(n):
        data = b" ".join(rng.choice(words) for _ in range(rng.randint(10, 3000)))
        sha = hashlib.sha256(data).hexdigest()
        out.append(Change(Dot(A.site_id, 1, i + 1), Timestamp(1000 + i, 0, A.site_id),
                          MessageAdded(MessageRef(MAILBOX, f"g{i}", sha), len(data), 0,
                                       frozenset({"\\Seen"}))))
        out.append(Body(sha, data))
    return out


def _fixed_random(n: int) -> bytes:
    return bytes(range(n % 256))[:n] + bytes(max(0, n - 256))


def _write(directory: Path, records: Iterator[Record | EncodedChange], *, counts: bool,
           threads: int, encrypt: bool, listed: list[Record]) -> bytes:
    directory.mkdir()
    written = write_bundle(
        directory, identity=A, bundle_id=BundleId(A.site_id, 1, 1), kind="sync",
        recipients=[B.card()], ack=VersionVector(), assumes=VersionVector(), records=records,
        created_ms=0, encrypt=encrypt, counts=counts_of(listed) if counts else None,
        frame_size=4096, chunk_size=4096, random_bytes=_fixed_random, threads=threads,
        # Version 2 draws its ephemeral keys itself; version 1 takes every random
        # byte from random_bytes, so its encrypted bundles can be compared.
        format_version=1 if encrypt else 2)
    return written.paths[0].read_bytes()


@pytest.mark.parametrize("encrypt", [False, True])
@pytest.mark.parametrize("counts", [True, False])
def test_threads_write_the_same_bytes(tmp_path: Path, *, encrypt: bool, counts: bool) -> None:
    records = _records(60)
    one = _write(tmp_path / "one", iter(records), counts=counts, threads=1, encrypt=encrypt,
                 listed=records)
    three = _write(tmp_path / "three", iter(records), counts=counts, threads=3,
                   encrypt=encrypt, listed=records)
    assert len(one) > 40 * 4096  # many frames, so several were in flight at once
    assert one == three


def test_encoded_changes_are_written_as_the_records_themselves(tmp_path: Path) -> None:
    records = _records(20)

    def encoded() -> Iterator[Record | EncodedChange]:
        for record in records:
            if isinstance(record, Change):
                yield EncodedChange(record_kind(record), encode_record(record, DEFAULT_LIMITS)[0])
            else:
                yield record

    decoded = _write(tmp_path / "decoded", iter(records), counts=True, threads=2, encrypt=False,
                     listed=records)
    passed = _write(tmp_path / "passed", encoded(), counts=True, threads=2, encrypt=False,
                    listed=records)
    assert decoded == passed
    with open_bundle(next(iter(find_bundles(tmp_path / "passed"))), trust=trust(A),
                     identity=B) as bundle:
        assert list(bundle.records()) == records


def test_an_encoded_change_counts_under_its_kind(tmp_path: Path) -> None:
    records = _records(1)
    change = records[0]
    assert isinstance(change, Change)
    wrong = EncodedChange("message-expunged", encode_record(change, DEFAULT_LIMITS)[0])
    with pytest.raises(CountMismatch):
        _write(tmp_path / "d", iter([wrong, records[1]]), counts=True, threads=2,
               encrypt=False, listed=records)
    assert list((tmp_path / "d").iterdir()) == []


def test_a_failing_record_source_stops_the_workers_and_leaves_nothing(tmp_path: Path) -> None:
    records = _records(40)

    def failing() -> Iterator[Record]:
        yield from records[:50]
        raise RuntimeError("the store went away")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="went away"):
        _write(tmp_path / "d", failing(), counts=True, threads=2, encrypt=True,
               listed=records)
    assert list((tmp_path / "d").iterdir()) == []
    assert threading.active_count() == before


def test_threads_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _write(tmp_path / "d", iter([]), counts=True, threads=0, encrypt=False, listed=[])


def test_chunks_sealed_in_threads_are_the_same_bytes() -> None:
    key = bytes(range(32))
    data = bytes(random.Random(3).getrandbits(8) for _ in range(50_000))

    def sealed(executor: ThreadPoolExecutor | None, *, drain: bool) -> bytes:
        encryptor = StreamEncryptor(key, 1024, executor=executor, ahead=3)
        out = [piece for start in range(0, len(data), 777)
               for piece in encryptor.update(data[start:start + 777])]
        if drain:
            out.extend(encryptor.drain())
        out.append(encryptor.finish())  # what is still queued comes first
        return b"".join(out)

    one = sealed(None, drain=False)
    with ThreadPoolExecutor(2) as executor:
        assert sealed(executor, drain=True) == one
        assert sealed(executor, drain=False) == one


@pytest.mark.parametrize("threads", [None, 2])
def test_frames_of_a_stream_written_in_any_pieces_are_the_same(threads: int | None) -> None:
    rng = random.Random(7)
    stream = bytes(rng.getrandbits(8) for _ in range(5000)) * 3
    cuts = sorted(rng.sample(range(1, len(stream)), 40))

    def frames(pieces: list[bytes | bytearray | memoryview]) -> bytes:
        executor = ThreadPoolExecutor(threads) if threads else None
        try:
            encoder = FrameEncoder(frame_size=1000, level=3, executor=executor)
            out = []
            for piece in pieces:
                out.extend(encoder.write(piece))
                if isinstance(piece, bytearray):
                    piece[:] = bytes(len(piece))  # the caller reuses its buffer
            out.extend(encoder.finish())
            return b"".join(out)
        finally:
            if executor is not None:
                executor.shutdown()

    whole = frames([stream])
    parts = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert frames(list(parts)) == whole
    assert frames([bytearray(p) for p in parts]) == whole
    assert frames([memoryview(p) for p in parts]) == whole
