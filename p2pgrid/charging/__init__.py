"""Public EV charging sold by a station, as ledger objects.

* ``rules``   — the ledger kinds ``charge_tariff``, ``charge_start``, ``charge_bill`` and their rules (pure)
* ``plan``    — what a station and a driver write next, given the certified state and now (pure)
* ``service`` — ``ChargingService``: the node signs and submits what the plan says
* ``api``     — the RPC's charging methods (tariffs, start, sessions, release)

This package's ``__init__`` imports nothing: import the module you need.
"""
