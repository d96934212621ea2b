"""A read-only glance at the state index, for the quick path of a no-change run.

:mod:`bundlesync.operations.quick` decides whether a run has anything to do
before the model and :mod:`bundlesync.state.index` (with ``cbor2`` and the
codec) are imported. These are the statements it needs, answered with plain
values: the same tables and meanings as :class:`~bundlesync.state.index.StateIndex`,
never a write (the connection is ``query_only``). An index this module does
not read exactly as the index would (another schema version, another journal
mode) is refused with :class:`NotAtRest`, and the full path opens it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

# As bundlesync.state.index.SCHEMA_VERSION (a test checks it).
SCHEMA_VERSION = 5


class NotAtRest(Exception):  # not an error: the full path opens the index
    """The index is not one the glance reads as the full path would."""


class StateGlance:
    """The state index opened for reading a few values (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        if path.stat().st_size == 0:
            raise NotAtRest("an empty state index is the full path's error")
        # Opened as StateIndex opens it (not "mode=ro", which cannot read a WAL
        # database whose -shm file is missing), then made unable to write.
        self._db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None,
                                   timeout=30.0)
        try:
            self._db.execute("PRAGMA query_only=ON")
            if self._value("PRAGMA user_version") != SCHEMA_VERSION:
                raise NotAtRest("the index needs a migration (or is newer)")
            if str(self._value("PRAGMA journal_mode")).lower() != "wal":
                raise NotAtRest("the full path sets the journal mode")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def _value(self, sql: str, *params: object) -> Any:
        row = self._db.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def _exists(self, sql: str, *params: object) -> bool:
        return bool(self._value(f"SELECT EXISTS ({sql})", *params))

    # -- meta ------------------------------------------------------------------------

    def meta(self, key: str) -> Any:
        """The raw value of a ``meta`` key (None when absent)."""
        return self._value("SELECT value FROM meta WHERE key = ?", key)

    def meta_int(self, key: str) -> int | None:
        value = self.meta(key)
        return None if value is None else int(value)

    def bundle_seqs(self, incarnation: int) -> dict[str, int]:
        """As ``StateIndex.bundle_seqs``: the last bundle number reserved per peer."""
        return bundle_seqs(self._db, incarnation)

    # -- work waiting --------------------------------------------------------------------

    def has_pending(self) -> bool:
        return (self._exists("SELECT 1 FROM pending")
                or self._exists("SELECT 1 FROM pending_users"))

    def has_wanted(self) -> bool:
        return self._exists("SELECT 1 FROM wanted")

    def has_spooled(self) -> bool:
        return self._exists("SELECT 1 FROM spool")

    def peer_wants_any(self, peer: str) -> bool:
        return self._exists("SELECT 1 FROM peer_wants WHERE peer = ?", peer)

    # -- the log and the streams -----------------------------------------------------

    def contiguous(self, site: str, incarnation: int) -> int | None:
        """The stream's recorded contiguous counter (None: no row)."""
        value = self._value("SELECT contiguous FROM streams WHERE site = ? AND incarnation = ?",
                            site, incarnation)
        return None if value is None else int(value)

    def streams(self) -> list[tuple[str, int, int]]:
        """(site, incarnation, contiguous) of every stream: the version vector's rows."""
        return [(str(s), int(i), int(n)) for s, i, n in
                self._db.execute("SELECT site, incarnation, contiguous FROM streams")]

    def logged_streams(self) -> list[tuple[str, int]]:
        """Every stream with a change in the log, one index seek each
        (``StateIndex.logged_streams``)."""
        streams: list[tuple[str, int]] = []
        after: tuple[str, int] = ("", -1)
        while True:
            row = self._db.execute(
                "SELECT site, incarnation FROM changes WHERE (site, incarnation) > (?, ?) "
                "ORDER BY site, incarnation LIMIT 1", after).fetchone()
            if row is None:
                return streams
            after = (str(row[0]), int(row[1]))
            streams.append(after)

    def has_change_above(self, site: str, incarnation: int, counter: int) -> bool:
        return self._exists("SELECT 1 FROM changes WHERE site = ? AND incarnation = ? "
                            "AND counter > ?", site, incarnation, counter)

    def has_change(self, site: str, incarnation: int, counter: int) -> bool:
        return self._exists("SELECT 1 FROM changes WHERE site = ? AND incarnation = ? "
                            "AND counter = ?", site, incarnation, counter)

    # -- the store as last seen ----------------------------------------------------------

    def folder_rows(self) -> list[tuple[str, str, tuple[str, ...], bytes | None]]:
        """(user, folder GUID, path, stored marks) of every folder remembered."""
        rows = []
        for user, guid, path, marks in self._db.execute(
                "SELECT user, guid, path, marks FROM folders"):
            decoded = json.loads(path)
            if not isinstance(decoded, list) or not all(isinstance(p, str) for p in decoded):
                raise NotAtRest("a damaged folder row is the full path's error")
            rows.append((str(user), str(guid), tuple(decoded),
                         None if marks is None else bytes(marks)))
        return rows

    # -- peers and bundles -----------------------------------------------------------

    def peer(self, site_id: str) -> tuple[str, str] | None:
        """(name, acknowledgement as stored) of a peer's row."""
        row = self._db.execute("SELECT name, ack FROM peers WHERE site_id = ?",
                               (site_id,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def last_sent(self, peer: str) -> tuple[int, str] | None:
        """(incarnation, covers as stored) of the newest bundle sent to ``peer``."""
        row = self._db.execute(
            "SELECT incarnation, covers FROM sent WHERE peer = ? "
            "ORDER BY created_ms DESC, seq DESC LIMIT 1", (peer,)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def sent_size(self, peer: str, incarnation: int, seq: int) -> int | None:
        """The recorded size of a bundle this site wrote for ``peer``."""
        value = self._value("SELECT size FROM sent WHERE peer = ? AND incarnation = ? "
                            "AND seq = ?", peer, incarnation, seq)
        return None if value is None else int(value)


def bundle_seqs(db: sqlite3.Connection, incarnation: int) -> dict[str, int]:
    """The last bundle number reserved for each peer in ``incarnation`` (the ``meta``
    rows ``bundle_seq:<peer>:<incarnation>``): shared with ``StateIndex``."""
    rows = db.execute(
        "SELECT key, value FROM meta WHERE key >= 'bundle_seq:' AND key < 'bundle_seq;'")
    seqs: dict[str, int] = {}
    for key, value in rows:
        _, peer, inc = str(key).split(":")
        if int(inc) == incarnation:
            seqs[peer] = int(value)
    return seqs
