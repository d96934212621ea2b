"""A site: its home directory, configuration, keys, peers, state index and store.

``open_site`` is how every operation starts: it takes the site lock (two runs on
one site exclude each other), reads the configuration, loads the keys and opens
the state index. ``init_site`` creates all of that the first time.

Home layout::

    <home>/bundlesync.toml     configuration (operations.config)
    <home>/keys/               this site's identity (bundlesync.keys), 0600 files
    <home>/peers/              trusted peers' key cards (bundlesync.keys.TrustStore)
    <home>/state.sqlite        the state index (bundlesync.state.index)
    <home>/spool/              bodies received and not yet delivered, by SHA-256
    <home>/lock                held (flock) while a run works on the site
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundlesync.core.hlc import HybridClock
from bundlesync.core.model import Change, Dot, Operation, Stream, Timestamp
from bundlesync.core.vv import reemit
from bundlesync.errors import ConfigError, LockHeld, StoreError
from bundlesync.keys import SiteIdentity, TrustStore, load_identity, site_paths
from bundlesync.operations.config import CONFIG_NAME, SiteConfig, read_config
from bundlesync.state.index import StateIndex
from bundlesync.stores.base import Store
from bundlesync.stores.maildir import MaildirStore

STATE_NAME = "state.sqlite"


@contextlib.contextmanager
def site_lock(home: Path) -> Iterator[None]:
    """Hold the site's lock for the duration; refuse at once if another run holds it."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise LockHeld(
                f"another bundlesync run (process {holder}) is working on the site at {home}",
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def resolve_home(home: Path | None) -> Path:
    return site_paths(home).home


@dataclass
class Site:
    """Everything an operation needs about this site, opened under the lock."""

    home: Path
    config: SiteConfig
    identity: SiteIdentity
    trust: TrustStore
    index: StateIndex
    store: Store
    clock: HybridClock

    @property
    def site_id(self) -> str:
        return self.identity.site_id

    @property
    def spool(self) -> Path:
        return self.home / "spool"

    @property
    def stream(self) -> Stream:
        return Stream(self.site_id, self.index.incarnation())

    def new_change(self, op: Operation, *, now_ms: int, ts: Timestamp | None = None) -> Change:
        """Give a local operation its dot and timestamp (inside the caller's transaction)."""
        stream = self.stream
        counter = self.index.next_counter()
        stamp = ts if ts is not None else self.clock.tick(now_ms)
        self.save_clock()
        return Change(Dot(stream.site, stream.incarnation, counter), stamp, op)

    def reissue(self, changes: Sequence[Change]) -> list[Change]:
        """The same changes under the next dots of this site's stream (core ``reemit``)."""
        stream = self.stream
        again = reemit(changes, stream, self.index.last_counter() + 1)
        self.index.spend_counters(len(again))
        return again

    def move_to(self, stream: Stream) -> None:
        """Continue under a new incarnation: counters start again at 1."""
        self.index.start_incarnation(stream.incarnation)

    def save_clock(self) -> None:
        last = self.clock.last
        if last is not None:
            self.index.save_clock(last.wall_ms, last.counter)


def open_store(location: str) -> Store:
    return MaildirStore(location)


def open_site(home: Path | None, *, store: Store | None = None) -> Site:
    """Open an initialised site (the caller holds :func:`site_lock`)."""
    paths = site_paths(home)
    config = read_config(paths.home / CONFIG_NAME)
    identity = load_identity(paths.keys)
    trust = TrustStore(paths.peers)
    index = StateIndex(paths.home / STATE_NAME)
    saved = index.clock()
    last = None if saved is None else Timestamp(saved[0], saved[1], identity.site_id)
    clock = HybridClock(identity.site_id, last)
    try:
        the_store = store if store is not None else open_store(config.store)
    except OSError as exc:  # pragma: no cover - the adapter translates its own errors
        raise StoreError(f"the store {config.store} cannot be opened: {exc}") from exc
    return Site(paths.home, config, identity, trust, index, the_store, clock)


def require_uninitialised(home: Path) -> None:
    if (home / CONFIG_NAME).exists():
        raise ConfigError(
            f"a site is already set up in {home}",
            hint="Use another --home, or remove that directory to start over.",
        )
