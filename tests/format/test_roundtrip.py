"""write_bundle -> open_bundle round trips arbitrary record streams exactly (==),
plain and encrypted, across random frame, chunk and volume boundaries."""

from __future__ import annotations

import hashlib
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundlesync.core.model import Body, Record, VersionVector
from bundlesync.format import BundleId, find_bundles, open_bundle, read_header, write_bundle
from tests.format.helpers import A, B, C, counts_of, records, trust, version_vectors

roundtrip_settings = settings(max_examples=150, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])


@roundtrip_settings
@given(
    recs=st.lists(records, max_size=25),
    encrypt=st.booleans(),
    announce_counts=st.booleans(),
    frame_size=st.integers(16, 4096),
    chunk_size=st.integers(64, 2048),
    max_volume_size=st.none() | st.integers(1024, 8192),
    ack=version_vectors,
    assumes=version_vectors,
    seq=st.integers(0, 2**40),
)
def test_write_then_read_gives_the_same_records(
    *, recs: list[Record], encrypt: bool, announce_counts: bool, frame_size: int,
    chunk_size: int, max_volume_size: int | None, ack: VersionVector, assumes: VersionVector,
    seq: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        drop = Path(tmp)
        written = write_bundle(
            drop, identity=A, bundle_id=BundleId(A.site_id, 3, seq), kind="sync",
            recipients=[B.card(), C.card()], ack=ack, assumes=assumes, records=iter(recs),
            created_ms=1_700_000_000_123, encrypt=encrypt, max_volume_size=max_volume_size,
            counts=counts_of(recs) if announce_counts else None, frame_size=frame_size,
            chunk_size=chunk_size)
        # Nothing but the volumes is left in the drop (no spool, no temporary file).
        assert sorted(p.name for p in drop.iterdir()) == sorted(p.name for p in written.paths)
        assert find_bundles(drop) == [written.paths[0]]
        if max_volume_size is not None:
            assert all(p.stat().st_size <= max_volume_size for p in written.paths)
        assert written.size == sum(p.stat().st_size for p in written.paths)
        header = read_header(written.paths[0])
        assert header == written.header
        assert header.ack == ack
        assert header.assumes == assumes
        assert dict(header.counts) == counts_of(recs)
        assert header.encrypted == encrypt
        for reader in (B, C):
            with open_bundle(written.paths[0], identity=reader, trust=trust(A)) as bundle:
                assert bundle.header == header
                assert bundle.signer == A.card()
                assert list(bundle.records()) == recs


def test_the_origin_reads_its_own_bundle_without_trusting_itself(tmp_path: Path) -> None:
    written = write_bundle(
        tmp_path, identity=A, bundle_id=BundleId(A.site_id, 1, 1), kind="archive",
        recipients=[A.card()], ack=VersionVector(), assumes=VersionVector(), records=iter([]),
        created_ms=0)
    assert written.paths[0].name.endswith("_archive.bsb")
    with open_bundle(written.paths[0], identity=A, trust=trust()) as bundle:
        assert bundle.signer == A.card()
        assert list(bundle.records()) == []


@pytest.mark.parametrize("encrypt", [False, True])
def test_a_large_body_spans_many_frames_and_volumes(tmp_path: Path, encrypt: bool) -> None:
    data = random.Random(7).randbytes(300_000)
    body = Body(hashlib.sha256(data).hexdigest(), data)
    written = write_bundle(
        tmp_path, identity=A, bundle_id=BundleId(A.site_id, 1, 2), kind="sync",
        recipients=[B.card()], ack=VersionVector(), assumes=VersionVector(),
        records=iter([body]), created_ms=0, encrypt=encrypt, frame_size=4096,
        chunk_size=1000, max_volume_size=50_000)
    # 300 kB of incompressible data in volumes of at most 50 kB.
    count = len(written.paths)
    assert count >= 7
    assert [p.name.rsplit(".", 2)[1] for p in written.paths] == [
        f"part{k}of{count}" for k in range(1, count + 1)]
    with open_bundle(written.paths[0], identity=B, trust=trust(A)) as bundle:
        assert list(bundle.records()) == [body]
