"""SunSpec Modbus TCP adapters against a real pymodbus server on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest
import trio

from p2pgrid.devices.base import (
    BatterySetpoint,
    DeviceProtocolError,
    DeviceUnreachable,
    DeviceValueError,
    PvLimit,
    Quality,
    SetpointRejected,
)
from p2pgrid.devices.readings import BatteryMode
from p2pgrid.devices.sampler import SampledDevice, open_sampler
from p2pgrid.devices.sunspec import (
    SunSpecBattery,
    SunSpecClient,
    SunSpecEndpoint,
    SunSpecInverter,
    SunSpecMeter,
)
from p2pgrid.devices.sunspec_registers import SunSpecModelError, encode_image, model_def

LOOPBACK = "127.0.0.1"

T = 1_782_000_000_000
COMMON = (1, {"Mn": "p2pgrid", "Md": "sim", "SN": "0001"})


def meter(w: float = 1520.0, imp: int = 1_000_000, exp: int = 250_000, w_sf: int = 0) -> tuple[int, dict]:
    return (203, {"W": w, "WphA": w / 2, "WphB": w / 4, "WphC": w / 4, "W_SF": w_sf,
                  "TotWhImp": imp, "TotWhExp": exp, "TotWh_SF": 0, "Hz": 50.0, "Hz_SF": -2})


def inverter(w: float = 4321.0, wh: int = 9_876_543) -> tuple[int, dict]:
    return (103, {"W": w, "W_SF": 0, "WH": wh, "WH_SF": 0})


NAMEPLATE = (120, {"DERTyp": 4, "WRtg": 8000, "WRtg_SF": 0})
CONTROLS = (123, {"WMaxLimPct": 100, "WMaxLimPct_SF": 0, "WMaxLim_Ena": 0})


def battery(soc: float = 55.0, w: float = -1500.0) -> tuple[int, dict]:
    return (802, {"WHRtg": 10_000, "WHRtg_SF": 0, "WChaRteMax": 5_000, "WDisChaRteMax": 4_000,
                  "WChaDisChaMax_SF": 0, "SoCMax": 100, "SoCMin": 5, "SoCRsvMin": 10,
                  "SoC": soc, "SoC_SF": -1, "W": w, "W_SF": 0, "AHRtg": 200, "AHRtg_SF": 0,
                  "V": 51.2, "V_SF": -1, "A": -29.3, "A_SF": -1, "CellV_SF": -3, "AMax_SF": 0})


STORAGE = (124, {"WChaMax": 5_000, "WChaMax_SF": 0, "StorCtl_Mod": 0, "InWRte": 0,
                 "OutWRte": 0, "InOutWRte_SF": -1, "WChaDisChaGra_SF": 0, "MinRsvPct": 10,
                 "MinRsvPct_SF": 0})


def endpoint(server) -> SunSpecEndpoint:
    return SunSpecEndpoint(LOOPBACK, server.port, unit_id=1, timeout_s=1.0)


def clock() -> int:
    return T


async def test_meter_reading_from_model_203(sunspec_server):
    server = sunspec_server([COMMON, meter()])
    await server.start()
    client = SunSpecClient(endpoint(server))
    assert await client.models() == {1: (40002, 66), 203: (40070, 105)}
    reading = await SunSpecMeter(client, clock=clock).read()
    assert reading.t_ms == T and reading.quality is Quality.GOOD
    assert reading.power_w == 1520 and reading.phase_power_w == (760, 380, 380)
    assert (reading.import_wh, reading.export_wh) == (1_000_000, 250_000)
    exporting = await SunSpecMeter(client, import_positive=False, clock=clock).read()
    assert exporting.power_w == -1520
    await client.aclose()


async def test_inverter_reading_and_curtailment_through_model_123(sunspec_server):
    server = sunspec_server([COMMON, inverter(), NAMEPLATE, CONTROLS])
    await server.start()
    device = SunSpecInverter(SunSpecClient(endpoint(server)), clock=clock)
    reading = await device.read()
    assert reading.power_w == 4321 and reading.lifetime_wh == 9_876_543
    assert reading.rated_w == 8000 and reading.limit_w is None

    applied = await device.apply(PvLimit(12_000))
    assert applied.clipped and applied.applied == PvLimit(8000.0)
    applied = await device.apply(PvLimit(2_000))
    assert not applied.clipped
    assert (await device.read()).limit_w == pytest.approx(2_000)
    pct_address = 40002 + 68 + 52 + 28 + model_def(123).point("WMaxLimPct").offset
    assert (pct_address, [25]) in server.writes
    await device.apply(PvLimit(None))
    assert (await device.read()).limit_w is None


async def test_inverter_without_controls_rejects_curtailment(sunspec_server):
    server = sunspec_server([COMMON, inverter()])
    await server.start()
    device = SunSpecInverter(SunSpecClient(endpoint(server)), rated_w=5_000, clock=clock)
    assert (await device.read()).rated_w == 5_000
    with pytest.raises(SetpointRejected, match="123"):
        await device.apply(PvLimit(1_000))


async def test_battery_reading_and_setpoints_through_model_124(sunspec_server):
    server = sunspec_server([COMMON, battery(), STORAGE])
    await server.start()
    device = SunSpecBattery(SunSpecClient(endpoint(server)), clock=clock)
    reading = await device.read()
    assert reading.soc_pct == pytest.approx(55.0) and reading.power_w == -1500
    assert reading.capacity_wh == 10_000 and reading.reserve_pct == 10
    assert reading.max_charge_w == 5_000 and reading.max_discharge_w == 4_000
    assert reading.mode is BatteryMode.AUTO

    applied = await device.apply(BatterySetpoint(-2_500))
    assert not applied.clipped
    reading = await device.read()
    assert reading.mode is BatteryMode.REMOTE and reading.setpoint_w == pytest.approx(-2_500)
    applied = await device.apply(BatterySetpoint(9_000))
    assert applied.clipped and applied.applied == BatterySetpoint(4_000)
    assert applied.reason == "max discharge power"
    assert (await device.read()).setpoint_w == pytest.approx(4_000)
    await device.apply(BatterySetpoint(None))
    assert (await device.read()).mode is BatteryMode.AUTO


async def test_device_that_disconnects_is_unreachable_then_recovers(sunspec_server):
    server = sunspec_server([COMMON, meter(imp=100)])
    await server.start()
    device = SunSpecMeter(SunSpecClient(endpoint(server)), clock=clock)
    assert (await device.read()).import_wh == 100
    await server.stop()
    with trio.fail_after(10):
        with pytest.raises(DeviceUnreachable):
            await device.read()
        with pytest.raises(DeviceUnreachable):  # still down: refused, not hanging
            await device.read()
    server.set_models([COMMON, meter(imp=150)])
    await server.start()
    with trio.fail_after(10):
        assert (await device.read()).import_wh == 150


async def test_device_without_suns_marker_is_a_protocol_error(sunspec_server):
    server = sunspec_server([COMMON, meter()])
    server.set_raw([0x1234, 0x5678] + encode_image([COMMON, meter()])[2:])
    await server.start()
    with pytest.raises(SunSpecModelError, match="SunS"):
        await SunSpecMeter(SunSpecClient(endpoint(server)), clock=clock).read()


async def test_model_length_that_disagrees_with_definition_is_garbage(sunspec_server):
    server = sunspec_server([COMMON, meter()])
    image = encode_image([COMMON, meter()])
    image[2 + 68 + 1] = 50  # model 203 claims L=50
    server.set_raw(image)
    await server.start()
    with pytest.raises(DeviceProtocolError, match="L=50"):
        await SunSpecMeter(SunSpecClient(endpoint(server)), clock=clock).read()


async def test_out_of_range_soc_is_a_value_error_and_reader_keeps_going(sunspec_server):
    server = sunspec_server([COMMON, battery(soc=140.0), STORAGE])
    await server.start()
    device = SunSpecBattery(SunSpecClient(endpoint(server)), clock=clock)
    with pytest.raises(DeviceValueError, match="soc_pct"):
        await device.read()
    server.set_models([COMMON, battery(soc=60.0), STORAGE])
    assert (await device.read()).soc_pct == pytest.approx(60.0)


async def serve_once(handler, check) -> None:
    """Run ``check(port)`` against a raw TCP ``handler`` on 127.0.0.1."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        await check(listeners[0].socket.getsockname()[1])
        nursery.cancel_scope.cancel()


