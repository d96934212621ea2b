"""Bounded zstd frames: the body's compression units (bundle-v1 §5).

The record stream (concatenated CBOR records) is cut into pieces of exactly
``frame_size`` bytes (the last may be shorter); each is compressed on its own
into one zstd frame that records its content size. A frame on the wire is an
8-byte head -- compressed length and content length, big-endian u32 -- and the
zstd frame. A head of two zeros ends the body. Records may span frames.

The reader checks both lengths against its limits and against the zstd frame's
own content size *before* decompressing, so a frame can never make it allocate
more than ``Limits.max_frame_content`` bytes (decompression bombs, §9).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import zstandard

from bundlesync.errors import BundleRejected
from bundlesync.format.errors import LimitExceeded, Malformed
from bundlesync.format.limits import FRAME_HEAD_SIZE, Limits

_FRAME_HEAD = struct.Struct(">II")
END_FRAME = _FRAME_HEAD.pack(0, 0)


class FrameEncoder:
    """Turns a byte stream into encoded frames (head, compressed data) pieces."""

    def __init__(self, *, frame_size: int, level: int) -> None:
        self.frame_size = frame_size
        self._compressor = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                                    write_checksum=False)
        self._pending = bytearray()
        self.content_bytes = 0
        self.frames = 0

    def _frame(self, content: bytes | bytearray | memoryview) -> Iterator[bytes]:
        blob = self._compressor.compress(content)
        self.content_bytes += len(content)
        self.frames += 1
        yield _FRAME_HEAD.pack(len(blob), len(content))
        yield blob

    def write(self, data: bytes | memoryview) -> Iterator[bytes]:
        view = memoryview(data)
        size = self.frame_size
        while view:
            if not self._pending and len(view) >= size:
                # Whole frames straight from the caller's buffer: no copy.
                yield from self._frame(view[:size])
                view = view[size:]
                continue
            take = min(size - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == size:
                yield from self._frame(self._pending)
                self._pending = bytearray()

    def finish(self) -> Iterator[bytes]:
        if self._pending:
            yield from self._frame(self._pending)
            self._pending = bytearray()
        yield END_FRAME


class ByteSource:
    """Exact reads over an iterator of byte blocks."""

    def __init__(self, blocks: Iterator[bytes], *, short: Callable[[], BundleRejected]) -> None:
        self._blocks = blocks
        self._block = b""
        self._pos = 0
        self._short = short

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, or the ``short`` error if the blocks end first."""
        available = len(self._block) - self._pos
        if size <= available:
            start = self._pos
            self._pos += size
            return self._block[start:self._pos]
        parts = [self._block[self._pos:]] if available else []
        needed = size - available
        self._block, self._pos = b"", 0
        while needed:
            block = next(self._blocks, None)
            if block is None:
                raise self._short()
            if len(block) <= needed:
                parts.append(block)
                needed -= len(block)
            else:
                parts.append(block[:needed])
                self._block, self._pos = block, needed
                needed = 0
        return b"".join(parts)

    def rest_is_zero(self) -> bool:
        """Whether every byte left is zero (bundle-v2 padding); consumes them all."""
        zero = True
        while not self.at_end():
            rest = self._block[self._pos:]
            zero = zero and not any(rest)
            self._pos = len(self._block)
        return zero

    def at_end(self) -> bool:
        """Whether no byte is left (consumes empty blocks to find out)."""
        while self._pos >= len(self._block):
            block = next(self._blocks, None)
            if block is None:
                return True
            self._block, self._pos = block, 0
        return False


def iter_frames(source: ByteSource, *, frame_size: int, limits: Limits) -> Iterator[bytes]:
    """Decompressed contents of the frames in ``source``, up to the end frame.

    ``frame_size`` is the header's promise: no frame holds more.
    """
    decompressor = zstandard.ZstdDecompressor()
    allowed = min(frame_size, limits.max_frame_content)
    number = 0
    while True:
        compressed, content = _FRAME_HEAD.unpack(source.read(FRAME_HEAD_SIZE))
        if compressed == 0 and content == 0:
            return
        where = f"Frame {number} of the body"
        if compressed == 0 or content == 0:
            raise Malformed(f"{where} is empty.")
        if content > allowed:
            raise LimitExceeded(f"{where} declares {content} bytes of content; the header "
                                f"allows {frame_size} and this reader {limits.max_frame_content}.")
        if compressed > limits.max_frame_compressed(content):
            raise LimitExceeded(f"{where} is {compressed} bytes compressed for {content} bytes "
                                f"of content: no zstd frame expands that much.")
        blob = source.read(compressed)
        try:
            stated = zstandard.frame_content_size(blob)
        except zstandard.ZstdError as exc:
            raise Malformed(f"{where} is not a zstd frame: {exc}.") from None
        if stated != content:
            if stated > allowed or stated == -1:
                raise LimitExceeded(
                    f"{where} would decompress to "
                    f"{'an unstated size' if stated == -1 else f'{stated} bytes'} while "
                    f"declaring {content}: refused as a decompression bomb.")
            raise Malformed(f"{where} declares {content} bytes but its zstd frame {stated}.")
        try:
            data = decompressor.decompress(blob, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise Malformed(f"{where} does not decompress: {exc}.") from None
        if len(data) != content:
            raise Malformed(f"{where} decompressed to {len(data)} bytes, not {content}.")
        number += 1
        yield data
