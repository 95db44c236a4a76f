"""The node's AMM pool services (see ``p2pgrid.service`` for the service protocol).

``PoolTradingService`` runs on every trading node: a ``PoolClient`` that learns the zone's pools
(certified state and host announcements on ``p2pgrid/v1/<zone>/pools``) and lets
``TradingService.execute`` route across book and pools. ``PoolHostService`` runs on a node whose
config says ``[pool] enabled`` and that has a battery: it hosts one pool per upcoming slot, backed
by what the battery can deliver (``[pool] max_share`` of its energy above ``min_reserve_wh`` and
its own floor, at its discharge power limit).

The battery's stored energy comes from the node's device service when one runs
(``node.battery_stored_wh()``), else from the configured initial state of charge. A battery the
device service has reported stale (it stopped answering) for ``BatteryWatch.hold_s`` real seconds
offers nothing: the host trims its pools' caps to zero, frozen pools whose slot has not ended
included (``trading.pool_host``).

Both services keep a small JSON of their counters in the data dir (``pool_host.json``,
``pool_client.json``; see ``PoolHostStats`` and ``PoolClientStats``), so a simnet run can tell
swaps from refusals and their reasons.

Once seen in simnet at 480× speed: buy legs routed to a pool refused by the host for slippage
(cost ~15 % above the quote) and the buyer's lock holding its credits until its deadline. The
cause was the buyer quoting on its replica of the pool, one swap behind the host; buyers now check
with the host before they lock, the host fills a buy in part when other buyers made the pool
dearer meanwhile, and hands back at once the lock of a buy it still refuses — and, at its
deadline, any lock of its pools still open (``pools.client``, ``pools.entries``,
``tests/pools/test_pool_slippage.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Protocol

import trio

from p2pgrid.devices.base import DeviceKind
from p2pgrid.devices.service import has_devices
from p2pgrid.market.amm import HostLosses
from p2pgrid.pools.client import PoolClientConfig, open_pool_client
from p2pgrid.pools.delivery import PoolDeliveryService
from p2pgrid.pools.host import BatteryLimits, PoolHostConfig, PoolTerms, battery_limits, open_pool_host
from p2pgrid.service import WithPoolHost, WithTrading, WithTransport

LOCK_TTL_REAL_S = 30.0
# A node's buys are limit orders: a pool leg may cost up to 10 % more than quoted when other buyers
# swapped first (one swap moves a shallow pool by more than that's worth refusing), and never more
# than the buyer's limit price (``PoolClient.swap_leg``).
POOL_SLIPPAGE_BPS = 1_000
PPM = 1_000_000
STATS_PERIOD_S = 2.0
FAILED_HOLD_PERIODS = 3        # a battery stale this many sampling periods (real time) has failed
MIN_FAILED_HOLD_S = 1.0
HOST_STATS_FILE = "pool_host.json"
CLIENT_STATS_FILE = "pool_client.json"


def write_stats(path: Path, stats: Any) -> None:
    """Replace ``path`` with the counters of ``stats`` (a dataclass), atomically; best effort:
    counters are for reports, and a node must not stop over a full disk or a removed data dir."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(dataclasses.asdict(stats), sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        return


async def keep_stats(path: Path, stats: Any) -> None:
    """Write ``stats`` to ``path`` every ``STATS_PERIOD_S`` and once more when stopped."""
    try:
        while True:
            write_stats(path, stats)
            await trio.sleep(STATS_PERIOD_S)
    finally:
        write_stats(path, stats)


class PoolsHost(WithTrading, WithTransport, WithPoolHost, Protocol):
    """What the pool services use of the node: the pool client goes into ``node.trading``, the
    host fills ``node.pool_host``."""


