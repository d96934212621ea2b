"""Want records (schema 2): round trip, and the header rules that go with them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bundlesync.core.model import Body, VersionVector, Want
from bundlesync.format import BundleHeader, BundleId, Malformed, open_bundle, write_bundle
from bundlesync.format.cbor import DecodeBounds, decode, encode
from bundlesync.format.header import decode_header, encode_header
from bundlesync.format.limits import DEFAULT_LIMITS, RECORDS_VERSION
from tests.format.helpers import A, B, trust


def test_wants_travel_beside_bodies(tmp_path: Path) -> None:
    data = b"Subject: x\n\nhello\n"
    wanted = hashlib.sha256(b"a body this site lacks").hexdigest()
    records = [Want(wanted), Body(hashlib.sha256(data).hexdigest(), data)]
    written = write_bundle(tmp_path, identity=A, bundle_id=BundleId(A.site_id, 1, 1),
                           kind="sync", recipients=[B.card()], ack=VersionVector(),
                           assumes=VersionVector(), records=records, created_ms=1)
    assert written.header.records_version == RECORDS_VERSION == 2
    assert written.header.counts["want"] == 1
    with open_bundle(written.paths[0], identity=B, trust=trust(A)) as bundle:
        assert list(bundle.records()) == records


def test_no_wants_means_no_want_count(tmp_path: Path) -> None:
    written = write_bundle(tmp_path, identity=A, bundle_id=BundleId(A.site_id, 1, 1),
                           kind="sync", recipients=[B.card()], ack=VersionVector(),
                           assumes=VersionVector(), records=[], created_ms=1)
    assert "want" not in written.header.counts


def header_value(*, records: int, want: int | None) -> object:
    header = BundleHeader(
        bundle_id=BundleId(A.site_id, 1, 1), created_ms=0, kind="sync",
        origin_site=A.site_id, origin_name=A.name, origin_key=A.signing_public,
        recipients=(B.site_id,), ack=VersionVector(), assumes=VersionVector(),
        counts={"body": 0}, frame_size=4096)
    value = decode(encode_header(header), DecodeBounds(max_depth=8, max_items=1000,
                                                       max_text=1 << 20, max_bytes=1 << 20))
    assert isinstance(value, dict)
    value["records"] = records
    if want is not None:
        value["counts"] = {**value["counts"], "want": want}
    return value


@pytest.mark.parametrize(("records", "want", "message"), [
    (1, 1, "schema 1 bundle cannot hold want records"),
    (2, 0, "count of 0"),
])
def test_header_rules_for_want_counts(records: int, want: int, message: str) -> None:
    with pytest.raises(Malformed, match=message):
        decode_header(encode(header_value(records=records, want=want)), DEFAULT_LIMITS)


def test_a_schema_1_header_without_wants_still_reads() -> None:
    header = decode_header(encode(header_value(records=1, want=None)), DEFAULT_LIMITS)
    assert header.records_version == 1
