"""AMM pools hosted by storage nodes: one pool per slot, backed by the host's battery.

The pool arithmetic itself is ``p2pgrid.market.amm`` (pure); this package puts it on the ledger
and the network:

* ``entries``      — the ledger kinds ``pool_open``, ``pool_update``, ``swap``, ``swap_decline`` (pure)
* ``messages``     — the swap protocol ``/p2pgrid/swap/1`` and pool announcements (pure)
* ``host``         — ``PoolHost``: a storage node's pools, run under trio
* ``client``       — ``PoolClient``: the taker's side, so trading routes across book and pools
* ``node_service`` — the node services running them (``[pool] enabled`` on a battery node)
* ``delivery``     — the host's battery delivers what its pools sold

This package's ``__init__`` imports nothing: import the module you need.
"""
