"""Small HTTP/1.1 plumbing on trio + h11, shared by the RPC server and the metrics endpoint.

h11 does the protocol (parsing, keep-alive, chunked bodies, framing errors); this module adds
the few things a local API needs: loopback-only binding, a header size limit, a body size limit
enforced while reading (``Content-Length`` is checked before a byte of body is read), and
timeouts so an idle or half-sent request cannot hold a connection forever.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus

import h11
import trio

from p2pgrid.rpc.errors import NotLoopbackError, CannotListen

log = logging.getLogger(__name__)

READ_CHUNK = 65536


def check_bind_host(host: str, allow_non_loopback: bool = False) -> None:
    """Refuse to listen anywhere but loopback unless the config says so explicitly."""
    if allow_non_loopback or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopbackError(f"refusing to serve on {host!r}: local API listens on loopback only "
                               "(set allow_non_loopback explicitly to override)")


async def open_listeners(host: str, port: int,
                         allow_non_loopback: bool = False) -> tuple[list[trio.SocketListener], int]:
    """Listening sockets on ``host:port`` (port 0: ephemeral) and the port actually bound."""
    check_bind_host(host, allow_non_loopback)
    try:
        listeners = list(await trio.open_tcp_listeners(port, host=host))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(f"cannot listen on {host}:{port}: the port is in use by another program "
                            "(choose another port in the config)") from None
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return listeners, int(listeners[0].socket.getsockname()[1])


class BodyTooLarge(Exception):
    pass


# --- one connection's failure stays with that connection ------------------------------------------

@dataclass(eq=False)
class Ticket:
    """One TCP connection's place in a ``ConnectionGate``."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    admitted: bool = False


class ConnectionGate:
    """Who may hold a connection to a server.

    A new connection is *pending* until it has sent a request the server accepts (for the RPC: one
    with the right bearer token). At most ``max_pending`` connections wait like that; when one more
    arrives the oldest pending one is dropped, so a flood of half-open connections (which cost
    the attacker nothing) can never keep a real client from being heard. *Admitted* connections
    count against ``max_admitted``, which only clients that proved themselves can fill.
    """

    def __init__(self, max_admitted: int, max_pending: int) -> None:
        self.max_admitted = max_admitted
        self.max_pending = max_pending
        self.admitted = 0
        self.evicted = 0
        self._pending: dict[Ticket, None] = {}    # insertion order = oldest first

    @property
    def pending(self) -> int:
        return len(self._pending)

    @contextmanager
    def enter(self) -> Iterator[Ticket]:
        """Hold a place while the block runs; the block is cancelled if the place is evicted."""
        ticket = Ticket()
        self._pending[ticket] = None
        if len(self._pending) > self.max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.scope.cancel()
            self.evicted += 1
        try:
            with ticket.scope:
                yield ticket
        finally:
            self._pending.pop(ticket, None)
            if ticket.admitted:
                self.admitted -= 1

    def admit(self, ticket: Ticket) -> bool:
        """Move a pending connection to the admitted ones; False when they are all taken."""
        if ticket.admitted:
            return True
        if self.admitted >= self.max_admitted:
            return False
        self._pending.pop(ticket, None)
        ticket.admitted = True
        self.admitted += 1
        return True


async def contain(server: str, serving: Awaitable[None], stream: trio.abc.Stream,
                  quiet: tuple[type[Exception], ...] = ()) -> None:
    """Run one connection's ``serving`` and close its stream; whatever goes wrong in it ends that
    connection only (logged in one line unless it is one of ``quiet``), never the server or the
    node behind it."""
    try:
        await serving
        await linger(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, *quiet):
        pass      # the client went away or broke the protocol; nothing to answer
    except Exception as exc:   # noqa: BLE001 — the boundary between one client and the node
        leaf = first_leaf(exc)
        log.error("%s: dropped a connection after %s: %s", server, type(leaf).__name__, leaf)
        log.debug("%s: connection failure in full", server, exc_info=True)
    finally:
        await stream.aclose()


LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024


async def linger(stream: trio.abc.Stream) -> None:
    """End our side, then read (and drop) what the client still sends, for a bounded time.

    Closing a socket that holds unread bytes (the body of a request refused with 401 or 413) makes
    the kernel send a reset, which can destroy the answer before the client has read it."""
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        return
    await stream.send_eof()
    drained = 0
    with trio.move_on_after(LINGER_S):
        while drained < LINGER_BYTES:
            data = await stream.receive_some(READ_CHUNK)
            if not data:
                return
            drained += len(data)


def first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups: what a log line names."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def next_event(conn: h11.Connection, stream: trio.abc.Stream, raw: bytearray | None = None) -> object:
    """The next h11 event, reading from ``stream`` as needed (copying raw bytes into ``raw``)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(READ_CHUNK)
        if raw is not None:
            raw += data
        conn.receive_data(data)


async def read_body(conn: h11.Connection, stream: trio.abc.Stream, limit: int) -> bytes:
    body = bytearray()
    while True:
        event = await next_event(conn, stream)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                raise BodyTooLarge()
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a request body")


def header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return value
    return None


def head_size(request: h11.Request) -> int:
    """Bytes of a request's target and headers (about the size of its head on the wire)."""
    return len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)


def content_length(request: h11.Request) -> int | None:
    value = header(request, b"content-length")
    return int(value) if value is not None else None   # h11 has already validated it


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: bytes = b"application/json"
    close: bool = False
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()


async def send_response(conn: h11.Connection, stream: trio.abc.Stream, response: Response) -> None:
    headers = [(b"content-length", str(len(response.body)).encode()), *response.extra_headers]
    if response.body:
        headers.append((b"content-type", response.content_type))
    if response.close:
        headers.append((b"connection", b"close"))
    data = conn.send(h11.Response(status_code=response.status, headers=headers,
                                   reason=_reason(response.status))) or b""
    if response.body:
        data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
