"""Length-prefixed frames on a byte stream (pure; both transports use it).

A frame on the wire is ``uvarint(len(payload)) || payload``: the unsigned LEB128 varint that
libp2p uses for its own length-prefixed protocols. A length above the stream's
``max_frame_bytes`` is refused on both sides (``FrameTooLarge``) before any payload is buffered,
so a peer cannot make us allocate more than the limit. A varint longer than 10 bytes is malformed.
"""

from __future__ import annotations

from p2pgrid.net.transport import FrameTooLarge, StreamClosed

MAX_VARINT_BYTES = 10


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("uvarint of a negative number")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(payload: bytes, max_frame_bytes: int) -> bytes:
    """The wire bytes of one frame; raises ``FrameTooLarge``."""
    if len(payload) > max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds the {max_frame_bytes}-byte limit")
    return encode_uvarint(len(payload)) + payload


class FrameDecoder:
    """Bytes in, whole frames out: ``feed(data)`` then ``next_frame()`` until it returns None."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def has_partial_frame(self) -> bool:
        return bool(self._buffer)

    def next_frame(self) -> bytes | None:
        """The next whole frame, or None if more bytes are needed. Raises ``FrameTooLarge``."""
        length = 0
        for index in range(min(len(self._buffer), MAX_VARINT_BYTES)):
            byte = self._buffer[index]
            length |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                header = index + 1
                break
        else:
            if len(self._buffer) >= MAX_VARINT_BYTES:
                raise FrameTooLarge("frame length varint longer than 10 bytes")
            return None
        if length > self.max_frame_bytes:
            raise FrameTooLarge(f"incoming frame of {length} bytes exceeds the {self.max_frame_bytes}-byte limit")
        end = header + length
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[header:end])
        del self._buffer[:end]
        return frame

    def end_of_stream(self) -> StreamClosed:
        """The error to raise when the byte stream ends (mid-frame or between frames)."""
        if self._buffer:
            return StreamClosed(f"stream ended inside a frame ({len(self._buffer)} bytes pending)")
        return StreamClosed("stream closed by the peer")
