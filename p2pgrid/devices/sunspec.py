"""SunSpec Modbus TCP adapters: grid meter, PV inverter and battery on real hardware.

``SunSpecClient`` owns one Modbus TCP connection (pymodbus, through the trio-asyncio bridge in
``p2pgrid.devices.aio``). It connects lazily, finds the SunSpec block by its ``"SunS"`` marker
at 40000 (then 0, then 50000), walks the model chain once and caches where each model sits.
Any transport failure drops the connection and the cached map, raises ``DeviceUnreachable``,
and the next call starts afresh — so a reader that keeps calling recovers by itself when the
device comes back.

Failures map onto the device errors of ``p2pgrid.devices.base``:

* refused / dropped / silent connection → ``DeviceUnreachable``
* bytes that are not Modbus TCP, Modbus exception responses, a missing marker, a model whose length disagrees with its
  definition, a scale factor outside ±10 → ``DeviceProtocolError`` (``SunSpecModelError``)
* a decoded value outside its physical range → ``DeviceValueError``

The device classes (``SunSpecMeter``, ``SunSpecInverter``, ``SunSpecBattery``) are thin: read
the models, convert with ``p2pgrid.devices.sunspec_readings``, validate, stamp with ``clock()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import trio
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from p2pgrid.devices.aio import call_aio, require_bridge
from p2pgrid.devices.base import (
    Applied,
    BatterySetpoint,
    DeviceKind,
    DeviceProtocolError,
    DeviceUnreachable,
    PvLimit,
    SetpointRejected,
    Setpoint,
)
from p2pgrid.devices.readings import (
    BatteryReading,
    MeterReading,
    PvReading,
    validate_reading,
)
from p2pgrid.devices.sunspec_readings import (
    INVERTER_MODELS,
    METER_MODELS,
    battery_reading,
    inverter_limit,
    meter_reading,
    pv_reading,
    storage_control,
)
from p2pgrid.devices.sunspec_registers import (
    BASE_ADDRESSES,
    END_MODEL_ID,
    SUNS_MARKER,
    SunSpecModelError,
    Value,
    decode_model,
    encode_point,
    model_def,
)
from p2pgrid.errors import DeviceError

#: Modbus allows at most 125 registers per read.
MAX_READ_REGISTERS = 125
#: Walking a model chain longer than this means the device is feeding us garbage.
MAX_MODELS = 64
MAX_REGISTER_ADDRESS = 0xFFFF
#: Devices built before the common model grew its pad register announce L=65.
COMMON_MODEL_WITHOUT_PAD = 65


def _check_length(model_id: int, length: int) -> None:
    """A known model must have its defined length; unknown (vendor) models are skipped."""
    try:
        expected = model_def(model_id).length
    except SunSpecModelError:
        return
    if length != expected and not (model_id == 1 and length == COMMON_MODEL_WITHOUT_PAD):
        raise SunSpecModelError(
            f"model {model_id} has L={length}, its definition says {expected}")


class ModbusExceptionResponse(DeviceProtocolError):
    """The device answered a request with a Modbus exception (e.g. illegal address)."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SunSpecEndpoint:
    host: str
    port: int = 502
    unit_id: int = 1
    timeout_s: float = 2.0
    base_addresses: tuple[int, ...] = BASE_ADDRESSES


