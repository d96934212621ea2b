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
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future

import zstandard

from bundlesync.errors import BundleRejected
from bundlesync.format.errors import LimitExceeded, Malformed
from bundlesync.format.limits import FRAME_HEAD_SIZE, Limits

_FRAME_HEAD = struct.Struct(">II")
END_FRAME = _FRAME_HEAD.pack(0, 0)


class FrameEncoder:
    """Turns a byte stream into encoded frames (head, compressed data) pieces.

    With an ``executor``, frames are compressed in its worker threads (zstd
    releases the GIL), up to ``ahead`` frames at a time, and handed out in stream
    order. Each frame is compressed on its own with the same parameters either
    way, so the output is the same bytes; only the time it takes differs.
    """

    def __init__(self, *, frame_size: int, level: int, executor: Executor | None = None,
                 ahead: int = 4) -> None:
        self.frame_size = frame_size
        self._level = level
        self._compressor = self._new_compressor()
        self._executor = executor
        # A compressor is not safe to share between threads: one per worker.
        self._local = threading.local()
        self._ahead = max(1, ahead)
        self._queued: deque[tuple[Future[bytes], int]] = deque()
        # The start of the next frame: pieces of the caller's buffers, not yet copied.
        self._parts: list[memoryview | bytes] = []
        self._held = 0
        self.content_bytes = 0
        self.frames = 0

    def _new_compressor(self) -> zstandard.ZstdCompressor:
        return zstandard.ZstdCompressor(level=self._level, write_content_size=True,
                                        write_checksum=False)

    def _compress_in_worker(self, content: bytes | bytearray | memoryview) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = self._new_compressor()
        return compressor.compress(content)

    @staticmethod
    def _pieces(blob: bytes, content: int) -> Iterator[bytes]:
        yield _FRAME_HEAD.pack(len(blob), content)
        yield blob

    def _frame(self, content: bytes | bytearray | memoryview) -> Iterator[bytes]:
        self.content_bytes += len(content)
        self.frames += 1
        if self._executor is None:
            yield from self._pieces(self._compressor.compress(content), len(content))
            return
        # The content is not copied: a memoryview keeps the caller's (read-only)
        # bytes alive, and a joined frame is bytes of its own.
        self._queued.append((self._executor.submit(self._compress_in_worker, content),
                             len(content)))
        while len(self._queued) > self._ahead:
            yield from self._oldest()

    def _oldest(self) -> Iterator[bytes]:
        future, content = self._queued.popleft()
        yield from self._pieces(future.result(), content)

    def write(self, data: bytes | memoryview) -> Iterator[bytes]:
        view = memoryview(data)
        size = self.frame_size
        while view:
            if not self._held and len(view) >= size:
                # Whole frames straight from the caller's buffer: no copy, unless
                # the caller may change it while a worker compresses it.
                whole = view[:size]
                yield from self._frame(whole if whole.readonly else whole.tobytes())
                view = view[size:]
                continue
            take = min(size - self._held, len(view))
            # The pieces of a frame are joined once, when it is full: appending to
            # one growing buffer copied each byte again at every reallocation. A
            # piece of a buffer the caller may change is copied now.
            piece = view[:take]
            self._parts.append(piece if piece.readonly else piece.tobytes())
            self._held += take
            view = view[take:]
            if self._held == size:
                yield from self._frame(self._joined())

    def _joined(self) -> bytes:
        content = b"".join(self._parts)
        self._parts = []
        self._held = 0
        return content

    def finish(self) -> Iterator[bytes]:
        if self._held:
            yield from self._frame(self._joined())
        while self._queued:
            yield from self._oldest()
        yield END_FRAME

    def abandon(self) -> None:
        """Drop frames still being compressed (the bundle is not written after all)."""
        while self._queued:
            future, _content = self._queued.popleft()
            future.cancel()


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
