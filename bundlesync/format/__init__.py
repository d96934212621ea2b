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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        list_bundle,
        open_bundle,
        read_header,
        verify_bundle,
    )
    from bundlesync.format.records import RECORD_KINDS, record_kind
    from bundlesync.format.volumes import find_bundles
    from bundlesync.format.writer import EncodedChange, HashedBody, WrittenBundle, write_bundle

# Loaded on first use (PEP 562): a run that writes and reads no bundle -- a
# no-change export, most of all -- must not pay for the reader, the writer and
# the libraries behind them (cryptography, zstandard) just because it imports
# one light submodule of this package.
_WHERE: dict[str, str] = {
    "BadMagic": "bundlesync.format.errors",
    "BodyHashMismatch": "bundlesync.format.errors",
    "BundleNotFound": "bundlesync.format.errors",
    "BundleWriteFailed": "bundlesync.format.errors",
    "CountMismatch": "bundlesync.format.errors",
    "DecryptionFailed": "bundlesync.format.errors",
    "DropUnreadable": "bundlesync.format.errors",
    "LimitExceeded": "bundlesync.format.errors",
    "Malformed": "bundlesync.format.errors",
    "MissingVolume": "bundlesync.format.errors",
    "NotARecipient": "bundlesync.format.errors",
    "RecordNotEncodable": "bundlesync.format.errors",
    "SignatureInvalid": "bundlesync.format.errors",
    "Truncated": "bundlesync.format.errors",
    "UnknownSigner": "bundlesync.format.errors",
    "Unreadable": "bundlesync.format.errors",
    "UnsupportedVersion": "bundlesync.format.errors",
    "VolumeMismatch": "bundlesync.format.errors",
    "BUNDLE_KINDS": "bundlesync.format.header",
    "KIND_ARCHIVE": "bundlesync.format.header",
    "KIND_SYNC": "bundlesync.format.header",
    "BundleHeader": "bundlesync.format.header",
    "BundleId": "bundlesync.format.header",
    "EncryptionParams": "bundlesync.format.header",
    "DEFAULT_LIMITS": "bundlesync.format.limits",
    "Limits": "bundlesync.format.limits",
    "BundleListing": "bundlesync.format.reader",
    "OpenBundle": "bundlesync.format.reader",
    "VerifiedBundle": "bundlesync.format.reader",
    "find_bundles": "bundlesync.format.volumes",
    "list_bundle": "bundlesync.format.reader",
    "open_bundle": "bundlesync.format.reader",
    "read_header": "bundlesync.format.reader",
    "verify_bundle": "bundlesync.format.reader",
    "RECORD_KINDS": "bundlesync.format.records",
    "record_kind": "bundlesync.format.records",
    "EncodedChange": "bundlesync.format.writer",
    "HashedBody": "bundlesync.format.writer",
    "WrittenBundle": "bundlesync.format.writer",
    "write_bundle": "bundlesync.format.writer",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
