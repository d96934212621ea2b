"""Read and verify every message of one user in an archive's newest snapshot.

    python -m benchmarks.backup_read_user ARCHIVE USER

The archive side of a restore, for the backup benchmark: every body is read,
decrypted, decompressed and checked against its SHA-256. The secret is
``BUNDLESYNC_PASSPHRASE``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bundlesync.archive.repository import open_archive
from bundlesync.archive.secrets import Passphrase


def main(argv: list[str]) -> int:
    archive = open_archive(Path(argv[0]), secret=Passphrase(os.environ["BUNDLESYNC_PASSPHRASE"]))
    newest = archive.snapshots()[-1].id
    count = size = 0
    for box in archive.mailboxes(newest, argv[1]):
        for message in box.messages:
            size += len(archive.read_body(message.body))
            count += 1
    print(f"{count} messages, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
