"""The market core (pure): order book, AMM pools, router and call auction.

* ``orders``  — ``BookOrder``, ``Fill``, ``RestingOrder``, ``Side``: the records the modules share
* ``book``    — ``OrderBook``: one per (zone, slot), price-time priority, event-sourced
* ``amm``     — dissipation-aware constant-product pools hosted by storage nodes
* ``router``  — ``route``: the best split of a take between book orders and pools
* ``auction`` — ``clear``: uniform-price call auction; ``social_welfare`` of any set of fills
* ``errors``  — ``MarketError`` leaves

No module here does I/O or reads a clock; time is always an explicit ``now_ms`` (Unix ms, UTC).
"""
