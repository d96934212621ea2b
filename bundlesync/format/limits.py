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
