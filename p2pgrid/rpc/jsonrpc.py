"""JSON-RPC 2.0 message handling, independent of the transport (no sockets here).

``handle_payload(text, ...)`` takes the body of one HTTP POST or one WebSocket text message and
returns the response text, or ``None`` when nothing is to be sent back. It follows the spec
(https://www.jsonrpc.org/specification) to the letter:

* not JSON → one error ``-32700`` with ``id: null``;
* a request that is not an object with ``"jsonrpc": "2.0"``, a string ``method``, ``params`` absent
  / array / object and ``id`` absent / string / integer / null → ``-32600``, echoing the id when it
  was valid;
* a **notification** (no ``id`` member) is executed and never answered, even when it fails;
* a **batch** (array) is answered with an array of the non-notification responses, in request
  order; an empty array → one ``-32600``; a batch of only notifications → nothing; a batch larger
  than ``max_batch`` → one ``-32600`` and nothing executed;
* unknown method ``-32601``, bad params ``-32602``, node errors → application codes
  (``p2pgrid.rpc.errors``), anything else ``-32603``.

Rate limiting is the transport's call: ``admit(n)`` is asked once per payload for the number of
calls it holds; when it says no, every call is answered ``-32005`` and none is executed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from p2pgrid.errors import P2PGridError
from p2pgrid.rpc.codec import Param, bind_params, to_json
from p2pgrid.rpc.errors import (INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, JsonRpcError,
                                MethodNotFound, RateLimited, application_code, error_object)

log = logging.getLogger(__name__)

Handler = Callable[[Any, Mapping[str, Any], Any], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    """An RPC method: name, typed params, and ``call(node, params, session) -> api value``."""

    name: str
    params: tuple[Param[Any], ...]
    call: Handler
    summary: str


_NO_ID = object()


def encode(message: Any) -> str:
    """JSON text that always encodes as UTF-8: a lone surrogate (``"\\ud800"`` in a request's
    method or id, echoed back) cannot be written as UTF-8, so such a message is ``\\u``-escaped."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=True)
    return text


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error_object(code, message, data), "id": request_id}


async def handle_payload(text: str | bytes, methods: Mapping[str, Method], node: Any, session: Any,
                         admit: Callable[[int], bool], max_batch: int = 100) -> str | None:
    try:
        payload = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        return encode(error_response(None, PARSE_ERROR, f"parse error: {exc}"))
    except RecursionError:
        # json's decoder recurses per nesting level: a payload nested deeper than the
        # interpreter's limit is not a request anyone means to send.
        return encode(error_response(None, PARSE_ERROR, "parse error: JSON nested too deeply"))
    if isinstance(payload, list):
        if not payload:
            return encode(error_response(None, INVALID_REQUEST, "empty batch"))
        if len(payload) > max_batch:
            return encode(error_response(None, INVALID_REQUEST, f"batch larger than {max_batch} calls"))
        if not admit(len(payload)):
            refused = [_rate_limited(item) for item in payload if _has_id(item)]
            return encode(refused) if refused else None
        responses = [r for r in [await handle_one(item, methods, node, session) for item in payload]
                     if r is not None]
        return encode(responses) if responses else None
    if not admit(1):
        return encode(_rate_limited(payload)) if _has_id(payload) else None
    response = await handle_one(payload, methods, node, session)
    return None if response is None else encode(response)


async def handle_one(item: Any, methods: Mapping[str, Method], node: Any, session: Any) -> dict[str, Any] | None:
    """One request object → its response object, or None for a notification."""
    request_id = _valid_id(item)
    problem = _request_problem(item)
    if problem is not None:
        return error_response(None if request_id is _NO_ID else request_id, INVALID_REQUEST,
                              f"invalid request: {problem}")
    is_notification = request_id is _NO_ID
    try:
        method = methods.get(item["method"])
        if method is None:
            raise MethodNotFound(f"method not found: {item['method']}")
        params = bind_params(method.params, item.get("params"))
        result = to_json(await method.call(node, params, session))
    except JsonRpcError as exc:
        return None if is_notification else error_response(request_id, exc.code, exc.message, exc.data)
    except P2PGridError as exc:
        if is_notification:
            return None
        return error_response(request_id, application_code(exc), str(exc), {"type": type(exc).__name__})
    except Exception:
        # A bug in us or the node, not the caller's fault: log it in full, tell the caller little.
        log.exception("internal error in RPC method %r", item.get("method"))
        return None if is_notification else error_response(request_id, INTERNAL_ERROR, "internal error")
    return None if is_notification else {"jsonrpc": "2.0", "result": result, "id": request_id}


def _request_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "a request must be an object"
    if item.get("jsonrpc") != "2.0":
        return 'member "jsonrpc" must be exactly "2.0"'
    if not isinstance(item.get("method"), str):
        return 'member "method" must be a string'
    if "params" in item and not isinstance(item["params"], (list, dict)):
        return 'member "params" must be an array or an object'
    if "id" in item and _valid_id(item) is _NO_ID:
        return 'member "id" must be a string, an integer or null'
    extra = set(item) - {"jsonrpc", "method", "params", "id"}
    if extra:
        return f"unknown member(s): {', '.join(sorted(extra))}"
    return None


def _valid_id(item: Any) -> Any:
    """The request's id when it is a valid one, else ``_NO_ID`` (absent or malformed)."""
    if not isinstance(item, dict) or "id" not in item:
        return _NO_ID
    value = item["id"]
    if value is None or isinstance(value, str) or (type(value) is int):
        return value
    return _NO_ID


def _has_id(item: Any) -> bool:
    return isinstance(item, dict) and "id" in item


def _rate_limited(item: Any) -> dict[str, Any]:
    request_id = _valid_id(item)
    exc = RateLimited("rate limit exceeded for this connection; slow down")
    return error_response(None if request_id is _NO_ID else request_id, exc.code, exc.message)
