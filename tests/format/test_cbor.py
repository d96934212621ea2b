"""The strict deterministic-CBOR codec (bundle-v1 §4.5)."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundlesync.format import cbor

BOUNDS = cbor.DecodeBounds(max_depth=8, max_items=100, max_text=100, max_bytes=100)

scalars = (st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=50)
           | st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
           | st.booleans() | st.none())
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.integers(-100, 100) | st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


@given(values)
def test_encode_matches_cbor2_canonical_and_decodes_back(value: object) -> None:
    encoded = cbor.encode(value)
    assert cbor.decode(encoded, BOUNDS) == value
    # A generic decoder reads the same value, and re-encoding is stable.
    assert cbor2.loads(encoded) == value
    assert cbor.encode(cbor.decode(encoded, BOUNDS)) == encoded


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes.fromhex("1817"), "shortest"),  # 23 in a one-byte argument
        (bytes.fromhex("190017"), "shortest"),
        (bytes.fromhex("5f4100ff"), "indefinite"),
        (bytes.fromhex("9f01ff"), "indefinite"),
        (bytes.fromhex("f93c00"), "floating"),  # half-precision 1.0
        (bytes.fromhex("fb3ff0000000000000"), "floating"),
        (bytes.fromhex("f0"), "simple"),
        (bytes.fromhex("c11a514b67b0"), "tag"),  # epoch-based date
        (bytes.fromhex("a2616101616102"), "duplicate"),  # {"a": 1, "a": 2}
        (bytes.fromhex("a2616201616102"), "order"),  # {"b": 1, "a": 2}
        (bytes.fromhex("62c328"), "UTF-8"),
        (bytes.fromhex("0101"), "after the end"),
        (bytes.fromhex("1c"), "reserved"),
        (bytes.fromhex("a1800101"), "key"),  # array as a map key
        (bytes.fromhex("a1f501"), "key"),  # {true: 1}: not the integer key 1
        (bytes.fromhex("a1f401"), "key"),  # {false: 1}: not the integer key 0
    ],
)
def test_strict_decoder_refuses(data: bytes, message: str) -> None:
    with pytest.raises(cbor.CborError, match=message):
        cbor.decode(data, BOUNDS)


def test_cbor2_would_have_accepted_a_duplicate_key() -> None:
    # Why we do not use a generic decoder: it silently keeps the last value.
    assert cbor2.loads(bytes.fromhex("a2616101616102")) == {"a": 2}


def test_depth_limit() -> None:
    nested = bytes.fromhex("81" * 8 + "00")  # eight arrays around 0: depth 8 is allowed
    assert cbor.decode(nested, BOUNDS) == [[[[[[[[0]]]]]]]]
    with pytest.raises(cbor.CborLimitError, match="deeper"):
        cbor.decode(b"\x81" + nested, BOUNDS)


def test_length_limits_are_checked_before_reading() -> None:
    # Claims 2**32 bytes but holds 3: refused for its claim, not read.
    with pytest.raises(cbor.CborLimitError):
        cbor.decode(bytes.fromhex("5b0000000100000000") + b"abc", BOUNDS)
    with pytest.raises(cbor.CborLimitError):
        cbor.decode(bytes.fromhex("9a00010000"), BOUNDS)


def test_cursor_reports_incomplete_input() -> None:
    encoded = cbor.encode(["abc", b"\x00" * 30])
    for cut in range(len(encoded)):
        with pytest.raises(cbor.IncompleteError):
            cbor.decode(encoded[:cut], BOUNDS)
