"""The bundle file format: bytes <-> model records (``formats/bundle-v1.md``, ``bundle-v2.md``).

The operations layer uses only what is exported here::

    written = write_bundle(drop, identity=me, bundle_id=BundleId(me.site_id, 1, 7),
                           kind="sync", recipients=[peer], ack=ack, assumes=assumes,
                           records=changes, created_ms=now_ms)
    for path in find_bundles(drop):
        listing = list_bundle(path)           # unverified: only to leave a bundle alone
        with open_bundle(path, identity=me, trust=trust) as bundle:
            for record in bundle.records():   # verified, validated, streamed
                ...

Every problem with a bundle is a :class:`bundlesync.errors.BundleRejected`
subclass from :mod:`bundlesync.format.errors`.
"""

from __future__ import annotations

from bundlesync.format.errors import (
    BadMagic,
    BodyHashMismatch,
    BundleNotFound,
    BundleWriteFailed,
    CountMismatch,
    DecryptionFailed,
    DropUnreadable,
    LimitExceeded,
    Malformed,
    MissingVolume,
    NotARecipient,
    RecordNotEncodable,
    SignatureInvalid,
    Truncated,
    UnknownSigner,
    Unreadable,
    UnsupportedVersion,
    VolumeMismatch,
)
from bundlesync.format.header import (
    BUNDLE_KINDS,
    KIND_ARCHIVE,
    KIND_SYNC,
    BundleHeader,
    BundleId,
    EncryptionParams,
)
from bundlesync.format.limits import DEFAULT_LIMITS, Limits
from bundlesync.format.reader import (
    BundleListing,
    OpenBundle,
    VerifiedBundle,
    find_bundles,
    list_bundle,
    open_bundle,
    read_header,
    verify_bundle,
)
from bundlesync.format.records import RECORD_KINDS, record_kind
from bundlesync.format.writer import EncodedChange, HashedBody, WrittenBundle, write_bundle

__all__ = [
    "BUNDLE_KINDS",
    "DEFAULT_LIMITS",
    "KIND_ARCHIVE",
    "KIND_SYNC",
    "RECORD_KINDS",
    "BadMagic",
    "BodyHashMismatch",
    "BundleHeader",
    "BundleId",
    "BundleListing",
    "BundleNotFound",
    "BundleWriteFailed",
    "CountMismatch",
    "DecryptionFailed",
    "DropUnreadable",
    "EncodedChange",
    "EncryptionParams",
    "HashedBody",
    "LimitExceeded",
    "Limits",
    "Malformed",
    "MissingVolume",
    "NotARecipient",
    "OpenBundle",
    "RecordNotEncodable",
    "SignatureInvalid",
    "Truncated",
    "UnknownSigner",
    "Unreadable",
    "UnsupportedVersion",
    "VerifiedBundle",
    "VolumeMismatch",
    "WrittenBundle",
    "find_bundles",
    "list_bundle",
    "open_bundle",
    "read_header",
    "record_kind",
    "verify_bundle",
    "write_bundle",
]
