"""Reader processes for a large backup: new messages read and hashed on every core.

A first backup's per-message work in Python (look the file up, stat it, read it,
hash it) holds the interpreter lock, so threads leave one core to it. Here each of
a few worker processes reads the messages of the batches it is given and
returns each message's bytes, SHA-256 and date; the backup process keeps every
archive-wide step (the body index, packs, listings, the snapshot) and takes the
results in the order it asked for them, so the archive written is the one a
single process writes.

A worker is ``python -m bundlesync.archive.workers TEMPLATE``: requests on its
standard input, results on its standard output, each a frame (a 4-byte big-endian
length, then CBOR; an answer's frame is followed by the mail it lists). It writes
nothing to the store or the archive, takes no lock and ends when its input ends,
so a backup killed at any point leaves nothing of it behind but its exit. A worker
that dies or answers nonsense is not trusted again: what it owed is read in the
backup process itself.

Request: ``[user, folder path, [key, ...], ahead]``. ``ahead``: the user is new to the
archive, so all its mail is about to be read: the worker asks the kernel to read the
user's files ahead (once per user, in a thread of its own), for a worker reads one
file at a time, and a store out of the page cache then keeps the disk busy.

Answer: one or more frames ``[final, [[key, sha256, date, size], ...], error]``, each
followed by the bytes of its messages, one after the other (a frame's CBOR never
copies the mail): a frame is cut after about ``FRAME_BYTES`` of mail (memory); a
message gone meanwhile is left out, as the in-process reader leaves it out; ``error``
is null or ``["store", message, hint]`` or ``["os", errno, strerror, filename]``, the
error that stopped the batch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import cbor2

from bundlesync.errors import BundlesyncError, StoreError
from bundlesync.stores.base import FolderPath
from bundlesync.stores.maildir import MaildirStore

ReadMessage = tuple[str, bytes, int, bytes]  # key, bytes, internal date, SHA-256
_LENGTH = struct.Struct(">I")
# Keys a request names: small enough that the two workers take turns often (the
# backup process consumes results in order), large enough that a frame's overhead
# is spread over many messages.
BATCH_KEYS = 32
# Requests in flight per worker: the next one is queued while it reads this one.
DEPTH = 2
FRAME_BYTES = 512 * 1024
# Two frames of about FRAME_BYTES then fit in the pipe: the worker goes on with its
# next request while the backup process is still busy with the previous one. 1 MiB
# is the most Linux gives a process without CAP_SYS_RESOURCE (pipe-max-size).
PIPE_BYTES = 1024 * 1024
NO_LIMIT = 1 << 62
# A bound on what an answer may announce: a message larger than this is read in the
# backup process (the worker is then taken for failed).
MAX_FRAME = 256 * 1024 * 1024


class WorkerFailed(Exception):
    """A worker process ended or answered something that is not a frame."""


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            raise WorkerFailed("the worker's output ended")
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _read_frame(stream: IO[bytes]) -> object:
    (length,) = _LENGTH.unpack(_read_exact(stream, _LENGTH.size))
    if length > MAX_FRAME:
        raise WorkerFailed("the worker announced an impossible frame")
    try:
        return cbor2.loads(_read_exact(stream, length))
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError):
        raise WorkerFailed("the worker wrote invalid CBOR") from None


def _write_frame(stream: IO[bytes], value: object, bodies: Sequence[bytes] = ()) -> None:
    head = cbor2.dumps(value)
    stream.write(_LENGTH.pack(len(head)) + head)
    # Each body as it is, after the head: no copy of the mail is made to frame it.
    for body in bodies:
        stream.write(body)
    stream.flush()


def _grow_pipe(fd: int) -> None:
    # Linux only, and only a hint: a smaller pipe makes the worker wait sooner.
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


# --- the worker side ------------------------------------------------------------------


def read_messages(store: MaildirStore, user: str, path: FolderPath, keys: list[str]
                  ) -> Iterator[ReadMessage]:
    """The messages of ``keys`` still in the folder as a backup stores them (one look at
    the folder, one open per file); the ones gone meanwhile are left out."""
    for stored, data in store.read_messages(user, path, keys, max_size=NO_LIMIT):
        assert data is not None  # no message is above NO_LIMIT
        yield stored.key, data, stored.internal_date, hashlib.sha256(data).digest()


class _ReadAhead:
    """One thread asking the store to read whole users ahead, in the order asked."""

    def __init__(self, store: MaildirStore) -> None:
        self.store = store
        self.users: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.asked: set[str] = set()
        self.thread: threading.Thread | None = None

    def ask(self, user: str) -> None:
        if user in self.asked:
            return
        self.asked.add(user)
        self.users.put(user)
        if self.thread is None:
            # A daemon: a hint never keeps the worker from ending with its input.
            self.thread = threading.Thread(target=self._run, name="ahead", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            self.store.prefetch(self.users.get())  # never fails (a hint)


def _serve(store: MaildirStore, source: IO[bytes], sink: IO[bytes]) -> None:
    ahead = _ReadAhead(store)
    while True:
        try:
            request = _read_frame(source)
        except WorkerFailed:
            return  # the backup closed our input (done) or died: nothing to clean up
        if not (isinstance(request, list) and len(request) == 4
                and isinstance(request[0], str) and isinstance(request[1], list)
                and isinstance(request[2], list)):
            return  # not from a backup process: serve nothing
        user: str = request[0]
        path: FolderPath = tuple(str(part) for part in request[1])
        keys: list[str] = [str(key) for key in request[2]]
        if request[3] is True:
            ahead.ask(user)
        items: list[list[object]] = []
        bodies: list[bytes] = []
        size = 0
        error: list[object] | None = None
        try:
            for key, data, date, digest in read_messages(store, user, path, keys):
                items.append([key, digest, date, len(data)])
                bodies.append(data)
                size += len(data)
                if size >= FRAME_BYTES:
                    _write_frame(sink, [False, items, None], bodies)
                    items, bodies, size = [], [], 0
        except BundlesyncError as exc:
            error = ["store", exc.message, exc.hint]
        except OSError as exc:
            error = ["os", exc.errno or 0, exc.strerror or str(exc), str(exc.filename or "")]
        _write_frame(sink, [True, items, error], bodies)


def main(argv: list[str]) -> int:
    """Serve read requests for the store ``argv[0]`` (a location template)."""
    # Ctrl-C on a terminal reaches the whole process group: the backup process
    # handles it and closes our input, which ends us quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    store = MaildirStore(argv[0], fsync=False)
    with contextlib.suppress(BrokenPipeError):  # the backup process is gone
        _serve(store, sys.stdin.buffer, sys.stdout.buffer)
    return 0


# --- the backup side ------------------------------------------------------------------


class _Worker:
    def __init__(self, template: str) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        # The worker imports this very package, wherever it was imported from here.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bundlesync.archive.workers", template],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        _grow_pipe(self.stdout.fileno())

    def ask(self, user: str, path: FolderPath, keys: list[str], *, ahead: bool) -> None:
        try:
            _write_frame(self.stdin, [user, list(path), keys, ahead])
        except OSError:
            raise WorkerFailed("the worker's input is closed") from None

    def frame(self) -> tuple[bool, list[ReadMessage], object]:
        """The next frame of the oldest request: (final, messages, error)."""
        frame = _read_frame(self.stdout)
        if not (isinstance(frame, list) and len(frame) == 3 and isinstance(frame[1], list)):
            raise WorkerFailed("the worker wrote a malformed frame")
        final, items, error = frame
        messages: list[ReadMessage] = []
        for item in items:
            if not (isinstance(item, list) and len(item) == 4
                    and isinstance(item[0], str) and isinstance(item[1], bytes)
                    and isinstance(item[2], int) and isinstance(item[3], int)
                    and 0 <= item[3] <= MAX_FRAME):
                raise WorkerFailed("the worker wrote a malformed message")
            key, digest, date, size = item
            messages.append((key, _read_exact(self.stdout, size), date, digest))
        return bool(final), messages, error

    def skip(self) -> None:
        """Read and drop the rest of the oldest request's answer."""
        while not self.frame()[0]:
            pass

    def close(self, *, kill: bool = False) -> None:
        # Our end of its output first: a worker still writing an answer no one will
        # read (the backup was interrupted) gets EPIPE and ends instead of waiting.
        with contextlib.suppress(OSError):
            self.stdout.close()
        with contextlib.suppress(OSError):
            self.stdin.close()  # the end of its input: an idle worker ends
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _raise(error: object) -> None:
    if isinstance(error, list) and len(error) == 3 and error[0] == "store":
        raise StoreError(str(error[1]), hint=str(error[2]))
    if isinstance(error, list) and len(error) == 4 and error[0] == "os":
        raise OSError(int(error[1]), str(error[2]), str(error[3]) or None)
    raise WorkerFailed("the worker reported an unknown error")


