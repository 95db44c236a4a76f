"""Local JSON-RPC 2.0 API of a node (HTTP + WebSocket on loopback, bearer token).

* ``api``       — ``NodeApi``: what the RPC needs from a node, and the value types it returns
* ``server``    — ``serve_rpc(node, token=…, port=0)``: the server (h11 + trio-websocket)
* ``methods``   — the method table; ``API.md`` is its reference page
* ``client``    — ``RpcClient`` (sync) and ``AsyncRpcClient`` (trio) with typed calls
* ``feed``      — ``EventFeed``: non-blocking fan-out of node events to stream readers
* ``testing``   — ``FakeNode``: an in-memory ``NodeApi`` for tests, bots and benchmarks

The real node's ``NodeApi`` is ``p2pgrid.node.api.LiveNodeApi``; ``p2pgrid.node.rpc`` runs it.

Importing this package imports nothing heavy; import the submodule you need.
"""
