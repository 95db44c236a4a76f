"""Messages of pool trading (pure): the swap protocol ``/p2pgrid/swap/1`` and pool gossip.

Swap protocol
-------------
A trader sends the pool's host a signed ``SwapRequest`` (domain ``p2pgrid/swap/v1``) on a
persistent stream; the host answers with a signed ``SwapAnswer``. Amounts are exact on the energy
side, as the router plans them:

=====  =====================================================================================
BUY    the trader receives ``energy_wh`` and pays at most ``limit_uc`` µc — or, if the pool has
       become dearer than that, the most Wh it can have within the limit pro rata. Before
       sending, it certifies a ``lock`` in its own chain with ``take_id == request_id``,
       ``seller == host``, ``order_id == pool_id`` and ``amount ≥`` what it may pay; the host's
       ``swap`` entry consumes that lock, and the buyer gets back the change.
SELL   the trader delivers exactly ``energy_wh`` and receives at least ``limit_uc`` µc, paid by
       the host's ``swap`` entry from the host's own balance.
=====  =====================================================================================

The request is carried inside the host's ``swap`` entry, so every validator sees that the trader
agreed to exactly these terms, and until ``expires_ms``.

``SwapAnswer.status`` is ``swapped`` (``certificate`` is the swap entry's certificate, the amounts
are the certified ones) or ``refused`` (``reason`` starts with a ``SwapRefuseReason`` value; nothing
was swapped). A refused BUY whose lock the host found is **declined**: the host certifies a
``swap_decline`` in its chain that hands the lock back to the buyer at once (``reason`` then ends
with ``; lock released``), instead of leaving the credits held until the lock's deadline.

A trader may first send a signed ``PoolQuery`` on the same stream; the host answers ``state``,
with nothing to sign or lock. Every answer (``state``, ``swapped``, ``refused``) carries the pool's
certified state as the host has it *now* in ``pools`` (one ``PoolState``; none for an unknown
pool). Why: a trader's own view of a pool — its ledger replica and the announcements — lags the
host by the gossip delay, and one swap moves a shallow pool's price by far more than a pool leg's
slippage allowance, so a buyer quoting on that view would lock credits for a price the pool no
longer has. A buyer checks its leg against the host's state before it locks.

Pool gossip
-----------
Hosts publish a ``PoolAnnouncement`` (signed by the host, domain ``p2pgrid/pool-announcement/v1``)
on ``p2pgrid/v1/<zone>/pools``: the certified state of each pool they host, with its ``version``
(number of certified pool entries after the opening). It tells takers which pools exist before the
replicated ledger brings them, and their newest state; the certified ledger remains the truth (a
host's swap is always computed from it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from p2pgrid.market.amm import HostLosses, Pool
from p2pgrid.wire import PUBLIC_KEY_SIZE, ZONE_PATTERN, Side, message, struct

SWAP_PROTOCOL = "/p2pgrid/swap/1"
MAX_SWAP_BYTES = 8 * 1024
MAX_ANNOUNCEMENT_BYTES = 16 * 1024
MAX_POOLS_PER_ANNOUNCEMENT = 96
MAX_AMOUNT = 10**15
ID_SIZE = 16
LOCK_RELEASED = "; lock released"     # ends the reason of a refused BUY whose lock the host declined


class SwapStatus(str, enum.Enum):
    SWAPPED = "swapped"
    REFUSED = "refused"
    STATE = "state"                            # the answer to a PoolQuery


class SwapRefuseReason(str, enum.Enum):
    MALFORMED = "malformed"                    # not a valid signed request of the sender
    NOT_HOST = "not_host"                      # sent to a node that does not host the pool
    UNKNOWN_POOL = "unknown_pool"
    WRONG_ZONE = "wrong_zone"
    WRONG_SLOT = "wrong_slot"
    POOL_FROZEN = "pool_frozen"                # at or after the slot's gate closure
    EXPIRED = "expired"                        # the request's own deadline passed
    SLIPPAGE = "slippage"                      # the pool's price is beyond the request's limit
    INSUFFICIENT_LIQUIDITY = "insufficient_liquidity"
    CAPACITY = "capacity"                      # a sale would push energy beyond the host's cap
    BAD_LOCK = "bad_lock"                      # no matching certified lock for a buy
    DUPLICATE = "duplicate"                    # this request id was swapped already
    NOT_CERTIFIED = "not_certified"            # the committee did not certify the swap


@message("p2pgrid/swap", 1, max_bytes=1024, signer_field="trader")
@dataclass(frozen=True)
class SwapRequest:
    """``trader`` asks ``host`` to swap ``energy_wh`` with pool ``pool_id`` (see module docstring)."""

    request_id: bytes = field(metadata={"size": ID_SIZE})
    trader: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    host: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    pool_id: bytes = field(metadata={"size": ID_SIZE})
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    slot: int = field(metadata={"min": 0})
    side: Side
    energy_wh: int = field(metadata={"min": 1, "max": MAX_AMOUNT})
    limit_uc: int = field(metadata={"min": 0, "max": MAX_AMOUNT})   # BUY: most paid; SELL: least received
    expires_ms: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class PoolState:
    """The wire form of a pool's certified state (``amm.Pool`` without its share register)."""

    pool_id: bytes = field(metadata={"size": ID_SIZE})
    slot: int = field(metadata={"min": 0})
    version: int = field(metadata={"min": 0})
    energy_wh: int = field(metadata={"min": 0, "max": MAX_AMOUNT})
    credits_uc: int = field(metadata={"min": 0, "max": MAX_AMOUNT})
    fee_bps: int = field(metadata={"min": 0, "max": 1000})
    energy_cap_wh: int = field(metadata={"min": 0, "max": MAX_AMOUNT})
    gate_closure_ms: int = field(metadata={"min": 0})
    self_discharge_ppm_per_h: int = field(metadata={"min": 0, "max": 1_000_000})
    conversion_loss_w: int = field(metadata={"min": 0})
    updated_ms: int = field(metadata={"min": 0})
    decay_residue: int = field(metadata={"min": 0})