class SunSpecClient:
    """One Modbus TCP connection to a SunSpec device, reconnecting on demand."""

    def __init__(self, endpoint: SunSpecEndpoint) -> None:
        self.endpoint = endpoint
        self._client: AsyncModbusTcpClient | None = None
        self._models: dict[int, tuple[int, int]] | None = None  # id -> (address, L)
        self._received_since_request = 0

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # pymodbus discards frames it cannot parse and then times out; counting what arrived
        # tells "answered garbage" (a protocol error) apart from "did not answer".
        if not sending:
            self._received_since_request += len(data)
        return data

    def _failure(self, exc: Exception) -> DeviceError:
        ep = self.endpoint
        garbage = self._received_since_request > 0 and isinstance(exc, ModbusIOException)
        self._drop()
        if garbage:
            return DeviceProtocolError(
                f"SunSpec device {ep.host}:{ep.port} answered bytes that are not a Modbus "
                f"TCP response ({exc})")
        return DeviceUnreachable(f"SunSpec device {ep.host}:{ep.port}: {exc}")

    async def aclose(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client, self._models = None, None

    async def _connected(self) -> AsyncModbusTcpClient:
        require_bridge()
        if self._client is not None and self._client.connected:
            return self._client
        self._drop()
        ep = self.endpoint
        client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=ep.timeout_s, retries=0,
                                      reconnect_delay=0, trace_packet=self._trace_packet)
        with trio.move_on_after(ep.timeout_s):
            if await call_aio(client.connect):
                self._client = client
                return client
        client.close()
        raise DeviceUnreachable(f"SunSpec device {ep.host}:{ep.port} does not accept connections")

    async def read_registers(self, address: int, count: int) -> list[int]:
        """Read ``count`` holding registers from ``address`` (in chunks of 125)."""
        client = await self._connected()
        ep = self.endpoint
        out: list[int] = []
        try:
            while len(out) < count:
                n = min(MAX_READ_REGISTERS, count - len(out))
                self._received_since_request = 0
                with trio.fail_after(ep.timeout_s * 2):
                    rr = await call_aio(client.read_holding_registers, address + len(out),
                                        count=n, device_id=ep.unit_id)
                if rr.isError():
                    raise ModbusExceptionResponse(
                        f"SunSpec device {ep.host}:{ep.port} refused registers "
                        f"{address + len(out)}+{n}: {rr}")
                if len(rr.registers) != n:
                    raise DeviceProtocolError(
                        f"SunSpec device returned {len(rr.registers)} registers, asked {n}")
                out.extend(rr.registers)
        except (ModbusException, OSError, trio.TooSlowError) as exc:
            raise self._failure(exc) from exc
        return out

    async def write_registers(self, address: int, values: Sequence[int]) -> None:
        client = await self._connected()
        ep = self.endpoint
        try:
            self._received_since_request = 0
            with trio.fail_after(ep.timeout_s * 2):
                rr = await call_aio(client.write_registers, address, list(values),
                                    device_id=ep.unit_id)
        except (ModbusException, OSError, trio.TooSlowError) as exc:
            raise self._failure(exc) from exc
        if rr.isError():
            raise ModbusExceptionResponse(f"SunSpec device refused write at {address}: {rr}")

    async def models(self) -> dict[int, tuple[int, int]]:
        """Model id → (address of its ID register, its L), discovered once per connection."""
        if self._models is not None:
            return self._models
        base = await self._find_base()
        found: dict[int, tuple[int, int]] = {}
        address = base + 2
        for _ in range(MAX_MODELS):
            model_id, length = await self.read_registers(address, 2)
            if model_id == END_MODEL_ID:
                self._models = found
                return found
            _check_length(model_id, length)
            found.setdefault(model_id, (address, length))
            address += 2 + length
            if address + 2 > MAX_REGISTER_ADDRESS:
                raise SunSpecModelError("SunSpec model chain runs past the register space")
        raise SunSpecModelError(f"SunSpec model chain longer than {MAX_MODELS} models")

    async def _find_base(self) -> int:
        for base in self.endpoint.base_addresses:
            try:
                marker = await self.read_registers(base, 2)
            except ModbusExceptionResponse:
                continue  # nothing mapped there: try the next base address
            if tuple(marker) == SUNS_MARKER:
                return base
        raise SunSpecModelError(
            f"no SunS marker at {list(self.endpoint.base_addresses)}: not a SunSpec device")

    async def has_model(self, model_id: int) -> bool:
        return model_id in await self.models()

    async def read_model(self, model_id: int) -> dict[str, Value]:
        models = await self.models()
        if model_id not in models:
            raise SunSpecModelError(f"device has no SunSpec model {model_id}")
        address, length = models[model_id]
        mdef = model_def(model_id)
        return decode_model(mdef, await self.read_registers(address, length + 2))

    async def write_points(self, model_id: int, values: Mapping[str, float]) -> None:
        """Write engineering values to points of a model, scaled by the device's own scale
        factors (read first)."""
        current = await self.read_model(model_id)
        address, _ = (await self.models())[model_id]
        mdef = model_def(model_id)
        for name, value in values.items():
            point = mdef.point(name)
            if not point.writable:
                raise SetpointRejected(f"SunSpec point {model_id}.{name} is not writable")
            scale = int(current.get(point.sf) or 0) if point.sf else 0
            await self.write_registers(address + point.offset, encode_point(point, value, scale))

    async def first_model(self, candidates: Sequence[int]) -> int:
        models = await self.models()
        for model_id in candidates:
            if model_id in models:
                return model_id
        raise SunSpecModelError(f"device has none of the SunSpec models {list(candidates)}")


