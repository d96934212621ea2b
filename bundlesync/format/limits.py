"""Constants and reader limits of bundle format v1 (``formats/bundle-v1.md`` §9).

Every size, count and depth a reader takes from a bundle is checked against a
:class:`Limits` value *before* it allocates memory or does work in proportion
to it. The defaults are the normative limits of §9; tests pass smaller ones to
reach the boundaries cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# bundle-v1 §3.1: PNG-style magic. 0x89 catches 7-bit transfers, CR LF catches
# line-ending conversion, 0x1A stops DOS "type", the final LF catches LF->CRLF.
MAGIC = b"\x89BSB\r\n\x1a\n"
FORMAT_VERSION = 1
# bundle-v1 §4.4: the last 8 bytes of the logical stream.
END_MAGIC = b"BSB-END\n"
RECORDS_VERSION = 2
# Schema 2 is schema 1 plus the want record (bundle-v1 §6.4); both are read.
READABLE_RECORDS_VERSIONS = (1, 2)

VOLUME_HEAD_SIZE = 48
HEADER_LENGTH_SIZE = 4
TRAILER_FIXED_SIZE = 4 + len(END_MAGIC)
FRAME_HEAD_SIZE = 8
TAG_SIZE = 16

# Writer defaults (bundle-v1 §5.1, §7.3).
DEFAULT_FRAME_SIZE = 2 * MiB
DEFAULT_CHUNK_SIZE = 1 * MiB
DEFAULT_ZSTD_LEVEL = 3
# FAT12/16/32 cannot hold a file of 4 GiB or more (bundle-v1 §3.3).
FAT_MAX_FILE_SIZE = 4 * GiB - 1
MIN_VOLUME_SIZE = 1 * KiB

MIN_CHUNK_SIZE = 64
MAX_CHUNK_SIZE = 16 * MiB
AEAD_TAG_SIZE = 16


# bundle-v1 §9: numbers in change records. The state index keeps them as SQLite
# integers (at most 2^63-1); these bounds keep every sum and comparison far below.
MAX_WALL_MS = 2**62  # far beyond any clock; far-future stamps are clamped on import
MAX_HLC_COUNTER = 2**32 - 1
MAX_INCARNATION = 2**40 - 1
MAX_DOT_COUNTER = 2**48 - 1
# A site's new incarnation is the clock in seconds (plus one per collision); an
# acknowledgement claiming one further above is not followed.
MAX_INCARNATION_JUMP = 2**20


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What a reader accepts (bundle-v1 §9). Beyond any of them: LimitExceeded."""

    max_header: int = 1 * MiB
    max_frame_content: int = 8 * MiB
    max_body: int = 256 * MiB
    max_text: int = 4 * KiB
    max_flags: int = 1024
    max_header_items: int = 65536
    max_recipients: int = 1024
    max_depth: int = 8
    max_records: int = 2**32 - 1
    max_trailer: int = 4 * KiB
    max_volumes: int = 65535

    def max_frame_compressed(self, content: int) -> int:
        """Largest compressed size a frame of ``content`` decompressed bytes may have.

        zstd's worst-case expansion (ZSTD_compressBound) is below content/128 + 512
        for the sizes allowed here; anything bigger is not a zstd frame we wrote.
        """
        return content + (content >> 7) + 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteLimits:
    """What one run accepts from the bundles it imports and the store it exports
    (bundle-v1 §9.2; ``[limits]`` in the site configuration).

    A bundle within the format's limits can still ask for far more than a site
    should do in one run (a trusted peer's key can be stolen, a stick tampered
    with). Beyond one of these, the message, folder or user concerned is reported
    as failed and left out; everything else is applied.
    """

    max_message_size: int = 100 * MiB  # per message, at export (skipped) and import
    max_new_users: int = 1000  # Maildirs an import may create in one run
    max_new_folders: int = 1000  # folders an import may create per user in one run
    max_folder_depth: int = 32  # levels of a folder path ("A/B/C" is 3)


DEFAULT_SITE_LIMITS = SiteLimits()
