"""Records (bundle-v1 §6): one encoding per record, every field checked on decode."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

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
from bundlesync.format.records import (
    RECORD_KINDS,
    _quick_record,
    _strict_record,
    decode_record,
    encode_record,
    record_kind,
)
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


# --- the quick path and the strict one read alike ----------------------------------


def outcome(reader: object, buf: bytes | bytearray, limits: Limits) -> tuple[object, ...]:
    """What a reader makes of ``buf``: the record and where it ended, or the error."""
    cursor = cbor.Cursor(buf)
    try:
        record = reader(cursor, limits)  # type: ignore[operator]
    except cbor.CborError as exc:
        return (type(exc), str(exc), cursor.pos)
    return (record, cursor.pos)


def damaged(data: bytes, how: str, at: int, value: int) -> bytes:
    at %= len(data) + 1
    if how == "set" and at < len(data):
        return data[:at] + bytes([value]) + data[at + 1:]
    if how == "insert":
        return data[:at] + bytes([value]) + data[at:]
    if how == "delete":
        return data[:at] + data[at + 1:]
    return data[:at]  # cut


SMALL_LIMITS = Limits(max_text=8, max_flags=2, max_body=100)


DAMAGE = st.tuples(st.sampled_from(["set", "insert", "delete", "cut", "none"]),
                   st.integers(0, 10_000), st.integers(0, 255))


@given(records, DAMAGE, st.tuples(st.booleans(), st.booleans()))
@example(flags_change(frozenset({"\\Seen"})), ("set", 37, 0x18), (False, False))
def test_the_quick_path_reads_every_record_as_the_strict_path(
        record: Record, damage: tuple[str, int, int], form: tuple[bool, bool]) -> None:
    how, at, value = damage
    small, as_bytearray = form
    data = encoded(record)
    if how != "none":
        data = damaged(data, how, at, value)
    if not data:
        return
    limits = SMALL_LIMITS if small else DEFAULT_LIMITS
    buf = bytearray(data) if as_bytearray else data
    # Followed by more bytes, as in a frame: they must not be read.
    assert outcome(decode_record, buf, limits) == outcome(_strict_record, buf, limits)
    assert outcome(decode_record, buf + b"\x00", limits) == outcome(
        _strict_record, buf + b"\x00", limits)


QUICK_KINDS = {"body", "want", "message-added", "message-expunged", "flags-changed"}


@given(records)
def test_the_quick_path_reads_bodies_wants_and_message_changes_itself(record: Record) -> None:
    """Not a path that falls back every time: what a bundle is mostly made of is
    read by it, to the same record."""
    data = encoded(record)
    if record_kind(record) in QUICK_KINDS:
        assert _quick_record(data, 0, DEFAULT_LIMITS) == (record, len(data))


QUICK_EXAMPLES = [
    # (what is wrong, damage, expected error)
    ("a head that is not shortest", lambda d: d.replace(b"\x01\x01\x83", b"\x18\x01\x01\x83"),
     "shortest"),
    ("unsorted added flags", lambda d: d.replace(b"\x82\x61a\x61b", b"\x82\x61b\x61a"),
     "sorted"),
    ("a flag twice", lambda d: d.replace(b"\x82\x61a\x61b", b"\x82\x61a\x61a"), "sorted"),
    ("a user name that is not UTF-8", lambda d: d.replace(b"\x61u", b"\x61\xff"), "UTF-8"),
    ("a body hash of 31 bytes", lambda d: d.replace(b"\x58\x20", b"\x58\x1f"), "32 bytes"),
    ("an indefinite flag array", lambda d: d.replace(b"\x82\x61a", b"\x9f\x61a"),
     "indefinite"),
]


@pytest.mark.parametrize(("what", "damage", "message"), QUICK_EXAMPLES,
                         ids=[e[0] for e in QUICK_EXAMPLES])
def test_a_common_record_outside_the_schema_is_refused_by_the_quick_path_too(
        what: str, damage: object, message: str) -> None:
    good = encoded(flags_change(frozenset({"a", "b"})))
    assert decode_all(good) == flags_change(frozenset({"a", "b"}))
    data = damage(good)  # type: ignore[operator]
    assert data != good, what
    with pytest.raises(cbor.CborError, match=message):
        decode_all(data)


def test_a_dot_beyond_its_bound_is_refused_by_the_quick_path_too() -> None:
    beyond = Change(Dot(SITE, 2**40, 1), Timestamp(2, 0, SITE),
                    flags_change(frozenset()).op)
    with pytest.raises(cbor.CborError, match="dot incarnation"):
        decode_all(encoded(beyond))
