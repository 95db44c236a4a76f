"""Python clients of the local RPC: ``RpcClient`` (sync, httpx) and ``AsyncRpcClient`` (trio).

Calls are typed values built by the functions of ``calls`` (one per RPC method), so the sync and
async clients share one list and every result is decoded into its ``p2pgrid.rpc.api`` type::

    from p2pgrid.rpc.client import RpcClient, calls
    with RpcClient("http://127.0.0.1:8645/", token_file="~/.p2pgrid/rpc.token") as rpc:
        book = rpc.call(calls.book_get("z1", slot))            # -> BookSnapshot
        order = rpc.call(calls.order_place("z1", slot, Side.SELL, 500, 250_000))

    async with AsyncRpcClient(url, token=token) as rpc:       # under trio
        quote = await rpc.call(calls.route_quote("z1", slot, Side.BUY, 2000))
        async with rpc.open_websocket() as ws:                 # subscriptions need a WebSocket
            async with ws.subscribe("book", zone="z1") as updates:
                async for update in updates: ...               # -> BookUpdate

A JSON-RPC error answer raises ``RpcCallError`` (``.code``, ``.message``, ``.data``); a node that
cannot be reached over HTTP (refused, reset, timed out) raises ``RpcUnreachable``; a
subscription the server dropped for being slow ends its iterator with ``SubscriptionDropped``.
"""

from __future__ import annotations

import itertools
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Generic, Iterable, TypeVar

import httpx
import trio
import trio_websocket

from p2pgrid.errors import RpcError
from p2pgrid.rpc.api import (Balance, BookSnapshot, BookUpdate, Certificate, Execution, Forecast,
                             LedgerEntryView, NodeInfo, OrderView, PeerInfo, PoolView, RouteQuote,
                             SlotSettlement, Telemetry, TradeView)
from p2pgrid.rpc.auth import read_token
from p2pgrid.rpc.codec import from_json
from p2pgrid.rpc.errors import RpcCallError
from p2pgrid.wire import Side, Source

T = TypeVar("T")

__all__ = ["AsyncRpcClient", "Call", "RpcCallError", "RpcClient", "RpcUnreachable", "SubscriptionDropped",
           "WsRpc", "calls"]


class RpcUnreachable(RpcError):
    """The HTTP exchange with the node failed: nothing listens there, or it did not answer."""


def _unreachable(url: str, exc: httpx.TransportError) -> RpcUnreachable:
    return RpcUnreachable(f"cannot reach the node's RPC at {url}: {exc or type(exc).__name__}")


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    params: dict[str, Any]
    result: Any          # the api type the result decodes to

    def request(self, request_id: int | None) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": self.method, "params": self.params}
        if request_id is not None:
            message["id"] = request_id
        return message

    def decode(self, result: Any) -> T:
        return from_json(self.result, result)


class calls:  # noqa: N801 — a namespace of call builders, read as ``calls.book_get(...)``
    """One builder per RPC method; arguments as in API.md (ids and accounts as bytes)."""

    @staticmethod
    def node_info() -> Call[NodeInfo]:
        return Call("node_info", {}, NodeInfo)

    @staticmethod
    def peers_list() -> Call[list[PeerInfo]]:
        return Call("peers_list", {}, list[PeerInfo])

    @staticmethod
    def book_get(zone: str, slot: int, depth: int = 20) -> Call[BookSnapshot]:
        return Call("book_get", {"zone": zone, "slot": slot, "depth": depth}, BookSnapshot)

    @staticmethod
    def pool_list(zone: str, slot: int | None = None) -> Call[list[PoolView]]:
        return Call("pool_list", {"zone": zone, "slot": slot}, list[PoolView])

    @staticmethod
    def route_quote(zone: str, slot: int, side: Side, qty_wh: int,
                    limit_price: int | None = None) -> Call[RouteQuote]:
        return Call("route_quote", {"zone": zone, "slot": slot, "side": side.value, "qty_wh": qty_wh,
                                    "limit_price": limit_price}, RouteQuote)

    @staticmethod
    def order_place(zone: str, slot: int, side: Side, qty_wh: int, limit_price: int, *,
                    green: bool = False, source: Source = Source.NONE,
                    expiry_ms: int | None = None) -> Call[OrderView]:
        return Call("order_place", {"zone": zone, "slot": slot, "side": side.value, "qty_wh": qty_wh,
                                    "limit_price": limit_price, "green": green, "source": source.value,
                                    "expiry_ms": expiry_ms}, OrderView)

    @staticmethod
    def order_cancel(order_id: bytes) -> Call[OrderView]:
        return Call("order_cancel", {"order_id": order_id.hex()}, OrderView)

    @staticmethod
    def order_list(open_only: bool = True) -> Call[list[OrderView]]:
        return Call("order_list", {"open_only": open_only}, list[OrderView])

    @staticmethod
    def trade_execute(zone: str, slot: int, side: Side, qty_wh: int,
                      limit_price: int | None = None) -> Call[Execution]:
        return Call("trade_execute", {"zone": zone, "slot": slot, "side": side.value, "qty_wh": qty_wh,
                                      "limit_price": limit_price}, Execution)

    @staticmethod
    def trade_list(since_ms: int = 0, limit: int = 100) -> Call[list[TradeView]]:
        return Call("trade_list", {"since_ms": since_ms, "limit": limit}, list[TradeView])

    @staticmethod
    def ledger_balance(account: bytes) -> Call[Balance]:
        return Call("ledger_balance", {"account": account.hex()}, Balance)

    @staticmethod
    def ledger_entry(account: bytes, seq: int) -> Call[LedgerEntryView]:
        return Call("ledger_entry", {"account": account.hex(), "seq": seq}, LedgerEntryView)

    @staticmethod
    def telemetry_get() -> Call[Telemetry]:
        return Call("telemetry_get", {}, Telemetry)

    @staticmethod
    def forecast_get(slots: int = 8) -> Call[Forecast]:
        return Call("forecast_get", {"slots": slots}, Forecast)

    @staticmethod
    def settlement_get(slot: int) -> Call[SlotSettlement]:
        return Call("settlement_get", {"slot": slot}, SlotSettlement)

    @staticmethod
    def certs_list(account: bytes) -> Call[list[Certificate]]:
        return Call("certs_list", {"account": account.hex()}, list[Certificate])


