"""SunSpec register layout, decoding and encoding (pure).

A SunSpec device is a block of 16-bit Modbus holding registers starting at a base address
(40000 usually; 0 and 50000 are also allowed). The block begins with the marker ``"SunS"``
(0x5375, 0x6E53), then a chain of models, each ``ID, L, <L registers>``; the chain ends with
``ID = 0xFFFF``. Model layouts come from pysunspec2's JSON model definitions (the SunSpec
Alliance's own machine-readable models), so points sit exactly where the standard puts them.

Decoding rules:

* every type has a *not implemented* marker (int16 0x8000, uint16/enum16/bitfield16 0xFFFF,
  int32 0x80000000, uint32/enum32/bitfield32 0xFFFFFFFF, sunssf 0x8000, strings all NUL,
  float32 NaN); such points decode to ``None``. Accumulators (acc16/32/64) have no marker here:
  0 is a valid count for a new meter.
* a point with a scale factor decodes to ``raw × 10^sf`` (a float); the scale factor is itself a
  point (type sunssf) of the same model, and must lie in −10..10 or the model is garbage.

Only models without repeating groups are supported (1, 101–103, 120, 123, 124, 201–204, 802 —
everything the adapters use); asking for another raises ``SunSpecModelError``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from p2pgrid.devices.base import DeviceProtocolError

SUNS_MARKER = (0x5375, 0x6E53)
END_MODEL_ID = 0xFFFF
BASE_ADDRESSES = (40000, 0, 50000)
MAX_SCALE_FACTOR = 10

_WIDTH = {"uint16": 1, "int16": 1, "enum16": 1, "bitfield16": 1, "acc16": 1, "sunssf": 1,
          "count": 1, "pad": 1, "uint32": 2, "int32": 2, "enum32": 2, "bitfield32": 2,
          "acc32": 2, "float32": 2, "ipaddr": 2, "uint64": 4, "int64": 4, "acc64": 4,
          "eui48": 4, "ipv6addr": 8}
_SIGNED = {"int16", "int32", "int64", "sunssf"}
_NOT_IMPLEMENTED = {"int16": 0x8000, "sunssf": 0x8000, "uint16": 0xFFFF, "enum16": 0xFFFF,
                    "bitfield16": 0xFFFF, "int32": 0x80000000, "uint32": 0xFFFFFFFF,
                    "enum32": 0xFFFFFFFF, "bitfield32": 0xFFFFFFFF,
                    "int64": 0x8000000000000000, "uint64": 0xFFFFFFFFFFFFFFFF}

Value = int | float | str | None


class SunSpecModelError(DeviceProtocolError):
    """A model we cannot lay out, or a register block that does not match its model."""


@dataclass(frozen=True)
class PointDef:
    name: str
    type: str
    offset: int  # registers from the model's ID register
    size: int
    sf: str | None = None
    writable: bool = False


@dataclass(frozen=True)
class ModelDef:
    id: int
    name: str
    points: tuple[PointDef, ...]

    @property
    def length(self) -> int:
        """The model's ``L``: registers after the two-register header."""
        last = self.points[-1]
        return last.offset + last.size - 2

    def point(self, name: str) -> PointDef:
        for p in self.points:
            if p.name == name:
                return p
        raise SunSpecModelError(f"model {self.id} has no point {name!r}")


@cache
def model_def(model_id: int) -> ModelDef:
    """The layout of SunSpec model ``model_id``, from pysunspec2's JSON definition."""
    path = resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
    try:
        group = json.loads(path.read_text())["group"]
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise SunSpecModelError(f"no SunSpec model definition for {model_id}") from exc
    if group.get("groups"):
        raise SunSpecModelError(f"model {model_id} has repeating groups (not supported)")
    points, offset = [], 0
    for p in group["points"]:
        size = int(p.get("size", _WIDTH.get(p["type"], 1)))
        sf = p.get("sf")
        points.append(PointDef(p["name"], p["type"], offset, size,
                               sf if isinstance(sf, str) else None, p.get("access") == "RW"))
        offset += size
    return ModelDef(model_id, group["name"], tuple(points))


