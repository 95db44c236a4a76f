"""The local RPC server: JSON-RPC 2.0 over HTTP POST and WebSocket on one loopback port.

Endpoints (one port):

* ``POST /``   — one JSON-RPC payload (request, notification or batch) per HTTP request, with
  keep-alive. Answer: ``200`` + JSON, ``204`` when the payload held only notifications, ``429``
  + ``-32005`` errors when the connection's rate limit refused it, ``401`` without a valid bearer
  token (the body is not even read), ``413`` over the body limit, ``405`` other methods.
* ``GET /ws``  — WebSocket upgrade (must be the first request on its TCP connection). Each text
  message is a JSON-RPC payload; answers and subscription notifications come back as text.

Security: binds loopback only unless ``allow_non_loopback=True``; every request needs
``Authorization: Bearer <token>`` (``p2pgrid.rpc.auth``), checked before anything is executed.

Limits (``RpcLimits``): body / WebSocket message size, header size, batch size, per-connection
token-bucket rate, open connections, idle and header timeouts, per-subscriber event buffer.

Stack: h11 parses HTTP/1.1; the WebSocket upgrade is handed, bytes and all, to trio-websocket
(``wrap_server_stream`` over a stream that first replays what h11 already read), so one port
serves both without an ASGI server in between.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

import h11
import trio
import trio_websocket
import wsproto
import wsproto.events

from p2pgrid.rpc import http11
from p2pgrid.rpc.api import NodeApi
from p2pgrid.rpc.auth import is_authorized
from p2pgrid.rpc.errors import INVALID_REQUEST
from p2pgrid.rpc.jsonrpc import Method, encode, error_response, handle_payload
from p2pgrid.rpc.methods import METHODS
from p2pgrid.rpc.ratelimit import TokenBucket
from p2pgrid.rpc.subscriptions import Outbox, Session, SubscriptionHub, Topic, pump

log = logging.getLogger(__name__)

UNAUTHORIZED = -32001   # only ever in an HTTP 401 body: nothing was executed
WS_PATHS = ("/ws", "/")


@dataclass(frozen=True)
class RpcLimits:
    max_body_bytes: int = 256 * 1024        # HTTP body and WebSocket message
    max_header_bytes: int = 16 * 1024
    max_batch: int = 100
    rate_per_s: float = 500.0               # calls per second per connection, sustained
    burst: int = 1000
    max_connections: int = 64               # authenticated connections
    max_pending: int = 256                  # connections yet to show a token; the oldest is dropped
    head_timeout_s: float = 3.0             # a new connection's first request head
    idle_timeout_s: float = 60.0            # keep-alive connection with no request
    request_timeout_s: float = 10.0         # to receive one request's body
    max_subscriptions: int = 64             # per WebSocket connection
    subscriber_buffer: int = 1024           # undelivered events per WebSocket connection
    send_timeout_s: float = 30.0            # a WebSocket write blocked this long closes the connection


@dataclass
class RpcServer:
    """A running server: where it listens and what it has seen."""

    node: NodeApi
    token: str
    limits: RpcLimits
    host: str = "127.0.0.1"
    port: int = 0
    hub: SubscriptionHub = field(default_factory=SubscriptionHub)
    methods: dict[str, Method] = field(default_factory=lambda: dict(METHODS))
    refused_unauthorized: int = 0
    gate: http11.ConnectionGate = field(init=False)

    def __post_init__(self) -> None:
        self.gate = http11.ConnectionGate(self.limits.max_connections, self.limits.max_pending)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    # --- one TCP connection -------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Authenticated connections being served."""
        return self.gate.admitted

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        with self.gate.enter() as ticket:
            await http11.contain("rpc", self._serve_http(stream, ticket), stream)

    async def _serve_http(self, stream: trio.SocketStream, ticket: http11.Ticket) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        bucket = TokenBucket(self.limits.rate_per_s, self.limits.burst)
        raw: bytearray | None = bytearray()    # bytes of the first request, for a WebSocket hand-off
        while True:
            # Until a connection has shown its token it gets a short head timeout: a client that
            # means to call sends its request as soon as it has connected.
            timeout = self.limits.head_timeout_s if raw is not None else self.limits.idle_timeout_s
            event: object = None
            with trio.move_on_after(timeout):
                try:
                    event = await http11.next_event(conn, stream, raw)
                except h11.RemoteProtocolError as exc:
                    await self._refuse(conn, stream, exc.error_status_hint, f"bad HTTP request: {exc}")
                    return
            if not isinstance(event, h11.Request):
                return    # closed, or timed out while idle
            if http11.head_size(event) > self.limits.max_header_bytes:
                # h11 only bounds heads that arrive in pieces; one that came whole is measured here.
                await self._refuse(conn, stream, 431, f"request head over {self.limits.max_header_bytes} bytes")
                return
            if (is_authorized(http11.header(event, b"authorization"), self.token)
                    and not self.gate.admit(ticket)):
                await self._refuse(conn, stream, 503, f"all {self.limits.max_connections} connections are in use")
                return
            if _is_websocket_upgrade(event):
                if raw is None:
                    await self._refuse(conn, stream, 400, "a WebSocket upgrade must open its own connection")
                else:
                    await self._serve_websocket(_ReplayStream(bytes(raw), stream))
                return
            raw = None
            response = await self._answer_http(conn, stream, event, bucket)
            await http11.send_response(conn, stream, response)
            if response.close or conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _answer_http(self, conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request,
                           bucket: TokenBucket) -> http11.Response:
        if not is_authorized(http11.header(request, b"authorization"), self.token):
            self.refused_unauthorized += 1
            return _json_error(401, UNAUTHORIZED, "missing or wrong bearer token", close=True,
                               extra=((b"www-authenticate", b'Bearer realm="p2pgrid"'),))
        if request.method != b"POST":
            return _json_error(405, INVALID_REQUEST, "use POST for JSON-RPC (or GET /ws to upgrade)",
                               close=True, extra=((b"allow", b"POST"),))
        length = http11.content_length(request)
        if length is not None and length > self.limits.max_body_bytes:
            return _json_error(413, INVALID_REQUEST, f"body over {self.limits.max_body_bytes} bytes", close=True)
        try:
            with trio.fail_after(self.limits.request_timeout_s):
                body = await http11.read_body(conn, stream, self.limits.max_body_bytes)
        except http11.BodyTooLarge:
            return _json_error(413, INVALID_REQUEST, f"body over {self.limits.max_body_bytes} bytes", close=True)
        except h11.RemoteProtocolError as exc:
            # A malformed chunk, or a client gone before its body was complete.
            return _json_error(400, INVALID_REQUEST, f"bad HTTP request body: {exc}", close=True)
        except trio.TooSlowError:
            return _json_error(408, INVALID_REQUEST, "request body too slow", close=True)
        refused = False

        def admit(calls: int) -> bool:
            nonlocal refused
            refused = not bucket.try_take(calls, trio.current_time())
            return not refused

        text = await handle_payload(body, self.methods, self.node, Session(self.hub), admit, self.limits.max_batch)
        if text is None:
            return http11.Response(429 if refused else 204)
        return http11.Response(429 if refused else 200, text.encode())

    async def _refuse(self, conn: h11.Connection, stream: trio.abc.Stream, status: int, message: str) -> None:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await http11.send_response(conn, stream, _json_error(status, INVALID_REQUEST, message, close=True))

    # --- WebSocket ----------------------------------------------------------------------------

    async def _serve_websocket(self, stream: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            request = await _wrap_server_stream(nursery, stream, self.limits.max_body_bytes)
            if not is_authorized(_ws_header(request, b"authorization"), self.token):
                self.refused_unauthorized += 1
                await request.reject(401, extra_headers=[(b"content-type", b"application/json")],
                                     body=_error_body(UNAUTHORIZED, "missing or wrong bearer token"))
                nursery.cancel_scope.cancel()
                return
            if request.path.split("?")[0] not in WS_PATHS:
                await request.reject(404, body=_error_body(INVALID_REQUEST, "WebSocket path is /ws"))
                nursery.cancel_scope.cancel()
                return
            ws = await request.accept()
            outbox = Outbox(self.limits.subscriber_buffer, max_subscriptions=self.limits.max_subscriptions)
            session = Session(self.hub, outbox)
            bucket = TokenBucket(self.limits.rate_per_s, self.limits.burst)
            nursery.start_soon(self._write_websocket, ws, outbox, nursery.cancel_scope)

            def admit(calls: int) -> bool:
                return bucket.try_take(calls, trio.current_time())

            try:
                while True:
                    message = await ws.get_message()
                    text = await handle_payload(message, self.methods, self.node, session, admit,
                                                self.limits.max_batch)
                    if text is not None:
                        await outbox.put_response(text)
            except trio_websocket.ConnectionClosed:
                pass
            finally:
                self.hub.close_outbox(outbox)
                nursery.cancel_scope.cancel()

    async def _write_websocket(self, ws: trio_websocket.WebSocketConnection, outbox: Outbox,
                               connection_scope: trio.CancelScope) -> None:
        try:
            while True:
                text = await outbox.next_message()
                with trio.fail_after(self.limits.send_timeout_s):
                    await ws.send_message(text)
                outbox.sent()
        except (trio_websocket.ConnectionClosed, trio.TooSlowError, trio.BrokenResourceError):
            connection_scope.cancel()


# --- serving ----------------------------------------------------------------------------------

@asynccontextmanager
async def serve_rpc(node: NodeApi, *, token: str, host: str = "127.0.0.1", port: int = 0,
                    limits: RpcLimits = RpcLimits(), allow_non_loopback: bool = False) -> AsyncIterator[RpcServer]:
    """Serve the RPC while the block runs; ``server.port`` is the bound port (0 → ephemeral).

    Also starts one pump task per node event stream (book, fills, telemetry, settlements).
    """
    listeners, bound_port = await http11.open_listeners(host, port, allow_non_loopback)
    server = RpcServer(node, token, limits, host=host, port=bound_port)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, server.hub, Topic.BOOK, node.book_events())
        nursery.start_soon(pump, server.hub, Topic.FILLS, node.fill_events())
        nursery.start_soon(pump, server.hub, Topic.TELEMETRY, node.telemetry_events())
        nursery.start_soon(pump, server.hub, Topic.SETTLEMENTS, node.settlement_events())
        nursery.start_soon(trio.serve_listeners, server.serve_connection, listeners)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


