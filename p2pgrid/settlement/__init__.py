"""Settlement: contracts against metered delivery, imbalance at the zone's tariffs, green certificates.

Rules (pure) first, then what runs them:

* ``rules``        — slot settlement: certified trades vs meter entries, imbalance prices, grid fees
* ``metering``     — signed meter readings (meter key, not the trading key) and their checks
* ``certificates`` — granular green certificates: issued per metered green Wh, moved, retired
* ``entries``      — the ledger kinds ``meter_registration``, ``meter``, ``settle``; results on the ledger
* ``service``      — trio shells: ``MeterService`` (sign and submit readings), ``SettlementService``
  (the gateway's ``settle`` entries), ``register_meters``, meter keys
* ``node_service`` — the node services: ``MeterNodeService`` (meter the devices' slots),
  ``SettlementNodeService`` (settle, on the gateway's node)
* ``gateway``      — the zone operator's other node services: initial credits, meter registrations
* ``api``          — the RPC's settlement and certificate reads

This package's ``__init__`` imports nothing: import the module you need.
"""
