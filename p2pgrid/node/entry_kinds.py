"""Every ledger entry kind a node validates, registered in one place.

``p2pgrid.ledger.chain`` defines the core kinds (lock, fill, release, transfer, mint, burn);
other modules add theirs with ``register_kind`` when imported. A validator refuses a kind it has
not registered (``unknown_kind``), so every node of a zone must import the same set, whatever
services it runs: importing this module does that. Pure (the modules it imports are pure).
"""

from __future__ import annotations

import p2pgrid.charging.rules  # noqa: F401  charge_tariff, charge_start, charge_bill
import p2pgrid.settlement.entries  # noqa: F401  meter_registration, meter, settle
import p2pgrid.pools.entries  # noqa: F401  pool_open, pool_update, swap, swap_decline
import p2pgrid.ppa.entries  # noqa: F401  ppa_offer, ppa_accept, ppa_terminate, ppa_expire, ppa_index
import p2pgrid.ppa.settle  # noqa: F401  settle_ppa
import p2pgrid.shares.rules  # noqa: F401  share_offer, share_buy, share_issue, share_payout, share_exit, share_redeem
import p2pgrid.flex.entries  # noqa: F401  flex_grant, flex_request, flex_offer, flex_award, flex_settle
from p2pgrid.ledger.chain import KINDS


def registered_kinds() -> list[str]:
    """The names of every kind this node validates, sorted."""
    return sorted(KINDS)
