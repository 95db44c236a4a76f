"""The node's AMM pool services (see ``p2pgrid.node`` for the service protocol).

``PoolTradingService`` runs on every trading node: a ``PoolClient`` that learns the zone's pools
(certified state and host announcements on ``p2pgrid/v1/<zone>/pools``) and lets
``TradingService.execute`` route across book and pools. ``PoolHostService`` runs on a node whose
config says ``[pool] enabled`` and that has a battery: it hosts one pool per upcoming slot, backed
by what the battery can deliver (``[pool] max_share`` of its energy above ``min_reserve_wh`` and
its own floor, at its discharge power limit).

The battery's stored energy comes from the node's device service when one runs
(``node.battery_stored_wh()``), else from the configured initial state of charge.

Known weakness (seen in simnet at 480× speed): buy legs routed to a pool are often refused by the
host for slippage (cost ~15 % above the router's quote with no swap in between), and the buyer's
lock then holds its credits until the lock deadline. Until that is understood, simnet scenarios
host pools only when they ask for it (``[station] pools = true``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from p2pgrid.market.amm import HostLosses
from p2pgrid.trading.pool_client import PoolClientConfig, open_pool_client
from p2pgrid.trading.pool_host import BatteryLimits, PoolHostConfig, battery_limits, open_pool_host

if TYPE_CHECKING:
    from p2pgrid.node import Node

LOCK_TTL_REAL_S = 30.0
PPM = 1_000_000


class PoolTradingService:
    name = "pool-client"

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.ledger is None or node.trading is None:
            raise RuntimeError("pools start after the ledger and trading services")
        speed = float(getattr(node.clock, "speed", 1.0))
        ttl_ms = max(30_000, int(LOCK_TTL_REAL_S * 1000 * speed))
        config = PoolClientConfig(lock_ttl_ms=ttl_ms, request_ttl_ms=ttl_ms)
        async with open_pool_client(node.key, node.zone, node.config.zone.slot_rules, node.transport, node.ledger,
                                    node.clock.now_ms, config) as client:
            node.trading.pool_client = client
            task_status.started()
            await trio.sleep_forever()


class PoolHostService:
    name = "pool-host"

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.ledger is None:
            raise RuntimeError("a pool host starts after the ledger service")
        battery = node.config.devices.battery
        if battery is None:
            raise RuntimeError("a pool host needs [devices.battery]")
        pool = node.config.pool

        def limits() -> BatteryLimits:
            stored = getattr(node, "battery_stored_wh", None)
            stored_wh = stored() if callable(stored) else battery.capacity_wh * battery.initial_soc
            return battery_limits(stored_wh, battery.capacity_wh * battery.soc_min, battery.max_discharge_w,
                                  max_share=pool.max_share, min_reserve_wh=pool.min_reserve_wh)

        # Stored energy decays by the battery's self-discharge while it waits in a pool.
        losses = HostLosses(self_discharge_ppm_per_h=int(battery.self_discharge_per_day * PPM / 24),
                            conversion_loss_w=0)
        config = PoolHostConfig(battery=limits, fee_bps=pool.fee_bps, losses=losses)
        async with open_pool_host(node.key, node.zone, node.config.zone.slot_rules, node.transport, node.ledger,
                                  node.clock.now_ms, config) as host:
            node.pool_host = host
            task_status.started()
            await trio.sleep_forever()


def pool_services(config: Any) -> list[Any]:
    """The pool services a node with a ledger runs, by config."""
    services: list[Any] = [PoolTradingService()]
    if config.pool.enabled and config.devices.battery is not None:
        services.append(PoolHostService())
    return services
