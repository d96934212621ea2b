"""Errors of the store adapters, all under :class:`bundlesync.errors.StoreError`.

Each class says what went wrong with the mail store in words an administrator
can act on; OSError never leaves an adapter raw.
"""

# Names say what happened, like the project's tree (BundleRejected, LockHeld),
# rather than carrying an "Error" suffix.

from __future__ import annotations

from bundlesync.errors import StoreError


class ItemRefused(StoreError):
    """The store cannot take this one folder or message (its name, its size), while
    it can take others: reported for that item alone, the rest is applied.
    Errors of the store as a whole (read-only, full, locked) are not of this kind."""

    default_hint = ("Nothing was written for this item; the rest was applied, and the "
                    "item stays pending for the next run.")


class UnsafeName(ItemRefused):
    """A user, folder or message name could escape the store or corrupt it.

    Names arriving in a bundle are checked before any path is built from them.
    """

    default_hint = (
        "Nothing was written. The name is not representable in a Maildir store; "
        "if it came from a bundle, the sending site holds a name this site cannot store."
    )


class InvalidMailboxName(ItemRefused):
    """A folder name on disk or in a request is not valid modified UTF-7."""

    default_hint = "Rename the folder with an IMAP client or 'doveadm mailbox rename'."


class UnsupportedLocation(StoreError):
    """The mail location template uses something this adapter cannot handle."""

    default_hint = (
        "Use a plain Maildir path or a template with %u, %n and %d, "
        "e.g. /var/vmail/%d/%n/Maildir."
    )


class UnknownUser(StoreError):
    """The user does not exist in this store, or cannot exist in it."""

    default_hint = "Check the user name and the store's location template."


class FolderNotFound(StoreError):
    """The folder does not exist."""

    default_hint = "List the user's folders to check the name; it may have been renamed."


class FolderExists(ItemRefused):
    """The target folder of a rename already exists."""

    default_hint = "Rename or delete the existing folder first."


class FolderNotEmpty(StoreError):
    """A folder to be deleted still holds messages or unknown files."""

    default_hint = "Move or expunge the remaining messages first; nothing was deleted."


class MessageMissing(StoreError):
    """The message is not (or no longer) in the folder."""

    default_hint = (
        "It was probably expunged or moved by a mail client meanwhile; run again to pick "
        "up the current state."
    )


class KeyInUse(ItemRefused):
    """Another message with different bytes already has this key in the folder."""

    default_hint = "Deliver the message under a new key (new_message_key)."


class FolderLocked(StoreError):
    """Dovecot (or another program) holds a lock on the folder for too long."""

    default_hint = (
        "Dovecot is busy with this folder; try again later. A lock file older than two "
        "minutes is stale and is removed automatically."
    )


class OverLimit(ItemRefused):
    """A bundle asks for more than this site's ``[limits]`` allow in one run."""

    default_hint = (
        "Nothing was written for it; the rest was applied. If this is expected, raise "
        "the limit in the [limits] section of bundlesync.toml and import again."
    )
