"""Length-prefixed framing: a 4-byte big-endian length, then that many bytes of payload.

The length limit is checked on the prefix, before a byte of the payload is buffered
(twisted ``protocols/basic.py`` ``IntNStringReceiver.lengthLimitExceeded``), so a peer cannot make
us hold more than ``max_length`` + one read of unparsed input.
"""

from __future__ import annotations

import struct

#: The hard ceiling on one frame's payload. Docs are at most 1 MiB each (the store's max_doc_bytes)
#: and senders split batches to stay well under this.
MAX_FRAME = 16 * 1024 * 1024
PREFIX = struct.Struct(">I")


class FrameTooLarge(Exception):
    """A length prefix announced a frame larger than the limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit}")
        self.length = length
        self.limit = limit


def encode_frame(payload: bytes) -> bytes:
    """Prefix one payload with its length."""
    return PREFIX.pack(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream into frames; raises FrameTooLarge as soon as a prefix is over the limit."""

    def __init__(self, max_length: int = MAX_FRAME) -> None:
        self.max_length = max_length
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frames now available, in order."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        limit = self.max_length
        while end - pos >= 4:
            (length,) = PREFIX.unpack_from(buf, pos)
            if length > limit:
                self._buf = bytearray()
                raise FrameTooLarge(length, limit)
            if end - pos - 4 < length:
                break
            frames.append(bytes(memoryview(buf)[pos + 4 : pos + 4 + length]))   # one copy, not two
            pos += 4 + length
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)
