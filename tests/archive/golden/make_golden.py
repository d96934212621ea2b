"""Write the golden archive (archive-v1 §14). Run by hand only, never by the tests:

    python -m tests.archive.golden.make_golden

It replaces ``archive/`` and ``expected.json`` beside this file.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from bundlesync.archive.backup import run_backup
from bundlesync.archive.repository import create_archive, open_archive
from bundlesync.archive.secrets import Passphrase
from bundlesync.archive.users import UserSelection
from bundlesync.keys import SiteIdentity
from bundlesync.operations.config import MailboxFilter
from bundlesync.stores.base import INBOX
from bundlesync.stores.maildir import MaildirStore
from tests.archive.views import snapshot_view

HERE = Path(__file__).parent
PASSPHRASE = "golden archive passphrase"
IDENTITY = SiteIdentity(name="golden", signing_secret=bytes(range(32)),
                        exchange_secret=bytes(range(32, 64)))


def main() -> None:
    target = HERE / "archive"
    shutil.rmtree(target, ignore_errors=True)
    work = Path(tempfile.mkdtemp())
    store = MaildirStore(str(work / "%d" / "%n" / "Maildir"))
    store.ensure_user("ann@example.org")
    store.create_folder("ann@example.org", ("Sent",), guid="00112233445566778899aabbccddeeff",
                        uidvalidity=1_700_000_000)
    store.add_message("ann@example.org", INBOX, key="1700000000.M1P1.golden",
                      data=b"Subject: one\r\n\r\nfirst\r\n", flags=frozenset({"\\Seen"}),
                      internal_date=1_700_000_000)
    store.add_message("ann@example.org", ("Sent",), key="1700000100.M2P1.golden",
                      data=b"Subject: two\r\n\r\nsecond\r\n",
                      flags=frozenset({"\\Seen", "$Label1"}), internal_date=1_700_000_100)
    store.set_subscriptions("ann@example.org", [("Sent",)])
    archive = create_archive(target, identity=IDENTITY, recovery=[Passphrase(PASSPHRASE)],
                             kdf_log_n=14, now_ms=1_800_000_000_000)
    run_backup(archive, store, users=UserSelection(), filters=MailboxFilter(),
               now_ms=1_800_000_000_000)
    store.set_flags("ann@example.org", INBOX, "1700000000.M1P1.golden",
                    frozenset({"\\Seen", "\\Flagged"}))
    run_backup(open_archive(target, secret=IDENTITY), store, users=UserSelection(),
               filters=MailboxFilter(), now_ms=1_800_086_400_000)
    reader = open_archive(target, secret=Passphrase(PASSPHRASE))
    expected = []
    for snap in reader.snapshots():
        view = snapshot_view(reader, snap.id)
        expected.append({
            "id": snap.id, "time_ms": snap.time_ms, "messages": snap.messages,
            "users": {user: {"/".join(path): sorted([k, b, sorted(f), d] for k, b, f, d in msgs)
                             for path, msgs in folders.items()}
                      for user, folders in view.items()},
            "mailboxes": {user: [[b.guid, "/".join(b.path), b.uidvalidity, b.subscribed]
                                 for b in reader.mailboxes(snap.id, user)]
                          for user in reader.users(snap.id)},
        })
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    (target / "tmp").rmdir()
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
