"""JSON form of the RPC values, both ways (pure).

Rules, applied field by field to the frozen dataclasses of ``p2pgrid.rpc.api``:

* ``int`` stays a JSON integer (Wh, µc, µc/kWh, ms) — never a float, never a string;
* ``bytes`` (ids, accounts, hashes) become lowercase hex strings without ``0x``;
* ``str`` enums (``Side``, ``Source``, ``OrderStatus``, …) become their value (``"buy"``);
* tuples become arrays; ``None`` becomes ``null``; a nested dataclass becomes an object.

``to_json`` and ``from_json`` are inverses for every api type (a hypothesis test checks it).
Incoming *params* are checked by the small ``Param`` parsers below, which raise ``InvalidParams``
(JSON-RPC ``-32602``) naming the parameter: a bool is not an int, a float is not an int, hex
must have the exact size.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from p2pgrid.rpc.errors import InvalidParams

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)

JSON_INT_MAX = 2**63 - 1
_HEX = re.compile(r"[0-9a-f]*")


# --- values → JSON ------------------------------------------------------------------------------

_PLAIN = (int, bool, str, type(None))


def to_json(value: Any) -> Any:
    """A plain JSON-able structure for an api value."""
    kind = type(value)
    if kind in _PLAIN:                     # exact types first: this runs for every field served
        return value
    if kind is bytes:
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.value
    if kind in (list, tuple):
        return [to_json(v) for v in value]
    names = _field_names(kind)
    if names is not None:
        return {name: to_json(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    raise TypeError(f"cannot encode {kind.__name__} as RPC JSON")


@functools.cache
def _field_names(kind: type) -> tuple[str, ...] | None:
    return tuple(f.name for f in dataclasses.fields(kind)) if dataclasses.is_dataclass(kind) else None


# --- JSON → values (client side) ----------------------------------------------------------------

class DecodeJsonError(ValueError):
    """A server answer that does not have the documented shape."""


def from_json(cls: type[T], data: Any) -> T:
    """Build api type ``cls`` from its JSON form, checking every field's type."""
    return typing.cast(T, _from_json(cls, data, cls.__name__))


def _from_json(hint: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if data is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _from_json(inner, data, where)
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(data, list):
            raise DecodeJsonError(f"{where}: expected an array")
        return tuple(_from_json(item, v, f"{where}[{i}]") for i, v in enumerate(data))
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(data, list):
            raise DecodeJsonError(f"{where}: expected an array")
        return [_from_json(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
    if dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise DecodeJsonError(f"{where}: expected an object")
        hints = typing.get_type_hints(hint)
        values = {}
        for f in dataclasses.fields(hint):
            if f.name not in data:
                if f.default is not dataclasses.MISSING:
                    continue
                raise DecodeJsonError(f"{where}.{f.name}: missing")
            values[f.name] = _from_json(hints[f.name], data[f.name], f"{where}.{f.name}")
        return typing.cast(Any, hint)(**values)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError as exc:
            raise DecodeJsonError(f"{where}: {data!r} is not a {hint.__name__}") from exc
    if hint is bytes:
        if not isinstance(data, str) or not _HEX.fullmatch(data) or len(data) % 2:
            raise DecodeJsonError(f"{where}: expected lowercase hex")
        return bytes.fromhex(data)
    if hint is bool:
        if type(data) is not bool:
            raise DecodeJsonError(f"{where}: expected a bool")
        return data
    if hint is int:
        if type(data) is not int:
            raise DecodeJsonError(f"{where}: expected an integer")
        return data
    if hint is str:
        if type(data) is not str:
            raise DecodeJsonError(f"{where}: expected a string")
        return data
    if hint is Any:
        return data
    raise TypeError(f"{where}: cannot decode type {hint!r}")


# --- params -------------------------------------------------------------------------------------

REQUIRED: Any = object()


@dataclass(frozen=True)
class Param(Generic[T]):
    """One named parameter: its parser (raises ``InvalidParams``) and default (``REQUIRED``)."""

    name: str
    parse: Callable[[Any, str], T]
    default: Any = REQUIRED
    doc: str = ""


def bind_params(spec: tuple[Param[Any], ...], params: Any) -> dict[str, Any]:
    """Match JSON-RPC ``params`` (array by position, object by name, or absent) against ``spec``."""
    if params is None:
        given: dict[str, Any] = {}
    elif isinstance(params, list):
        if len(params) > len(spec):
            raise InvalidParams(f"expected at most {len(spec)} positional params, got {len(params)}")
        given = {p.name: v for p, v in zip(spec, params)}
    elif isinstance(params, dict):
        unknown = sorted(set(params) - {p.name for p in spec})
        if unknown:
            raise InvalidParams(f"unknown param(s): {', '.join(unknown)}")
        given = params
    else:
        raise InvalidParams("params must be an array or an object")
    bound = {}
    for p in spec:
        if p.name in given:
            bound[p.name] = p.parse(given[p.name], p.name)
        elif p.default is REQUIRED:
            raise InvalidParams(f"missing param: {p.name}")
        else:
            bound[p.name] = p.default
    return bound


def integer(minimum: int = 0, maximum: int = JSON_INT_MAX) -> Callable[[Any, str], int]:
    def parse(value: Any, name: str) -> int:
        if type(value) is not int:
            raise InvalidParams(f"{name}: expected an integer, got {_json_type(value)}")
        if not minimum <= value <= maximum:
            raise InvalidParams(f"{name}: {value} outside [{minimum}, {maximum}]")
        return value
    return parse


def text(pattern: str = r".{0,256}") -> Callable[[Any, str], str]:
    compiled = re.compile(pattern)

    def parse(value: Any, name: str) -> str:
        if type(value) is not str:
            raise InvalidParams(f"{name}: expected a string, got {_json_type(value)}")
        if not compiled.fullmatch(value):
            raise InvalidParams(f"{name}: {value!r} does not match {pattern}")
        return value
    return parse


def hex_bytes(size: int) -> Callable[[Any, str], bytes]:
    def parse(value: Any, name: str) -> bytes:
        if type(value) is not str or not _HEX.fullmatch(value) or len(value) != 2 * size:
            raise InvalidParams(f"{name}: expected {size} bytes as {2 * size} lowercase hex digits")
        return bytes.fromhex(value)
    return parse


def boolean(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise InvalidParams(f"{name}: expected true or false, got {_json_type(value)}")
    return value


def choice(enum_type: type[E]) -> Callable[[Any, str], E]:
    def parse(value: Any, name: str) -> E:
        try:
            return enum_type(value)
        except ValueError:
            options = ", ".join(repr(m.value) for m in enum_type)
            raise InvalidParams(f"{name}: expected one of {options}") from None
    return parse


def optional(inner: Callable[[Any, str], T]) -> Callable[[Any, str], T | None]:
    def parse(value: Any, name: str) -> T | None:
        return None if value is None else inner(value, name)
    return parse


def array(inner: Callable[[Any, str], T], max_len: int = 256) -> Callable[[Any, str], tuple[T, ...]]:
    """A JSON array of at most ``max_len`` items, each parsed by ``inner``; a tuple."""
    def parse(value: Any, name: str) -> tuple[T, ...]:
        if type(value) is not list:
            raise InvalidParams(f"{name}: expected an array, got {_json_type(value)}")
        if len(value) > max_len:
            raise InvalidParams(f"{name}: more than {max_len} items")
        return tuple(inner(item, f"{name}[{i}]") for i, item in enumerate(value))
    return parse


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, float):
        return "a number with a fraction"
    return {int: "an integer", str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)
