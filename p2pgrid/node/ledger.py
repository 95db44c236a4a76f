"""The node's ledger service (see ``p2pgrid.service`` for the service protocol).

``LedgerNodeService`` opens the node's SQLite store (``<data_dir>/ledger.sqlite``) and runs a
``LedgerService`` for the zone's committee (``node.ledger``), with the rules of every entry kind a
node validates (``p2pgrid.node.entry_kinds``) and the zone's settlement terms. It runs only when the
zone has a committee and a gateway (``has_ledger``: ``[zone] validators`` and ``gateway_account``):
without a ledger there is nothing to trade on, and the registry starts no service that needs one.
The node dials every validator's address, since votes travel on direct streams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import trio

import p2pgrid.node.entry_kinds  # noqa: F401  every node validates every kind of its zone
from p2pgrid.errors import ConfigError
from p2pgrid.ledger.committee import Committee
from p2pgrid.ledger.service import LedgerConfig, open_ledger_service
from p2pgrid.ledger.store import open_store
from p2pgrid.market.locality import Locality, settlement_grid_fees
from p2pgrid.node.network import dial_until_connected
from p2pgrid.service import WithLedger, WithTransport
from p2pgrid.settlement.entries import SettlementLedgerRules
from p2pgrid.settlement.rules import ImbalancePrices

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

LEDGER_DB = "ledger.sqlite"


def has_ledger(config: NodeConfig) -> bool:
    return bool(config.zone.validators) and bool(config.zone.gateway_account)


def ledger_config(config: NodeConfig) -> LedgerConfig:
    zone = config.zone
    if not has_ledger(config):
        raise ConfigError("zone.validators and zone.gateway_account are needed for a ledger")
    # The zone's settlement terms travel with its ledger rules: validators recompute settlements.
    rules = SettlementLedgerRules(zone.ledger_zone, bytes.fromhex(zone.gateway_account), zone.credit_limit_uc,
                                  slots=zone.slot_rules,
                                  prices=ImbalancePrices(zone.tariffs.retail_price, zone.tariffs.feed_in_price),
                                  grid_fees=settlement_grid_fees([Locality(zone.id, dict(zone.grid_fees))]))
    committee = Committee(zone.ledger_zone, 0, tuple(bytes.fromhex(v.public_key) for v in zone.validators))
    return LedgerConfig(rules, committee)


class LedgerHost(WithLedger, WithTransport, Protocol):
    """What the ledger service uses of the node: it fills ``node.ledger``."""


class LedgerNodeService:
    name = "ledger"

    async def run(self, node: LedgerHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        config = ledger_config(node.config)
        node.config.node.data_dir.mkdir(parents=True, exist_ok=True)
        path = node.config.node.data_dir / LEDGER_DB
        async with open_store(path) as store:
            async with open_ledger_service(node.key, config, store, node.transport, node.clock.now_ms) as ledger:
                node.ledger = ledger
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._dial_validators, node)
                    task_status.started()
                    await trio.sleep_forever()

    @staticmethod
    async def _dial_validators(node: LedgerHost) -> None:
        me = node.key.public_key.hex()
        addrs = [v.address for v in node.config.zone.validators if v.address and v.public_key != me]
        await dial_until_connected(node.transport, addrs, "validator")


def ledger_services(config: NodeConfig) -> list[Any]:
    """The ledger service, when the zone has a committee and a gateway."""
    return [LedgerNodeService()] if has_ledger(config) else []
