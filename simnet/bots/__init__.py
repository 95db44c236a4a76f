"""Example trading bots that drive a node through its local RPC (``p2pgrid.rpc.client``)."""
