"""Records (bundle-v1 §6): one encoding per record, every field checked on decode."""

from __future__ import annotations

import pytest
from hypothesis import given

from bundlesync.core.model import (
    Change,
    Dot,
    FlagsChanged,
    MailboxRef,
    MessageRef,
    Record,
    Timestamp,
)
from bundlesync.format import cbor
from bundlesync.format.limits import DEFAULT_LIMITS, Limits
from bundlesync.format.records import RECORD_KINDS, decode_record, encode_record, record_kind
from tests.format.helpers import records

SITE = "0f" * 16


def encoded(record: Record) -> bytes:
    return b"".join(encode_record(record, DEFAULT_LIMITS))


def decode_all(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Record:
    cursor = cbor.Cursor(data)
    record = decode_record(cursor, limits)
    assert cursor.pos == len(data)
    return record


@given(records)
def test_every_record_round_trips_and_has_one_encoding(record: Record) -> None:
    data = encoded(record)
    assert decode_all(data) == record
    assert encoded(decode_all(data)) == data
    assert record_kind(record) in RECORD_KINDS


def flags_change(added: frozenset[str]) -> Change:
    message = MessageRef(MailboxRef("u", "ab" * 16), "m1", "cd" * 32)
    return Change(Dot(SITE, 1, 1), Timestamp(2, 0, SITE), FlagsChanged(message, added))


def test_the_encoding_of_a_flags_change_is_as_specified() -> None:
    # [1, [site, 1, 1], [2, 0, site], [7, [["u", guid], "m1", body], ["\\Seen"], []]]
    site = bytes.fromhex(SITE)
    expected = (
        b"\x84\x01" + b"\x83\x50" + site + b"\x01\x01" + b"\x83\x02\x00\x50" + site
        + b"\x84\x07" + b"\x83" + b"\x82\x61u\x50" + bytes.fromhex("ab" * 16)
        + b"\x62m1\x58\x20" + bytes.fromhex("cd" * 32)
        + b"\x81\x65\\Seen" + b"\x80"
    )
    assert encoded(flags_change(frozenset({"\\Seen"}))) == expected


def test_flags_are_sorted_by_code_point() -> None:
    data = encoded(flags_change(frozenset({"b", "a", "\\Seen", "é"})))
    # "\\" (0x5C) < "a" < "b" < "é" (U+00E9, C3 A9 in UTF-8)
    assert b"\x84\x65\\Seen\x61a\x61b\x62\xc3\xa9" in data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.replace(b"\x81\x65\\Seen\x80", b"\x82\x61b\x61a\x80"), "sorted"),
        (lambda d: d.replace(b"\x81\x65\\Seen\x80", b"\x82\x61a\x61a\x80"), "sorted"),
        (lambda d: b"\x84\x03" + d[2:], "unknown record type"),
        (lambda d: b"\x85\x01" + d[2:], "items"),
        (lambda d: d.replace(b"\x84\x07", b"\x84\x09"), "unknown operation"),
        (lambda d: d.replace(b"\x84\x07", b"\x83\x07"), "items"),
        (lambda d: d.replace(b"\x83\x02\x00", b"\x83\x18\x02\x00"), "shortest"),
        (lambda d: d.replace(b"\x62m1", b"\x42m1"), "major type"),
        (lambda d: d.replace(b"\x50" + bytes.fromhex("ab" * 16),
                             b"\x4f" + bytes.fromhex("ab" * 15)), "bytes"),
    ],
)
def test_records_outside_the_schema_are_refused(mutate: object, message: str) -> None:
    data = mutate(encoded(flags_change(frozenset({"\\Seen"}))))  # type: ignore[operator]
    with pytest.raises(cbor.CborError, match=message):
        decode_all(data)


def test_limits_are_applied_to_records() -> None:
    data = encoded(flags_change(frozenset({"a", "b", "c"})))
    with pytest.raises(cbor.CborLimitError, match="flags"):
        decode_all(data, Limits(max_flags=2))
    with pytest.raises(cbor.CborLimitError, match="text"):
        decode_all(data, Limits(max_text=1))
    body = b"\x83\x00\x58\x20" + bytes(32) + b"\x5a\x7f\xff\xff\xff"
    with pytest.raises(cbor.CborLimitError, match="message body"):
        decode_all(body)


def test_a_record_cut_anywhere_is_incomplete() -> None:
    data = encoded(flags_change(frozenset({"x"})))
    for cut in range(len(data)):
        with pytest.raises(cbor.IncompleteError):
            decode_record(cbor.Cursor(data[:cut]), DEFAULT_LIMITS)
