"""Joining a zone: the operator's zone preset, signed invitations (join bundles), neighbours' join
requests and their approval by the zone gateway.

``invite`` (pure): the two signed messages and their one-line text form. ``node_dir``: writing a
node's data dir (keystore, meter key, zone preset, config). ``api``: the gateway node's side of an
approval (meter registration and funding through the certified ledger), served over the local RPC.
"""
