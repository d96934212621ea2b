"""A folder's listing (archive-v1 §8.1) as an incremental backup rebuilds it: unchanged
entries copied as bytes, only new and changed ones encoded.

A tree is the canonical CBOR array of a folder's entries sorted by key, and the
canonical encoding of an array is its head followed by each item's own encoding.
A 1 % change touches most folders of a store but few entries in each, so encoding
every new listing in full was a large part of such a backup's work. Instead the
local cache keeps, beside each listing it wrote, where each entry's bytes start
(its *spans*); the next backup copies an unchanged entry's bytes and encodes
only the others. The result is byte for byte the encoding of the whole list
(tests/archive/test_listing.py), so its id is the same either way.

The spans are derived data of the writer's own making (archive-v1 §8.3): built only
while encoding, stored with a digest that binds them to the tree id, and checked
against the decoded listing (one span per entry, the last ending where the listing
ends); spans that do not check are ignored and the entries encoded again.
"""

from __future__ import annotations

import gc
import hashlib
import struct
import sys
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import accumulate
from typing import cast

import cbor2

from bundlesync.archive.errors import ArchiveDamaged

RawMessage = list[object]  # one tree entry as stored: [key, guid, body, size, flags, uid, date]
_DIGEST = 16
# Offsets are unsigned 32-bit (a tree is at most MAX_TREE bytes): C's unsigned int where
# it has 32 bits, as on every platform Python supports, else unsigned long.
_SPAN_TYPE = "I" if array("I").itemsize >= 4 else "L"


def array_head(count: int) -> bytes:
    """The canonical CBOR head of an array of ``count`` items (major type 4)."""
    if count < 24:
        return bytes([0x80 | count])
    if count < 0x100:
        return bytes([0x98, count])
    if count < 0x10000:
        return b"\x99" + struct.pack(">H", count)
    if count < 0x100000000:
        return b"\x9a" + struct.pack(">I", count)
    return b"\x9b" + struct.pack(">Q", count)


def encode_entry(entry: RawMessage) -> bytes:
    """One entry as it appears in a tree."""
    return cbor2.dumps(entry, canonical=True)


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector while many acyclic containers are made (a
    decoded listing is a list per message): each collection would walk every one of
    them again, about as much work as decoding them. Reference counting still frees
    them; the collector runs again afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Previous:
    """A folder's previous listing: its entries, their numbers by key, and each entry's
    bytes."""

    __slots__ = ("data", "entries", "index", "offsets")

    def __init__(self, entries: list[RawMessage], data: bytes,
                 offsets: array[int] | None) -> None:
        self.entries = entries
        # Keys are text: decode() checked them.
        self.index = cast("dict[str, int]",
                          {entry[0]: number for number, entry in enumerate(entries)})
        self.data = data
        # Where entry n's bytes are: data[offsets[n]:offsets[n + 1]]. None: no spans,
        # a kept entry is encoded again.
        self.offsets = offsets

    def raw(self, number: int) -> bytes:
        """The bytes of entry ``number`` as stored (it is kept unchanged)."""
        offsets = self.offsets
        if offsets is None:
            return encode_entry(self.entries[number])
        return self.data[offsets[number]:offsets[number + 1]]


def decode(data: bytes, *, what: str) -> list[object]:
    """A tree's items (see :func:`check_entries`)."""
    try:
        with no_cycle_collection():
            value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError):
        raise ArchiveDamaged(f"{what} holds invalid CBOR.") from None
    if not isinstance(value, list):
        raise ArchiveDamaged(f"{what} is malformed.")
    return value


def check_entries(value: list[object], *, what: str) -> list[RawMessage]:
    """A tree's items checked for the fields a backup reuses.

    Not needed for a listing whose spans check: this writer assembled it, of entries it
    encoded from checked fields or copied from listings it had checked."""
    for item in value:
        if not (isinstance(item, list) and len(item) == 7 and isinstance(item[0], str)
                and isinstance(item[2], bytes) and isinstance(item[3], int)
                and isinstance(item[6], int)):
            raise ArchiveDamaged(f"{what} is malformed.")
    return cast("list[RawMessage]", value)


class Builder:
    """A new listing, entry by entry in key order: copied bytes or new entries."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes | None] = []  # None: filled in later (a message being read)

    def finish(self) -> tuple[bytes, array[int], int]:
        """The listing's bytes, the offsets where its entries start (and, last, where
        it ends), and the number of entries, leaving out those never filled in
        (messages gone while they were read)."""
        parts = [p for p in self.parts if p is not None]
        head = array_head(len(parts))
        offsets = array(_SPAN_TYPE, accumulate(map(len, parts), initial=len(head)))
        return b"".join([head, *parts]), offsets, len(parts)


def dump_spans(tree_id: bytes, offsets: array[int]) -> bytes:
    """The spans as stored: a digest binding them to the tree, then the offsets (32-bit
    little endian)."""
    if sys.byteorder != "little":
        offsets = array(_SPAN_TYPE, offsets)
        offsets.byteswap()
    body = offsets.tobytes()
    return hashlib.sha256(tree_id + body).digest()[:_DIGEST] + body


def load_spans(tree_id: bytes, stored: bytes, data: bytes, count: int) -> array[int] | None:
    """The stored offsets of the tree ``data`` (already checked against ``tree_id``) of
    ``count`` entries, or None if they do not check."""
    digest, body = stored[:_DIGEST], stored[_DIGEST:]
    if hashlib.sha256(tree_id + body).digest()[:_DIGEST] != digest:
        return None
    offsets = array(_SPAN_TYPE)
    if len(body) % offsets.itemsize:
        return None
    offsets.frombytes(body)
    if sys.byteorder != "little":
        offsets.byteswap()
    if (len(offsets) != count + 1 or offsets[0] != len(array_head(count))
            or offsets[-1] != len(data)):
        return None
    return offsets
