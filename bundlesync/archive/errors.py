"""The archive's errors, each with its message, hint and exit code (docs/errors.md)."""

from __future__ import annotations

from bundlesync.errors import (
    EXIT_ARCHIVE_DAMAGED,
    EXIT_LOCAL,
    BundlesyncError,
    LocalError,
    LockHeld,
)


class ArchiveError(LocalError):
    """The archive cannot be used as asked (missing, not an archive, wrong secret)."""

    exit_code = EXIT_LOCAL


class NotAnArchive(ArchiveError):
    """The directory holds no archive."""

    default_hint = "Check the path; 'bundlesync backup ARCHIVE' creates an archive there."


class WrongSecret(ArchiveError):
    """No key stanza of the archive opens with the secret given."""

    default_hint = (
        "Give the archive's passphrase (BUNDLESYNC_PASSPHRASE, --passphrase-file or the "
        "prompt) or its recovery key card (--recovery-key-file), or run on the site that "
        "wrote it."
    )


class NoRecoveryKey(ArchiveError):
    """A new archive would be readable only with this site's key."""

    default_hint = (
        "Give a passphrase (BUNDLESYNC_PASSPHRASE, --passphrase-file or the prompt), or "
        "--recovery-key-card FILE to write a recovery key card; only if you keep the site's "
        "key safe elsewhere, pass --no-recovery-key."
    )


class ArchiveDamaged(BundlesyncError):
    """Part of the archive is missing, altered or unreadable."""

    exit_code = EXIT_ARCHIVE_DAMAGED
    default_hint = (
        "Run 'bundlesync check ARCHIVE --read-data' to see what is affected; the rest "
        "stays restorable. Restore the damaged file from another copy of the drive if you "
        "have one."
    )


class ArchiveLocked(LockHeld):
    """Another run writes to the archive."""

    default_hint = (
        "Wait for the other run to finish. If no other run exists (the machine that held "
        "it died), remove the archive's 'lock' file by hand."
    )
