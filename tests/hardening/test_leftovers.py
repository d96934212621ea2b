"""What a run killed with SIGKILL leaves behind is cleaned by the next run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bundlesync.operations.demo import USERS
from bundlesync.stores.maildir import TMP_STALE_S, MaildirStore
from tests.operations.conftest import Sites

ALICE, _BOB = USERS
HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_exports_temporary_file_in_the_drop_is_removed(sites: Sites) -> None:
    sites.add("alpha")
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.deliver("alpha", ALICE, ("INBOX",), 1)
    sites.export("alpha")
    [bundle] = [p.name for p in sites.drop.iterdir() if p.name.startswith("alpha_")]
    stem = bundle.removesuffix(".bsb").replace("-000001", "-000002")
    ours = sites.drop / f".{stem}.1.deadbeef.tmp"
    ours.write_bytes(b"\0" * 100_000)
    theirs = sites.drop / ".bravo_12345678_1-000001_to_x.1.cafe.tmp"
    theirs.write_bytes(b"\0")
    sites.deliver("alpha", ALICE, ("INBOX",), 2)
    sites.export("alpha")
    assert not ours.exists()
    assert theirs.exists()  # another site's write may be under way


def test_maildir_tmp_leftovers_are_removed_as_dovecot_does(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"), fsync=False)
    store.ensure_user("")
    tmp = tmp_path / "Maildir" / "tmp"
    pid = dead_pid()
    dead = [tmp / f"1700000000.M{n}P{pid}Q{n}.{HOST}" for n in range(155)]
    for path in dead:
        path.write_bytes(b"half a message")
    alive = tmp / f"1700000000.M1P{os.getpid()}Q999.{HOST}"
    other_host = tmp / f"1700000000.M1P{pid}Q1.elsewhere"
    fresh = tmp / "1700000000.delivering-now"
    stale = tmp / "1600000000.left-by-dovecot"
    for path in (alive, other_host, fresh, stale):
        path.write_bytes(b"x")
    old = time.time() - TMP_STALE_S - 60
    os.utime(stale, (old, old))
    staged = tmp / f".bundlesync-creating.1700000000.M1P{pid}Q7.{HOST}"
    (staged / "cur").mkdir(parents=True)

    # The 36-hour rule looks at ctime too, which a test cannot set back: "stale"
    # (only its atime and mtime are old) stays, as a file being written would.
    removed = MaildirStore(str(tmp_path / "Maildir"), fsync=False).clean_tmp(
        str(tmp_path / "Maildir"))
    assert removed == 156
    assert sorted(p.name for p in tmp.iterdir()) == sorted(
        p.name for p in (alive, other_host, fresh, stale))


def test_a_dead_runs_dotlocks_are_broken_at_once(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"), fsync=False, lock_timeout=30)
    store.ensure_user("")
    root = tmp_path / "Maildir"
    (root / "dovecot-uidlist.lock").write_text(f"{dead_pid()}:{HOST}")
    # A replace lock holds the new file's content, not "pid:host".
    (root / "dovecot-keywords.lock").write_text("0 Half\n1 Written\n")
    started = time.monotonic()
    stored = store.add_message("", ("INBOX",), key="k1", data=b"Subject: x\r\n\r\n",
                               flags=frozenset({"Work"}), internal_date=0)
    assert time.monotonic() - started < 5
    assert stored.flags == frozenset({"Work"})
    assert not (root / "dovecot-uidlist.lock").exists()
    assert not (root / "dovecot-keywords.lock").exists()