class ReadWorkers:
    """``jobs`` worker processes reading a folder's new messages, a batch each in turn.

    :meth:`read` yields what a reader in this process would, in the same order: the
    batches go to the workers in turn and come back in the order they were asked.
    """

    def __init__(self, store: MaildirStore, jobs: int) -> None:
        self.store = store
        self.jobs = jobs
        self.workers: list[_Worker] = []
        # Set when a worker fails: every read from then on is done in this process.
        self.broken = False

    def _start(self) -> list[_Worker]:
        if not self.workers and not self.broken:
            try:
                for _ in range(self.jobs):
                    self.workers.append(_Worker(self.store.location.template))
            except OSError:  # no interpreter to run, no processes left: read here
                self._fail()
        return self.workers

    def read(self, user: str, path: FolderPath, keys: list[str], *, ahead: bool = False
             ) -> Iterator[ReadMessage]:
        """The messages of ``keys`` that still exist: key, bytes, date, SHA-256.
        ``ahead``: the user is new to the archive (its files are read ahead)."""
        workers = self._start()
        batches = [keys[i:i + BATCH_KEYS] for i in range(0, len(keys), BATCH_KEYS)]
        if not workers:
            yield from self._read_here(user, path, [k for b in batches for k in b])
            return
        # Requests asked and not yet answered, oldest first; the one being answered.
        pending: deque[tuple[_Worker, list[str]]] = deque()
        current: tuple[_Worker, list[str]] | None = None
        batch: list[str] = []
        asked = done = 0  # done: keys of the current request already answered
        try:
            while asked < len(batches) or pending:
                while asked < len(batches) and len(pending) < DEPTH * len(workers):
                    worker = workers[asked % len(workers)]
                    # The first worker alone reads a new user ahead: once is enough.
                    worker.ask(user, path, batches[asked],
                               ahead=ahead and worker is workers[0])
                    pending.append((worker, batches[asked]))
                    asked += 1
                current = pending.popleft()
                worker, batch = current
                while current is not None:
                    final, items, error = worker.frame()
                    if final:
                        current = None
                    for message in items:
                        try:
                            done = batch.index(message[0], done) + 1
                        except ValueError:
                            raise WorkerFailed("the worker answered a key not asked") from None
                        yield message
                    if error is not None:
                        _raise(error)
                batch, done = [], 0
        except WorkerFailed:
            # Whatever was owed is read here: the rest of the request being answered,
            # the requests asked after it, then those not asked yet.
            owed = batch[done:] + [k for _w, b in pending for k in b]
            owed += [k for b in batches[asked:] for k in b]
            current = None
            pending.clear()
            self._fail()
            yield from self._read_here(user, path, owed)
        finally:
            # Stopped early (this user failed, or the backup did): what the workers
            # still owe is read and dropped, so the next request's answers come first.
            owing = ([current] if current is not None else []) + list(pending)
            for worker, _batch in owing:
                if self.broken:
                    break
                try:
                    worker.skip()
                except (WorkerFailed, OSError, ValueError):  # ValueError: closed meanwhile
                    self._fail()

    def _read_here(self, user: str, path: FolderPath, keys: list[str]
                   ) -> Iterator[ReadMessage]:
        yield from read_messages(self.store, user, path, keys)

    def _fail(self) -> None:
        self.broken = True
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.close(kill=True)

    def close(self) -> None:
        """End the workers (their input closes; each exits when it has read that)."""
        self.broken = True  # a reader still open drains nothing more
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
