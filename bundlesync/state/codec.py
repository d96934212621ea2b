"""How the state index encodes the values it keeps, one function pair per column.

The index is our own file, not something another site reads, so these encodings
are private; still, they are plain text or CBOR arrays (no pickle) so that a
damaged row is an error, not code execution. Everything that turns a value into
a column or back lives here, next to the schema in :mod:`bundlesync.state.index`;
nothing outside ``bundlesync.state`` sees an encoded row.

The change log keeps each change exactly as a bundle carries it (bundle-v1 §5),
and its ``kind`` column holds the record kind of the format ("message-added"),
a name fixed by the spec, never a Python class name.
"""

from __future__ import annotations

import json
from typing import Any

import cbor2

from bundlesync.core.model import (
    Change,
    MailboxRef,
    MessageRef,
    Operation,
    Stream,
    Timestamp,
    VersionVector,
)
from bundlesync.core.state import FlagRegister, MailboxState, MessageState
from bundlesync.errors import StateError
from bundlesync.format.cbor import CborError, Cursor
from bundlesync.format.limits import DEFAULT_LIMITS
from bundlesync.format.records import OPERATION_KINDS, decode_record, encode_record

FolderPath = tuple[str, ...]

# -- the change log ------------------------------------------------------------------

CHANGE_KINDS: frozenset[str] = frozenset(OPERATION_KINDS.values())


def change_kind(op: Operation) -> str:
    """The stable kind name of an operation (the format's record kind)."""
    return OPERATION_KINDS[type(op)]


def encode_change(change: Change) -> bytes:
    """A change as the change log keeps it: the record exactly as a bundle carries it."""
    head, _data = encode_record(change, DEFAULT_LIMITS)
    return head


def decode_change(blob: bytes) -> Change:
    """A change back from the log; a damaged row is a :class:`StateError`."""
    cursor = Cursor(blob)
    try:
        record = decode_record(cursor, DEFAULT_LIMITS)
    except CborError as exc:
        raise StateError(f"damaged change record in the state index: {exc}") from exc
    if cursor.pos != len(blob):
        raise StateError(f"damaged change record in the state index: "
                         f"{len(blob) - cursor.pos} bytes after its end")
    if not isinstance(record, Change):
        raise StateError("the change log holds a record that is not a change")
    return record


# -- version vectors (peers' acknowledgements, bundles' coverage) ---------------------


def encode_vector(vector: VersionVector) -> str:
    return ";".join(f"{s.site},{s.incarnation},{n}" for s, n in vector.entries)


def decode_vector(text: str) -> VersionVector:
    items: dict[Stream, int] = {}
    try:
        for part in filter(None, text.split(";")):
            site, incarnation, counter = part.split(",")
            items[Stream(site, int(incarnation))] = int(counter)
    except ValueError as exc:
        raise StateError(f"damaged version vector in the state index: {text!r}") from exc
    return VersionVector.of(items)


# -- the store as last seen -----------------------------------------------------------


def encode_path(path: FolderPath) -> str:
    """A folder path as a column: unambiguous (names may hold any character), sortable."""
    return json.dumps(list(path), ensure_ascii=False)


def decode_path(text: str) -> FolderPath:
    try:
        parts = json.loads(text)
    except ValueError as exc:
        raise StateError(f"damaged folder path in the state index: {text!r}") from exc
    return tuple(str(p) for p in parts)


def encode_marks(marks: tuple[int, ...] | None) -> bytes | None:
    """A folder's stamp (None: unknown, so the folder is listed next time)."""
    return None if marks is None else cbor2.dumps(list(marks))


def decode_marks(blob: bytes | None) -> tuple[int, ...] | None:
    if blob is None:
        return None
    try:
        return tuple(int(m) for m in cbor2.loads(bytes(blob)))
    except (ValueError, TypeError, cbor2.CBORDecodeError) as exc:
        raise StateError(f"damaged folder stamp in the state index: {exc}") from exc


def encode_flags(flags: frozenset[str]) -> str:
    """A file's flags: names joined by a space, sorted (flag names hold no space)."""
    return " ".join(sorted(flags))


def decode_flags(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


# -- mailboxes held back by an import filter ------------------------------------------


def encode_held_back(mailboxes: dict[str, list[str]]) -> str:
    return json.dumps(mailboxes, sort_keys=True, ensure_ascii=False)


def decode_held_back(text: str) -> dict[str, list[str]]:
    try:
        data = json.loads(text)
        return {str(user): [str(n) for n in names] for user, names in data.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise StateError(f"damaged list of held-back mailboxes in the state index: {exc}"
                         ) from exc


# -- the registers ---------------------------------------------------------------------


def _ts(ts: Timestamp | None) -> list[Any] | None:
    return None if ts is None else [ts.wall_ms, ts.counter, ts.site]


def _unts(raw: Any) -> Timestamp | None:
    return None if raw is None else Timestamp(int(raw[0]), int(raw[1]), str(raw[2]))


def _reg(reg: FlagRegister | None) -> list[Any] | None:
    return None if reg is None else [_ts(reg.ts), reg.value]


def _unreg(raw: Any) -> FlagRegister | None:
    if raw is None:
        return None
    ts = _unts(raw[0])
    assert ts is not None
    return FlagRegister(ts=ts, value=bool(raw[1]))


def encode_message(state: MessageState) -> bytes:
    return cbor2.dumps([
        _ts(state.add_ts), state.size, state.internal_date, sorted(state.base_flags),
        _ts(state.expunge_ts), [[name, _reg(reg)] for name, reg in state.flags],
    ])


def decode_message(ref: MessageRef, blob: bytes) -> MessageState:
    try:
        add_ts, size, idate, base, exp_ts, flags = cbor2.loads(blob)
        regs = []
        for name, raw in flags:
            reg = _unreg(raw)
            assert reg is not None
            regs.append((str(name), reg))
        return MessageState(
            ref=ref, add_ts=_unts(add_ts), size=int(size), internal_date=int(idate),
            base_flags=frozenset(base), expunge_ts=_unts(exp_ts), flags=tuple(regs),
        )
    except (ValueError, TypeError, AssertionError, cbor2.CBORDecodeError) as exc:
        raise StateError(f"damaged message register in the state index: {exc}") from exc


def encode_mailbox(state: MailboxState) -> bytes:
    return cbor2.dumps([
        _ts(state.name_ts), state.parent, state.name, state.renamed, state.uidvalidity,
        state.special_use, _ts(state.created_ts), _ts(state.delete_ts), _reg(state.subscription),
    ])


def decode_mailbox(ref: MailboxRef, blob: bytes) -> MailboxState:
    try:
        name_ts, parent, name, renamed, uidv, special, created, deleted, sub = cbor2.loads(blob)
        return MailboxState(
            ref=ref, name_ts=_unts(name_ts), parent=parent, name=str(name),
            renamed=bool(renamed), uidvalidity=int(uidv), special_use=special,
            created_ts=_unts(created), delete_ts=_unts(deleted), subscription=_unreg(sub),
        )
    except (ValueError, TypeError, cbor2.CBORDecodeError) as exc:
        raise StateError(f"damaged mailbox register in the state index: {exc}") from exc
