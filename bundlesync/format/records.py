"""Records: the model's Change and Body values as CBOR (bundle-v1 §6).

Encoding and decoding are schema-directed: each field is written and read in
its place with its type and bounds, so a reader never builds a structure the
schema does not allow, and a record has exactly one encoding (deterministic
heads, sorted flags), which keeps bundles reproducible.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterator

from bundlesync.core.model import (
    Body,
    Change,
    Dot,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxRef,
    MailboxRenamed,
    MessageAdded,
    MessageExpunged,
    MessageRef,
    Operation,
    Record,
    SubscriptionSet,
    Timestamp,
    Want,
)
from bundlesync.format import cbor
from bundlesync.format.cbor import (
    MAJOR_ARRAY,
    MAJOR_BYTES,
    MAJOR_TEXT,
    Cursor,
    encode_bytes,
    encode_int,
    head,
)
from bundlesync.format.errors import RecordNotEncodable
from bundlesync.format.limits import (
    MAX_DOT_COUNTER,
    MAX_HLC_COUNTER,
    MAX_INCARNATION,
    MAX_WALL_MS,
    Limits,
)

# bundle-v1 §6.1: record type codes.
RECORD_BODY = 0
RECORD_CHANGE = 1
RECORD_WANT = 2

# bundle-v1 §6.3: operation codes.
OP_MAILBOX_CREATED = 1
OP_MAILBOX_RENAMED = 2
OP_MAILBOX_DELETED = 3
OP_SUBSCRIPTION_SET = 4
OP_MESSAGE_ADDED = 5
OP_MESSAGE_EXPUNGED = 6
OP_FLAGS_CHANGED = 7

KIND_BODY = "body"
KIND_WANT = "want"
OPERATION_KINDS: dict[type, str] = {
    MailboxCreated: "mailbox-created",
    MailboxRenamed: "mailbox-renamed",
    MailboxDeleted: "mailbox-deleted",
    SubscriptionSet: "subscription-set",
    MessageAdded: "message-added",
    MessageExpunged: "message-expunged",
    FlagsChanged: "flags-changed",
}
# The keys of the header's "counts" map, in a fixed order (bundle-v1 §4.2).
RECORD_KINDS: tuple[str, ...] = (KIND_BODY, *OPERATION_KINDS.values(), KIND_WANT)
# Kinds a header may leave out of its counts (meaning 0): added after the first
# vectors were written, so that bundles without them stay byte-identical (§4.2).
OPTIONAL_KINDS: frozenset[str] = frozenset({KIND_WANT})

_HEX32 = re.compile(r"[0-9a-f]{32}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_UINT64_MAX = 2**64 - 1
_UINT32_MAX = 2**32 - 1
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_NULL = b"\xf6"
_TRUE = b"\xf5"
_FALSE = b"\xf4"


def record_kind(record: Record) -> str:
    """The header count key of ``record`` (bundle-v1 §4.2)."""
    if isinstance(record, Body):
        return KIND_BODY
    if isinstance(record, Want):
        return KIND_WANT
    return OPERATION_KINDS[type(record.op)]


def site_bytes(site: str, what: str) -> bytes:
    """A site id (32 lowercase hex digits) as the 16 bytes carried on the wire."""
    if not isinstance(site, str) or not _HEX32.match(site):
        raise RecordNotEncodable(f"{what} {site!r} is not a site id (32 lowercase hex digits).")
    return bytes.fromhex(site)


def site_hex(raw: bytes) -> str:
    return raw.hex()


# --- encoding -------------------------------------------------------------------------


class _Encoder:
    """Collects the pieces of one record; Body data is passed through uncopied."""

    __slots__ = ("limits", "out")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.out = bytearray()

    def fail(self, what: str) -> RecordNotEncodable:
        return RecordNotEncodable(f"Cannot write record: {what}.")

    def uint(self, value: int, what: str, maximum: int = _UINT64_MAX) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
            raise self.fail(f"{what} {value!r} is not an integer in 0..{maximum}")
        self.out += encode_int(value)

    def integer(self, value: int, what: str) -> None:
        if (not isinstance(value, int) or isinstance(value, bool)
                or not _INT64_MIN <= value <= _INT64_MAX):
            raise self.fail(f"{what} {value!r} is not a 64-bit integer")
        self.out += encode_int(value)

    def text(self, value: str, what: str) -> None:
        if not isinstance(value, str):
            raise self.fail(f"{what} {value!r} is not a string")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(f"{what} {value!r} is not valid Unicode (undecodable name?)"
                            ) from None
        if len(raw) > self.limits.max_text:
            raise self.fail(f"{what} is {len(raw)} bytes long (limit {self.limits.max_text})")
        self.out += head(MAJOR_TEXT, len(raw))
        self.out += raw

    def hex_bytes(self, value: str, pattern: re.Pattern[str], what: str, kind: str) -> None:
        if not isinstance(value, str) or not pattern.match(value):
            digits = 32 if pattern is _HEX32 else 64
            raise self.fail(f"{what} {value!r} is not a {kind} ({digits} lowercase hex digits)")
        self.out += encode_bytes(bytes.fromhex(value))

    def guid(self, value: str, what: str) -> None:
        self.hex_bytes(value, _HEX32, what, "GUID")

    def site(self, value: str, what: str) -> None:
        self.hex_bytes(value, _HEX32, what, "site id")

    def mailbox(self, mailbox: MailboxRef) -> None:
        if not isinstance(mailbox, MailboxRef):
            raise self.fail(f"mailbox {mailbox!r} is not a MailboxRef")
        self.out.append(0x82)
        self.text(mailbox.user, "user name")
        self.guid(mailbox.guid, "mailbox GUID")

    def message(self, message: MessageRef) -> None:
        if not isinstance(message, MessageRef):
            raise self.fail(f"message {message!r} is not a MessageRef")
        self.out.append(0x83)
        self.mailbox(message.mailbox)
        self.text(message.guid, "message GUID")
        self.hex_bytes(message.body, _HEX64, "message body", "SHA-256")

    def parent(self, value: str | None) -> None:
        if value is None:
            self.out += _NULL
        else:
            self.guid(value, "parent mailbox GUID")

    def flags(self, flags: frozenset[str], what: str) -> None:
        if not isinstance(flags, frozenset):
            raise self.fail(f"{what} {flags!r} is not a frozenset")
        if len(flags) > self.limits.max_flags:
            raise self.fail(f"{len(flags)} {what} (limit {self.limits.max_flags})")
        # Sorted by code point, which is the order of their UTF-8 bytes: one
        # encoding per set (bundle-v1 §6.3).
        self.out += head(MAJOR_ARRAY, len(flags))
        for flag in sorted(flags):
            self.text(flag, "flag")

    def op(self, op: Operation) -> None:
        if isinstance(op, MailboxCreated):
            self.out += b"\x86\x01"
            self.mailbox(op.mailbox)
            self.parent(op.parent)
            self.text(op.name, "mailbox name")
            self.uint(op.uidvalidity, "UIDVALIDITY", _UINT32_MAX)
            if op.special_use is None:
                self.out += _NULL
            else:
                self.text(op.special_use, "special-use flag")
        elif isinstance(op, MailboxRenamed):
            self.out += b"\x84\x02"
            self.mailbox(op.mailbox)
            self.parent(op.parent)
            self.text(op.name, "mailbox name")
        elif isinstance(op, MailboxDeleted):
            self.out += b"\x82\x03"
            self.mailbox(op.mailbox)
        elif isinstance(op, SubscriptionSet):
            self.out += b"\x83\x04"
            self.mailbox(op.mailbox)
            if not isinstance(op.subscribed, bool):
                raise self.fail(f"subscribed {op.subscribed!r} is not a bool")
            self.out += _TRUE if op.subscribed else _FALSE
        elif isinstance(op, MessageAdded):
            self.out += b"\x85\x05"
            self.message(op.message)
            self.uint(op.size, "message size")
            self.integer(op.internal_date, "internal date")
            self.flags(op.flags, "flags")
        elif isinstance(op, MessageExpunged):
            self.out += b"\x82\x06"
            self.message(op.message)
        elif isinstance(op, FlagsChanged):
            self.out += b"\x84\x07"
            self.message(op.message)
            self.flags(op.added, "added flags")
            self.flags(op.removed, "removed flags")
        else:
            raise self.fail(f"unknown operation {type(op).__name__}")


def encode_record(record: Record, limits: Limits, *, hashed: bool = False
                  ) -> tuple[bytes, bytes]:
    """Encode ``record`` as (head, data): their concatenation is the record.

    For a Body, ``data`` is the message bytes themselves (not copied); for a
    Change it is empty. Checks the Body's SHA-256 against its data, unless
    ``hashed`` says the caller has just computed it from these very bytes.
    """
    if isinstance(record, Body):
        data = record.data
        if not isinstance(data, bytes):
            raise RecordNotEncodable("Cannot write record: body data is not bytes.")
        if len(data) > limits.max_body:
            raise RecordNotEncodable(
                f"Cannot write a message body of {len(data)} bytes: the format's limit is "
                f"{limits.max_body} bytes per message.")
        if not isinstance(record.sha256, str) or not _HEX64.match(record.sha256):
            raise RecordNotEncodable(f"Cannot write record: body SHA-256 {record.sha256!r} is "
                                     f"not 64 lowercase hex digits.")
        if not hashed and hashlib.sha256(data).hexdigest() != record.sha256:
            raise RecordNotEncodable(
                f"Cannot write record: body {record.sha256} does not hash to its name.")
        prefix = b"\x83\x00" + encode_bytes(bytes.fromhex(record.sha256))
        return prefix + head(MAJOR_BYTES, len(data)), data
    if isinstance(record, Want):
        if not isinstance(record.sha256, str) or not _HEX64.match(record.sha256):
            raise RecordNotEncodable(f"Cannot write record: wanted SHA-256 {record.sha256!r} "
                                     f"is not 64 lowercase hex digits.")
        return b"\x82\x02" + encode_bytes(bytes.fromhex(record.sha256)), b""
    if not isinstance(record, Change):
        raise RecordNotEncodable(f"Cannot write {type(record).__name__}: not a record.")
    enc = _Encoder(limits)
    enc.out += b"\x84\x01\x83"
    dot = record.dot
    ts = record.ts
    if not isinstance(dot, Dot) or not isinstance(ts, Timestamp):
        raise enc.fail("dot or ts has the wrong type")
    enc.site(dot.site, "dot site")
    # Written as given (up to 2^64-1), so that tests can build hostile bundles; the
    # reader enforces §9.1.
    enc.uint(dot.incarnation, "dot incarnation")
    enc.uint(dot.counter, "dot counter")
    enc.out.append(0x83)
    enc.uint(ts.wall_ms, "timestamp wall time")
    enc.uint(ts.counter, "timestamp counter")
    enc.site(ts.site, "timestamp site")
    enc.op(record.op)
    return bytes(enc.out), b""


# --- decoding -------------------------------------------------------------------------


def _mailbox(cur: Cursor, limits: Limits) -> MailboxRef:
    cur.array(2, "mailbox")
    user = cur.text(limits.max_text, "user name")
    return MailboxRef(user, cur.bytes_exact(16, "mailbox GUID").hex())


def _message(cur: Cursor, limits: Limits) -> MessageRef:
    cur.array(3, "message")
    mailbox = _mailbox(cur, limits)
    guid = cur.text(limits.max_text, "message GUID")
    return MessageRef(mailbox, guid, cur.bytes_exact(32, "body SHA-256").hex())


def _parent(cur: Cursor) -> str | None:
    if cur.is_null():
        return None
    return cur.bytes_exact(16, "parent GUID").hex()


def _flags(cur: Cursor, limits: Limits, what: str) -> frozenset[str]:
    count = cur.expect(MAJOR_ARRAY, what)
    if count > limits.max_flags:
        raise cbor.CborLimitError(f"{count} {what} (limit {limits.max_flags})")
    flags = [cur.text(limits.max_text, "flag") for _ in range(count)]
    for a, b in itertools.pairwise(flags):
        if a >= b:
            raise cbor.CborError(f"{what} are not sorted and unique")
    return frozenset(flags)


def _uidvalidity(cur: Cursor) -> int:
    value = cur.uint("UIDVALIDITY")
    if value > _UINT32_MAX:
        raise cbor.CborError("UIDVALIDITY does not fit 32 bits")
    return value


def _internal_date(cur: Cursor) -> int:
    value = cur.integer("internal date")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise cbor.CborError("internal date does not fit 64 bits")
    return value


def _op(cur: Cursor, limits: Limits) -> Operation:
    major, length = cur.head()
    if major != MAJOR_ARRAY or length == 0:
        raise cbor.CborError("operation is not a non-empty array")
    code = cur.uint("operation code")
    expected = _OP_LENGTHS.get(code)
    if expected is None:
        raise cbor.CborError(f"unknown operation code {code}")
    if length != expected:
        raise cbor.CborError(f"operation {code} has {length} items, not {expected}")
    if code == OP_MAILBOX_CREATED:
        mailbox = _mailbox(cur, limits)
        parent = _parent(cur)
        name = cur.text(limits.max_text, "mailbox name")
        uidvalidity = _uidvalidity(cur)
        special = None if cur.is_null() else cur.text(limits.max_text, "special-use flag")
        return MailboxCreated(mailbox, parent, name, uidvalidity, special)
    if code == OP_MAILBOX_RENAMED:
        mailbox = _mailbox(cur, limits)
        parent = _parent(cur)
        return MailboxRenamed(mailbox, parent, cur.text(limits.max_text, "mailbox name"))
    if code == OP_MAILBOX_DELETED:
        return MailboxDeleted(_mailbox(cur, limits))
    if code == OP_SUBSCRIPTION_SET:
        mailbox = _mailbox(cur, limits)
        return SubscriptionSet(mailbox, cur.boolean("subscribed"))
    if code == OP_MESSAGE_ADDED:
        message = _message(cur, limits)
        size = cur.uint("message size")
        internal_date = _internal_date(cur)
        return MessageAdded(message, size, internal_date, _flags(cur, limits, "flags"))
    if code == OP_MESSAGE_EXPUNGED:
        return MessageExpunged(_message(cur, limits))
    message = _message(cur, limits)
    added = _flags(cur, limits, "added flags")
    return FlagsChanged(message, added, _flags(cur, limits, "removed flags"))


_OP_LENGTHS = {
    OP_MAILBOX_CREATED: 6,
    OP_MAILBOX_RENAMED: 4,
    OP_MAILBOX_DELETED: 2,
    OP_SUBSCRIPTION_SET: 3,
    OP_MESSAGE_ADDED: 5,
    OP_MESSAGE_EXPUNGED: 2,
    OP_FLAGS_CHANGED: 4,
}


def decode_record(cur: Cursor, limits: Limits) -> Record:
    """Decode one record at ``cur``; raise cbor.IncompleteError if it continues past the end.

    Raises cbor.CborError / cbor.CborLimitError for records outside the schema. The
    Body's SHA-256 is *not* checked here (the caller does it, to say which record).

    The commonest records (a body, a want, a message added, expunged or with its
    flags changed) are first read by a quick path that accepts only what the strict
    path accepts; anything it does not read as it expects -- another operation, a
    long string, a bound exceeded, the end of the input, an error -- is read again
    from its start by the strict path, which decides and says what is wrong.
    """
    buf = cur.buf
    # The quick path indexes the buffer directly: only where it ends at ``end``.
    if cur.end == len(buf) and not isinstance(buf, memoryview):
        try:
            record, stop = _quick_record(buf, cur.pos, limits)
        except (_Irregular, IndexError, UnicodeDecodeError):
            pass
        else:
            if stop <= cur.end:
                cur.pos = stop
                return record
    return _strict_record(cur, limits)


def _strict_record(cur: Cursor, limits: Limits) -> Record:
    """The reference reading of one record: every field through the strict cursor."""
    major, length = cur.head()
    if major != MAJOR_ARRAY:
        raise cbor.CborError("record is not an array")
    kind = cur.uint("record type")
    if kind == RECORD_BODY:
        if length != 3:
            raise cbor.CborError(f"body record has {length} items, not 3")
        digest = cur.bytes_exact(32, "body SHA-256")
        size = cur.expect(MAJOR_BYTES, "body data")
        if size > limits.max_body:
            raise cbor.CborLimitError(f"message body of {size} bytes (limit {limits.max_body})")
        return Body(digest.hex(), cur.take(size))
    if kind == RECORD_WANT:
        if length != 2:
            raise cbor.CborError(f"want record has {length} items, not 2")
        return Want(cur.bytes_exact(32, "wanted SHA-256").hex())
    if kind != RECORD_CHANGE:
        raise cbor.CborError(f"unknown record type {kind}")
    if length != 4:
        raise cbor.CborError(f"change record has {length} items, not 4")
    cur.array(3, "dot")
    dot = Dot(cur.bytes_exact(16, "dot site").hex(),
              _at_most(cur.uint("dot incarnation"), MAX_INCARNATION, "dot incarnation"),
              _at_most(cur.uint("dot counter"), MAX_DOT_COUNTER, "dot counter"))
    cur.array(3, "timestamp")
    wall = _at_most(cur.uint("timestamp wall time"), MAX_WALL_MS, "timestamp wall time")
    counter = _at_most(cur.uint("timestamp counter"), MAX_HLC_COUNTER, "timestamp counter")
    ts = Timestamp(wall, counter, cur.bytes_exact(16, "timestamp site").hex())
    return Change(dot, ts, _op(cur, limits))


# --- the quick path ------------------------------------------------------------------
#
# Reads the shapes a bundle is mostly made of with plain indexing and no call per
# field. It never raises a decoding error of its own: whatever it does not accept
# as it goes (_Irregular), and an index past the end or invalid UTF-8, hands the
# record to the strict path. Every check of the strict path is made here too, or
# leads there: shortest heads, exact types and lengths, text and flag limits,
# sorted flags, the bounds of §9.1. tests/format/test_records.py compares both
# paths on valid and damaged records.


class _Irregular(Exception):
    """Not a shape the quick path reads: the strict path decides."""


_QUICK_LEAD_CHANGE = b"\x84\x01\x83\x50"  # [1, [site: bstr(16), ...
_QUICK_LEAD_BODY = b"\x83\x00\x58\x20"  # [0, sha256: bstr(32), ...
_QUICK_LEAD_WANT = b"\x82\x02\x58\x20"  # [2, sha256: bstr(32)]
_QUICK_MESSAGE = b"\x83\x82"  # message = [mailbox = [...
_OP_ADDED = 0x8505  # [5, message, size, internal date, flags]
_OP_EXPUNGED = 0x8206  # [6, message]
_OP_FLAGS = 0x8407  # [7, message, added, removed]


def _quick_arg(buf: bytes | bytearray, pos: int, base: int) -> tuple[int, int]:
    """The argument of a head of major type ``base >> 5`` at ``pos`` in its shortest
    form, and the position after it."""
    info = buf[pos] - base
    if 0 <= info < 24:
        return info, pos + 1
    if info == 24:
        value = buf[pos + 1]
        if value >= 24:
            return value, pos + 2
    elif info == 25:
        value = buf[pos + 1] << 8 | buf[pos + 2]
        if value >= 0x100:
            return value, pos + 3
    elif info == 26:
        value = int.from_bytes(buf[pos + 1:pos + 5])
        if value >= 0x10000:
            return value, pos + 5
    elif info == 27:
        value = int.from_bytes(buf[pos + 1:pos + 9])
        if value >= 0x100000000:
            return value, pos + 9
    raise _Irregular


def _quick_text(buf: bytes | bytearray, pos: int, limit: int) -> tuple[str, int]:
    length, pos = _quick_arg(buf, pos, 0x60)
    if length > limit:
        raise _Irregular
    stop = pos + length
    return buf[pos:stop].decode("utf-8"), stop


def _quick_flags(buf: bytes | bytearray, pos: int, limits: Limits
                 ) -> tuple[frozenset[str], int]:
    count, pos = _quick_arg(buf, pos, 0x80)
    if count > limits.max_flags:
        raise _Irregular
    flags = []
    previous = None
    for _ in range(count):
        flag, pos = _quick_text(buf, pos, limits.max_text)
        if previous is not None and previous >= flag:
            raise _Irregular
        flags.append(flag)
        previous = flag
    return frozenset(flags), pos


def _quick_message(buf: bytes | bytearray, pos: int, limits: Limits) -> tuple[MessageRef, int]:
    if buf[pos:pos + 2] != _QUICK_MESSAGE:
        raise _Irregular
    user, pos = _quick_text(buf, pos + 2, limits.max_text)
    if buf[pos] != 0x50:
        raise _Irregular
    mailbox = MailboxRef(user, buf[pos + 1:pos + 17].hex())
    guid, pos = _quick_text(buf, pos + 17, limits.max_text)
    if buf[pos] != 0x58 or buf[pos + 1] != 0x20:
        raise _Irregular
    return MessageRef(mailbox, guid, buf[pos + 2:pos + 34].hex()), pos + 34


def _quick_record(buf: bytes | bytearray, pos: int, limits: Limits) -> tuple[Record, int]:
    """A body, a want or a message change at ``pos``, and the position after it."""
    lead = buf[pos:pos + 4]
    if lead == _QUICK_LEAD_BODY:
        digest = buf[pos + 4:pos + 36].hex()
        size, start = _quick_arg(buf, pos + 36, 0x40)
        stop = start + size
        if size > limits.max_body or stop > len(buf):
            raise _Irregular
        # One copy out of a bytearray (slicing one would copy twice).
        data = (buf[start:stop] if isinstance(buf, bytes)
                else memoryview(buf)[start:stop].tobytes())
        return Body(digest, data), stop
    if lead == _QUICK_LEAD_WANT:
        return Want(buf[pos + 4:pos + 36].hex()), pos + 36
    if lead != _QUICK_LEAD_CHANGE:
        raise _Irregular
    site = buf[pos + 4:pos + 20].hex()
    incarnation, pos = _quick_arg(buf, pos + 20, 0)
    counter, pos = _quick_arg(buf, pos, 0)
    if buf[pos] != 0x83 or incarnation > MAX_INCARNATION or counter > MAX_DOT_COUNTER:
        raise _Irregular
    wall, pos = _quick_arg(buf, pos + 1, 0)
    ticks, pos = _quick_arg(buf, pos, 0)
    if buf[pos] != 0x50 or wall > MAX_WALL_MS or ticks > MAX_HLC_COUNTER:
        raise _Irregular
    ts_site = buf[pos + 1:pos + 17].hex()
    code = buf[pos + 17] << 8 | buf[pos + 18]
    message, pos = _quick_message(buf, pos + 19, limits)
    op: Operation
    if code == _OP_ADDED:
        size, pos = _quick_arg(buf, pos, 0)
        if buf[pos] < 0x20:
            date, pos = _quick_arg(buf, pos, 0)
        else:
            negated, pos = _quick_arg(buf, pos, 0x20)
            date = -1 - negated
        if not _INT64_MIN <= date <= _INT64_MAX:
            raise _Irregular
        flags, pos = _quick_flags(buf, pos, limits)
        op = MessageAdded(message, size, date, flags)
    elif code == _OP_EXPUNGED:
        op = MessageExpunged(message)
    elif code == _OP_FLAGS:
        added, pos = _quick_flags(buf, pos, limits)
        removed, pos = _quick_flags(buf, pos, limits)
        op = FlagsChanged(message, added, removed)
    else:
        raise _Irregular
    return Change(Dot(site, incarnation, counter), Timestamp(wall, ticks, ts_site), op), pos


def _at_most(value: int, maximum: int, what: str) -> int:
    """bundle-v1 §9: numbers the state index stores are bounded (SQLite holds at most
    2^63-1; a timestamp beyond the year 10000 is no one's clock)."""
    if value > maximum:
        raise cbor.CborError(f"{what} {value} is above the limit {maximum} (bundle-v1 §9)")
    return value


def body_hash_matches(body: Body) -> bool:
    return hashlib.sha256(body.data).hexdigest() == body.sha256


def iter_pieces(records: Iterator[Record], limits: Limits,
                on_record: Callable[[Record], None]) -> Iterator[bytes]:
    """The encoded pieces of ``records`` in order, calling ``on_record`` for each."""
    for record in records:
        prefix, data = encode_record(record, limits)
        on_record(record)
        yield prefix
        if data:
            yield data