TOPIC_TYPES: dict[str, Any] = {"book": BookUpdate, "fills": TradeView, "telemetry": Telemetry,
                               "settlements": SlotSettlement}


class SubscriptionDropped(RpcError):
    """The server dropped a subscription (a slow reader); subscribe again when ready."""


def _resolve_token(token: str | None, token_file: str | Path | None) -> str:
    if token is not None:
        return token
    if token_file is None:
        raise RpcError("give the RPC token or the path of the node's rpc.token file")
    return read_token(Path(token_file).expanduser())


def _unwrap(response: Any, call: Call[T]) -> T:
    if not isinstance(response, dict):
        raise RpcError(f"malformed JSON-RPC response: {response!r:.200}")
    if "error" in response:
        error = response["error"]
        raise RpcCallError(error.get("code", 0), error.get("message", ""), error.get("data"))
    return call.decode(response["result"])


def _http_answer(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise RpcError(f"HTTP {response.status_code} without a JSON body from the RPC server") from exc


def _error_of(answer: Any) -> RpcCallError:
    error = answer["error"] if isinstance(answer, dict) and "error" in answer else {}
    return RpcCallError(error.get("code", 0), error.get("message", "malformed error"), error.get("data"))


class RpcClient:
    """Blocking client over HTTP keep-alive (one connection reused)."""

    def __init__(self, url: str, *, token: str | None = None, token_file: str | Path | None = None,
                 timeout_s: float = 10.0) -> None:
        self._ids = itertools.count(1)
        self._http = httpx.Client(base_url=url, timeout=timeout_s, headers={
            "authorization": f"Bearer {_resolve_token(token, token_file)}",
            "content-type": "application/json"})

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, message: Any) -> httpx.Response:
        try:
            return self._http.post("", content=json.dumps(message))
        except httpx.TransportError as exc:
            raise _unreachable(str(self._http.base_url), exc) from None

    def call(self, call: Call[T]) -> T:
        return _unwrap(_http_answer(self._post(call.request(next(self._ids)))), call)

    def batch(self, batch: Iterable[Call[Any]]) -> list[Any]:
        """Results in call order; a failed call's slot holds its ``RpcCallError``."""
        batch = list(batch)
        ids = [next(self._ids) for _ in batch]
        response = self._post([c.request(i) for c, i in zip(batch, ids)])
        return _batch_results(batch, ids, _http_answer(response))

    def request(self, method: str, params: Any = None) -> Any:
        """An untyped call: the raw JSON result."""
        return self.call(Call(method, params if params is not None else {}, Any))

    def notify(self, method: str, params: Any = None) -> None:
        message = {"jsonrpc": "2.0", "method": method, "params": params if params is not None else {}}
        response = self._post(message)
        if response.status_code not in (200, 204):
            raise _error_of(_http_answer(response))


def _batch_results(batch: list[Call[Any]], request_ids: list[int], answer: Any) -> list[Any]:
    """Match a batch answer to its calls by id (the server may answer in any order)."""
    if not isinstance(answer, list):
        raise _error_of(answer)
    by_id = {item.get("id"): item for item in answer if isinstance(item, dict)}
    results: list[Any] = []
    for c, i in zip(batch, request_ids):
        try:
            results.append(_unwrap(by_id.get(i), c))
        except RpcCallError as exc:
            results.append(exc)
    return results


