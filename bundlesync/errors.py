"""The one error tree of bundlesync.

Every error a user can meet is a :class:`BundlesyncError`. Each class carries what
happened (``message``), what to do about it (``hint``) and the process exit code
(``exit_code``). Two branches matter to an administrator:

* :class:`BundleRejected` -- the bundle (or a volume of it) is bad: tampered,
  truncated, foreign, malformed, too large, not for us. Nothing was changed.
* :class:`LocalError` -- something on our side is wrong: configuration, keys,
  the mail store, the state index, a lock held by another run.

Library exceptions (cbor2, zstandard, cryptography, sqlite3, OSError) are
translated into these classes at the boundary where they occur; only
``bundlesync.cli.main`` catches them and prints ``message`` and ``hint``.

Exit codes (documented in ``docs/errors.md``):

====  ===========================================================
0     success
1     unexpected internal error (a bug: please report it)
2     usage error (bad command line)
3     a bundle was rejected; nothing was changed
4     a local problem (configuration, keys, store, state)
5     partial success: some users or bundles failed, others applied
6     declined at a prompt: nothing was changed
75    another bundlesync run holds the site lock; try again later
130   interrupted (Ctrl-C)
====  ===========================================================
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BUNDLE_REJECTED = 3
EXIT_LOCAL = 4
EXIT_PARTIAL = 5
EXIT_DECLINED = 6
EXIT_ARCHIVE_DAMAGED = 7
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a run ended by Ctrl-C


class BundlesyncError(Exception):
    """Base of every error bundlesync reports to a person."""

    exit_code: int = EXIT_INTERNAL
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:
        return self.message


class UsageError(BundlesyncError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = EXIT_USAGE
    default_hint = "See 'bundlesync COMMAND --help' for what the command takes."


class BundleRejected(BundlesyncError):
    """A bundle was refused. Nothing in the store or the state was changed."""

    exit_code = EXIT_BUNDLE_REJECTED
    default_hint = (
        "Nothing was changed. Ask the sending site to export again; "
        "if this repeats, check the drive for errors."
    )


class LocalError(BundlesyncError):
    """Something on this site is wrong (not the bundle)."""

    exit_code = EXIT_LOCAL
    default_hint = "See docs/errors.md for what this error means on a site."


class ConfigError(LocalError):
    """The site's configuration is missing or invalid."""

    default_hint = "Run 'bundlesync init' first, or pass --home to point at the site."


class StoreError(LocalError):
    """The mail store could not be read or written."""

    default_hint = "Check that the store path exists and is readable and writable by this user."


class StateError(LocalError):
    """The state index is missing, damaged or from a newer version."""

    default_hint = "Restore the site's home from its backup, or upgrade bundlesync."


class LockHeld(LocalError):
    """Another bundlesync run is working on this site."""

    exit_code = EXIT_LOCKED
    default_hint = "Wait for the other run to finish, then try again."


class PartialFailure(BundlesyncError):
    """Some parts of a run failed while others succeeded."""

    exit_code = EXIT_PARTIAL
    default_hint = ("Fix what the output names; the failed parts stay pending and the next "
                    "run does them.")


class PromptNeedsTerminal(UsageError):
    """A command would ask a question, but there is no terminal to ask on."""

    default_hint = (
        "Run it on a terminal to answer the question, or pass --yes in a script "
        "once you have checked what it asks."
    )


class Declined(BundlesyncError):
    """The person at the terminal answered no; nothing was changed."""

    exit_code = EXIT_DECLINED
    default_hint = "Nothing was changed. Run the command again to answer differently."


class FileSystemError(LocalError):
    """A file could not be read or written: disk full, read-only, I/O error, no access."""

    default_hint = "Check the file system named in the message, then run again."


_FS_HINTS = {
    errno.ENOSPC: "The file system is full: free space on it, then run again; "
                  "nothing half-done was kept.",
    errno.EDQUOT: "The disk quota is exhausted: free space or raise the quota, then run again.",
    errno.EROFS: "The file system is mounted read-only: remount it read-write (or check "
                 "the drive for errors), then run again.",
    errno.EIO: "The device reported an I/O error: check the drive (dmesg, smartctl) before "
               "trusting what is on it.",
    errno.EACCES: "Permission denied: run as the user owning the site and the mail store "
                  "(or root), or fix the ownership.",
    errno.EPERM: "Operation not permitted: run as the user owning the site and the mail "
                 "store (or root), or fix the ownership.",
}


def file_system_error(exc: OSError) -> FileSystemError:
    """The clear error for an OSError no layer translated (exit code EXIT_LOCAL)."""
    where = exc.filename if exc.filename is not None else "a file"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or str(exc)
    return FileSystemError(f"could not use {where}: {reason}",
                           hint=_FS_HINTS.get(exc.errno or 0, FileSystemError.default_hint))
