"""Devices: the hardware (or its simulation) a node measures and controls.

Modules, one responsibility each (pure ones marked):

* ``base`` *pure* — device kinds, setpoints, ``Quality``, the device error hierarchy (imports no other module here)
* ``device`` *pure* — the ``Device`` protocol: readings in, setpoints out
* ``readings`` *pure* — frozen readings per device kind, range validation
* ``battery``, ``pv``, ``ev``, ``meter``, ``series`` *pure* — physics step functions
* ``simulated`` *pure* — a whole simulated site behind the ``Device`` protocol
* ``sunspec_registers``, ``sunspec_readings`` *pure* — SunSpec layout and conversion;
  ``sunspec`` — the Modbus TCP adapters
* ``mqtt_map`` *pure* — topic maps and payloads; ``mqtt`` — the MQTT adapter
* ``aio`` — the trio-asyncio bridge the adapters share
* ``sampler`` — per-device sampling loops feeding a channel
* ``device_set`` *pure* — ``DeviceSet``: the named devices a node samples; ``real_set`` — the real
  hardware of ``[devices.adapter]`` as one
* ``telemetry`` *pure* — slot energy from meter counters, staleness, downsampling;
  ``telemetry_store`` — its history in SQLite
* ``service`` — ``DeviceService``: the node's devices as a node service (``node.telemetry``)
* ``api`` — the RPC's telemetry view

This package's ``__init__`` imports nothing, so pure users do not pull in trio or pymodbus.
"""