async def run_rpc(node: NodeApi, *, token: str, host: str = "127.0.0.1", port: int = 0,
                  limits: RpcLimits = RpcLimits(), allow_non_loopback: bool = False,
                  task_status: trio.TaskStatus[RpcServer] = trio.TASK_STATUS_IGNORED) -> None:
    """The same as a trio service: ``server = await nursery.start(run_rpc, node, token=…)``."""
    async with serve_rpc(node, token=token, host=host, port=port, limits=limits,
                         allow_non_loopback=allow_non_loopback) as server:
        task_status.started(server)
        await trio.sleep_forever()


# --- helpers ----------------------------------------------------------------------------------

class _WebSocket(trio_websocket.WebSocketConnection):
    """trio-websocket's connection, but a frame wsproto cannot accept (a text message that is not
    UTF-8: 1007, a protocol violation: 1002) is answered with its close code before the TCP
    connection closes. wsproto reports such a frame as a close event while the connection is
    still open, and trio-websocket 0.12 then closes the stream without a word."""

    async def _handle_close_connection_event(self, event: wsproto.events.CloseConnection) -> None:
        if self._wsproto.state is wsproto.ConnectionState.OPEN:
            await self._send(wsproto.events.CloseConnection(code=event.code, reason=event.reason))
        await super()._handle_close_connection_event(event)


