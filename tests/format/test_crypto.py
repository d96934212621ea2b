"""The chunked payload encryption (bundle-v1 §7.3) and recipient stanzas (§7.2)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundlesync.format import DecryptionFailed, Malformed, NotARecipient
from bundlesync.format.crypto import (
    StreamEncryptor,
    chunk_sizes,
    decrypt_stream,
    new_encryption,
    unwrap_payload_key,
)
from tests.format.helpers import A, B, C

KEY = bytes(range(32))


def seal(data: bytes, chunk: int) -> list[bytes]:
    encryptor = StreamEncryptor(KEY, chunk)
    sealed = list(encryptor.update(data))
    sealed.append(encryptor.finish())
    return sealed


@given(data=st.binary(min_size=1, max_size=3000), chunk=st.integers(64, 700),
       cuts=st.lists(st.integers(0, 3000), max_size=5))
def test_chunks_open_in_order_whatever_the_write_boundaries(data: bytes, chunk: int,
                                                            cuts: list[int]) -> None:
    encryptor = StreamEncryptor(KEY, chunk)
    sealed: list[bytes] = []
    start = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        sealed.extend(encryptor.update(data[start:cut]))
        start = cut
    sealed.extend(encryptor.update(data[start:]))
    sealed.append(encryptor.finish())
    assert sealed == seal(data, chunk)  # the boundaries of the writes do not matter
    region = b"".join(sealed)
    assert list(chunk_sizes(len(region), chunk)) == [len(s) for s in sealed]
    assert b"".join(decrypt_stream(iter(sealed), KEY)) == data


def test_dropped_reordered_or_truncated_chunks_fail() -> None:
    sealed = seal(os.urandom(1000), 100)
    assert len(sealed) == 10
    with pytest.raises(DecryptionFailed):
        list(decrypt_stream(iter(sealed[:-1]), KEY))  # last chunk dropped
    with pytest.raises(DecryptionFailed):
        list(decrypt_stream(iter([sealed[1], sealed[0], *sealed[2:]]), KEY))
    with pytest.raises(DecryptionFailed):
        list(decrypt_stream(iter([*sealed, sealed[-1]]), KEY))  # appended
    with pytest.raises(DecryptionFailed):
        list(decrypt_stream(iter(sealed), bytes(32)))  # wrong key


def test_impossible_region_lengths_are_malformed() -> None:
    with pytest.raises(Malformed):
        list(chunk_sizes(0, 64))
    with pytest.raises(Malformed):
        list(chunk_sizes(80 + 16, 64))  # a full chunk then a 16-byte (empty) chunk
    assert list(chunk_sizes(80 + 17, 64)) == [80, 17]


def test_each_recipient_opens_its_own_stanza_and_no_one_else_does() -> None:
    params, key = new_encryption([B.card(), C.card()], chunk_size=1024,
                                 random_bytes=os.urandom)
    assert [s.recipient for s in params.stanzas] == sorted([B.site_id, C.site_id])
    assert len({s.ephemeral for s in params.stanzas}) == 2
    assert unwrap_payload_key(params, B) == key
    assert unwrap_payload_key(params, C) == key
    with pytest.raises(NotARecipient, match="not to site"):
        unwrap_payload_key(params, A)
    with pytest.raises(NotARecipient):
        unwrap_payload_key(params, None)


def test_a_damaged_stanza_does_not_open() -> None:
    params, _ = new_encryption([B.card()], chunk_size=1024, random_bytes=os.urandom)
    stanza = params.stanzas[0]
    damaged = type(stanza)(stanza.recipient, stanza.ephemeral,
                           bytes([stanza.wrapped[0] ^ 1]) + stanza.wrapped[1:])
    broken = type(params)(chunk_size=1024, salt=params.salt, stanzas=(damaged,))
    with pytest.raises(DecryptionFailed):
        unwrap_payload_key(broken, B)
