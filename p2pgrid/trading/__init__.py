"""Decentralised trading: local books from gossip, takes, certified fills.

* ``local_books`` — the books a node keeps of its zones' open slots, fed by gossip (pure)
* ``admission``   — which orders may enter a book: registered, within export capacity and budget (pure)
* ``maker``       — what a maker answers to a take (pure)
* ``messages``    — the take protocol ``/p2pgrid/take/2`` (pure)
* ``standing``    — back-off and score of makers that do not answer takes (pure)
* ``own_orders``  — the node's own open orders, journalled on disk
* ``service``     — ``TradingService``: books, maker, takes and routed executions, under trio
* ``node_service`` — the node's trading service (``node.trading``)
* ``testing``     — trading clusters for tests and simnet

AMM pools are ``p2pgrid.pools``, LP shares ``p2pgrid.shares``. This package's ``__init__``
imports nothing.
"""
