"""Compact encodings of the core's registers for the state index.

The index is our own file, not something another site reads, so these encodings
are private; still, they are plain CBOR arrays (no pickle) so that a damaged row
is an error, not code execution.
"""

from __future__ import annotations

from typing import Any

import cbor2

from bundlesync.core.model import MailboxRef, MessageRef, Timestamp
from bundlesync.core.state import FlagRegister, MailboxState, MessageState
from bundlesync.errors import StateError


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