class PoolTradingService:
    name = "pool-client"

    async def run(self, node: PoolsHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.ledger is None or node.trading is None:
            raise RuntimeError("pools start after the ledger and trading services")
        speed = float(getattr(node.clock, "speed", 1.0))
        ttl_ms = max(30_000, int(LOCK_TTL_REAL_S * 1000 * speed))
        config = PoolClientConfig(slippage_bps=POOL_SLIPPAGE_BPS, lock_ttl_ms=ttl_ms, request_ttl_ms=ttl_ms)
        async with open_pool_client(node.key, node.zone, node.config.zone.slot_rules, node.transport, node.ledger,
                                    node.clock.now_ms, config) as client:
            node.trading.pool_client = client
            task_status.started()
            await keep_stats(Path(node.config.node.data_dir) / CLIENT_STATS_FILE, client.stats)


class PoolHostService:
    name = "pool-host"

    async def run(self, node: PoolsHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.ledger is None:
            raise RuntimeError("a pool host starts after the ledger service")
        battery = node.config.devices.battery
        if battery is None:
            raise RuntimeError("a pool host needs [devices.battery]")
        pool = node.config.pool

        watch = BatteryWatch(node, hold_s=max(MIN_FAILED_HOLD_S,
                                              FAILED_HOLD_PERIODS * node.config.devices.sample_period_ms / 1000))

        def limits() -> BatteryLimits:
            if watch.failed():
                return BatteryLimits(available_wh=0, power_limit_w=0)   # promise nothing it may not deliver
            stored = getattr(node, "battery_stored_wh", None)
            stored_wh = stored() if callable(stored) else battery.capacity_wh * battery.initial_soc
            return battery_limits(stored_wh, battery.capacity_wh * battery.soc_min, battery.max_discharge_w,
                                  max_share=pool.max_share, min_reserve_wh=pool.min_reserve_wh)

        # Stored energy decays by the battery's self-discharge while it waits in a pool.
        losses = HostLosses(self_discharge_ppm_per_h=int(battery.self_discharge_per_day * PPM / 24),
                            conversion_loss_w=0)
        # Pools end where the node's metering ends ([devices.meter] until_s, set by simnet to the
        # run's end): a slot that is not metered cannot settle, and the ledger must be quiet at the end.
        meter = getattr(node.config.devices, "meter", None)
        until_s = getattr(meter, "until_s", 0) if meter is not None else 0
        def terms(slot: int) -> PoolTerms | None:
            # The agent strategy (if this node runs it) prices and sizes each new pool from its plan.
            planner = getattr(getattr(node, "agent", None), "pool_terms", None)
            return planner(slot) if callable(planner) else None

        config = PoolHostConfig(battery=limits, fee_bps=pool.fee_bps, losses=losses, terms=terms,
                                open_until_ms=until_s * 1000 if until_s else None)
        async with open_pool_host(node.key, node.zone, node.config.zone.slot_rules, node.transport, node.ledger,
                                  node.clock.now_ms, config) as host:
            node.pool_host = host
            task_status.started()
            await keep_stats(Path(node.config.node.data_dir) / HOST_STATS_FILE, host.stats)


class BatteryWatch:
    """Has the node's battery failed? Yes once its device service has reported it stale (it
    stopped answering) for ``hold_s`` real seconds in a row. The hold keeps a market clock that
    jumps ahead (a manual clock in tests) from reading as a failure: until its next sample, every
    device looks stale then. Without a device service nothing reports a failure."""

    def __init__(self, node: Any, hold_s: float) -> None:   # a node view, its telemetry if any
        self.node = node
        self.hold_s = hold_s
        self._stale_since: float | None = None

    def is_stale(self) -> bool:
        devices = getattr(self.node, "telemetry", None)
        device_set = getattr(devices, "device_set", None)
        name = device_set.of_kind(DeviceKind.BATTERY) if device_set is not None else None
        return name is not None and name in devices.stale_devices()

    def failed(self) -> bool:
        if not self.is_stale():
            self._stale_since = None
            return False
        now = trio.current_time()
        if self._stale_since is None:
            self._stale_since = now
        return now - self._stale_since >= self.hold_s


def pool_services(config: Any) -> list[Any]:
    """The pool services a node with a ledger runs, by config."""
    services: list[Any] = [PoolTradingService()]
    if config.pool.enabled and config.devices.battery is not None:
        services.append(PoolHostService())
        if has_devices(config) and config.agent.strategy != "agent":   # the agent owns its battery
            services.append(PoolDeliveryService())
    return services