async def _wrap_server_stream(nursery: trio.Nursery, stream: trio.abc.Stream,
                              max_message_size: int) -> trio_websocket.WebSocketRequest:
    """``trio_websocket.wrap_server_stream`` with ``_WebSocket`` connections (same steps)."""
    connection = _WebSocket(stream, wsproto.WSConnection(wsproto.ConnectionType.SERVER),
                            message_queue_size=4, max_message_size=max_message_size)
    nursery.start_soon(connection._reader_task)
    return await connection._get_request()


def _is_websocket_upgrade(request: h11.Request) -> bool:
    upgrade = http11.header(request, b"upgrade")
    return request.method == b"GET" and upgrade is not None and upgrade.lower() == b"websocket"


def _ws_header(request: trio_websocket.WebSocketRequest, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value
    return None


def _error_body(code: int, message: str) -> bytes:
    return encode(error_response(None, code, message)).encode()


def _json_error(status: int, code: int, message: str, *, close: bool = False,
                extra: tuple[tuple[bytes, bytes], ...] = ()) -> http11.Response:
    return http11.Response(status, _error_body(code, message), close=close, extra_headers=extra)


class _ReplayStream(trio.abc.Stream):
    """A stream that first returns ``prefix`` (bytes already read by h11), then reads ``inner``."""

    def __init__(self, prefix: bytes, inner: trio.abc.Stream) -> None:
        self._prefix = prefix
        self._inner = inner

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return await self._inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()


__all__ = ["RpcLimits", "RpcServer", "run_rpc", "serve_rpc"]
