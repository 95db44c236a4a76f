"""The trading agent: what a node trades, decided by a strategy, and the node services that run it.

The decision core is pure (``battery``, ``plan``, ``pricing``, ``orders``, ``control``, ``tick``,
and ``core``: the agent's forecasts, price outlook and cached plan between ticks; docs/AGENTS.md):
nothing there reads a clock or does I/O; time is the explicit ``now_ms`` argument. Flow, once per
decision tick (``tick.decide`` composes the first three)::

    forecasts (load, PV) + SlotMarket per slot
        └─ expected_prices(market, fill_probability)      pricing.py
        └─ plan_battery(soc, limits, load, pv, prices)     plan.py     (DP over a SoC grid)
            ├─ orders_for_plan(plan, pv, markets, now_ms)  orders.py   (OrderIntent per slot,
            │                                                           re-priced toward the gate)
            ├─ setpoints_w(plan)                           orders.py   (W per slot)
            └─ decide_slot(plan, ..., actual load/PV)       control.py  (real-time revision of slot 0)

The strategies, one node service each (``[agent] strategy``; trio, I/O):

* ``agent_trader`` — ``"agent"``: the node's own devices, forecasts (``p2pgrid.forecast``) and the
  battery plan above;
* ``profile_trader`` — ``"profile"``: a precomputed energy profile (simnet);
* ``random_trader`` — ``"random"``: seeded random orders (demo, gossip clusters).

``runlog`` holds the run logs both trading strategies write (orders, trades, counters).

This package's ``__init__`` imports nothing: import the module you need.
"""
