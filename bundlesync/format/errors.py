"""Errors of the bundle format layer (``formats/bundle-v1.md`` §12).

Everything a reader can find wrong with a bundle is a :class:`BundleRejected`
subclass (exit code 3: nothing was changed). Problems on our side while writing
or reading (a full disk, an unreadable drop, a record we were asked to write that
the format cannot carry) are :class:`LocalError` subclasses (exit code 4).
"""

from __future__ import annotations

from bundlesync.errors import BundleRejected, LocalError, UsageError

_DRIVE_HINT = (
    "Nothing was changed. Copy the bundle again from the sending site (or ask it to "
    "export again); if this repeats, check the drive for errors."
)


class BadMagic(BundleRejected):
    """The file does not start with the bundle magic bytes (bundle-v1 §3.1)."""

    default_hint = (
        "This file is not a bundlesync bundle (or it was altered in transfer, e.g. by a "
        "text-mode copy). Nothing was changed."
    )


class UnsupportedVersion(BundleRejected):
    """The bundle uses a format version, record schema or feature we cannot read."""

    default_hint = (
        "The bundle was written by a newer bundlesync. Upgrade bundlesync on this site, "
        "or ask the sending site to export for older readers. Nothing was changed."
    )


class Truncated(BundleRejected):
    """The bundle (or one volume of it) ends too early: an incomplete write or copy."""

    default_hint = (
        "The file is incomplete - typically a drive removed before the copy finished. "
        "Copy it again from the sending site. Nothing was changed."
    )


class SignatureInvalid(BundleRejected):
    """The bytes do not match the origin's signature: damaged or tampered with."""

    default_hint = (
        "The bundle was damaged or altered after it was signed. Do not use it: copy it "
        "again or ask the sending site to export again. Nothing was changed."
    )


class UnknownSigner(BundleRejected):
    """The bundle is signed by a key that is not in this site's trust store."""

    default_hint = (
        "If the sending site should be trusted, add its card with 'bundlesync peer add NAME "
        "CARD' after checking its fingerprint with that site's administrator, then try "
        "again. Nothing was changed."
    )


class LimitExceeded(BundleRejected):
    """A size, count or depth in the bundle is beyond the limits of bundle-v1 §9."""

    default_hint = (
        "The bundle exceeds a safety limit of this reader and was refused before it could "
        "use too much memory. Nothing was changed. If the sending site is trusted and "
        "up to date, report this with the bundle's 'bundlesync inspect' output."
    )


class Malformed(BundleRejected):
    """The bundle's structure or contents do not follow the format specification."""

    default_hint = (
        "The bundle does not follow the bundle format: it was damaged, or the sending "
        "site has a bug. Nothing was changed. Ask the sending site to export again."
    )


class BodyHashMismatch(Malformed):
    """A Body record's data does not hash to its SHA-256 (bundle-v1 §6.2)."""


class NotARecipient(BundleRejected):
    """The bundle is encrypted and this site is not one of its recipients."""

    default_hint = (
        "The bundle is encrypted to other sites. Ask the sending site to export to this "
        "site (its card must be in the sender's trust store). Nothing was changed."
    )


class DecryptionFailed(BundleRejected):
    """The encrypted body could not be decrypted with this site's key."""

    default_hint = (
        "This site's key does not open the bundle: the site's key may have been "
        "regenerated since the sender received its card, or the bundle is damaged. "
        "Nothing was changed."
    )


class MissingVolume(BundleRejected):
    """A volume of a multi-volume bundle is not next to the first one."""

    default_hint = (
        "Copy every volume of the bundle (files named *.partKofN.bsb) into the same "
        "directory, then try again. Nothing was changed."
    )


class VolumeMismatch(BundleRejected):
    """Volumes that do not belong together, or a volume other than the first was given."""

    default_hint = (
        "Open the first volume (*.part1ofN.bsb), and keep only volumes of one bundle "
        "under these names. Nothing was changed."
    )


class Unreadable(BundleRejected):
    """Reading the bundle failed at the operating-system level (I/O error)."""

    default_hint = _DRIVE_HINT


class BundleNotFound(UsageError):
    """The bundle path given does not exist."""

    default_hint = "Check the path; 'bundlesync list DROP' lists what a drop holds."


class DropUnreadable(LocalError):
    """A drop directory does not exist or cannot be listed."""

    default_hint = "Check that the drive is mounted and the directory exists and is readable."


class BundleWriteFailed(LocalError):
    """Writing a bundle failed (disk full, file too large, permissions...)."""

    default_hint = (
        "Nothing was left behind under a bundle name. Check free space and permissions on "
        "the drop; on a FAT drive, pass a maximum volume size."
    )


class RecordNotEncodable(LocalError):
    """A record handed to the writer cannot be carried by the format (bundle-v1 §6)."""

    default_hint = (
        "This is a bug in the caller of the bundle writer, or a value beyond the format's "
        "limits (for example a message larger than the body limit). Nothing was written."
    )


class CountMismatch(LocalError):
    """The writer was given record counts that differ from the records it received."""

    default_hint = "This is a bug in bundlesync; nothing was written under a bundle name."
