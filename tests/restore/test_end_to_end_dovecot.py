"""backup -> restore through the command line, with real Dovecot as the oracle.

The store is written by Dovecot, backed up into a real archive, and brought back
with ``bundlesync restore``: ``--into`` gives back what doveadm saw at backup time
(GUIDs, UIDs, UIDVALIDITY, flags); ``--beside`` brings back only the expunged mail;
a restore killed with SIGKILL part-way and run again ends with no duplicate and
nothing lost.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.archive.repository import open_archive
from bundlesync.archive.restore_plan import snapshot_date
from bundlesync.archive.secrets import Passphrase
from bundlesync.operations.failpoints import CRASH_EXIT
from bundlesync.stores.maildir import MaildirStore
from tests.dovecot import Dovecot
from tests.restore.archives import PASSPHRASE, TestArchive, run_cli
from tests.restore.live import MAILBOXES, build_live, fetch_state, mail, mailbox_state
from tests.restore.source import day_ms

pytestmark = pytest.mark.dovecot

BACKUP_MS = day_ms("2026-11-03")
DATE = "2026-11-03"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with Dovecot.session() as session:
        yield session


def backed_up(dovecot: Dovecot) -> tuple[Path, TestArchive]:
    live = dovecot.path("live", "Maildir")
    build_live(dovecot, live)
    archive = TestArchive(dovecot.workdir / "archive")
    fetch_state(dovecot, live)  # let Dovecot number everything before the backup
    archive.backup(MaildirStore(str(live)), now_ms=BACKUP_MS)
    return live, archive


def test_backup_then_restore_into_gives_back_what_dovecot_saw(dovecot: Dovecot) -> None:
    live, archive = backed_up(dovecot)
    before = fetch_state(dovecot, live)
    before_boxes = {name: mailbox_state(dovecot, live, name) for name in MAILBOXES}
    target = dovecot.path("restored", "Maildir")

    dry = run_cli("restore", str(archive.path), "--at", DATE, "--into", str(target),
                  "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would restore 9 messages" in dry.stdout
    assert not target.exists()

    done = run_cli("restore", str(archive.path), "--at", DATE, "--into", str(target))
    assert done.returncode == 0, done.stderr
    assert fetch_state(dovecot, target) == before
    assert {name: mailbox_state(dovecot, target, name) for name in MAILBOXES} == before_boxes

    # A store that holds other mail is refused, and left as it was.
    other = dovecot.path("other", "Maildir")
    dovecot.save(other, "INBOX", mail(77))
    refused = run_cli("restore", str(archive.path), "--at", DATE, "--into", str(other))
    assert refused.returncode == 2
    assert "not empty" in refused.stderr and "--beside" in refused.stderr
    assert len(fetch_state(dovecot, other)) == 1


def test_backup_then_restore_beside_after_expunges_and_new_mail(dovecot: Dovecot) -> None:
    live, archive = backed_up(dovecot)
    reader = open_archive(archive.path, secret=Passphrase(PASSPHRASE))
    assert [snapshot_date(info) for info in reader.snapshots()] == [DATE]
    lost = {row["guid"] for row in dovecot.fetch(live, "guid", "mailbox", "INBOX", "uid", "1:2")}
    dovecot.expunge(live, "INBOX", "uid", "1:2")
    dovecot.save(live, "INBOX", mail(60))
    live_now = fetch_state(dovecot, live)

    dry = run_cli("restore", str(archive.path), "--at", DATE, "--beside", "--store",
                  str(live), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"INBOX -> Restored/{DATE}/INBOX: would restore 2 messages" in dry.stdout
    assert fetch_state(dovecot, live) == live_now

    done = run_cli("restore", str(archive.path), "--at", DATE, "--beside", "--store",
                   str(live), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["restored"] == 2
    after = fetch_state(dovecot, live)
    assert {guid for box, _, guid, _ in after if box == f"Restored.{DATE}.INBOX"} == lost
    assert [row for row in after if not row[0].startswith("Restored.")] == live_now

    again = run_cli("restore", str(archive.path), "--at", DATE, "--beside", "--store", str(live))
    assert again.returncode == 0, again.stderr
    assert "restored 0 messages" in again.stdout
    assert fetch_state(dovecot, live) == after


@pytest.mark.slow
@pytest.mark.parametrize("crash", ["restore:6", "restore-folder:2"])
def test_a_restore_killed_part_way_finishes_on_the_next_run(
    dovecot: Dovecot, crash: str
) -> None:
    live, archive = backed_up(dovecot)
    before = fetch_state(dovecot, live)
    # --into: killed part-way (in a batch of messages, or before a mailbox's UIDs are
    # written), then run again.
    target = dovecot.path("restored", "Maildir")
    args = ("restore", str(archive.path), "--at", DATE, "--into", str(target))
    killed = run_cli(*args, crash=crash)
    assert killed.returncode == CRASH_EXIT
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert fetch_state(dovecot, target) == before
    # --beside: every message expunged after the backup comes back exactly once.
    dovecot.expunge(live, "INBOX", "all")
    dovecot.expunge(live, "Archive.2024", "all")
    beside = ("restore", str(archive.path), "--at", DATE, "--beside", "--store", str(live))
    killed = run_cli(*beside, crash=crash)
    assert killed.returncode == CRASH_EXIT
    assert run_cli(*beside).returncode == 0
    after = fetch_state(dovecot, live)
    restored = Counter(guid for box, _, guid, _ in after if box.startswith("Restored."))
    expected = {guid for box, _, guid, _ in before if box in ("INBOX", "Archive.2024")}
    assert set(restored) == expected
    assert max(restored.values()) == 1
