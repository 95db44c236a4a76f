"""Devices: the hardware (or its simulation) a node measures and controls.

Modules, one responsibility each (pure ones marked):

* ``base`` *pure* — device kinds, setpoints, ``Quality``, the device error hierarchy (imports no other module here)
* ``device`` *pure* — the ``Device`` protocol: readings in, setpoints out
* ``readings`` *pure* — frozen readings per device kind, range validation
* ``battery``, ``pv``, ``ev``, ``meter``, ``series`` *pure* — physics step functions
* ``simulated`` — a whole simulated site behind the ``Device`` protocol
* ``sunspec_registers``, ``sunspec_readings`` *pure* — SunSpec layout and conversion;
  ``sunspec`` — the Modbus TCP adapters
* ``mqtt_map`` *pure* — topic maps and payloads; ``mqtt`` — the MQTT adapter
* ``aio`` — the trio-asyncio bridge the adapters share
* ``sampler`` — per-device sampling loops feeding a channel

This package imports nothing on import, so pure users do not pull in trio or pymodbus.
"""
