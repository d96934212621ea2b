"""Properties of the archive over random histories of real Maildir changes.

* The snapshot taken at time t holds exactly the store as it was at t.
* forget and prune never change what a kept snapshot holds.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundlesync.archive.backup import run_backup
from bundlesync.archive.cache import cache_path
from bundlesync.archive.check import check_archive
from bundlesync.archive.policy import Policy
from bundlesync.archive.prune import forget, plan_forget, prune
from bundlesync.archive.repository import create_archive, open_archive
from bundlesync.archive.users import UserSelection
from bundlesync.keys import generate_identity
from bundlesync.operations.config import MailboxFilter
from bundlesync.state.archive_cache import ArchiveCacheDb
from bundlesync.stores.base import INBOX
from bundlesync.stores.maildir import MaildirStore
from tests.archive.views import View, snapshot_view, store_view

USERS = ("a@x.org", "b@x.org")
FOLDERS = (INBOX, ("Sent",), ("Archive", "2024"))
FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "$Label1", "Work")
BODIES = tuple(
    f"From: s{i}@x.org\r\nSubject: m{i % 3}\r\n\r\n{'body ' * (i + 1)}\r\n".encode()
    for i in range(6))

step = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 1), st.integers(0, 2), st.integers(0, 5)),
    st.tuples(st.just("flags"), st.integers(0, 1), st.integers(0, 2), st.integers(0, 99),
              st.frozensets(st.sampled_from(FLAGS))),
    st.tuples(st.just("expunge"), st.integers(0, 1), st.integers(0, 2), st.integers(0, 99)),
    st.tuples(st.just("move"), st.integers(0, 1), st.integers(0, 2), st.integers(0, 99),
              st.integers(0, 2)),
    st.tuples(st.just("backup")),
)
policy = st.builds(Policy, last=st.integers(0, 3), hourly=st.integers(0, 2),
                   daily=st.integers(0, 2)).filter(lambda p: not p.empty)

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


class History:
    def __init__(self, root: Path) -> None:
        self.store = MaildirStore(str(root / "mail" / "%d" / "%n" / "Maildir"), fsync=False)
        for user in USERS:
            self.store.ensure_user(user)
            for folder in FOLDERS[1:]:
                self.store.create_folder(user, folder, guid=None, uidvalidity=None)
        self.identity = generate_identity("alpha")
        self.path = root / "archive"
        self.cache = root / "cache"
        create_archive(self.path, identity=self.identity, recovery=[])
        self.clock = itertools.count(1_800_000_000_000, 1_800_000)  # every half hour
        self.keys = itertools.count(1)
        self.expected: dict[str, View] = {}

    def apply(self, op: tuple[object, ...]) -> None:
        store = self.store
        if op[0] == "backup":
            archive = open_archive(self.path, secret=self.identity)
            # The local cache persists across the history, as in the site's home.
            report = run_backup(archive, store, users=UserSelection(), filters=MailboxFilter(),
                                now_ms=next(self.clock), cache_dir=self.cache,
                                cache_rows=ArchiveCacheDb.open(cache_path(self.cache, archive)))
            self.expected[report.snapshot] = store_view(store)
            return
        user, folder = USERS[int(op[1])], FOLDERS[int(op[2])]  # type: ignore[call-overload]
        present = store.messages(user, folder)
        if op[0] == "add":
            store.add_message(user, folder, key=f"17000000{next(self.keys):02}.M1P1.test",
                              data=BODIES[int(op[3])], flags=frozenset(),  # type: ignore[call-overload]
                              internal_date=1_700_000_000 + int(op[3]))  # type: ignore[call-overload]
            return
        if not present:
            return
        message = present[int(op[3]) % len(present)]  # type: ignore[call-overload]
        if op[0] == "flags":
            store.set_flags(user, folder, message.key, op[4])  # type: ignore[arg-type]
        elif op[0] == "expunge":
            store.expunge(user, folder, message.key)
        elif op[0] == "move":
            target = FOLDERS[int(op[4])]  # type: ignore[call-overload]
            if target != folder:
                data = store.read_body(user, folder, message.key)
                store.add_message(user, target, key=message.key, data=data,
                                  flags=message.flags, internal_date=message.internal_date)
                store.expunge(user, folder, message.key)


@PROPERTY
@given(steps=st.lists(step, max_size=14), keep=policy)
def test_snapshots_hold_the_store_as_it_was_and_forget_prune_keep_them(
        steps: list[tuple[object, ...]], keep: Policy) -> None:
    root = Path(tempfile.mkdtemp(prefix="archive-prop-"))
    try:
        history = History(root)
        for op in [*steps, ("backup",)]:
            history.apply(op)
        archive = open_archive(history.path, secret=history.identity)
        for snap_id, expected in history.expected.items():
            assert snapshot_view(archive, snap_id) == expected
        removed = set(forget(archive, plan_forget(archive, keep)))
        prune(archive)
        after = open_archive(history.path, secret=history.identity)
        kept = {s.id for s in after.snapshots()}
        assert kept == set(history.expected) - removed
        for snap_id in kept:
            assert snapshot_view(after, snap_id) == history.expected[snap_id]
        report = check_archive(after, read_data=True)
        assert report.ok, report.problems
        assert not report.notes
        # After prune the cache mirrors index files that are gone: every body prune
        # reclaimed must be stored again when it comes back, never assumed present.
        for number in range(len(BODIES)):
            history.apply(("add", 0, 0, number))
        history.apply(("backup",))
        final = open_archive(history.path, secret=history.identity)
        newest = final.snapshots()[-1].id
        assert snapshot_view(final, newest) == history.expected[newest]
        assert check_archive(final, read_data=True).ok
    finally:
        shutil.rmtree(root, ignore_errors=True)
