"""The version 2 golden vectors of formats/vectors/v2/ (never regenerated here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import bundlesync.format.errors as format_errors
from bundlesync.errors import BundleRejected
from bundlesync.format import list_bundle, open_bundle
from tests.format.helpers import KEYS, VECTORS, trust
from tests.format.test_vectors import as_json

MANIFEST: list[dict[str, Any]] = json.loads(
    (VECTORS / "v2" / "manifest.json").read_text(encoding="utf-8"))
VALID = [m for m in MANIFEST if "expect" in m]
INVALID = [m for m in MANIFEST if "error" in m]


def test_the_v2_manifest_covers_what_the_format_promises() -> None:
    assert {m["name"] for m in VALID} == {"plain", "encrypted", "padded"}
    assert {m["error"] for m in INVALID} >= {"DecryptionFailed", "NotARecipient", "Malformed"}
    for m in MANIFEST:
        assert (VECTORS / m["path"]).is_file(), m["name"]


@pytest.mark.parametrize("vector", VALID, ids=lambda m: str(m["name"]))
def test_valid_v2_vector_decodes_to_its_expected_json(vector: dict[str, Any]) -> None:
    expected = json.loads((VECTORS / vector["expect"]).read_text(encoding="utf-8"))
    path: Path = VECTORS / vector["path"]
    with open_bundle(path, identity=KEYS[vector["open_as"]],
                     trust=trust(*(KEYS[t] for t in vector["trust"]))) as bundle:
        records = [as_json(r) for r in bundle.records()]
        header = bundle.header
        assert bundle.signer.name == expected["signer"]
    assert records == expected["records"]
    h = expected["header"]
    assert header.format_version == expected["format_version"] == 2
    assert [header.bundle_id.site, header.bundle_id.incarnation, header.bundle_id.seq] == \
        h["bundle_id"]
    assert header.created_ms == h["created_ms"]
    assert header.origin_name == h["origin_name"]
    assert header.origin_key.hex() == h["origin_key"]
    assert list(header.recipients) == h["recipients"]
    assert [[s.site, s.incarnation, n] for s, n in header.ack.entries] == h["ack"]
    assert [[s.site, s.incarnation, n] for s, n in header.assumes.entries] == h["assumes"]
    # The generator lists every kind; the header leaves out an optional kind at 0.
    assert dict(header.counts) == {k: n for k, n in h["counts"].items() if n or k != "want"}
    assert header.encrypted == h["encrypted"]
    assert header.frame_size == h["frame_size"]
    listing = list_bundle(path)
    assert listing.header is None
    assert listing.bundle_id == header.bundle_id


@pytest.mark.parametrize("vector", INVALID, ids=lambda m: str(m["name"]))
def test_invalid_v2_vector_fails_with_its_stated_error(vector: dict[str, Any]) -> None:
    expected = getattr(format_errors, vector["error"])
    with (
        pytest.raises(BundleRejected) as caught,
        open_bundle(VECTORS / vector["path"], identity=KEYS[vector["open_as"]],
                    trust=trust(*(KEYS[t] for t in vector["trust"]))) as bundle,
    ):
        for _ in bundle.records():
            pass
    assert type(caught.value) is expected, caught.value.message
    assert caught.value.message