@message("p2pgrid/pool-query", 1, max_bytes=512, signer_field="trader")
@dataclass(frozen=True)
class PoolQuery:
    """``trader`` asks ``host`` for the certified state of pool ``pool_id`` (answer: ``state``)."""

    query_id: bytes = field(metadata={"size": ID_SIZE})
    trader: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    host: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    pool_id: bytes = field(metadata={"size": ID_SIZE})


@message("p2pgrid/swap-answer", 1, max_bytes=MAX_SWAP_BYTES, signer_field="host")
@dataclass(frozen=True)
class SwapAnswer:
    """The host's answer to a ``SwapRequest`` (``request_id``) or a ``PoolQuery`` (its ``query_id``)."""

    request_id: bytes = field(metadata={"size": ID_SIZE})
    host: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    status: SwapStatus
    energy_wh: int = field(metadata={"min": 0})
    credits_uc: int = field(metadata={"min": 0})
    reason: str = field(metadata={"max_len": 200})
    certificate: bytes = field(metadata={"max_len": MAX_SWAP_BYTES - 1024})
    pools: tuple[PoolState, ...] = field(default=(), metadata={"max_len": 1})


@message("p2pgrid/pool-announcement", 1, max_bytes=MAX_ANNOUNCEMENT_BYTES, signer_field="host")
@dataclass(frozen=True)
class PoolAnnouncement:
    host: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    sent_ms: int = field(metadata={"min": 0})
    pools: tuple[PoolState, ...] = field(metadata={"max_len": MAX_POOLS_PER_ANNOUNCEMENT})


def pool_state_of(pool: Pool, version: int) -> PoolState:
    return PoolState(pool_id=pool.pool_id, slot=pool.slot, version=version, energy_wh=pool.energy_wh,
                     credits_uc=pool.credits_uc, fee_bps=pool.fee_bps, energy_cap_wh=pool.energy_cap_wh,
                     gate_closure_ms=pool.gate_closure_ms,
                     self_discharge_ppm_per_h=pool.losses.self_discharge_ppm_per_h,
                     conversion_loss_w=pool.losses.conversion_loss_w, updated_ms=pool.updated_ms,
                     decay_residue=pool.decay_residue)


def pool_of_state(state: PoolState, host: bytes, zone: str) -> Pool:
    """An ``amm.Pool`` to route against (no share register: routing does not need it)."""
    return Pool(pool_id=state.pool_id, host=host, zone=zone, slot=state.slot, energy_wh=state.energy_wh,
                credits_uc=state.credits_uc, fee_bps=state.fee_bps, energy_cap_wh=state.energy_cap_wh,
                gate_closure_ms=state.gate_closure_ms,
                losses=HostLosses(state.self_discharge_ppm_per_h, state.conversion_loss_w),
                updated_ms=state.updated_ms, decay_residue=state.decay_residue, total_shares=0, shares=())
