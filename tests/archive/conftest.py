"""A real Maildir store, a site identity and an archive in a temporary directory."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bundlesync.archive.backup import BackupReport, run_backup
from bundlesync.archive.repository import Archive, create_archive, open_archive
from bundlesync.archive.secrets import Passphrase
from bundlesync.archive.users import UserSelection
from bundlesync.keys import SiteIdentity, generate_identity
from bundlesync.operations.config import MailboxFilter
from bundlesync.stores.base import Store
from bundlesync.stores.maildir import MaildirStore

PASSPHRASE = "correct horse battery staple"
KDF_LOG_N = 14  # the minimum (archive-v1 §4): tests open archives often

_clock = itertools.count(1_800_000_000_000, 3_600_000)


def tick() -> int:
    return next(_clock)


class Backups:
    """A store, a site identity and one archive, with helpers the tests share."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = MaildirStore(str(root / "mail" / "%d" / "%n" / "Maildir"))
        self.identity: SiteIdentity = generate_identity("alpha")
        self.path = root / "archive"
        self.archive: Archive = create_archive(self.path, identity=self.identity,
                                               recovery=[Passphrase(PASSPHRASE)],
                                               kdf_log_n=KDF_LOG_N)

    def backup(self, store: Store | None = None, *, now_ms: int | None = None,
               users: UserSelection | None = None) -> BackupReport:
        self.archive = open_archive(self.path, secret=self.identity)
        return run_backup(self.archive, store or self.store, users=users or UserSelection(),
                          filters=MailboxFilter(), now_ms=now_ms or tick())

    def reader(self) -> Archive:
        return open_archive(self.path, secret=Passphrase(PASSPHRASE))


@pytest.fixture
def backups(tmp_path: Path) -> Backups:
    return Backups(tmp_path)