async def test_garbage_bytes_on_the_port_are_a_protocol_error(device_loop):
    async def junk(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(b"\x00\x01garbage, not modbus\xff" * 4)
        await stream.receive_some()

    async def check(port: int) -> None:
        client = SunSpecClient(SunSpecEndpoint(LOOPBACK, port, timeout_s=0.3))
        with trio.fail_after(10):
            with pytest.raises(DeviceProtocolError, match="not a Modbus TCP response"):
                await SunSpecMeter(client, clock=clock).read()
        await client.aclose()

    await serve_once(junk, check)


async def test_device_that_accepts_but_never_answers_is_unreachable(device_loop):
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async def check(port: int) -> None:
        client = SunSpecClient(SunSpecEndpoint(LOOPBACK, port, timeout_s=0.3))
        with trio.fail_after(10):
            with pytest.raises(DeviceUnreachable, match="No response"):
                await SunSpecMeter(client, clock=clock).read()
        await client.aclose()

    await serve_once(silent, check)


async def test_nothing_listening_is_unreachable(device_loop):
    with socket.socket() as s:  # a port that was free a moment ago; nothing listens on it
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    client = SunSpecClient(SunSpecEndpoint(LOOPBACK, port, timeout_s=0.3))
    with trio.fail_after(10):
        with pytest.raises(DeviceUnreachable, match="does not accept"):
            await client.models()


async def test_sampler_marks_failures_bad_and_keeps_sampling(sunspec_server):
    server = sunspec_server([COMMON, meter(imp=10)])
    await server.start()
    device = SunSpecMeter(SunSpecClient(endpoint(server)), clock=clock)
    async with open_sampler({"grid": SampledDevice(device, period_s=0.05)}, clock) \
            as (sampler, samples):
        with trio.fail_after(10):
            assert (await samples.receive()).quality is Quality.GOOD
            server.set_models([COMMON, meter(w=2e7, w_sf=3)])  # 20 MW: out of range
            sample = await samples.receive()
            while sample.quality is Quality.GOOD:
                sample = await samples.receive()
            assert sample.quality is Quality.BAD and "power_w" in sample.error
            server.set_models([COMMON, meter(imp=20)])
            while sample.quality is not Quality.GOOD:
                sample = await samples.receive()
            assert sample.reading is not None and sample.reading.import_wh == 20
