"""Request/answer on persistent streams (trio), for the direct protocols (take, swap).

One stream per peer and protocol stays open for many round trips (measured here: ~820 round trips
a second on a persistent stream against ~118 with a stream per request). The client side,
``RequestStreams``, keeps one stream per peer, lets one request at a time use it (answers come back
in order) and re-opens it once if it broke; a request cancelled after it was sent and before its
answer (the caller's timeout) closes its stream, so a late answer is never read as the next
request's. The server side, ``StreamServer``, answers each frame of each incoming stream with
``answer(frame, peer)``; a stream ends when the peer closes it, sends something that breaks the
framing, or ``answer`` returns None.

Streams are served by the transport's tasks, which outlive the service that registered the handler;
``aclose`` on either side ends every stream it holds, so a stopped service is never called again
and a restarted one can take over the same transport.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from p2pgrid.net.transport import FramedStream, NetError, Transport

CLOSE_TIMEOUT_S = 2.0      # a cancelled request's stream is closed within this, shielded from the cancel

Answer = Callable[[bytes, bytes], Awaitable[bytes | None]]
"""``answer(frame, peer) -> reply frame`` for one request; None ends the stream (a request so
bad that the peer is not worth answering)."""


class RequestStreams:
    """Client side: ``await request(peer, data) -> reply`` over persistent streams."""

    def __init__(self, transport: Transport, protocol: str, max_frame_bytes: int) -> None:
        self.transport = transport
        self.protocol = protocol
        self.max_frame_bytes = max_frame_bytes
        self._streams: dict[bytes, tuple[FramedStream, trio.Lock]] = {}
        self._dial_locks: dict[bytes, trio.Lock] = {}

    async def request(self, peer: bytes, data: bytes) -> bytes:
        """Send one request frame and return the answer frame. Raises ``NetError`` if the peer
        cannot be reached or the stream breaks twice."""
        for attempt in range(2):
            stream, lock = await self._stream_to(peer)
            sent = False
            try:
                async with lock:
                    sent = True
                    await stream.send_frame(data)
                    return await stream.receive_frame()
            except NetError:
                self._forget(peer, stream)
                if attempt:
                    raise
            except BaseException:
                if sent:
                    # Cancelled (the caller's timeout) between the request and its answer: that
                    # answer could still arrive and be read as the next request's. The stream is spent.
                    self._forget(peer, stream)
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT_S):
                        await stream.aclose()
                raise
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def connect(self, peer: bytes) -> None:
        """Open the stream to ``peer`` now (dialling it if need be), so that a later ``request``
        is timed on the answer only. Raises ``NetError`` if the peer cannot be reached."""
        await self._stream_to(peer)

    def _forget(self, peer: bytes, stream: FramedStream) -> None:
        if self._streams.get(peer, (None,))[0] is stream:
            del self._streams[peer]

    async def _stream_to(self, peer: bytes) -> tuple[FramedStream, trio.Lock]:
        async with self._dial_locks.setdefault(peer, trio.Lock()):
            if peer not in self._streams:
                stream = await self.transport.open_stream(peer, self.protocol, max_frame_bytes=self.max_frame_bytes)
                self._streams[peer] = (stream, trio.Lock())
            return self._streams[peer]

    async def aclose(self) -> None:
        streams, self._streams = self._streams, {}
        with trio.CancelScope(shield=True):
            for stream, _ in streams.values():
                await stream.aclose()


class StreamServer:
    """Server side: ``serve`` is the stream handler to register for the protocol."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._served: set[FramedStream] = set()
        self._closed = False

    async def serve(self, stream: FramedStream) -> None:
        if self._closed:
            await stream.aclose()
            return
        self._served.add(stream)
        try:
            while True:
                try:
                    data = await stream.receive_frame()
                except NetError:
                    return
                reply = await self._answer(data, stream.peer)
                if reply is None:
                    return
                try:
                    await stream.send_frame(reply)
                except NetError:
                    return
        finally:
            self._served.discard(stream)

    async def aclose(self) -> None:
        self._closed = True
        with trio.CancelScope(shield=True):
            for stream in list(self._served):
                await stream.aclose()
