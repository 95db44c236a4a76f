"""Real servers on 127.0.0.1 for the device adapters: a pymodbus SunSpec device and mosquitto.

Both run for one test each, on a free port, and can be stopped and started again on the same
port to play a device or broker that goes away and comes back.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
import trio
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from p2pgrid.devices.aio import call_aio, open_device_loop
from p2pgrid.devices.sunspec_registers import Value, encode_image

LOOPBACK = "127.0.0.1"
SUNSPEC_BASE = 40000
#: Registers served beyond the image, so a test can grow the image without a restart.
SPARE_REGISTERS = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@pytest.fixture
async def device_loop() -> AsyncIterator[None]:
    """The trio-asyncio bridge the adapters (and the pymodbus server) run on."""
    async with open_device_loop():
        yield


class SunSpecServer:
    """A pymodbus TCP server serving a SunSpec register image that tests may change."""

    def __init__(self, models: Sequence[tuple[int, Mapping[str, Value]]]) -> None:
        self.port = free_port()
        self.image = encode_image(models)
        self.writes: list[tuple[int, list[int]]] = []
        self._server: ModbusTcpServer | None = None

    def set_models(self, models: Sequence[tuple[int, Mapping[str, Value]]]) -> None:
        self.image = encode_image(models)

    def set_raw(self, image: list[int]) -> None:
        self.image = list(image)

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: list[int] | list[bool] | None
                      ) -> None:
        # The server's registers always mirror the image; writes land in the image too.
        size = min(len(self.image), len(registers))
        registers[:size] = self.image[:size]
        registers[size:] = [0] * (len(registers) - size)
        if set_values is not None:
            offset = address - start_address
            values = [int(v) for v in set_values]
            self.writes.append((address, values))
            self.image[offset:offset + len(values)] = values

    async def start(self) -> None:
        device = SimDevice(id=1, action=self._action, simdata=[SimData(
            address=SUNSPEC_BASE, values=[0] * (len(self.image) + SPARE_REGISTERS),
            datatype=DataType.REGISTERS)])
        self._server = ModbusTcpServer(device, address=(LOOPBACK, self.port))
        await call_aio(self._server.serve_forever, background=True)

    async def stop(self) -> None:
        if self._server is not None:
            await call_aio(self._server.shutdown)
            self._server = None


@pytest.fixture
async def sunspec_server(device_loop: None) -> AsyncIterator[type[SunSpecServer]]:
    """A factory: ``server = sunspec_server(models); await server.start()``; all are stopped
    after the test."""
    started: list[SunSpecServer] = []

    class Tracked(SunSpecServer):
        def __init__(self, models: Sequence[tuple[int, Mapping[str, Value]]]) -> None:
            super().__init__(models)
            started.append(self)

    yield Tracked
    for server in started:
        await server.stop()


class Mosquitto:
    """Debian's mosquitto broker as a subprocess, listening on 127.0.0.1 only."""

    def __init__(self, binary: str, workdir: Path, nursery: trio.Nursery) -> None:
        self.binary = binary
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} {LOOPBACK}\nallow_anonymous true\n"
                               "log_dest stderr\nlog_type all\n")
        self._nursery = nursery
        self._process: trio.Process | None = None
        self.log = bytearray()

    async def start(self) -> None:
        process = await trio.lowlevel.open_process(
            [self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        self._process = process
        assert process.stderr is not None
        with trio.fail_after(10):
            while b" running" not in self.log:
                chunk = await process.stderr.receive_some()
                if not chunk:
                    raise RuntimeError(f"mosquitto exited: {self.log.decode(errors='replace')}")
                self.log += chunk
        self._nursery.start_soon(self._drain, process)

    async def _drain(self, process: trio.Process) -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            self.log += chunk

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            with trio.fail_after(10):
                await process.wait()


@pytest.fixture
async def mosquitto(device_loop: None, nursery: trio.Nursery,
                    tmp_path: Path) -> AsyncIterator[Mosquitto]:
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None)
    if binary is None:
        if os.environ.get("P2PGRID_REQUIRE_REAL_SERVERS") == "1":
            pytest.fail("mosquitto binary not found and P2PGRID_REQUIRE_REAL_SERVERS=1: "
                        "install Debian's 'mosquitto' package")
        pytest.skip("mosquitto binary not found: install Debian's 'mosquitto' package "
                    "(.ci/run must `apt-get install -y mosquitto`)")
    broker = Mosquitto(binary, tmp_path, nursery)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
