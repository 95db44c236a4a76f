"""A virtual power plant: the zone operator's flexibility requests, the nodes' offers, merit-order
awards, metered baselines and settlement on the ledger.

``baseline`` (the "high 5 of 10" baseline) and ``rules`` (merit order, delivered flexibility,
payments) are pure functions of integers; ``entries`` registers the ledger kinds (``flex_grant``,
``flex_request``, ``flex_offer``, ``flex_award``, ``flex_settle``) and plans the entries a node or
the operator writes.
"""