class SunSpecMeter:
    kind = DeviceKind.METER

    def __init__(self, client: SunSpecClient, *, import_positive: bool = True,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.client, self.import_positive, self.clock = client, import_positive, clock

    async def read(self) -> MeterReading:
        values = await self.client.read_model(await self.client.first_model(METER_MODELS))
        reading = meter_reading(values, self.clock(), self.import_positive)
        validate_reading(reading)
        return reading


class SunSpecInverter:
    """A PV inverter; curtailment needs immediate controls (model 123)."""

    kind = DeviceKind.PV

    def __init__(self, client: SunSpecClient, *, rated_w: float | None = None,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.client, self.rated_w, self.clock = client, rated_w, clock

    async def _optional_model(self, model_id: int) -> dict[str, Value] | None:
        return await self.client.read_model(model_id) \
            if await self.client.has_model(model_id) else None

    async def read(self) -> PvReading:
        inverter = await self.client.read_model(await self.client.first_model(INVERTER_MODELS))
        reading = pv_reading(inverter, self.clock(),
                             nameplate=await self._optional_model(120),
                             controls=await self._optional_model(123), rated_w=self.rated_w,
                             settings=await self._optional_model(121))
        validate_reading(reading)
        return reading

    async def apply(self, setpoint: Setpoint) -> Applied:
        if not isinstance(setpoint, PvLimit):
            raise SetpointRejected(f"inverter cannot take {type(setpoint).__name__}")
        if not await self.client.has_model(123):
            raise SetpointRejected("inverter has no immediate controls (SunSpec model 123)")
        points, applied = inverter_limit(setpoint, (await self.read()).rated_w)
        await self.client.write_points(123, points)
        return applied


class SunSpecBattery:
    """A battery: readings from model 802, control through model 124."""

    kind = DeviceKind.BATTERY

    def __init__(self, client: SunSpecClient, *, discharge_positive: bool = True, revert_s: float = 0.0,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.client, self.discharge_positive, self.clock = client, discharge_positive, clock
        self.revert_s = revert_s

    async def read(self) -> BatteryReading:
        battery = await self.client.read_model(802)
        storage = await self.client.read_model(124) \
            if await self.client.has_model(124) else None
        reading = battery_reading(battery, self.clock(), storage=storage,
                                  discharge_positive=self.discharge_positive)
        validate_reading(reading)
        return reading

    async def apply(self, setpoint: Setpoint) -> Applied:
        if not isinstance(setpoint, BatterySetpoint):
            raise SetpointRejected(f"battery cannot take {type(setpoint).__name__}")
        if not await self.client.has_model(124):
            raise SetpointRejected("battery has no storage controls (SunSpec model 124)")
        storage = await self.client.read_model(124)
        reading = await self.read()
        wcha_max = storage.get("WChaMax")
        if not isinstance(wcha_max, (int, float)):
            raise DeviceProtocolError("SunSpec storage WChaMax not implemented")
        points, applied = storage_control(setpoint, float(wcha_max), reading.max_discharge_w, self.revert_s)
        await self.client.write_points(124, points)
        return applied
