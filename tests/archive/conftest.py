"""A real Maildir store, a site identity and an archive in a temporary directory."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import subprocess
import sys
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


class CliBackups:
    """A real site (init), its Maildir store and the bundlesync command line."""

    def __init__(self, root: Path) -> None:
        from bundlesync.operations.setup import init_site
        from bundlesync.operations.site import site_lock

        self.root = root
        (root / "mail").mkdir()
        self.location = str(root / "mail" / "%d" / "%n" / "Maildir")
        self.store = MaildirStore(self.location)
        self.home = root / "home"
        with site_lock(self.home):
            init_site(self.home, name="alpha", store_location=self.location, now_ms=tick())
        self.archive = root / "archive"

    def run(self, *args: str, crash: str | None = None, passphrase: str | None = PASSPHRASE,
            home: bool = True) -> subprocess.CompletedProcess[str]:
        """The command line, in a child process only when it must die at a crash point."""
        env = {"BUNDLESYNC_HOME": str(self.home if home else self.root / "nowhere")}
        if passphrase is not None:
            env["BUNDLESYNC_PASSPHRASE"] = passphrase
        if crash is None:
            return _in_process(list(args), env)
        full = dict(os.environ)
        full.pop("BUNDLESYNC_PASSPHRASE", None)
        full.update(env, BUNDLESYNC_CRASH_AT=crash)
        return subprocess.run([sys.executable, "-m", "bundlesync", *args], env=full,
                              capture_output=True, text=True, timeout=120, check=False)

    def backup(self, *args: str, crash: str | None = None
               ) -> subprocess.CompletedProcess[str]:
        return self.run("backup", str(self.archive), "--kdf-log-n", str(KDF_LOG_N), *args,
                        crash=crash)

    def reader(self) -> Archive:
        return open_archive(self.archive, secret=Passphrase(PASSPHRASE))


def _in_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from bundlesync.cli import main

    saved = {k: os.environ.get(k) for k in (*env, "BUNDLESYNC_PASSPHRASE")}
    os.environ.pop("BUNDLESYNC_PASSPHRASE", None)
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(tmp_path: Path) -> CliBackups:
    return CliBackups(tmp_path)
