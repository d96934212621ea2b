"""Deterministic CBOR (RFC 8949 §4.2.1) for the subset bundle-v1 uses (§4.5).

Why our own codec rather than cbor2's: a reader must refuse anything a generic
decoder would quietly accept -- duplicate or unsorted map keys, non-shortest
integer heads, indefinite lengths, floats, unexpected tags, oversized strings,
deep nesting -- and it must do so with our error classes, the same way whatever
cbor2 version is installed. The subset is small (integers, byte and text
strings, arrays, maps, false/true/null, and tag 18 for COSE), so the strict
decoder is short and its behaviour is the spec's.

Two decoders live here:

* :func:`decode` -- generic and strict, for the header and the signature.
* :class:`Cursor` -- primitives that a schema-directed decoder (the record
  decoder, ``records.py``) calls one field at a time; it raises
  :class:`IncompleteError` when the input ends inside an item, so a streaming reader
  can fetch more bytes and retry.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

MAJOR_UINT = 0
MAJOR_NINT = 1
MAJOR_BYTES = 2
MAJOR_TEXT = 3
MAJOR_ARRAY = 4
MAJOR_MAP = 5
MAJOR_TAG = 6
MAJOR_SIMPLE = 7

_FALSE = 0xF4
_TRUE = 0xF5
_NULL = 0xF6

_UINT64_MAX = 2**64 - 1

_PACK_B = struct.Struct(">B").pack
_PACK_H = struct.Struct(">H").pack
_PACK_I = struct.Struct(">I").pack
_PACK_Q = struct.Struct(">Q").pack
_UNPACK_H = struct.Struct(">H").unpack_from
_UNPACK_I = struct.Struct(">I").unpack_from
_UNPACK_Q = struct.Struct(">Q").unpack_from


class CborError(Exception):
    """The input is not deterministic CBOR of the accepted subset."""


class CborLimitError(CborError):
    """The input exceeds a length or depth bound given to the decoder."""


class IncompleteError(CborError):
    """The input ends inside a data item (more bytes may complete it)."""


@dataclass(frozen=True, slots=True)
class Tagged:
    """A CBOR tag and its content (only tags a caller allows are decoded)."""

    tag: int
    value: object


# --- encoding -------------------------------------------------------------------------


def head(major: int, value: int) -> bytes:
    """The shortest head for ``major`` with argument ``value`` (RFC 8949 §4.2.1)."""
    base = major << 5
    if value < 24:
        return _PACK_B(base | value)
    if value < 0x100:
        return _PACK_B(base | 24) + _PACK_B(value)
    if value < 0x10000:
        return _PACK_B(base | 25) + _PACK_H(value)
    if value < 0x100000000:
        return _PACK_B(base | 26) + _PACK_I(value)
    if value <= _UINT64_MAX:
        return _PACK_B(base | 27) + _PACK_Q(value)
    raise ValueError(f"integer {value} does not fit a CBOR head")


def encode_int(value: int) -> bytes:
    if value >= 0:
        return head(MAJOR_UINT, value)
    return head(MAJOR_NINT, -1 - value)


def encode_bytes(value: bytes) -> bytes:
    return head(MAJOR_BYTES, len(value)) + value


def encode_text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return head(MAJOR_TEXT, len(raw)) + raw


def encode(value: object) -> bytes:
    """Deterministic encoding of ``value`` (int, bytes, str, list/tuple, dict, bool,
    None, :class:`Tagged`). Map keys are sorted by their encoded bytes."""
    out = bytearray()
    _encode_into(out, value)
    return bytes(out)


def _encode_into(out: bytearray, value: object) -> None:
    # bool before int: bool is a subclass of int in Python.
    if value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif value is None:
        out.append(_NULL)
    elif isinstance(value, int):
        out += encode_int(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        out += head(MAJOR_BYTES, len(data))
        out += data
    elif isinstance(value, str):
        out += encode_text(value)
    elif isinstance(value, list | tuple):
        out += head(MAJOR_ARRAY, len(value))
        for item in value:
            _encode_into(out, item)
    elif isinstance(value, dict):
        pairs = sorted((encode(k), v) for k, v in value.items())
        for (a, _), (b, _) in itertools.pairwise(pairs):
            if a == b:
                raise ValueError("duplicate map key")
        out += head(MAJOR_MAP, len(pairs))
        for key, item in pairs:
            out += key
            _encode_into(out, item)
    elif isinstance(value, Tagged):
        out += head(MAJOR_TAG, value.tag)
        _encode_into(out, value.value)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} in bundle CBOR")


# --- strict generic decoding ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeBounds:
    """Bounds for :func:`decode` (bundle-v1 §9)."""

    max_depth: int
    max_items: int
    max_text: int
    max_bytes: int
    tags: frozenset[int] = frozenset()


def decode(data: bytes, bounds: DecodeBounds) -> object:
    """Decode exactly one deterministic CBOR item filling all of ``data``.

    Raises :class:`CborError` (or :class:`CborLimitError`) on anything outside the
    accepted subset, including trailing bytes.
    """
    cursor = Cursor(data)
    value = _decode_item(cursor, bounds, 0)
    if cursor.pos != len(data):
        raise CborError(f"{len(data) - cursor.pos} bytes after the end of the item")
    return value


def _decode_item(cursor: Cursor, bounds: DecodeBounds, depth: int) -> object:
    if depth > bounds.max_depth:
        raise CborLimitError(f"nesting deeper than {bounds.max_depth}")
    start = cursor.pos
    major, arg = cursor.head()
    if major == MAJOR_UINT:
        return arg
    if major == MAJOR_NINT:
        return -1 - arg
    if major == MAJOR_BYTES:
        if arg > bounds.max_bytes:
            raise CborLimitError(f"byte string of {arg} bytes (limit {bounds.max_bytes})")
        return cursor.take(arg)
    if major == MAJOR_TEXT:
        if arg > bounds.max_text:
            raise CborLimitError(f"text string of {arg} bytes (limit {bounds.max_text})")
        return cursor.utf8(arg)
    if major == MAJOR_ARRAY:
        if arg > bounds.max_items:
            raise CborLimitError(f"array of {arg} items (limit {bounds.max_items})")
        return [_decode_item(cursor, bounds, depth + 1) for _ in range(arg)]
    if major == MAJOR_MAP:
        if arg > bounds.max_items:
            raise CborLimitError(f"map of {arg} entries (limit {bounds.max_items})")
        result: dict[object, object] = {}
        previous = b""
        for index in range(arg):
            key_start = cursor.pos
            key = _decode_item(cursor, bounds, depth + 1)
            # bool is an int in Python: without the explicit test, true and false
            # would pass as the keys 1 and 0 (bundle-v1 §4.5 allows neither).
            if isinstance(key, bool) or not isinstance(key, int | str | bytes):
                raise CborError("map key is not an integer or a string")
            encoded_key = bytes(cursor.buf[key_start:cursor.pos])
            # RFC 8949 §4.2.1: keys sorted bytewise by their encoding; equal
            # encodings are duplicates, which we refuse rather than overwrite.
            if index and encoded_key <= previous:
                if encoded_key == previous:
                    raise CborError(f"duplicate map key {key!r}")
                raise CborError(f"map keys not in deterministic order at {key!r}")
            previous = encoded_key
            result[key] = _decode_item(cursor, bounds, depth + 1)
        return result
    if major == MAJOR_TAG:
        if arg not in bounds.tags:
            raise CborError(f"unexpected CBOR tag {arg}")
        return Tagged(arg, _decode_item(cursor, bounds, depth + 1))
    # major 7: head() already refused floats, break and non-deterministic forms.
    if arg == 20:
        return False
    if arg == 21:
        return True
    if arg == 22:
        return None
    raise CborError(f"unsupported simple value at offset {start}")


# --- the cursor -----------------------------------------------------------------------


class Cursor:
    """Reads CBOR heads and strings from ``buf[pos:end]``, checking determinism.

    Every method raises :class:`IncompleteError` if the item does not fit before
    ``end``, and :class:`CborError` if it is not deterministic CBOR of the
    accepted subset. ``pos`` only advances past a complete item part.
    """

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0,
                 end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def head(self) -> tuple[int, int]:
        """Read one head; return (major type, argument)."""
        pos = self.pos
        if pos >= self.end:
            raise IncompleteError("input ends before an item")
        initial = self.buf[pos]
        major = initial >> 5
        info = initial & 0x1F
        if info < 24:
            self.pos = pos + 1
            if major == MAJOR_SIMPLE and info not in (20, 21, 22):
                raise CborError(f"unsupported simple value {info}")
            return major, info
        if major == MAJOR_SIMPLE:
            raise CborError("floating-point and extended simple values are not allowed")
        if info == 24:
            if pos + 2 > self.end:
                raise IncompleteError("input ends inside a head")
            arg = self.buf[pos + 1]
            minimum = 24
            self.pos = pos + 2
        elif info == 25:
            if pos + 3 > self.end:
                raise IncompleteError("input ends inside a head")
            arg = _UNPACK_H(self.buf, pos + 1)[0]
            minimum = 0x100
            self.pos = pos + 3
        elif info == 26:
            if pos + 5 > self.end:
                raise IncompleteError("input ends inside a head")
            arg = _UNPACK_I(self.buf, pos + 1)[0]
            minimum = 0x10000
            self.pos = pos + 5
        elif info == 27:
            if pos + 9 > self.end:
                raise IncompleteError("input ends inside a head")
            arg = _UNPACK_Q(self.buf, pos + 1)[0]
            minimum = 0x100000000
            self.pos = pos + 9
        elif info == 31:
            raise CborError("indefinite-length items are not allowed")
        else:
            raise CborError(f"reserved additional information {info}")
        if arg < minimum:
            self.pos = pos
            raise CborError("integer or length not in its shortest form")
        return major, arg

    def take(self, length: int) -> bytes:
        """The next ``length`` raw bytes (the content of a string)."""
        pos = self.pos
        stop = pos + length
        if stop > self.end:
            raise IncompleteError("input ends inside a string")
        self.pos = stop
        buf = self.buf
        if isinstance(buf, bytes):
            return buf[pos:stop]
        # One copy out of a bytearray/memoryview (slicing a bytearray would copy twice).
        return memoryview(buf)[pos:stop].tobytes()

    def utf8(self, length: int) -> str:
        raw = self.take(length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CborError("text string is not valid UTF-8") from exc

    # Typed reads for schema-directed decoding. ``what`` names the field in errors.

    def expect(self, major: int, what: str) -> int:
        got, arg = self.head()
        if got != major:
            raise CborError(f"{what}: expected CBOR major type {major}, found {got}")
        return arg

    def array(self, length: int, what: str) -> None:
        got = self.expect(MAJOR_ARRAY, what)
        if got != length:
            raise CborError(f"{what}: expected an array of {length} items, found {got}")

    def uint(self, what: str) -> int:
        return self.expect(MAJOR_UINT, what)

    def integer(self, what: str) -> int:
        major, arg = self.head()
        if major == MAJOR_UINT:
            return arg
        if major == MAJOR_NINT:
            return -1 - arg
        raise CborError(f"{what}: expected an integer")

    def bytes_exact(self, size: int, what: str) -> bytes:
        got = self.expect(MAJOR_BYTES, what)
        if got != size:
            raise CborError(f"{what}: expected {size} bytes, found {got}")
        return self.take(got)

    def text(self, limit: int, what: str) -> str:
        length = self.expect(MAJOR_TEXT, what)
        if length > limit:
            raise CborLimitError(f"{what}: text of {length} bytes (limit {limit})")
        return self.utf8(length)

    def boolean(self, what: str) -> bool:
        major, arg = self.head()
        if major == MAJOR_SIMPLE and arg in (20, 21):
            return arg == 21
        raise CborError(f"{what}: expected true or false")

    def is_null(self) -> bool:
        """Consume a null if one comes next; say whether it did."""
        if self.pos >= self.end:
            raise IncompleteError("input ends before an item")
        if self.buf[self.pos] == _NULL:
            self.pos += 1
            return True
        return False
