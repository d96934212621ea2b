"""The site's state index: one SQLite database (WAL) next to the keys.

It holds four things, each in its own tables:

* the **change log** -- every change this site knows, its own and others', kept so
  that it can be sent (or forwarded through a relay) to any peer that has not
  acknowledged it (``changes``, ``streams``);
* the **replicated state** -- the per-key registers of ``bundlesync.core.state``
  (``mailboxes``, ``messages``), loaded a key at a time so memory follows the
  changes, not the store;
* the **store as last seen** -- folders with their stamps and message files
  (``folders``, ``files``), which makes the scan incremental and tells which file
  holds which message instance;
* **peers and bundles** -- acknowledgements, bundles sent and received
  (``peers``, ``sent``, ``received``), and the import journal (``pending``).

Schema changes go through :data:`MIGRATIONS`; a database from a newer version is
refused. A sqlite3 error while opening, or inside a transaction, is translated
to :class:`StateError`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bundlesync.core.model import Change, Dot, MessageAdded, Stream, VersionVector
from bundlesync.errors import StateError
from bundlesync.state import glance
from bundlesync.state.codec import (
    CHANGE_KINDS,
    FolderPath,
    change_kind,
    decode_flags,
    decode_held_back,
    decode_marks,
    decode_path,
    decode_vector,
    encode_change,
    encode_flags,
    encode_held_back,
    encode_marks,
    encode_path,
    encode_vector,
)

SCHEMA_VERSION = 5

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    CREATE TABLE changes (
        site TEXT NOT NULL, incarnation INTEGER NOT NULL, counter INTEGER NOT NULL,
        user TEXT NOT NULL, mailbox TEXT NOT NULL, kind TEXT NOT NULL,
        body TEXT,                      -- body SHA-256 of a MessageAdded, else NULL
        record BLOB NOT NULL,           -- the change, encoded as in a bundle
        PRIMARY KEY (site, incarnation, counter)
    ) WITHOUT ROWID;
    CREATE INDEX changes_body ON changes (body) WHERE body IS NOT NULL;
    CREATE TABLE streams (
        site TEXT NOT NULL, incarnation INTEGER NOT NULL, contiguous INTEGER NOT NULL,
        PRIMARY KEY (site, incarnation)
    ) WITHOUT ROWID;
    CREATE TABLE mailboxes (
        user TEXT NOT NULL, guid TEXT NOT NULL, state BLOB NOT NULL,
        PRIMARY KEY (user, guid)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        user TEXT NOT NULL, mailbox TEXT NOT NULL, guid TEXT NOT NULL, body TEXT NOT NULL,
        alive INTEGER NOT NULL, state BLOB NOT NULL,
        PRIMARY KEY (user, mailbox, guid, body)
    ) WITHOUT ROWID;
    CREATE INDEX messages_alive ON messages (user, mailbox) WHERE alive;
    CREATE TABLE folders (
        user TEXT NOT NULL, guid TEXT NOT NULL, path TEXT NOT NULL, marks BLOB,
        uidvalidity INTEGER,
        PRIMARY KEY (user, guid)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX folders_path ON folders (user, path);
    CREATE TABLE files (
        user TEXT NOT NULL,
        folder TEXT NOT NULL,           -- GUID of the folder (directory) holding the file
        key TEXT NOT NULL,              -- file base name
        mailbox TEXT NOT NULL,          -- mailbox GUID of the message instance it holds
        guid TEXT NOT NULL, body TEXT NOT NULL, flags TEXT NOT NULL, size INTEGER NOT NULL,
        internal_date INTEGER NOT NULL,
        PRIMARY KEY (user, folder, key)
    ) WITHOUT ROWID;
    CREATE INDEX files_body ON files (body);
    CREATE INDEX files_instance ON files (user, mailbox, guid, body);
    CREATE INDEX files_folder_key ON files (user, key);
    CREATE TABLE pending (
        user TEXT NOT NULL, mailbox TEXT NOT NULL, guid TEXT NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (user, mailbox, guid, body)
    ) WITHOUT ROWID;
    CREATE TABLE pending_users (user TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE peers (
        site_id TEXT PRIMARY KEY, name TEXT NOT NULL, ack BLOB NOT NULL,
        heard_ms INTEGER, sent_ms INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE sent (
        peer TEXT NOT NULL, incarnation INTEGER NOT NULL, seq INTEGER NOT NULL,
        created_ms INTEGER NOT NULL, size INTEGER NOT NULL, changes INTEGER NOT NULL,
        bodies INTEGER NOT NULL, covers BLOB NOT NULL, names TEXT NOT NULL,
        PRIMARY KEY (peer, incarnation, seq)
    ) WITHOUT ROWID;
    CREATE TABLE received (
        site TEXT NOT NULL, incarnation INTEGER NOT NULL, seq INTEGER NOT NULL,
        received_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, changes INTEGER NOT NULL,
        new_changes INTEGER NOT NULL,
        PRIMARY KEY (site, incarnation, seq)
    ) WITHOUT ROWID;
    """,
    # Bodies this site lacks and asks its peers for; bodies peers ask this site for.
    2: """
    CREATE TABLE wanted (body TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE peer_wants (
        peer TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (peer, body)
    ) WITHOUT ROWID;
    """,
    # Received bodies not yet delivered: which spool file holds them, and where.
    3: """
    CREATE TABLE spool (
        body TEXT PRIMARY KEY, file TEXT NOT NULL, offset INTEGER NOT NULL,
        size INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # The change log's kind column names the format's record kind, a name fixed by
    # the spec, instead of a Python class name that a refactoring could change.
    4: """
    UPDATE changes SET kind = CASE kind
        WHEN 'MailboxCreated' THEN 'mailbox-created'
        WHEN 'MailboxRenamed' THEN 'mailbox-renamed'
        WHEN 'MailboxDeleted' THEN 'mailbox-deleted'
        WHEN 'SubscriptionSet' THEN 'subscription-set'
        WHEN 'MessageAdded' THEN 'message-added'
        WHEN 'MessageExpunged' THEN 'message-expunged'
        WHEN 'FlagsChanged' THEN 'flags-changed'
        ELSE kind END;
    """,
    # The message GUID of a logged MessageAdded, so that an export plans its bodies
    # with one join of the log and the registers instead of decoding every add.
    # Rows logged before stay NULL; the export decodes those (StateIndex.adds_not_covered).
    5: """
    ALTER TABLE changes ADD COLUMN guid TEXT;
    """,
}

# Keys of the meta table, each read and written through a typed method below.
_INCARNATION = "incarnation"
_COUNTER = "counter"
_CLOCK_WALL = "clock_wall"
_CLOCK_COUNTER = "clock_counter"
_SPOOL_FILES = "spool_files"
_HELD_BACK = "held_back"


def _bundle_seq_key(peer: str, incarnation: int) -> str:
    return f"bundle_seq:{peer}:{incarnation}"


_FILE_COLUMNS = "user, folder, key, mailbox, guid, body, flags, size, internal_date"
_FILE_COLUMNS_OF_F = ", ".join(f"f.{column}" for column in _FILE_COLUMNS.split(", "))
# (folder, key) pairs looked up in one statement: two parameters each, below SQLite's
# smallest limit on parameters (999).
KEYS_PER_STATEMENT = 400


@dataclass(frozen=True, slots=True)
class FileRow:
    """One message file of the store as last seen."""

    user: str
    folder: str  # GUID of the folder (directory) holding the file
    key: str  # the file's base name
    mailbox: str  # GUID of the mailbox of the message instance it holds
    guid: str
    body: str
    flags: frozenset[str]
    size: int
    internal_date: int

    def with_flags(self, flags: frozenset[str]) -> FileRow:
        return replace(self, flags=flags)


def _file_row(raw: Sequence[Any]) -> FileRow:
    user, folder, key, mailbox, guid, body, flags, size, idate = raw
    return FileRow(user, folder, key, mailbox, guid, body, decode_flags(flags), int(size),
                   int(idate))


@dataclass(frozen=True, slots=True)
class FolderRow:
    """One folder (directory) of the store as last seen."""

    guid: str
    path: FolderPath
    marks: tuple[int, ...] | None  # its stamp; None: list it again next time
    uidvalidity: int | None


@dataclass(frozen=True, slots=True)
class PeerRow:
    """A peer this site exchanges with, and what it has acknowledged."""

    site_id: str
    name: str
    ack: VersionVector
    heard_ms: int | None
    sent_ms: int | None


@dataclass(frozen=True, slots=True)
class SentRow:
    """A bundle written for a peer."""

    incarnation: int
    seq: int
    created_ms: int
    size: int
    changes: int
    covers: VersionVector
    bodies: int | None = None


@dataclass(frozen=True, slots=True)
class ReceivedRow:
    """A bundle received from a peer."""

    incarnation: int
    seq: int
    received_ms: int
    created_ms: int


@dataclass(frozen=True, slots=True)
class LoggedAdd:
    """A logged MessageAdded as the export plans its bodies: the instance it adds and
    whether that instance is alive in the registers.

    ``guid`` and ``alive`` are None for a change logged before the log kept the
    message GUID: the caller decodes ``record`` to know the instance.
    """

    dot: Dot
    user: str
    mailbox: str
    guid: str | None
    body: str
    alive: bool | None
    record: bytes


@dataclass(frozen=True, slots=True)
class LoggedChange:
    """One change of the log: its dot, the body it adds (if any) and its record."""

    dot: Dot
    body: str | None
    record: bytes


class StateIndex:
    """The open state database of one site. Use as a context manager.

    Every statement the index runs is here, behind a typed method; the hot ones
    (per message or per change) are each served by an index, which
    ``tests/state/test_query_plans.py`` checks with ``EXPLAIN QUERY PLAN``.
    """

    def __init__(self, path: Path, *, create: bool = False) -> None:
        if not create and not path.exists():
            raise StateError(
                f"no state index at {path}",
                hint="Run 'bundlesync init' first, or pass --home to point at the site.",
            )
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate(create=create)
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"the state index {path} cannot be opened: {exc}",
                hint="If the file is damaged, restore the site's home from a backup.",
            ) from exc
        self.path = path
        self._depth = 0
        # The counter, incarnation and clock as this transaction sees them: read once,
        # written once before COMMIT (they change with every change logged, and were
        # three meta statements per change). Empty outside a transaction.
        self._meta: dict[str, int | None] = {}
        self._dirty: set[str] = set()
        # Each user's mailboxes holding a live message, as this transaction sees them:
        # looked up once per user (a scan, a merge and the ledger all ask), kept
        # current by store_message. Mailboxes that lost a live message are checked
        # again at the next question. Empty outside a transaction.
        self._live: dict[str, set[str]] = {}
        self._live_doubt: dict[str, set[str]] = {}

    # -- lifecycle -----------------------------------------------------------------

    def _migrate(self, *, create: bool) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version == 0 and not create:
            # Not a bundlesync index (or an emptied one): taking it for a new one
            # would start this site over and reuse its change numbers.
            raise StateError(
                "the state index holds no bundlesync state",
                hint="Restore state.sqlite from a backup and keep spent.json as it is (the "
                     "restore is then detected and the site moves to a new incarnation), "
                     "or set the site up again in a new home with 'bundlesync init'.",
            )
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the state index has schema version {version}, newer than this bundlesync "
                f"understands ({SCHEMA_VERSION})",
                hint="Upgrade bundlesync on this site.",
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {target}")
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def trace(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback`` with every statement run (for tests and profiling)."""
        self._db.set_trace_callback(callback)

    def explain(self, statement: str) -> list[str]:
        """The query plan of ``statement`` (SQLite's EXPLAIN QUERY PLAN details)."""
        return [str(row[3]) for row in self._db.execute(f"EXPLAIN QUERY PLAN {statement}")]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of work: committed whole, or rolled back whole.

        Nested use becomes a savepoint of the outer transaction: rolled back alone on
        error, kept or discarded with the outer one (a dry run wraps a whole import in
        :meth:`rehearsal`, which rolls it back).
        """
        if self._db.in_transaction:
            self._depth += 1
            name = f"sp{self._depth}"
            self._db.execute(f"SAVEPOINT {name}")
            saved = dict(self._meta), set(self._dirty)
            try:
                yield
            except BaseException as exc:
                # SQLite may have rolled the whole transaction back itself (disk
                # full, I/O error): then there is no savepoint left to undo, and the
                # error that says why must not be replaced by "no transaction".
                if self._db.in_transaction:
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                self._meta, self._dirty = saved
                # The savepoint may have changed which mailboxes are live: ask again.
                self._live, self._live_doubt = {}, {}
                if isinstance(exc, sqlite3.Error):
                    raise self._failed(exc) from exc
                raise
            else:
                self._execute_or_fail(f"RELEASE {name}")
            finally:
                self._depth -= 1
            return
        self._begin()
        try:
            yield
            self._flush_meta()
        except BaseException as exc:
            self._forget_meta()
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._failed(exc) from exc
            raise
        else:
            self._forget_meta()
            self._execute_or_fail("COMMIT")

    def _execute_or_fail(self, sql: str) -> None:
        try:
            self._db.execute(sql)
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise self._failed(exc) from exc

    def _failed(self, exc: sqlite3.Error) -> StateError:
        """The database's own error, with its cause and what to do (disk full, I/O)."""
        text = str(exc)
        hint = None
        if isinstance(exc, sqlite3.OperationalError) and "full" in text:
            hint = "Free space on the file system of the site's home, then run again."
        elif "disk I/O" in text or "readonly" in text:
            hint = ("Check the file system of the site's home (read-only? failing disk?); "
                    "nothing of this run was kept.")
        return StateError(f"the state index {self.path} could not be written: {text}", hint=hint)

    def _rollback(self) -> None:
        # SQLite may have rolled back already (on some I/O errors it does).
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    @contextmanager
    def rehearsal(self) -> Iterator[None]:
        """Work that is never kept: everything done inside is rolled back at the end
        (a dry run). Transactions inside become savepoints of this one."""
        self._begin()
        try:
            yield
        finally:
            self._forget_meta()
            self._rollback()

    def _begin(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(f"the state index is busy: {exc}") from exc

    # -- meta: the site's own counters -------------------------------------------------

    def _cached_int(self, key: str) -> int | None:
        """A meta integer, read once per transaction."""
        if not self._db.in_transaction:
            return self._meta_int(key)
        if key not in self._meta:
            self._meta[key] = self._meta_int(key)
        return self._meta[key]

    def _put_cached_int(self, key: str, value: int) -> None:
        """Set a meta integer: at once outside a transaction, else before its COMMIT."""
        if not self._db.in_transaction:
            self._set_meta_int(key, value)
            return
        self._meta[key] = int(value)
        self._dirty.add(key)

    def _flush_meta(self) -> None:
        dirty = [(key, self._meta[key]) for key in sorted(self._dirty)]
        if dirty:
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", dirty)
        self._dirty.clear()

    def _forget_meta(self) -> None:
        self._meta.clear()
        self._dirty.clear()
        self._live.clear()
        self._live_doubt.clear()

    def _meta_int(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            return int(row[0])
        except (TypeError, ValueError) as exc:
            raise StateError(f"damaged value {key!r} in the state index: {row[0]!r}") from exc

    def _set_meta_int(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, int(value)),
        )

    def _meta_text(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def _set_meta_text(self, key: str, value: str) -> None:
        # An unchanged value is not written: a run that changes nothing must not
        # dirty a page (and sync the WAL) to store what is already there.
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value "
            "WHERE value IS NOT excluded.value",
            (key, value),
        )

    def incarnation(self) -> int:
        """This site's current incarnation (1 until a restore is detected)."""
        return self._cached_int(_INCARNATION) or 1

    def last_counter(self) -> int:
        """The counter of this site's newest change in its current incarnation."""
        return self._cached_int(_COUNTER) or 0

    def next_counter(self) -> int:
        """Spend the next counter of this site's stream (inside a transaction).

        This runs once per change: inside a transaction the counter is read once and
        written once, before COMMIT. A damaged value is left as it is and reported,
        never counted from.
        """
        value = self.last_counter() + 1
        self._put_cached_int(_COUNTER, value)
        return value

    def spend_counters(self, count: int) -> int:
        """Spend ``count`` counters of this site's stream at once; the first of them."""
        first = self.last_counter() + 1
        self._put_cached_int(_COUNTER, first + count - 1)
        return first

    def start_incarnation(self, incarnation: int) -> None:
        """Move this site to a new incarnation; its counters start again at 1."""
        self._put_cached_int(_INCARNATION, incarnation)
        self._put_cached_int(_COUNTER, 0)

    def clock(self) -> tuple[int, int] | None:
        """(wall_ms, counter) of the last timestamp this site's clock gave, if any."""
        wall = self._cached_int(_CLOCK_WALL)
        return None if wall is None else (wall, self._cached_int(_CLOCK_COUNTER) or 0)

    def save_clock(self, wall_ms: int, counter: int) -> None:
        """Keep the clock's last timestamp (written once per transaction)."""
        self._put_cached_int(_CLOCK_WALL, wall_ms)
        self._put_cached_int(_CLOCK_COUNTER, counter)

    def reserve_bundle_seq(self, peer: str, incarnation: int) -> int:
        """The next bundle number to ``peer`` in ``incarnation``, reserved at once (its
        own transaction) so that a crash never lets two bundles share an id."""
        key = _bundle_seq_key(peer, incarnation)
        with self.transaction():
            seq = (self._meta_int(key) or 0) + 1
            self._set_meta_int(key, seq)
        return seq

    # -- change log ----------------------------------------------------------------

    def has_change(self, dot: Dot) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM changes WHERE site = ? AND incarnation = ? AND counter = ?",
            (dot.site, dot.incarnation, dot.counter),
        ).fetchone()
        return row is not None

    def known_counters(self, stream: Stream, first: int, last: int) -> set[int]:
        """The counters of ``stream`` from ``first`` to ``last`` already in the log: one
        range of the primary key for a whole batch of new dots, not a lookup per dot."""
        rows = self._db.execute(
            "SELECT counter FROM changes WHERE site = ? AND incarnation = ? "
            "AND counter BETWEEN ? AND ?", (stream.site, stream.incarnation, first, last))
        return {int(r[0]) for r in rows}

    def add_change(self, change: Change, *, user: str, mailbox: str, body: str | None,
                   record: bytes | None = None) -> None:
        """Log ``change`` (``record``: its encoding, when the caller has it already)."""
        self.add_change_records([(change, user, mailbox, body, record)])

    def add_changes(self, changes: Iterable[tuple[Change, str, str, str | None]]) -> None:
        """Log many changes at once: (change, user, mailbox, body) each (an inventory)."""
        self.add_change_records((change, user, mailbox, body, None)
                                for change, user, mailbox, body in changes)

    def changes_of_stream(self, stream: Stream, *, above: int) -> list[LoggedChange]:
        """The logged changes of ``stream`` with a counter above ``above``, in order."""
        rows = self._db.execute(
            "SELECT counter, body, record FROM changes WHERE site = ? AND incarnation = ? "
            "AND counter > ? ORDER BY counter",
            (stream.site, stream.incarnation, above),
        ).fetchall()
        return [LoggedChange(Dot(stream.site, stream.incarnation, c), b, bytes(r))
                for c, b, r in rows]

    def forget_change(self, dot: Dot) -> None:
        """Remove one change from the log (it is re-issued under another dot)."""
        self._db.execute(
            "DELETE FROM changes WHERE site = ? AND incarnation = ? AND counter = ?",
            (dot.site, dot.incarnation, dot.counter))

    def cap_stream(self, stream: Stream, contiguous: int) -> None:
        """Lower what this site holds of ``stream`` to at most ``contiguous``."""
        self._db.execute(
            "UPDATE streams SET contiguous = MIN(contiguous, ?) WHERE site = ? AND "
            "incarnation = ?", (contiguous, stream.site, stream.incarnation))

    def advance_streams(self, streams: Sequence[Stream]) -> None:
        """Recompute the contiguous counter of each stream after new dots arrived."""
        for stream in streams:
            row = self._db.execute(
                "SELECT contiguous FROM streams WHERE site = ? AND incarnation = ?",
                (stream.site, stream.incarnation),
            ).fetchone()
            contiguous = 0 if row is None else int(row[0])
            cursor = self._db.execute(
                "SELECT counter FROM changes WHERE site = ? AND incarnation = ? AND counter > ? "
                "ORDER BY counter",
                (stream.site, stream.incarnation, contiguous),
            )
            for (counter,) in cursor:
                if counter != contiguous + 1:
                    break
                contiguous = counter
            self._db.execute(
                "INSERT INTO streams (site, incarnation, contiguous) VALUES (?, ?, ?) "
                "ON CONFLICT (site, incarnation) DO UPDATE SET contiguous = excluded.contiguous "
                "WHERE contiguous != excluded.contiguous",  # unchanged: nothing written
                (stream.site, stream.incarnation, contiguous),
            )

    def version_vector(self) -> VersionVector:
        """What this site holds: for each stream, the highest contiguous counter."""
        rows = self._db.execute("SELECT site, incarnation, contiguous FROM streams").fetchall()
        return VersionVector.of({Stream(s, i): n for s, i, n in rows})

    def stream_max(self, stream: Stream) -> int:
        row = self._db.execute(
            "SELECT MAX(counter) FROM changes WHERE site = ? AND incarnation = ?",
            (stream.site, stream.incarnation),
        ).fetchone()
        return int(row[0] or 0)

    def logged_streams(self) -> list[Stream]:
        """Every stream with a change in the log, in order.

        One index seek per stream (a loose index scan), so the cost follows the
        number of streams, never the size of the log.
        """
        streams: list[Stream] = []
        after: tuple[str, int] = ("", -1)  # below every site id and incarnation
        while True:
            row = self._db.execute(
                "SELECT site, incarnation FROM changes WHERE (site, incarnation) > (?, ?) "
                "ORDER BY site, incarnation LIMIT 1", after,
            ).fetchone()
            if row is None:
                return streams
            after = (str(row[0]), int(row[1]))
            streams.append(Stream(*after))

    def changes_not_covered(self, ack: VersionVector) -> Iterator[LoggedChange]:
        """Every logged change the vector ``ack`` does not cover, in dot order.

        Each stream is read by a range of the log's primary key; nothing is shared
        between two calls, so two of these generators may be consumed interleaved.
        """
        for stream in self.logged_streams():
            above = ack.get_count(stream)
            cursor = self._db.execute(
                "SELECT counter, body, record FROM changes WHERE site = ? AND incarnation = ? "
                "AND counter > ? ORDER BY counter",
                (stream.site, stream.incarnation, above),
            )
            for counter, body, record in cursor:
                yield LoggedChange(Dot(stream.site, stream.incarnation, counter), body,
                                   bytes(record))

    def records_not_covered(self, ack: VersionVector) -> Iterator[tuple[str, bytes]]:
        """(record kind, record) of every logged change ``ack`` does not cover, in dot
        order: the records exactly as a bundle carries them, for an export to pass on."""
        for stream in self.logged_streams():
            cursor = self._db.execute(
                "SELECT kind, record FROM changes WHERE site = ? AND incarnation = ? "
                "AND counter > ? ORDER BY counter",
                (stream.site, stream.incarnation, ack.get_count(stream)),
            )
            for kind, record in cursor:
                yield str(kind), bytes(record)

    def kinds_not_covered(self, ack: VersionVector) -> dict[str, int]:
        """How many changes of each kind (the format's record kinds) ``ack`` lacks."""
        counts: dict[str, int] = {}
        for stream in self.logged_streams():
            rows = self._db.execute(
                "SELECT kind, COUNT(*) FROM changes WHERE site = ? AND incarnation = ? "
                "AND counter > ? GROUP BY kind",
                (stream.site, stream.incarnation, ack.get_count(stream)),
            )
            for kind, count in rows:
                counts[kind] = counts.get(kind, 0) + int(count)
        return counts

    def count_not_covered(self, ack: VersionVector) -> int:
        """How many logged changes ``ack`` does not cover."""
        total = 0
        for stream in self.logged_streams():
            row = self._db.execute(
                "SELECT COUNT(*) FROM changes WHERE site = ? AND incarnation = ? AND counter > ?",
                (stream.site, stream.incarnation, ack.get_count(stream)),
            ).fetchone()
            total += int(row[0])
        return total

    def count_changes(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM changes").fetchone()[0])

    def body_known_to(self, body: str, ack: VersionVector) -> bool:
        """Whether a change adding this body is covered by ``ack`` (the peer holds it)."""
        for site, incarnation, counter in self._db.execute(
            "SELECT site, incarnation, counter FROM changes WHERE body = ?", (body,)
        ):
            if ack.covers(Dot(site, incarnation, counter)):
                return True
        return False

    # -- registers -----------------------------------------------------------------

    def load_mailbox(self, user: str, guid: str) -> bytes | None:
        row = self._db.execute(
            "SELECT state FROM mailboxes WHERE user = ? AND guid = ?", (user, guid)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def store_mailbox(self, user: str, guid: str, state: bytes) -> None:
        self._db.execute(
            "INSERT INTO mailboxes (user, guid, state) VALUES (?, ?, ?) "
            "ON CONFLICT (user, guid) DO UPDATE SET state = excluded.state",
            (user, guid, state),
        )

    def user_mailboxes(self, user: str) -> list[tuple[str, bytes]]:
        rows = self._db.execute("SELECT guid, state FROM mailboxes WHERE user = ?", (user,))
        return [(g, bytes(s)) for g, s in rows]

    def state_users(self) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT user FROM mailboxes ORDER BY user")]

    def load_message(self, user: str, mailbox: str, guid: str, body: str) -> bytes | None:
        row = self._db.execute(
            "SELECT state FROM messages WHERE user = ? AND mailbox = ? AND guid = ? AND body = ?",
            (user, mailbox, guid, body),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def store_message(
        self, user: str, mailbox: str, guid: str, body: str, *, alive: bool, state: bytes
    ) -> None:
        self._db.execute(
            "INSERT INTO messages (user, mailbox, guid, body, alive, state) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user, mailbox, guid, body) "
            "DO UPDATE SET alive = excluded.alive, state = excluded.state",
            (user, mailbox, guid, body, int(alive), state),
        )
        self._note_live(user, mailbox, alive)

    def _note_live(self, user: str, mailbox: str, alive: bool) -> None:
        """Keep the cache of live mailboxes in step with a message row just written."""
        live = self._live.get(user)
        if live is not None:
            if alive:
                live.add(mailbox)
                self._live_doubt.get(user, set()).discard(mailbox)
            elif mailbox in live:
                # It may hold other live messages: asked again at the next question.
                self._live_doubt.setdefault(user, set()).add(mailbox)

    def store_messages(self, rows: Iterable[tuple[str, str, str, str, bool, bytes]]) -> None:
        """:meth:`store_message` for many: (user, mailbox, guid, body, alive, state) each."""

        def note(user: str, mailbox: str, alive: bool) -> str:
            # The live mailboxes kept in step, row by row, as store_message keeps them.
            self._note_live(user, mailbox, alive)
            return user

        self._db.executemany(
            "INSERT INTO messages (user, mailbox, guid, body, alive, state) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user, mailbox, guid, body) "
            "DO UPDATE SET alive = excluded.alive, state = excluded.state",
            ((note(user, mailbox, alive), mailbox, guid, body, int(alive), state)
             for user, mailbox, guid, body, alive, state in rows),
        )

    def has_messages(self, user: str) -> bool:
        """Whether any message of ``user`` is known (one seek)."""
        row = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE user = ?)", (user,)).fetchone()
        return bool(row[0])

    def live_mailboxes(self, user: str) -> set[str]:
        """The mailboxes of ``user`` holding a live message: one seek per mailbox in the
        index of live messages, never a walk over the user's messages.

        Inside a transaction the answer is looked up once per user and kept current as
        messages are stored (see ``__init__``)."""
        if not self._db.in_transaction:
            return self._seek_live(user)
        live = self._live.get(user)
        if live is None:
            live = self._live[user] = self._seek_live(user)
            self._live_doubt.pop(user, None)
        for mailbox in sorted(self._live_doubt.pop(user, set())):
            if not self._has_live(user, mailbox):
                live.discard(mailbox)
        return set(live)

    def _has_live(self, user: str, mailbox: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM messages INDEXED BY messages_alive WHERE user = ? AND mailbox = ? "
            "AND alive LIMIT 1", (user, mailbox)).fetchone()
        return row is not None

    def _seek_live(self, user: str) -> set[str]:
        found: set[str] = set()
        after = ""
        while True:
            row = self._db.execute(
                "SELECT mailbox FROM messages INDEXED BY messages_alive "
                "WHERE user = ? AND alive AND mailbox > ? ORDER BY mailbox LIMIT 1",
                (user, after),
            ).fetchone()
            if row is None:
                return found
            after = str(row[0])
            found.add(after)

    def live_messages(self, user: str, mailbox: str) -> list[tuple[str, str, bytes]]:
        rows = self._db.execute(
            "SELECT guid, body, state FROM messages WHERE user = ? AND mailbox = ? AND alive",
            (user, mailbox),
        )
        return [(g, b, bytes(s)) for g, b, s in rows]

    # -- the store as last seen ----------------------------------------------------

    def folders(self, user: str) -> list[FolderRow]:
        rows = self._db.execute(
            "SELECT guid, path, marks, uidvalidity FROM folders WHERE user = ?", (user,)
        )
        return [FolderRow(g, decode_path(p), decode_marks(m), u) for g, p, m, u in rows]

    def folder_users(self) -> list[str]:
        """Every user with a folder remembered (one seek per user)."""
        users: list[str] = []
        row = self._db.execute("SELECT MIN(user) FROM folders").fetchone()
        while row is not None and row[0] is not None:
            users.append(str(row[0]))
            row = self._db.execute(
                "SELECT user FROM folders WHERE user > ? ORDER BY user LIMIT 1", (users[-1],)
            ).fetchone()
        return users

    def count_folders(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM folders").fetchone()[0])

    def put_folder(self, user: str, row: FolderRow) -> None:
        """Remember a folder (replacing another remembered at the same path)."""
        path = encode_path(row.path)
        # Mostly a folder already remembered at the same path with a new stamp: one
        # statement, not three (a scan writes a row for every folder it listed).
        updated = self._db.execute(
            "UPDATE folders SET marks = ?, uidvalidity = ? WHERE user = ? AND guid = ? "
            "AND path = ?", (encode_marks(row.marks), row.uidvalidity, user, row.guid, path))
        if updated.rowcount == 1:
            return
        self._db.execute("DELETE FROM folders WHERE user = ? AND path = ? AND guid != ?",
                         (user, path, row.guid))
        self._db.execute(
            "INSERT INTO folders (user, guid, path, marks, uidvalidity) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (user, guid) DO UPDATE SET path = excluded.path, "
            "marks = excluded.marks, uidvalidity = excluded.uidvalidity",
            (user, row.guid, path, encode_marks(row.marks), row.uidvalidity),
        )

    def set_folder_marks(self, user: str, guid: str, marks: tuple[int, ...]) -> None:
        """Remember a folder's stamp (after checking that its files are as recorded)."""
        self._db.execute("UPDATE folders SET marks = ? WHERE user = ? AND guid = ?",
                         (encode_marks(marks), user, guid))

    def count_folder_files(self, user: str, folder: str) -> int:
        """How many files were last seen in a folder (a range of the primary key)."""
        row = self._db.execute("SELECT COUNT(*) FROM files WHERE user = ? AND folder = ?",
                               (user, folder)).fetchone()
        return int(row[0])

    def file_flags(self, user: str, folder: str) -> dict[str, frozenset[str]]:
        """Key -> flags of each file last seen in a folder (two columns of the files:
        what a scan compares with a listing; the full rows of the few files that
        differ are read with :meth:`files_by_key`)."""
        texts: dict[str, str] = dict(self._db.execute(
            "SELECT key, flags FROM files WHERE user = ? AND folder = ?", (user, folder)))
        # Few distinct flag combinations occur in a folder: one set for each.
        decoded = {text: decode_flags(text) for text in set(texts.values())}
        return {key: decoded[text] for key, text in texts.items()}

    def files_by_key(self, user: str, wanted: Iterable[tuple[str, str]]) -> list[FileRow]:
        """The rows of the files of ``user`` at these (folder GUID, key) pairs (those
        remembered): a primary-key seek per pair, :data:`KEYS_PER_STATEMENT` pairs a
        statement, whatever folders they are in."""
        pairs = sorted(set(wanted))
        found: list[FileRow] = []
        for start in range(0, len(pairs), KEYS_PER_STATEMENT):
            chunk = pairs[start:start + KEYS_PER_STATEMENT]
            values = ", ".join(["(?, ?)"] * len(chunk))
            rows = self._db.execute(
                f"SELECT {_FILE_COLUMNS_OF_F} FROM (VALUES {values}) AS wanted "
                "CROSS JOIN files AS f ON f.user = ? AND f.folder = wanted.column1 "
                "AND f.key = wanted.column2",
                (*(part for pair in chunk for part in pair), user))
            found.extend(_file_row(r) for r in rows)
        return found

    def drop_folder(self, user: str, guid: str) -> None:
        self._db.execute("DELETE FROM folders WHERE user = ? AND guid = ?", (user, guid))
        self._db.execute("DELETE FROM files WHERE user = ? AND folder = ?", (user, guid))

    def files(self, user: str, folder: str) -> list[FileRow]:
        """Each file last seen in a folder."""
        rows = self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE user = ? AND folder = ?", (user, folder)
        )
        return [_file_row(r) for r in rows]

    def has_file(self, user: str, folder: str, key: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM files WHERE user = ? AND folder = ? AND key = ?", (user, folder, key)
        ).fetchone()
        return row is not None

    def put_file(self, row: FileRow) -> None:
        self.put_files([row])

    def put_files(self, rows: Iterable[FileRow]) -> None:
        """Remember many files at once (one prepared statement for all: a scan's rows)."""
        self._db.executemany(
            f"INSERT OR REPLACE INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((row.user, row.folder, row.key, row.mailbox, row.guid, row.body,
              encode_flags(row.flags), row.size, row.internal_date) for row in rows),
        )

    def drop_files(self, user: str, keys: Iterable[tuple[str, str]]) -> None:
        """Forget many files of ``user`` at once: (folder, key) pairs."""
        self._db.executemany("DELETE FROM files WHERE user = ? AND folder = ? AND key = ?",
                             ((user, folder, key) for folder, key in keys))

    def drop_file(self, user: str, folder: str, key: str) -> None:
        self._db.execute(
            "DELETE FROM files WHERE user = ? AND folder = ? AND key = ?", (user, folder, key)
        )

    def files_of_instance(self, user: str, mailbox: str, guid: str, body: str) -> list[FileRow]:
        """The files holding one message instance.

        Without statistics SQLite prefers the primary key's ``user`` prefix here -- a
        walk over every file of the user, per message -- so the instance index is
        named explicitly.
        """
        rows = self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files INDEXED BY files_instance "
            "WHERE user = ? AND mailbox = ? AND guid = ? AND body = ?",
            (user, mailbox, guid, body),
        )
        return [_file_row(r) for r in rows]

    def files_with_body(self, body: str, *, limit: int = 8) -> list[FileRow]:
        """Some files (of any user) last seen holding this body."""
        rows = self._db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE body = ? LIMIT ?", (body, limit)
        )
        return [_file_row(r) for r in rows]

    def count_files(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    # -- the import journal --------------------------------------------------------

    def mark_pending(self, user: str, mailbox: str, guid: str, body: str) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO pending (user, mailbox, guid, body) VALUES (?, ?, ?, ?)",
            (user, mailbox, guid, body),
        )

    def mark_user_pending(self, user: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO pending_users (user) VALUES (?)", (user,))

    def pending_users(self) -> list[str]:
        """Users with pending work (one seek per user in the journal)."""
        users = {r[0] for r in self._db.execute("SELECT user FROM pending_users")}
        row = self._db.execute("SELECT MIN(user) FROM pending").fetchone()
        while row is not None and row[0] is not None:
            users.add(str(row[0]))
            row = self._db.execute(
                "SELECT user FROM pending WHERE user > ? ORDER BY user LIMIT 1", (row[0],)
            ).fetchone()
        return sorted(users)

    def pending_messages(self, user: str) -> list[tuple[str, str, str]]:
        rows = self._db.execute(
            "SELECT mailbox, guid, body FROM pending WHERE user = ? ORDER BY mailbox, guid, body",
            (user,),
        )
        return list(rows)

    def pending_counts(self) -> dict[str, tuple[int, int]]:
        """User -> (message instances pending, mailboxes they are in), in one pass
        over the journal."""
        return {str(user): (int(n), int(boxes)) for user, n, boxes in self._db.execute(
            "SELECT user, COUNT(*), COUNT(DISTINCT mailbox) FROM pending GROUP BY user")}

    def clear_pending_message(self, user: str, mailbox: str, guid: str, body: str) -> None:
        self._db.execute(
            "DELETE FROM pending WHERE user = ? AND mailbox = ? AND guid = ? AND body = ?",
            (user, mailbox, guid, body),
        )

    def clear_pending_messages(self, user: str,
                               instances: Iterable[tuple[str, str, str]]) -> None:
        """Clear many pending marks of ``user`` at once: (mailbox, guid, body) triples."""
        self._db.executemany(
            "DELETE FROM pending WHERE user = ? AND mailbox = ? AND guid = ? AND body = ?",
            ((user, mailbox, guid, body) for mailbox, guid, body in instances),
        )

    def clear_pending_user(self, user: str) -> None:
        self._db.execute("DELETE FROM pending_users WHERE user = ?", (user,))

    def count_pending(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def has_pending(self) -> bool:
        row = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM pending) OR EXISTS (SELECT 1 FROM pending_users)"
        ).fetchone()
        return bool(row[0])

    # -- the spool -----------------------------------------------------------------

    def spooled(self, body: str) -> tuple[str, int, int] | None:
        row = self._db.execute(
            "SELECT file, offset, size FROM spool WHERE body = ?", (body,)).fetchone()
        return None if row is None else (row[0], int(row[1]), int(row[2]))

    def put_spooled(self, body: str, file: str, offset: int, size: int) -> bool:
        """Record where a spooled body lies; False (nothing changed) if it is spooled
        already."""
        cursor = self._db.execute("INSERT OR IGNORE INTO spool (body, file, offset, size) "
                                  "VALUES (?, ?, ?, ?)", (body, file, offset, size))
        return cursor.rowcount == 1

    def next_spool_file(self) -> int:
        number = (self._meta_int(_SPOOL_FILES) or 0) + 1
        self._set_meta_int(_SPOOL_FILES, number)
        return number

    def clear_spooled(self) -> None:
        # Not on an empty table (see clear_wants).
        if self._db.execute("SELECT 1 FROM spool LIMIT 1").fetchone() is not None:
            self._db.execute("DELETE FROM spool")

    # -- bodies asked for ----------------------------------------------------------

    def want(self, body: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO wanted (body) VALUES (?)", (body,))

    def clear_wants(self) -> None:
        # Not on an empty table: even that DELETE writes a page (a no-change run
        # would sync the WAL for nothing).
        if self._db.execute("SELECT 1 FROM wanted LIMIT 1").fetchone() is not None:
            self._db.execute("DELETE FROM wanted")

    def wanted(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT body FROM wanted ORDER BY body")]

    def set_peer_wants(self, peer: str, bodies: Sequence[str]) -> None:
        self._db.execute("DELETE FROM peer_wants WHERE peer = ?", (peer,))
        self._db.executemany("INSERT OR IGNORE INTO peer_wants (peer, body) VALUES (?, ?)",
                             [(peer, b) for b in bodies])

    def peer_wants(self, peer: str) -> list[str]:
        rows = self._db.execute("SELECT body FROM peer_wants WHERE peer = ? ORDER BY body",
                                (peer,))
        return [r[0] for r in rows]

    # -- peers and bundles ---------------------------------------------------------

    def peer(self, site_id: str) -> PeerRow | None:
        row = self._db.execute(
            "SELECT site_id, name, ack, heard_ms, sent_ms FROM peers WHERE site_id = ?",
            (site_id,),
        ).fetchone()
        if row is None:
            return None
        return PeerRow(row[0], row[1], decode_vector(row[2]), row[3], row[4])

    def peers(self) -> list[PeerRow]:
        rows = self._db.execute(
            "SELECT site_id, name, ack, heard_ms, sent_ms FROM peers ORDER BY name"
        ).fetchall()
        return [PeerRow(r[0], r[1], decode_vector(r[2]), r[3], r[4]) for r in rows]

    def put_peer(self, site_id: str, name: str) -> None:
        self._db.execute(
            "INSERT INTO peers (site_id, name, ack) VALUES (?, ?, '') "
            "ON CONFLICT (site_id) DO UPDATE SET name = excluded.name",
            (site_id, name),
        )

    def remove_peer(self, site_id: str) -> None:
        self._db.execute("DELETE FROM peers WHERE site_id = ?", (site_id,))

    def set_peer_ack(self, site_id: str, ack: VersionVector, *, heard_ms: int) -> None:
        self._db.execute(
            "UPDATE peers SET ack = ?, heard_ms = ? WHERE site_id = ?",
            (encode_vector(ack), heard_ms, site_id),
        )

    def record_sent(
        self, peer: str, incarnation: int, seq: int, *, created_ms: int, size: int,
        changes: int, bodies: int, covers: VersionVector, names: Sequence[str],
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sent (peer, incarnation, seq, created_ms, size, changes, "
            "bodies, covers, names) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (peer, incarnation, seq, created_ms, size, changes, bodies,
             encode_vector(covers), "\n".join(names)),
        )
        self._db.execute("UPDATE peers SET sent_ms = ? WHERE site_id = ?", (created_ms, peer))

    def last_sent(self, peer: str) -> SentRow | None:
        """The newest bundle sent to ``peer``."""
        row = self._db.execute(
            "SELECT incarnation, seq, created_ms, size, changes, covers FROM sent "
            "WHERE peer = ? ORDER BY created_ms DESC, seq DESC LIMIT 1",
            (peer,),
        ).fetchone()
        if row is None:
            return None
        return SentRow(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]),
                       decode_vector(row[5]))

    def sent_bundle(self, peer: str, incarnation: int, seq: int) -> SentRow | None:
        """One bundle this site wrote for ``peer``, as the export recorded it."""
        row = self._db.execute(
            "SELECT incarnation, seq, created_ms, size, changes, covers, bodies FROM sent "
            "WHERE peer = ? AND incarnation = ? AND seq = ?",
            (peer, incarnation, seq),
        ).fetchone()
        if row is None:
            return None
        return SentRow(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]),
                       decode_vector(row[5]), int(row[6]))

    def received_bundle(self, site: str, incarnation: int, seq: int) -> tuple[int, int] | None:
        """(created_ms, changes) of a bundle received from ``site``, if it was."""
        row = self._db.execute(
            "SELECT created_ms, changes FROM received WHERE site = ? AND incarnation = ? "
            "AND seq = ?", (site, incarnation, seq),
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def has_received(self, site: str, incarnation: int, seq: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM received WHERE site = ? AND incarnation = ? AND seq = ?",
            (site, incarnation, seq),
        ).fetchone()
        return row is not None

    def record_received(
        self, site: str, incarnation: int, seq: int, *, received_ms: int, created_ms: int,
        changes: int, new_changes: int,
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO received (site, incarnation, seq, received_ms, created_ms, "
            "changes, new_changes) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (site, incarnation, seq, received_ms, created_ms, changes, new_changes),
        )

    def received_from(self, site: str) -> list[ReceivedRow]:
        """The bundles received from ``site``, by incarnation and number."""
        rows = self._db.execute(
            "SELECT incarnation, seq, received_ms, created_ms FROM received WHERE site = ? "
            "ORDER BY incarnation, seq",
            (site,),
        )
        return [ReceivedRow(int(i), int(s), int(r), int(c)) for i, s, r, c in rows]

    # == own stream, forks and held-back mailboxes ====================================
    # (the queries behind restore detection, fork handling and import filters)

    def change_record(self, dot: Dot) -> bytes | None:
        """The logged record of ``dot``, or None if no change is held under it."""
        row = self._db.execute(
            "SELECT record FROM changes WHERE site = ? AND incarnation = ? AND counter = ?",
            (dot.site, dot.incarnation, dot.counter),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def stream_records_above(self, stream: Stream, counter: int) -> list[bytes]:
        """The records of ``stream`` logged above ``counter``, in counter order."""
        rows = self._db.execute(
            "SELECT record FROM changes WHERE site = ? AND incarnation = ? AND counter > ? "
            "ORDER BY counter", (stream.site, stream.incarnation, counter),
        )
        return [bytes(r[0]) for r in rows]

    def forget_stream_above(self, stream: Stream, counter: int) -> None:
        """Drop ``stream``'s changes above ``counter`` from the log (the registers keep
        their effect), so peers holding other versions of those dots send them back."""
        self._db.execute(
            "DELETE FROM changes WHERE site = ? AND incarnation = ? AND counter > ?",
            (stream.site, stream.incarnation, counter))
        self._db.execute(
            "UPDATE streams SET contiguous = MIN(contiguous, ?) WHERE site = ? "
            "AND incarnation = ?", (counter, stream.site, stream.incarnation))

    def site_streams(self, site: str) -> list[tuple[Stream, int]]:
        """Every stream of ``site`` in the log, with its highest counter logged (two
        index seeks per stream, never a walk over the site's changes)."""
        found: list[tuple[Stream, int]] = []
        after = -1
        while True:
            row = self._db.execute(
                "SELECT incarnation FROM changes WHERE site = ? AND incarnation > ? "
                "ORDER BY incarnation LIMIT 1", (site, after)).fetchone()
            if row is None:
                return found
            after = int(row[0])
            stream = Stream(site, after)
            found.append((stream, self.stream_max(stream)))

    def received_created_ms(self, site: str, incarnation: int, seq: int) -> int | None:
        """When the bundle received under this id was written (None: none received)."""
        row = self._db.execute(
            "SELECT created_ms FROM received WHERE site = ? AND incarnation = ? AND seq = ?",
            (site, incarnation, seq)).fetchone()
        return None if row is None else int(row[0])

    def forget_received(self, site: str, incarnation: int, seq: int) -> None:
        """Forget a received bundle id (its origin reused it for another bundle)."""
        self._db.execute("DELETE FROM received WHERE site = ? AND incarnation = ? AND seq = ?",
                        (site, incarnation, seq))

    def bundle_seqs(self, incarnation: int) -> dict[str, int]:
        """The last bundle number reserved for each peer in ``incarnation``."""
        return glance.bundle_seqs(self._db, incarnation)

    def set_held_back(self, mailboxes: dict[str, list[str]]) -> None:
        """Remember which mailboxes a filter held back at the last apply (for status)."""
        value = encode_held_back(mailboxes)
        current = self._meta_text(_HELD_BACK)
        # Unchanged (nearly always): no page written, so the commit syncs nothing.
        if current != value:
            self._set_meta_text(_HELD_BACK, value)

    def held_back(self) -> dict[str, list[str]]:
        """User -> names of the mailboxes a filter held back at the last apply."""
        value = self._meta_text(_HELD_BACK)
        return {} if value is None else decode_held_back(value)

    # -- the export's bulk statements ----------------------------------------------
    # A first export plans and reads a body per message: one statement per stream
    # or per list of bodies, never one per body (tests/state/test_query_plans.py).

    def adds_not_covered(self, ack: VersionVector) -> Iterator[LoggedAdd]:
        """Every logged MessageAdded the vector ``ack`` does not cover, in dot order,
        with whether the instance it adds is alive: one statement per stream (a range
        of the log's primary key, each add joined to its register by primary key)."""
        for stream in self.logged_streams():
            cursor = self._db.execute(
                "SELECT c.counter, c.user, c.mailbox, c.guid, c.body, m.alive, "
                "CASE WHEN c.guid IS NULL THEN c.record END "
                "FROM changes AS c LEFT JOIN messages AS m ON m.user = c.user "
                "AND m.mailbox = c.mailbox AND m.guid = c.guid AND m.body = c.body "
                "WHERE c.site = ? AND c.incarnation = ? AND c.counter > ? "
                "AND c.body IS NOT NULL ORDER BY c.counter",
                (stream.site, stream.incarnation, ack.get_count(stream)),
            )
            for counter, user, mailbox, guid, body, alive, record in cursor:
                yield LoggedAdd(
                    Dot(stream.site, stream.incarnation, counter), user, mailbox, guid, body,
                    None if guid is None else bool(alive),
                    b"" if record is None else bytes(record))

    def bodies_known_to(self, bodies: Iterable[str], ack: VersionVector) -> set[str]:
        """Which of ``bodies`` a change covered by ``ack`` adds (the peer holds them):
        :meth:`body_known_to` for many, a statement per list of bodies."""
        known: set[str] = set()
        if not ack.entries:
            return known  # covers nothing (a first export)
        for marks, chunk in _in_lists(bodies):
            rows = self._db.execute(
                "SELECT body, site, incarnation, counter FROM changes "
                f"WHERE body IN ({marks})", chunk)
            for body, site, incarnation, counter in rows:
                if body not in known and ack.covers(Dot(site, incarnation, counter)):
                    known.add(str(body))
        return known

    def places_of_bodies(self, bodies: Iterable[str], *,
                         limit: int = 8) -> dict[str, list[tuple[str, str, str, int]]]:
        """Body -> (user, folder, key, size) of up to ``limit`` files last seen holding
        it, for each of ``bodies`` some file holds: :meth:`files_with_body` for many."""
        found: dict[str, list[tuple[str, str, str, int]]] = {}
        for marks, chunk in _in_lists(bodies):
            rows = self._db.execute(
                f"SELECT body, user, folder, key, size FROM files WHERE body IN ({marks})",
                chunk)
            for body, user, folder, key, size in rows:
                places = found.setdefault(body, [])
                if len(places) < limit:
                    places.append((user, folder, key, int(size)))
        return found

    # -- the import's bulk statements ----------------------------------------------
    # An import folds and applies thousands of changes; one statement per batch of
    # keys instead of one per key (each a seek on the primary key or an index, see
    # tests/state/test_query_plans.py).

    def load_messages(self, user: str, mailbox: str,
                      guids: Iterable[str]) -> list[tuple[str, str, bytes]]:
        """(guid, body, state) of every message of one mailbox with one of ``guids``."""
        found: list[tuple[str, str, bytes]] = []
        for marks, chunk in _in_lists(guids):
            rows = self._db.execute(
                "SELECT guid, body, state FROM messages WHERE user = ? AND mailbox = ? "
                f"AND guid IN ({marks})", (user, mailbox, *chunk))
            found.extend((str(g), str(b), bytes(s)) for g, b, s in rows)
        return found

    def alive_messages(self, user: str, mailbox: str,
                       guids: Iterable[str]) -> set[tuple[str, str]]:
        """(guid, body) of every live message of one mailbox with one of ``guids``."""
        found: set[tuple[str, str]] = set()
        for marks, chunk in _in_lists(guids):
            rows = self._db.execute(
                "SELECT guid, body FROM messages WHERE user = ? AND mailbox = ? "
                f"AND guid IN ({marks}) AND alive", (user, mailbox, *chunk))
            found.update((str(g), str(b)) for g, b in rows)
        return found

    def files_of_instances(self, user: str, mailbox: str,
                           guids: Iterable[str]) -> list[FileRow]:
        """The files holding a message of one mailbox with one of ``guids`` (any body)."""
        found: list[FileRow] = []
        for marks, chunk in _in_lists(guids):
            rows = self._db.execute(
                f"SELECT {_FILE_COLUMNS} FROM files INDEXED BY files_instance "
                f"WHERE user = ? AND mailbox = ? AND guid IN ({marks})", (user, mailbox, *chunk))
            found.extend(_file_row(r) for r in rows)
        return found

    def taken_keys(self, user: str, folder: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` name a file last seen in the folder."""
        taken: set[str] = set()
        for marks, chunk in _in_lists(keys):
            rows = self._db.execute(
                f"SELECT key FROM files WHERE user = ? AND folder = ? AND key IN ({marks})",
                (user, folder, *chunk))
            taken.update(str(r[0]) for r in rows)
        return taken

    def mark_pending_many(self, instances: Iterable[tuple[str, str, str, str]]) -> None:
        """:meth:`mark_pending` for many: (user, mailbox, guid, body) each."""
        self._db.executemany(
            "INSERT OR IGNORE INTO pending (user, mailbox, guid, body) VALUES (?, ?, ?, ?)",
            instances)

    def add_change_records(
            self, changes: Iterable[tuple[Change, str, str, str | None, bytes | None]]) -> None:
        """:meth:`add_change` for many: (change, user, mailbox, body, record) each."""
        rows = []
        for change, user, mailbox, body, record in changes:
            op = change.op
            kind = change_kind(op)
            assert kind in CHANGE_KINDS
            dot = change.dot
            guid = op.message.guid if isinstance(op, MessageAdded) else None
            rows.append((dot.site, dot.incarnation, dot.counter, user, mailbox, kind, body,
                         record if record is not None else encode_change(change), guid))
        self._db.executemany(
            "INSERT INTO changes (site, incarnation, counter, user, mailbox, kind, body, record, "
            "guid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def spooled_many(self, bodies: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        """Body -> (file, offset, size) of each of ``bodies`` that is spooled."""
        found: dict[str, tuple[str, int, int]] = {}
        for marks, chunk in _in_lists(bodies):
            rows = self._db.execute(
                f"SELECT body, file, offset, size FROM spool WHERE body IN ({marks})", chunk)
            for body, file, offset, size in rows:
                found[str(body)] = (str(file), int(offset), int(size))
        return found

    def put_spooled_many(self, rows: Iterable[tuple[str, str, int, int]]) -> None:
        """Record where many spooled bodies lie: (body, file, offset, size) each; a body
        spooled already keeps its first place."""
        self._db.executemany("INSERT OR IGNORE INTO spool (body, file, offset, size) "
                             "VALUES (?, ?, ?, ?)", rows)


# Longest list of values bound to one ``IN (...)``: far below SQLite's limit on
# variables (999 before 3.32).
_IN_LIST_MAX = 256


def _in_lists(values: Iterable[str]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """``values`` (deduplicated) in chunks, each with its ``?, ?, ...`` marks.

    A chunk is padded (by repeating a value) to a power of two, so that a few
    statement texts serve every length and stay in sqlite3's statement cache.
    """
    unique = sorted(set(values))
    for start in range(0, len(unique), _IN_LIST_MAX):
        chunk = unique[start:start + _IN_LIST_MAX]
        size = 1
        while size < len(chunk):
            size *= 2
        padded = (*chunk, *([chunk[-1]] * (size - len(chunk))))
        yield ", ".join("?" * size), padded
