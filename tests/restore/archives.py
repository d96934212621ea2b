"""Real archives for the end-to-end tests: create one, back a store up into it, run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bundlesync.archive.backup import run_backup
from bundlesync.archive.repository import create_archive, open_archive
from bundlesync.archive.secrets import Passphrase
from bundlesync.archive.users import UserSelection
from bundlesync.keys import SiteIdentity, generate_identity
from bundlesync.operations.config import MailboxFilter
from bundlesync.stores.base import Store

PASSPHRASE = "correct horse battery staple"
KDF_LOG_N = 14  # the smallest the format allows: tests open archives often


class TestArchive:
    """One archive on disk, opened with the site key to write and the passphrase to read."""

    __test__ = False  # not a pytest class

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity: SiteIdentity = generate_identity("alpha")
        create_archive(path, identity=self.identity, recovery=[Passphrase(PASSPHRASE)],
                       kdf_log_n=KDF_LOG_N)

    def backup(self, store: Store, *, now_ms: int) -> str:
        archive = open_archive(self.path, secret=self.identity)
        report = run_backup(archive, store, users=UserSelection(), filters=MailboxFilter(),
                            now_ms=now_ms)
        assert not report.failed, report.failed
        assert report.snapshot is not None
        return report.snapshot


def run_cli(*args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    """``bundlesync ARGS`` in a child process, the archive opened with the passphrase."""
    env = dict(os.environ)
    env.pop("BUNDLESYNC_CRASH_AT", None)
    env["BUNDLESYNC_PASSPHRASE"] = PASSPHRASE
    if crash is not None:
        env["BUNDLESYNC_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "bundlesync", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