class AsyncRpcClient:
    """Trio client: HTTP calls with httpx, subscriptions over ``open_websocket()``."""

    def __init__(self, url: str, *, token: str | None = None, token_file: str | Path | None = None,
                 timeout_s: float = 10.0) -> None:
        self.url = url
        self.token = _resolve_token(token, token_file)
        self._ids = itertools.count(1)
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout_s, headers={
            "authorization": f"Bearer {self.token}", "content-type": "application/json"})

    async def __aenter__(self) -> AsyncRpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _post(self, message: Any) -> httpx.Response:
        try:
            return await self._http.post("", content=json.dumps(message))
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None

    async def call(self, call: Call[T]) -> T:
        return _unwrap(_http_answer(await self._post(call.request(next(self._ids)))), call)

    async def batch(self, batch: Iterable[Call[Any]]) -> list[Any]:
        batch = list(batch)
        ids = [next(self._ids) for _ in batch]
        response = await self._post([c.request(i) for c, i in zip(batch, ids)])
        return _batch_results(batch, ids, _http_answer(response))

    def open_websocket(self, *, buffer: int = 1024) -> Any:
        return open_ws_rpc(self.ws_url, self.token, buffer=buffer)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1).rstrip("/") + "/ws"


class WsRpc:
    """One WebSocket connection: calls (answers matched by id) and subscriptions."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, buffer: int, timeout_s: float = 10.0) -> None:
        self._ws = ws
        self._buffer = buffer
        self._timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[Any]] = {}
        self._subscriptions: dict[str, trio.MemorySendChannel[Any]] = {}

    async def call(self, call: Call[T]) -> T:
        return _unwrap(await self._send(call.request), call)

    async def request(self, method: str, params: Any = None) -> Any:
        return await self.call(Call(method, params if params is not None else {}, Any))

    async def _send(self, build: Any) -> Any:
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[Any](1)
        self._waiting[request_id] = send
        try:
            with trio.fail_after(self._timeout_s):
                await self._ws.send_message(json.dumps(build(request_id)))
                return await receive.receive()
        except trio.EndOfChannel:
            raise RpcError("the RPC WebSocket closed before answering") from None
        finally:
            self._waiting.pop(request_id, None)

    @asynccontextmanager
    async def subscribe(self, topic: str, *, zone: str | None = None,
                        slot: int | None = None) -> AsyncIterator[AsyncIterator[Any]]:
        """Events of ``topic`` decoded to their api type, until the block ends or the server drops us."""
        send, receive = trio.open_memory_channel[Any](self._buffer)
        sub_id = await self.request("subscribe", {"topic": topic, "zone": zone, "slot": slot})
        self._subscriptions[sub_id] = send
        try:
            yield _Decoded(receive, TOPIC_TYPES[topic])
        finally:
            if self._subscriptions.pop(sub_id, None) is not None:
                with trio.move_on_after(5):
                    try:
                        await self.request("unsubscribe", {"subscription": sub_id})
                    except (RpcCallError, trio_websocket.ConnectionClosed):
                        pass    # already gone on the server side: nothing left to undo

    async def _read(self) -> None:
        while True:
            try:
                message = json.loads(await self._ws.get_message())
            except trio_websocket.ConnectionClosed:
                for channel in [*self._waiting.values(), *self._subscriptions.values()]:
                    await channel.aclose()
                return
            await self._route(message)

    async def _route(self, message: Any) -> None:
        if isinstance(message, list) or "id" in message:
            request_id = message[0].get("id") if isinstance(message, list) else message["id"]
            waiter = self._waiting.get(request_id)
            if waiter is not None:
                await waiter.send(message)
            return
        params = message.get("params", {})
        channel = self._subscriptions.get(params.get("subscription"))
        if channel is None:
            return    # an event racing our unsubscribe
        if message.get("method") == "subscription":
            await channel.send(params["result"])
        elif message.get("method") == "subscription_dropped":
            self._subscriptions.pop(params["subscription"], None)
            await channel.send(SubscriptionDropped(params.get("reason", "dropped")))
            await channel.aclose()


class _Decoded:
    """Async iterator over a subscription's events, decoded to ``result_type``."""

    def __init__(self, receive: trio.MemoryReceiveChannel[Any], result_type: Any) -> None:
        self._receive = receive
        self._type = result_type

    def __aiter__(self) -> _Decoded:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        if isinstance(item, SubscriptionDropped):
            raise item
        return from_json(self._type, item)


@asynccontextmanager
async def open_ws_rpc(ws_url: str, token: str, *, buffer: int = 1024) -> AsyncIterator[WsRpc]:
    async with trio_websocket.open_websocket_url(
            ws_url, extra_headers=[(b"authorization", f"Bearer {token}".encode())]) as ws:
        client = WsRpc(ws, buffer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()

