"""Liquidity providers' shares in a pool host's fee income, as ledger objects.

* ``rules``    — the six share ledger kinds (offer, buy, issue, payout, exit, redeem) and their rules (pure)
* ``planning`` — what a host and an LP write next, given the certified state (pure)
* ``service``  — ``ShareHostService`` and ``ShareInvestorService``: the node writes what the plan says
* ``api``      — the RPC's share methods (programmes, buy, exit, positions)

This package's ``__init__`` imports nothing: import the module you need.
"""
