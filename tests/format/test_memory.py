"""Memory stays constant whatever the bundle's size: writing and reading a bundle
four times larger needs no more memory (tracemalloc peak).

With one compression thread the peak is exact from run to run, so the two sizes are
compared closely. With a pool, how many of the frames allowed ahead are alive at the
peak depends on the scheduler (seen to vary by 1.5 MiB between identical runs), so
the pooled writer is held to a bound that a 32 MiB bundle could not fit in."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bundlesync.core.model import Body, Record, VersionVector
from bundlesync.format import BundleId, open_bundle, write_bundle
from tests.format.helpers import A, B, trust

MiB = 1024 * 1024
BODY = 256 * 1024
FRAME = 512 * 1024


def bodies(total: int, seed: int) -> Iterator[Record]:
    rng = random.Random(seed)
    for _ in range(total // BODY):
        data = rng.randbytes(BODY)  # incompressible: the bundle is as large as the mail
        yield Body(hashlib.sha256(data).hexdigest(), data)


def peak_of(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(tmp: Path, total: int, *, encrypt: bool, spool: bool,
            threads: int | None = 1) -> tuple[int, int]:
    tmp.mkdir()
    written: list[Path] = []

    def write() -> None:
        result = write_bundle(
            tmp, identity=A, bundle_id=BundleId(A.site_id, 1, total), kind="sync",
            recipients=[B.card()], ack=VersionVector(), assumes=VersionVector(),
            records=bodies(total, total), created_ms=0, encrypt=encrypt,
            counts=None if spool else {"body": total // BODY}, frame_size=FRAME,
            threads=threads)
        written.extend(result.paths)

    def read() -> None:
        with open_bundle(written[0], identity=B, trust=trust(A)) as bundle:
            count = sum(1 for _ in bundle.records())
        assert count == total // BODY

    return peak_of(write), peak_of(read)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("encrypt", "spool"), [(False, False), (True, True)])
def test_memory_does_not_grow_with_the_bundle(tmp_path: Path, encrypt: bool, spool: bool
                                              ) -> None:
    small_write, small_read = measure(tmp_path / "small", 8 * MiB, encrypt=encrypt,
                                      spool=spool)
    large_write, large_read = measure(tmp_path / "large", 32 * MiB, encrypt=encrypt,
                                      spool=spool)
    # A handful of frames, chunks and read blocks, whatever the size.
    for peak in (small_write, small_read, large_write, large_read):
        assert peak < 12 * MiB
    assert large_write < small_write + MiB
    assert large_read < small_read + MiB


@pytest.mark.timeout(120)
def test_a_compression_pool_keeps_memory_bounded(tmp_path: Path) -> None:
    # Frames and chunks ahead of the writer are bounded in number, not by the bundle.
    large_write, _ = measure(tmp_path / "large", 32 * MiB, encrypt=True, spool=True,
                             threads=2)
    assert large_write < 16 * MiB
