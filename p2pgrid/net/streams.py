"""``FramedStream`` over any byte stream (trio): the one implementation both transports use.

A transport supplies three coroutines — read some bytes (``b""`` at end of stream), write bytes,
close — and gets a ``FramedStream`` with the framing of ``framing.py``. Sends are serialised by a
lock so that two tasks sharing one persistent stream never interleave the bytes of their frames;
receives likewise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from p2pgrid.net.framing import FrameDecoder, encode_frame
from p2pgrid.net.transport import StreamClosed

READ_CHUNK = 64 * 1024

ReadSome = Callable[[int], Awaitable[bytes]]
WriteAll = Callable[[bytes], Awaitable[None]]
Close = Callable[[], Awaitable[None]]


class ByteFramedStream:
    """A ``FramedStream`` built from a transport's raw byte-stream operations."""

    def __init__(self, *, peer: bytes, protocol: str, max_frame_bytes: int,
                 read_some: ReadSome, write_all: WriteAll, close: Close,
                 transport_errors: tuple[type[BaseException], ...] = ()) -> None:
        self._peer = peer
        self._protocol = protocol
        self._decoder = FrameDecoder(max_frame_bytes)
        self._read_some = read_some
        self._write_all = write_all
        self._close = close
        self._errors = transport_errors + (trio.BrokenResourceError, trio.ClosedResourceError)
        self._send_lock = trio.Lock()
        self._receive_lock = trio.Lock()
        self._closed = False
        self._eof = False

    @property
    def peer(self) -> bytes:
        return self._peer

    @property
    def protocol(self) -> str:
        return self._protocol

    @property
    def max_frame_bytes(self) -> int:
        return self._decoder.max_frame_bytes

    async def send_frame(self, data: bytes) -> None:
        frame = encode_frame(data, self.max_frame_bytes)
        async with self._send_lock:
            if self._closed:
                raise StreamClosed(f"stream {self._protocol} already closed")
            try:
                await self._write_all(frame)
            except self._errors as exc:
                raise StreamClosed(f"stream {self._protocol} broke while sending: {exc}") from exc

    async def receive_frame(self) -> bytes:
        async with self._receive_lock:
            while True:
                frame = self._decoder.next_frame()
                if frame is not None:
                    return frame
                if self._closed or self._eof:
                    raise self._decoder.end_of_stream()
                try:
                    chunk = await self._read_some(READ_CHUNK)
                except self._errors as exc:
                    raise StreamClosed(f"stream {self._protocol} broke while receiving: {exc}") from exc
                if not chunk:
                    self._eof = True
                    raise self._decoder.end_of_stream()
                self._decoder.feed(chunk)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._close()
        except self._errors:
            pass  # the peer already went away: closing is done either way
