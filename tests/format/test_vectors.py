"""The golden vectors of formats/vectors/ (never regenerated here): every valid one
decodes to its expected JSON, every invalid one fails with its stated error."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

import bundlesync.format.errors as format_errors
from bundlesync.core.model import (
    Body,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxRef,
    MailboxRenamed,
    MessageAdded,
    MessageExpunged,
    MessageRef,
    Record,
    SubscriptionSet,
)
from bundlesync.errors import BundleRejected
from bundlesync.format import open_bundle, read_header
from bundlesync.keys import PeerCard, TrustedCards
from tests.format.helpers import KEYS, VECTORS, manifest, trust

VALID = [m for m in manifest() if "expect" in m]
INVALID = [m for m in manifest() if "error" in m]


# An independent JSON view of records (the generator has its own).
def _mailbox(m: MailboxRef) -> dict[str, Any]:
    return {"user": m.user, "guid": m.guid}


def _message(m: MessageRef) -> dict[str, Any]:
    return {"mailbox": _mailbox(m.mailbox), "guid": m.guid, "body": m.body}


def as_json(record: Record) -> dict[str, Any]:
    if isinstance(record, Body):
        return {"type": "body", "sha256": record.sha256,
                "data_base64": base64.b64encode(record.data).decode()}
    op = record.op
    out: dict[str, Any] = {"type": "change",
                           "dot": [record.dot.site, record.dot.incarnation, record.dot.counter],
                           "ts": [record.ts.wall_ms, record.ts.counter, record.ts.site]}
    match op:
        case MailboxCreated():
            out |= {"op": "mailbox-created", "mailbox": _mailbox(op.mailbox),
                    "parent": op.parent, "name": op.name, "uidvalidity": op.uidvalidity,
                    "special_use": op.special_use}
        case MailboxRenamed():
            out |= {"op": "mailbox-renamed", "mailbox": _mailbox(op.mailbox),
                    "parent": op.parent, "name": op.name}
        case MailboxDeleted():
            out |= {"op": "mailbox-deleted", "mailbox": _mailbox(op.mailbox)}
        case SubscriptionSet():
            out |= {"op": "subscription-set", "mailbox": _mailbox(op.mailbox),
                    "subscribed": op.subscribed}
        case MessageAdded():
            out |= {"op": "message-added", "message": _message(op.message), "size": op.size,
                    "internal_date": op.internal_date, "flags": sorted(op.flags)}
        case MessageExpunged():
            out |= {"op": "message-expunged", "message": _message(op.message)}
        case FlagsChanged():
            out |= {"op": "flags-changed", "message": _message(op.message),
                    "added": sorted(op.added), "removed": sorted(op.removed)}
    return out


def test_the_manifest_covers_what_the_format_promises() -> None:
    names = {str(m["name"]) for m in manifest()}
    assert {"plain", "encrypted", "empty"} <= names
    assert {str(m["error"]) for m in INVALID} >= {
        "BadMagic", "UnsupportedVersion", "Truncated", "SignatureInvalid", "UnknownSigner",
        "LimitExceeded", "Malformed", "NotARecipient", "MissingVolume"}
    for m in manifest():
        assert (VECTORS / str(m["path"])).is_file(), m["name"]


@pytest.mark.parametrize("vector", VALID, ids=lambda m: str(m["name"]))
def test_valid_vector_decodes_to_its_expected_json(vector: dict[str, Any]) -> None:
    expected = json.loads((VECTORS / vector["expect"]).read_text(encoding="utf-8"))
    path = VECTORS / vector["path"]
    with open_bundle(path, identity=KEYS[vector["open_as"]],
                     trust=trust(*(KEYS[t] for t in vector["trust"]))) as bundle:
        records = [as_json(r) for r in bundle.records()]
        header = bundle.header
        assert bundle.signer.name == expected["signer"]
        assert len(bundle.paths) == expected["volumes"]
    assert records == expected["records"]
    h = expected["header"]
    assert [header.bundle_id.site, header.bundle_id.incarnation, header.bundle_id.seq] == \
        h["bundle_id"]
    assert header.created_ms == h["created_ms"]
    assert header.kind == h["kind"]
    assert header.origin_site == h["origin_site"]
    assert header.origin_name == h["origin_name"]
    assert header.origin_key.hex() == h["origin_key"]
    assert list(header.recipients) == h["recipients"]
    assert [[s.site, s.incarnation, n] for s, n in header.ack.entries] == h["ack"]
    assert [[s.site, s.incarnation, n] for s, n in header.assumes.entries] == h["assumes"]
    assert dict(header.counts) == h["counts"]
    assert header.encrypted == h["encrypted"]
    assert header.frame_size == h["frame_size"]
    assert read_header(path) == header


@pytest.mark.parametrize("vector", INVALID, ids=lambda m: str(m["name"]))
def test_invalid_vector_fails_with_its_stated_error(vector: dict[str, Any]) -> None:
    expected = getattr(format_errors, vector["error"])
    with (
        pytest.raises(BundleRejected) as caught,
        open_bundle(VECTORS / vector["path"], identity=KEYS[vector["open_as"]],
                    trust=trust(*(KEYS[t] for t in vector["trust"]))) as bundle,
    ):
        for _ in bundle.records():
            pass
    assert type(caught.value) is expected, caught.value.message
    assert caught.value.exit_code == 3
    assert caught.value.message
    assert caught.value.hint


def test_the_missing_volume_is_named(tmp_path: Path) -> None:
    vector = next(m for m in INVALID if m["name"] == "missing_volume")
    with pytest.raises(format_errors.MissingVolume) as caught:
        open_bundle(VECTORS / vector["path"], identity=KEYS["B"], trust=trust(KEYS["A"]))
    assert "Volume 2 of 4" in caught.value.message
    assert ".part2of4.bsb" in caught.value.message


def test_renamed_volumes_are_found_by_their_heads(tmp_path: Path) -> None:
    vector = next(m for m in VALID if m["name"] == "multivolume")
    first = VECTORS / vector["path"]
    for index, path in enumerate(sorted(first.parent.iterdir())):
        (tmp_path / f"copy-{index}.bsb").write_bytes(path.read_bytes())
    with open_bundle(tmp_path / "copy-0.bsb", identity=KEYS["B"],
                     trust=trust(KEYS["A"])) as bundle:
        assert len(list(bundle.records())) == 17
    with pytest.raises(format_errors.VolumeMismatch) as caught:
        open_bundle(tmp_path / "copy-1.bsb", identity=KEYS["B"], trust=trust(KEYS["A"]))
    assert "volume 2 of 2" in caught.value.message


def test_unknown_signer_names_a_trusted_namesake() -> None:
    # C's bundle claims the name "site-c"; a trusted peer called site-c with another key.
    impostor = PeerCard(name="site-c", signing_public=KEYS["A"].signing_public,
                        exchange_public=KEYS["A"].exchange_public)
    with pytest.raises(format_errors.UnknownSigner) as caught:
        open_bundle(VECTORS / "invalid/unknown_signer.bsb", identity=KEYS["B"],
                    trust=TrustedCards([impostor]))
    assert "has another key" in caught.value.message
