"""Modified UTF-7 (RFC 3501 §5.1.3) as Dovecot writes folder directory names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundlesync.stores import mutf7
from bundlesync.stores.errors import InvalidMailboxName

# Pairs from RFC 3501 §5.1.3 and from names Dovecot 2.3 wrote on disk.
KNOWN = [
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Zürich", "Z&APw-rich"),
    ("A&B", "A&-B"),
    ("&", "&-"),
    ("INBOX", "INBOX"),
    ("", ""),
]

unicode_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


@pytest.mark.parametrize(("name", "encoded"), KNOWN)
def test_known_names_encode_and_decode(name: str, encoded: str) -> None:
    assert mutf7.encode(name) == encoded
    assert mutf7.decode(encoded) == name


def test_a_character_outside_the_bmp_is_a_surrogate_pair() -> None:
    # U+1F600 is D83D DE00 in UTF-16; base64 of those four bytes is "2D3eAA==".
    assert mutf7.encode("a\U0001f600b") == "a&2D3eAA-b"
    assert mutf7.decode("a&2D3eAA-b") == "a\U0001f600b"


@given(unicode_text)
def test_round_trip(name: str) -> None:
    assert mutf7.decode(mutf7.encode(name)) == name


@given(unicode_text)
def test_encoding_is_printable_ascii(name: str) -> None:
    assert all(" " <= char <= "~" for char in mutf7.encode(name))


@given(st.text(alphabet="&-AOkUZa,+/ .x", max_size=16))
def test_whatever_decodes_encodes_back_to_the_same_text(encoded: str) -> None:
    try:
        name = mutf7.decode(encoded)
    except InvalidMailboxName:
        return
    assert mutf7.encode(name) == encoded


@pytest.mark.parametrize(
    "bad",
    [
        "&",  # unterminated
        "&AOk",  # unterminated run
        "&A-",  # impossible length
        "&AGE-",  # "a" hidden in base64: not canonical
        "&AOl-",  # leftover bits are not zero
        "&AOk-&AOk-",  # two adjacent runs must be one
        "&AO!-",  # not base64
        "Zürich",  # raw non-ASCII
        "a\tb",  # control character
        "&2D0-",  # lone high surrogate
    ],
)
def test_invalid_or_non_canonical_text_is_refused(bad: str) -> None:
    with pytest.raises(InvalidMailboxName):
        mutf7.decode(bad)


def test_a_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(InvalidMailboxName):
        mutf7.encode("a\ud800b")
