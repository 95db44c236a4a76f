"""Errors of the local RPC and the JSON-RPC error codes they map to.

::

    RpcError                         (p2pgrid.errors)
    ├── JsonRpcError                 carries a JSON-RPC error code; raised inside the server
    │   ├── ParseError               -32700 body is not JSON
    │   ├── InvalidRequest           -32600 not a JSON-RPC 2.0 request object (or batch too big)
    │   ├── MethodNotFound           -32601
    │   ├── InvalidParams            -32602 a param is missing, unknown or of the wrong type
    │   ├── RateLimited              -32005 this connection exceeded its request rate
    │   ├── NeedsWebSocket           -32004 subscriptions exist only on a WebSocket
    │   ├── UnknownSubscription      -32006 unsubscribe of an id this connection does not hold
    │   └── TooManySubscriptions     -32008 the connection already holds its cap of subscriptions
    ├── TokenFileError               the token file is unreadable or readable by others
    ├── NotLoopbackError             refusing to bind the RPC to a non-loopback address
    ├── CannotListen                 the RPC or metrics port is taken or cannot be bound
    └── RpcCallError                 (client side) the server answered with an error object

    P2PGridError
    └── NotAvailable                 -32007 the node has no such part: telemetry and forecasts without
                                     devices; trading, ledger, settlement, certificates without a ledger

Node errors (``P2PGridError`` raised by a ``NodeApi`` method) become *application* errors, code
chosen by the most specific category in the exception's class hierarchy (``APPLICATION_CODES``).
Their ``data`` is ``{"type": "<ExceptionClassName>"}``. Any other exception is a bug in the
server or node and becomes ``-32603 internal error`` with no detail (it is logged).
"""

from __future__ import annotations

from typing import Any

from p2pgrid import errors as base
from p2pgrid.market import errors as market

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# Application codes (JSON-RPC reserves -32000..-32099 for implementation-defined server errors).
NODE_ERROR = -32000
NEEDS_WEBSOCKET = -32004
RATE_LIMITED = -32005
UNKNOWN_SUBSCRIPTION = -32006
NOT_AVAILABLE = -32007
TOO_MANY_SUBSCRIPTIONS = -32008
CONFIG_ERROR = -32010
WIRE_ERROR = -32020
MARKET_ERROR = -32030
INVALID_ORDER = -32031
UNKNOWN_ORDER = -32032
OVERFILL = -32033
POOL_ERROR = -32034
TRADING_ERROR = -32040
LEDGER_ERROR = -32050
SETTLEMENT_ERROR = -32060
DEVICE_ERROR = -32070
NET_ERROR = -32080
KEYSTORE_ERROR = -32090


class NotAvailable(base.P2PGridError):
    """The node does not run the part a method needs (e.g. no device service for telemetry).

    A real answer, not a bug: the method exists and will work on a node that runs that part, so a
    client should not retry. It is never replaced by made-up data."""


# Most specific first is not needed: lookup walks the exception's MRO, first hit wins.
APPLICATION_CODES: dict[type[base.P2PGridError], int] = {
    base.ConfigError: CONFIG_ERROR,
    NotAvailable: NOT_AVAILABLE,
    base.KeystoreError: KEYSTORE_ERROR,
    base.WireError: WIRE_ERROR,
    base.MarketError: MARKET_ERROR,
    market.InvalidOrder: INVALID_ORDER,
    market.UnknownOrder: UNKNOWN_ORDER,
    market.Overfill: OVERFILL,
    market.PoolError: POOL_ERROR,
    base.TradingError: TRADING_ERROR,
    base.LedgerError: LEDGER_ERROR,
    base.SettlementError: SETTLEMENT_ERROR,
    base.DeviceError: DEVICE_ERROR,
    base.NetError: NET_ERROR,
    base.P2PGridError: NODE_ERROR,
}


class JsonRpcError(base.RpcError):
    code = INTERNAL_ERROR

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ParseError(JsonRpcError):
    code = PARSE_ERROR


class InvalidRequest(JsonRpcError):
    code = INVALID_REQUEST


class MethodNotFound(JsonRpcError):
    code = METHOD_NOT_FOUND


class InvalidParams(JsonRpcError):
    code = INVALID_PARAMS


class RateLimited(JsonRpcError):
    code = RATE_LIMITED


class NeedsWebSocket(JsonRpcError):
    code = NEEDS_WEBSOCKET


class UnknownSubscription(JsonRpcError):
    code = UNKNOWN_SUBSCRIPTION


class TooManySubscriptions(JsonRpcError):
    code = TOO_MANY_SUBSCRIPTIONS


class TokenFileError(base.RpcError):
    pass


class NotLoopbackError(base.RpcError):
    pass


class CannotListen(base.RpcError):
    pass


class RpcCallError(base.RpcError):
    """The server answered a call with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


def application_code(error: base.P2PGridError) -> int:
    """The JSON-RPC code for a node error: the most specific category it belongs to."""
    for cls in type(error).__mro__:
        if cls in APPLICATION_CODES:
            return APPLICATION_CODES[cls]
    return NODE_ERROR


def error_object(code: int, message: str, data: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        obj["data"] = data
    return obj
