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
refused. Every sqlite3 error is translated to :class:`StateError`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bundlesync.core.model import Dot, Stream, VersionVector
from bundlesync.errors import StateError

SCHEMA_VERSION = 3

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
}


def _encode_vector(vector: VersionVector) -> str:
    return ";".join(f"{s.site},{s.incarnation},{n}" for s, n in vector.entries)


def _decode_vector(text: str) -> VersionVector:
    items: dict[Stream, int] = {}
    for part in filter(None, text.split(";")):
        site, incarnation, counter = part.split(",")
        items[Stream(site, int(incarnation))] = int(counter)
    return VersionVector.of(items)


encode_vector = _encode_vector
decode_vector = _decode_vector


_FILE_COLUMNS = "user, folder, key, mailbox, guid, body, flags, size, internal_date"


@dataclass(frozen=True, slots=True)
class FileRow:
    """One message file of the store as last seen."""

    user: str
    folder: str
    key: str
    mailbox: str
    guid: str
    body: str
    flags: str  # flag names joined by " ", sorted
    size: int
    internal_date: int


@dataclass(frozen=True, slots=True)
class PeerRow:
    site_id: str
    name: str
    ack: VersionVector
    heard_ms: int | None
    sent_ms: int | None


class StateIndex:
    """The open state database of one site. Use as a context manager."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        if not create and not path.exists():
            raise StateError(
                f"no state index at {path}",
                hint="Run 'bundlesync init' first, or pass --home to point at the site.",
            )
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"the state index {path} cannot be opened: {exc}",
                hint="If the file is damaged, restore the site's home from a backup.",
            ) from exc
        self.path = path
        self._depth = 0

    # -- lifecycle -----------------------------------------------------------------

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the state index has schema version {version}, newer than this bundlesync "
                f"understands ({SCHEMA_VERSION})",
                hint="Upgrade bundlesync on this site.",
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self.db.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {target}")
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> StateIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of work: committed whole, or rolled back whole.

        Nested use becomes a savepoint of the outer transaction: rolled back alone on
        error, kept or discarded with the outer one (a dry run wraps a whole import in
        one transaction and rolls it back).
        """
        if self.db.in_transaction:
            self._depth += 1
            name = f"sp{self._depth}"
            self.db.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException as exc:
                # SQLite may have rolled the whole transaction back itself (disk
                # full, I/O error): then there is no savepoint left to undo, and the
                # error that says why must not be replaced by "no transaction".
                if self.db.in_transaction:
                    self.db.execute(f"ROLLBACK TO {name}")
                    self.db.execute(f"RELEASE {name}")
                if isinstance(exc, sqlite3.Error):
                    raise self._failed(exc) from exc
                raise
            else:
                self._execute_or_fail(f"RELEASE {name}")
            finally:
                self._depth -= 1
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(f"the state index is busy: {exc}") from exc
        try:
            yield
        except BaseException as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._failed(exc) from exc
            raise
        else:
            self._execute_or_fail("COMMIT")

    def _execute_or_fail(self, sql: str) -> None:
        try:
            self.db.execute(sql)
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
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

    # -- meta ----------------------------------------------------------------------

    def get_meta(self, key: str, default: object = None) -> object:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: object) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- change log ----------------------------------------------------------------

    def has_change(self, dot: Dot) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM changes WHERE site = ? AND incarnation = ? AND counter = ?",
            (dot.site, dot.incarnation, dot.counter),
        ).fetchone()
        return row is not None

    def add_change(
        self, dot: Dot, *, user: str, mailbox: str, kind: str, body: str | None, record: bytes
    ) -> None:
        self.db.execute(
            "INSERT INTO changes (site, incarnation, counter, user, mailbox, kind, body, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (dot.site, dot.incarnation, dot.counter, user, mailbox, kind, body, record),
        )

    def advance_streams(self, streams: Sequence[Stream]) -> None:
        """Recompute the contiguous counter of each stream after new dots arrived."""
        for stream in streams:
            row = self.db.execute(
                "SELECT contiguous FROM streams WHERE site = ? AND incarnation = ?",
                (stream.site, stream.incarnation),
            ).fetchone()
            contiguous = 0 if row is None else int(row[0])
            cursor = self.db.execute(
                "SELECT counter FROM changes WHERE site = ? AND incarnation = ? AND counter > ? "
                "ORDER BY counter",
                (stream.site, stream.incarnation, contiguous),
            )
            for (counter,) in cursor:
                if counter != contiguous + 1:
                    break
                contiguous = counter
            self.db.execute(
                "INSERT INTO streams (site, incarnation, contiguous) VALUES (?, ?, ?) "
                "ON CONFLICT (site, incarnation) DO UPDATE SET contiguous = excluded.contiguous",
                (stream.site, stream.incarnation, contiguous),
            )

    def version_vector(self) -> VersionVector:
        """What this site holds: for each stream, the highest contiguous counter."""
        rows = self.db.execute("SELECT site, incarnation, contiguous FROM streams").fetchall()
        return VersionVector.of({Stream(s, i): n for s, i, n in rows})

    def stream_max(self, stream: Stream) -> int:
        row = self.db.execute(
            "SELECT MAX(counter) FROM changes WHERE site = ? AND incarnation = ?",
            (stream.site, stream.incarnation),
        ).fetchone()
        return int(row[0] or 0)

    def changes_not_covered(self, ack: VersionVector) -> Iterator[tuple[Dot, str | None, bytes]]:
        """Every logged change the vector ``ack`` does not cover, in dot order."""
        self._load_ack(ack)
        cursor = self.db.execute(
            "SELECT c.site, c.incarnation, c.counter, c.body, c.record FROM changes c "
            "LEFT JOIN ackv a ON a.site = c.site AND a.incarnation = c.incarnation "
            "WHERE c.counter > COALESCE(a.counter, 0) "
            "ORDER BY c.site, c.incarnation, c.counter"
        )
        for site, incarnation, counter, body, record in cursor:
            yield Dot(site, incarnation, counter), body, record

    def kinds_not_covered(self, ack: VersionVector) -> Iterator[str]:
        """The kind (operation class name) of each change ``ack`` does not cover."""
        self._load_ack(ack)
        cursor = self.db.execute(
            "SELECT c.kind FROM changes c "
            "LEFT JOIN ackv a ON a.site = c.site AND a.incarnation = c.incarnation "
            "WHERE c.counter > COALESCE(a.counter, 0)"
        )
        for (kind,) in cursor:
            yield kind

    def count_not_covered(self, ack: VersionVector) -> int:
        return sum(1 for _ in self.kinds_not_covered(ack))

    def _load_ack(self, ack: VersionVector) -> None:
        # A temporary table per call: the queries above join the log against it.
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS ackv (site TEXT, incarnation INTEGER,"
                        " counter INTEGER, PRIMARY KEY (site, incarnation))")
        self.db.execute("DELETE FROM ackv")
        self.db.executemany(
            "INSERT INTO ackv VALUES (?, ?, ?)",
            [(s.site, s.incarnation, n) for s, n in ack.entries],
        )

    def body_known_to(self, body: str, ack: VersionVector) -> bool:
        """Whether a change adding this body is covered by ``ack`` (the peer holds it)."""
        for site, incarnation, counter in self.db.execute(
            "SELECT site, incarnation, counter FROM changes WHERE body = ?", (body,)
        ):
            if ack.covers(Dot(site, incarnation, counter)):
                return True
        return False

    # -- registers -----------------------------------------------------------------

    def load_mailbox(self, user: str, guid: str) -> bytes | None:
        row = self.db.execute(
            "SELECT state FROM mailboxes WHERE user = ? AND guid = ?", (user, guid)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def store_mailbox(self, user: str, guid: str, state: bytes) -> None:
        self.db.execute(
            "INSERT INTO mailboxes (user, guid, state) VALUES (?, ?, ?) "
            "ON CONFLICT (user, guid) DO UPDATE SET state = excluded.state",
            (user, guid, state),
        )

    def user_mailboxes(self, user: str) -> list[tuple[str, bytes]]:
        rows = self.db.execute("SELECT guid, state FROM mailboxes WHERE user = ?", (user,))
        return [(g, bytes(s)) for g, s in rows]

    def state_users(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT user FROM mailboxes ORDER BY user")]

    def load_message(self, user: str, mailbox: str, guid: str, body: str) -> bytes | None:
        row = self.db.execute(
            "SELECT state FROM messages WHERE user = ? AND mailbox = ? AND guid = ? AND body = ?",
            (user, mailbox, guid, body),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def store_message(
        self, user: str, mailbox: str, guid: str, body: str, *, alive: bool, state: bytes
    ) -> None:
        self.db.execute(
            "INSERT INTO messages (user, mailbox, guid, body, alive, state) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user, mailbox, guid, body) "
            "DO UPDATE SET alive = excluded.alive, state = excluded.state",
            (user, mailbox, guid, body, int(alive), state),
        )

    def live_mailboxes(self, user: str) -> set[str]:
        rows = self.db.execute(
            "SELECT DISTINCT mailbox FROM messages WHERE user = ? AND alive", (user,)
        )
        return {r[0] for r in rows}

    def live_messages(self, user: str, mailbox: str) -> list[tuple[str, str, bytes]]:
        rows = self.db.execute(
            "SELECT guid, body, state FROM messages WHERE user = ? AND mailbox = ? AND alive",
            (user, mailbox),
        )
        return [(g, b, bytes(s)) for g, b, s in rows]

    # -- the store as last seen ----------------------------------------------------

    def folders(self, user: str) -> list[tuple[str, str, bytes | None, int | None]]:
        rows = self.db.execute(
            "SELECT guid, path, marks, uidvalidity FROM folders WHERE user = ?", (user,)
        )
        return [(g, p, None if m is None else bytes(m), u) for g, p, m, u in rows]

    def folder_users(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT user FROM folders ORDER BY user")]

    def put_folder(
        self, user: str, guid: str, path: str, marks: bytes | None, uidvalidity: int | None
    ) -> None:
        self.db.execute("DELETE FROM folders WHERE user = ? AND path = ? AND guid != ?",
                        (user, path, guid))
        self.db.execute(
            "INSERT INTO folders (user, guid, path, marks, uidvalidity) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (user, guid) DO UPDATE SET path = excluded.path, "
            "marks = excluded.marks, uidvalidity = excluded.uidvalidity",
            (user, guid, path, marks, uidvalidity),
        )

    def drop_folder(self, user: str, guid: str) -> None:
        self.db.execute("DELETE FROM folders WHERE user = ? AND guid = ?", (user, guid))
        self.db.execute("DELETE FROM files WHERE user = ? AND folder = ?", (user, guid))

    def files(self, user: str, folder: str) -> list[FileRow]:
        """Each file last seen in a folder."""
        rows = self.db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE user = ? AND folder = ?", (user, folder)
        )
        return [FileRow(*r) for r in rows]

    def has_file(self, user: str, folder: str, key: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM files WHERE user = ? AND folder = ? AND key = ?", (user, folder, key)
        ).fetchone()
        return row is not None

    def put_file(self, row: FileRow) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.user, row.folder, row.key, row.mailbox, row.guid, row.body, row.flags,
             row.size, row.internal_date),
        )

    def drop_file(self, user: str, folder: str, key: str) -> None:
        self.db.execute(
            "DELETE FROM files WHERE user = ? AND folder = ? AND key = ?", (user, folder, key)
        )

    def files_of_instance(self, user: str, mailbox: str, guid: str, body: str) -> list[FileRow]:
        rows = self.db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files "
            "WHERE user = ? AND mailbox = ? AND guid = ? AND body = ?",
            (user, mailbox, guid, body),
        )
        return [FileRow(*r) for r in rows]

    def files_with_body(self, body: str, *, limit: int = 8) -> list[FileRow]:
        """Some files (of any user) last seen holding this body."""
        rows = self.db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE body = ? LIMIT ?", (body, limit)
        )
        return [FileRow(*r) for r in rows]

    def count_files(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    # -- the import journal --------------------------------------------------------

    def mark_pending(self, user: str, mailbox: str, guid: str, body: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO pending (user, mailbox, guid, body) VALUES (?, ?, ?, ?)",
            (user, mailbox, guid, body),
        )

    def mark_user_pending(self, user: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO pending_users (user) VALUES (?)", (user,))

    def pending_users(self) -> list[str]:
        users = {r[0] for r in self.db.execute("SELECT user FROM pending_users")}
        users |= {r[0] for r in self.db.execute("SELECT DISTINCT user FROM pending")}
        return sorted(users)

    def pending_messages(self, user: str) -> list[tuple[str, str, str]]:
        rows = self.db.execute(
            "SELECT mailbox, guid, body FROM pending WHERE user = ? ORDER BY mailbox, guid, body",
            (user,),
        )
        return list(rows)

    def clear_pending_message(self, user: str, mailbox: str, guid: str, body: str) -> None:
        self.db.execute(
            "DELETE FROM pending WHERE user = ? AND mailbox = ? AND guid = ? AND body = ?",
            (user, mailbox, guid, body),
        )

    def clear_pending_user(self, user: str) -> None:
        self.db.execute("DELETE FROM pending_users WHERE user = ?", (user,))

    def count_pending(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def has_pending(self) -> bool:
        return bool(
            self.db.execute("SELECT 1 FROM pending UNION SELECT 1 FROM pending_users").fetchone()
        )

    # -- the spool -----------------------------------------------------------------

    def spooled(self, body: str) -> tuple[str, int, int] | None:
        row = self.db.execute(
            "SELECT file, offset, size FROM spool WHERE body = ?", (body,)).fetchone()
        return None if row is None else (row[0], int(row[1]), int(row[2]))

    def put_spooled(self, body: str, file: str, offset: int, size: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO spool (body, file, offset, size) "
                        "VALUES (?, ?, ?, ?)", (body, file, offset, size))

    def next_spool_file(self) -> int:
        number = int(str(self.get_meta("spool_files", 0))) + 1
        self.set_meta("spool_files", number)
        return number

    def clear_spooled(self) -> None:
        self.db.execute("DELETE FROM spool")

    # -- bodies asked for ----------------------------------------------------------

    def want(self, body: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO wanted (body) VALUES (?)", (body,))

    def clear_wants(self) -> None:
        self.db.execute("DELETE FROM wanted")

    def wanted(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT body FROM wanted ORDER BY body")]

    def set_peer_wants(self, peer: str, bodies: Sequence[str]) -> None:
        self.db.execute("DELETE FROM peer_wants WHERE peer = ?", (peer,))
        self.db.executemany("INSERT OR IGNORE INTO peer_wants (peer, body) VALUES (?, ?)",
                            [(peer, b) for b in bodies])

    def peer_wants(self, peer: str) -> list[str]:
        rows = self.db.execute("SELECT body FROM peer_wants WHERE peer = ? ORDER BY body",
                               (peer,))
        return [r[0] for r in rows]

    # -- peers and bundles ---------------------------------------------------------

    def peer(self, site_id: str) -> PeerRow | None:
        row = self.db.execute(
            "SELECT site_id, name, ack, heard_ms, sent_ms FROM peers WHERE site_id = ?",
            (site_id,),
        ).fetchone()
        if row is None:
            return None
        return PeerRow(row[0], row[1], _decode_vector(row[2]), row[3], row[4])

    def peers(self) -> list[PeerRow]:
        rows = self.db.execute(
            "SELECT site_id, name, ack, heard_ms, sent_ms FROM peers ORDER BY name"
        ).fetchall()
        return [PeerRow(r[0], r[1], _decode_vector(r[2]), r[3], r[4]) for r in rows]

    def put_peer(self, site_id: str, name: str) -> None:
        self.db.execute(
            "INSERT INTO peers (site_id, name, ack) VALUES (?, ?, '') "
            "ON CONFLICT (site_id) DO UPDATE SET name = excluded.name",
            (site_id, name),
        )

    def remove_peer(self, site_id: str) -> None:
        self.db.execute("DELETE FROM peers WHERE site_id = ?", (site_id,))

    def set_peer_ack(self, site_id: str, ack: VersionVector, *, heard_ms: int) -> None:
        self.db.execute(
            "UPDATE peers SET ack = ?, heard_ms = ? WHERE site_id = ?",
            (_encode_vector(ack), heard_ms, site_id),
        )

    def record_sent(
        self, peer: str, incarnation: int, seq: int, *, created_ms: int, size: int,
        changes: int, bodies: int, covers: VersionVector, names: Sequence[str],
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO sent (peer, incarnation, seq, created_ms, size, changes, "
            "bodies, covers, names) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (peer, incarnation, seq, created_ms, size, changes, bodies,
             _encode_vector(covers), "\n".join(names)),
        )
        self.db.execute("UPDATE peers SET sent_ms = ? WHERE site_id = ?", (created_ms, peer))

    def last_sent(self, peer: str) -> tuple[int, int, int, int, int] | None:
        """(incarnation, seq, created_ms, size, changes) of the newest bundle sent to ``peer``."""
        row = self.db.execute(
            "SELECT incarnation, seq, created_ms, size, changes FROM sent WHERE peer = ? "
            "ORDER BY created_ms DESC, seq DESC LIMIT 1",
            (peer,),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3], row[4])

    def has_received(self, site: str, incarnation: int, seq: int) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM received WHERE site = ? AND incarnation = ? AND seq = ?",
            (site, incarnation, seq),
        ).fetchone()
        return row is not None

    def record_received(
        self, site: str, incarnation: int, seq: int, *, received_ms: int, created_ms: int,
        changes: int, new_changes: int,
    ) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO received (site, incarnation, seq, received_ms, created_ms, "
            "changes, new_changes) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (site, incarnation, seq, received_ms, created_ms, changes, new_changes),
        )

    def received_from(self, site: str) -> list[tuple[int, int, int, int]]:
        """(incarnation, seq, received_ms, created_ms) of bundles received from ``site``."""
        rows = self.db.execute(
            "SELECT incarnation, seq, received_ms, created_ms FROM received WHERE site = ? "
            "ORDER BY incarnation, seq",
            (site,),
        )
        return list(rows)
