"""The ``"random"`` strategy: seeded random orders for the tradable slots of the near future
(demo and simnet load; ``agent.strategy = "random"``). It needs no ledger: its orders are signed
and gossiped by the node (``place_order``), through the trading service when the node runs one.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.errors import P2PGridError
from p2pgrid.net.orders import orders_topic
from p2pgrid.service import OrderPlacer, WithTransport
from p2pgrid.wire import Side, Source

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

log = logging.getLogger(__name__)

class RandomTraderHost(OrderPlacer, WithTransport, Protocol):
    """What the random strategy uses of its node."""


class RandomTrader:
    """Seeded random orders for the tradable slots of the near future (demo and simnet load).

    Households sell green PV in the daytime half of their ticks and buy otherwise; consumers buy;
    stations sell (PV when the node has PV, else battery).
    """

    name = "random-trader"
    NEAR_SLOTS = 4

    def __init__(self) -> None:
        self.not_placed = 0      # orders the node refused to place (order admission)

    async def run(self, node: RandomTraderHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        agent = node.config.agent
        rng = random.Random(agent.seed)
        rules = node.config.zone.slot_rules
        placed = 0
        task_status.started()
        # A market of one hears nothing: gossipsub drops what is published before any peer joined
        # the zone's order topic, and nothing sends it again (a node that starts first would lose
        # its first orders for good). Trade once someone is there to hear it.
        topic = orders_topic(node.zone)
        while not node.transport.topic_peers(topic):
            await trio.sleep(agent.tick_ms / 1000)
        while agent.max_orders == 0 or placed < agent.max_orders:
            await trio.sleep(agent.tick_ms / 1000)
            # Skip the first open slot: it may reach gate closure while the order is in flight.
            slots = rules.tradable_slots(node.clock.now_ms())[1: 1 + self.NEAR_SLOTS]
            if not slots:
                continue
            for _ in range(agent.orders_per_tick):
                if agent.max_orders and placed >= agent.max_orders:
                    break
                side, source = self._side_and_source(node, rng)
                try:
                    node.place_order(
                        side, rng.randint(agent.qty_min_wh, agent.qty_max_wh),
                        rng.randint(agent.price_min, agent.price_max), rng.choice(slots),
                        green=source.is_green, source=source,
                    )
                except P2PGridError as exc:   # not admitted (not registered yet, beyond capacity or budget)
                    self.not_placed += 1
                    log.info("random order not placed: %s", exc)
                    continue
                placed += 1
        await trio.sleep_forever()

    @staticmethod
    def _side_and_source(node: OrderPlacer, rng: random.Random) -> tuple[Side, Source]:
        role = node.config.node.role
        has_pv = node.config.devices.pv is not None
        if role == "consumer":
            return Side.BUY, Source.NONE
        if role == "station":
            return Side.SELL, Source.PV if has_pv and rng.random() < 0.6 else Source.BATTERY
        if rng.random() < 0.5:
            return Side.SELL, Source.PV if has_pv else Source.BATTERY
        return Side.BUY, Source.NONE


def random_services(config: NodeConfig) -> list[Any]:
    """The random strategy's service, when ``agent.strategy = "random"``."""
    return [RandomTrader()] if config.agent.strategy == "random" else []