def _raw_int(regs: Sequence[int], signed: bool) -> int:
    value = 0
    for r in regs:
        value = (value << 16) | (r & 0xFFFF)
    bits = 16 * len(regs)
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _decode_raw(point: PointDef, regs: Sequence[int]) -> Value:
    kind = point.type
    if kind == "pad":
        return None
    if kind == "string":
        data = b"".join(struct.pack(">H", r & 0xFFFF) for r in regs)
        text = data.split(b"\0", 1)[0]
        return text.decode("utf-8", errors="replace").strip() or None
    if kind == "float32":
        value = struct.unpack(">f", struct.pack(">HH", regs[0], regs[1]))[0]
        return None if math.isnan(value) else value
    unsigned = _raw_int(regs, signed=False)
    if kind in _NOT_IMPLEMENTED and unsigned == _NOT_IMPLEMENTED[kind]:
        return None
    return _raw_int(regs, signed=kind in _SIGNED)


def decode_model(mdef: ModelDef, regs: Sequence[int]) -> dict[str, Value]:
    """Decode a model's registers (starting at its ID register) into engineering values."""
    if len(regs) < mdef.length + 2:
        raise SunSpecModelError(
            f"model {mdef.id} needs {mdef.length + 2} registers, got {len(regs)}")
    if regs[0] != mdef.id:
        raise SunSpecModelError(f"expected model {mdef.id}, found id {regs[0]}")
    raw = {p.name: _decode_raw(p, regs[p.offset:p.offset + p.size]) for p in mdef.points}
    for p in mdef.points:
        value = raw[p.name]
        if p.type == "sunssf" and value is not None and abs(int(value)) > MAX_SCALE_FACTOR:
            raise SunSpecModelError(f"model {mdef.id} scale factor {p.name}={value} not in ±10")
    values: dict[str, Value] = {}
    for p in mdef.points:
        value = raw[p.name]
        if p.sf is not None and value is not None:
            sf = raw.get(p.sf)
            value = None if sf is None else float(value) * 10.0 ** int(sf)
        values[p.name] = value
    return values


def _encode_int(value: int, size: int) -> list[int]:
    value &= (1 << (16 * size)) - 1
    return [(value >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]


def encode_point(point: PointDef, value: Value, scale: int = 0) -> list[int]:
    """Registers for one point; ``value`` in engineering units, divided by ``10^scale``."""
    if value is None:
        if point.type == "string" or point.type.startswith("acc") or point.type == "pad":
            return [0] * point.size
        if point.type == "float32":
            return list(struct.unpack(">HH", struct.pack(">f", math.nan)))
        return _encode_int(_NOT_IMPLEMENTED.get(point.type, 0), point.size)
    if point.type == "string":
        data = str(value).encode("utf-8")[: 2 * point.size].ljust(2 * point.size, b"\0")
        return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if point.type == "float32":
        return list(struct.unpack(">HH", struct.pack(">f", float(value))))
    raw = round(float(value) / 10.0 ** scale)
    bits = 16 * point.size
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if point.type in _SIGNED \
        else (0, (1 << bits) - 1)
    if not low <= raw <= high:
        raise ValueError(f"{point.name}={value} does not fit {point.type} at scale {scale}")
    return _encode_int(raw, point.size)


def encode_model(model_id: int, values: Mapping[str, Value]) -> list[int]:
    """Registers of one model (header included) from engineering values. Scale factors are
    points too: give ``{"W": 1234.5, "W_SF": -1}``; points left out are *not implemented*."""
    mdef = model_def(model_id)
    unknown = set(values) - {p.name for p in mdef.points}
    if unknown:
        raise SunSpecModelError(f"model {model_id} has no points {sorted(unknown)}")
    regs: list[int] = []
    for p in mdef.points:
        if p.name == "ID":
            regs.append(model_id)
        elif p.name == "L":
            regs.append(mdef.length)
        else:
            scale = int(values.get(p.sf) or 0) if p.sf else 0
            regs.extend(encode_point(p, values.get(p.name), scale))
    return regs


def encode_image(models: Sequence[tuple[int, Mapping[str, Value]]]) -> list[int]:
    """A whole SunSpec register block: marker, the models in order, end marker."""
    regs = list(SUNS_MARKER)
    for model_id, values in models:
        regs.extend(encode_model(model_id, values))
    return regs + [END_MODEL_ID, 0]


def model_addresses(image: Sequence[int], base: int) -> dict[int, int]:
    """Model id → address of its ID register, walking a block already in memory (the async
    adapter walks the device the same way, one header read at a time)."""
    if tuple(image[:2]) != SUNS_MARKER:
        raise SunSpecModelError("no SunS marker")
    found: dict[int, int] = {}
    index = 2
    while index + 1 < len(image) and image[index] != END_MODEL_ID:
        found.setdefault(image[index], base + index)
        index += 2 + image[index + 1]
    return found
