"""The node: one participant's services composed under one trio nursery, and its local interfaces.

* ``app``          — ``Node``: key, config, clock, transport, the slots services fill; running a node
* ``registry``     — which services a node runs, by config, in start order (the one list of them)
* ``network``      — order gossip and dialling peers (bootstrap, validators)
* ``ledger``       — the node's ledger service, with every entry kind a node validates (``entry_kinds``)
* ``status``       — counters and ``<data_dir>/status.json``
* ``api``          — ``LiveNodeApi``: the RPC's view of the running node (delegates to the domain APIs)
* ``rpc``          — the RPC and metrics services, endpoint files; ``metrics`` the Prometheus exporter
* ``testing``      — clusters of real nodes for tests and benchmarks

What a service is and what it sees of the node is ``p2pgrid.service``; the services themselves
live in their domain packages. This package's ``__init__`` imports nothing.
"""
