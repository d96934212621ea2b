"""Bounded everything: one run does at most what the site's [limits] allow, and one
large message stops neither the other messages nor the other users nor the export.
"""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from bundlesync.format import cbor
from bundlesync.format.limits import (
    DEFAULT_LIMITS,
    DEFAULT_SITE_LIMITS,
    MAX_HLC_COUNTER,
    MAX_INCARNATION_JUMP,
    MAX_WALL_MS,
)
from bundlesync.format.records import decode_record
from bundlesync.operations.demo import USERS
from bundlesync.operations.site import STATE_NAME, open_site, site_lock
from tests.hardening.helpers import set_limits
from tests.operations.conftest import Sites, tick

ALICE, BOB = USERS


def _big(number: int, size: int) -> bytes:
    # Zeros compress to almost nothing: a small bundle, a large message.
    return f"Subject: big {number}\r\n\r\n".encode() + b"0" * size


def test_the_default_message_limit_is_within_the_format_and_below_a_bomb() -> None:
    assert DEFAULT_SITE_LIMITS.max_message_size <= DEFAULT_LIMITS.max_body
    assert DEFAULT_SITE_LIMITS.max_message_size < 201_000_000


def test_a_large_message_in_the_store_is_skipped_at_export_with_a_warning(
        sites: Sites) -> None:
    alpha = sites.add("alpha")
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    set_limits(sites, "alpha", max_message_size=100_000)
    sites.deliver("alpha", ALICE, ("INBOX",), 1)
    sites.deliver("alpha", BOB, ("INBOX",), 2)
    alpha.add_message(ALICE, ("INBOX",), key="1700000000.big", data=_big(1, 200_000),
                      flags=frozenset(), internal_date=1_700_000_000)
    exported = sites.export("alpha")
    [warning] = [w for w in exported.scan.warnings if "1700000000.big" in w]
    assert ALICE in warning and "INBOX" in warning and "max_message_size" in warning
    result = sites.import_("bravo")
    assert result.report.added == 2
    assert all(m.size < 100_000 for user in USERS for m in bravo.messages(user, ("INBOX",)))


def test_a_large_message_from_a_peer_fails_alone(sites: Sites) -> None:
    alpha = sites.add("alpha")
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    set_limits(sites, "bravo", max_message_size=100_000)
    sites.deliver("alpha", ALICE, ("INBOX",), 1)
    sites.deliver("alpha", BOB, ("INBOX",), 2)
    alpha.add_message(ALICE, ("INBOX",), key="1700000000.big", data=_big(1, 2_000_000),
                      flags=frozenset(), internal_date=1_700_000_000)
    exported = sites.export("alpha")
    assert exported.bundles[0].size < 50_000  # a small bundle, a 2 MB message
    result = sites.import_("bravo")
    [(what, text)] = result.report.failures.items()
    assert ALICE in what and "INBOX" in what and "1700000000.big" in what
    assert "bytes" in text and "max" in text.lower()
    assert result.report.added == 2  # counts only what was applied
    assert len(bravo.messages(ALICE, ("INBOX",))) == 1
    assert len(bravo.messages(BOB, ("INBOX",))) == 1


def test_an_import_creates_at_most_max_new_users(sites: Sites) -> None:
    alpha = sites.add("alpha")
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    users = [f"u{number}@example.org" for number in range(5)]
    for number, user in enumerate(users):
        sites.deliver("alpha", user, ("INBOX",), number)
    set_limits(sites, "bravo", max_new_users=3)
    sites.export("alpha")
    result = sites.import_("bravo")
    assert len(bravo.users()) == 3
    assert len(result.report.failures) == 2
    assert all("new users" in text for text in result.report.failures.values())
    del alpha


def test_an_import_creates_at_most_max_new_folders_per_user(sites: Sites) -> None:
    alpha = sites.add("alpha")
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    alpha.ensure_user(ALICE)
    for number in range(6):
        alpha.create_folder(ALICE, (f"F{number}",), guid=None, uidvalidity=None)
    sites.deliver("alpha", ALICE, ("INBOX",), 1)
    set_limits(sites, "bravo", max_new_folders=4)
    sites.export("alpha")
    result = sites.import_("bravo")
    assert len(bravo.folders(ALICE)) == 1 + 4, result.report.lines()
    assert len(result.report.failures) == 2
    assert len(bravo.messages(ALICE, ("INBOX",))) == 1


def _change(wall: int, counter: int) -> bytes:
    site = b"\x50" + b"\x0f" * 16
    return (b"\x84\x01" + b"\x83" + site + b"\x01\x01" + b"\x83"
            + cbor_uint(wall) + cbor_uint(counter) + site
            + b"\x82\x03" + b"\x82\x61u\x50" + b"\xab" * 16)


def cbor_uint(value: int) -> bytes:
    if value < 24:
        return bytes([value])
    for code, size in ((0x18, 1), (0x19, 2), (0x1A, 4), (0x1B, 8)):
        if value < 1 << (8 * size):
            return bytes([code]) + value.to_bytes(size, "big")
    raise ValueError(value)


@pytest.mark.parametrize(("wall", "counter"), [(2**63, 0), (MAX_WALL_MS + 1, 0),
                                               (1, MAX_HLC_COUNTER + 1), (2**64 - 1, 0)])
def test_a_timestamp_out_of_range_is_a_malformed_record(wall: int, counter: int) -> None:
    with pytest.raises(cbor.CborError, match="limit"):
        decode_record(cbor.Cursor(_change(wall, counter)), DEFAULT_LIMITS)


def test_a_valid_timestamp_at_the_limit_is_read() -> None:
    record = decode_record(cbor.Cursor(_change(MAX_WALL_MS, MAX_HLC_COUNTER)), DEFAULT_LIMITS)
    assert record is not None


def test_a_forged_acknowledgement_cannot_push_the_incarnation_far(sites: Sites) -> None:
    sites.add("alpha")
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.deliver("alpha", ALICE, ("INBOX",), 1)
    with site_lock(sites.homes["bravo"]):
        bravo_site = open_site(sites.homes["bravo"])
        bravo_id = bravo_site.site_id
        bravo_site.index.close()
    # Alpha's state claims it holds changes of bravo's incarnation 2^40: the
    # acknowledgement alpha signs says so.
    with site_lock(sites.homes["alpha"]), \
            contextlib.closing(sqlite3.connect(sites.homes["alpha"] / STATE_NAME)) as db:
        db.execute("INSERT INTO streams (site, incarnation, contiguous) VALUES (?, ?, ?)",
                   (bravo_id, 1_099_511_627_776, 5))
        db.commit()
    sites.export("alpha")
    result = sites.import_("bravo")
    assert result.new_incarnation is not None
    assert result.new_incarnation < 1_099_511_627_776
    assert result.new_incarnation <= tick() // 1000 + MAX_INCARNATION_JUMP
    assert any("incarnation" in warning for warning in result.report.warnings)
