"""Networking: the transport interface, its libp2p and in-memory implementations, order gossip.

Import ``p2pgrid.net.transport`` for the interface, ``p2pgrid.net.memory`` for the in-memory
network, ``p2pgrid.net.libp2p_host`` for real libp2p (importing it imports py-libp2p, which
configures its own logger), ``p2pgrid.net.orders`` for the order gossip service and
``p2pgrid.net.validation`` for the pure order-batch validation rules. This package module imports
nothing, so importing ``p2pgrid.net.validation`` never pulls in trio or libp2p.
"""
