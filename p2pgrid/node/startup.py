"""What a node says when it starts: what it runs, and what it does not run and why.

A node started from the config ``p2pgrid init`` writes used to log nothing while it quietly did not
trade, meter or settle; an operator could not tell a waiting node from a broken one. ``StartupReport``
(run with the status writer, ``p2pgrid.node.status.status_services``) logs once at start:

* who the node is: name, role, zone, account, peer id, and each listen address in full (with
  ``/p2p/<peer id>``: what a neighbour puts in its bootstrap list);
* the services it runs (by name);
* one line for each thing it will not do, ``not doing: …``, with the reason and the config key that
  changes it (``startup_notices``; INFO, as the rest of the report: each can be meant, e.g. RPC off
  on a validator, and the dashboard shows them too): no ledger (no validators or gateway account in ``[zone]``: orders are
  gossiped but nobody can take them, nothing is metered or settled), RPC off, no devices (nothing
  metered), simulated PV without a series (it produces 0 W), no bootstrap peers.

Then, on a node with a ledger that is not itself a validator, it watches the connected peers: if no
validator of ``[zone] validators`` is connected ``VALIDATOR_GRACE_S`` seconds after start, a WARNING
says that entries cannot be certified; an INFO line follows when the first validator is reachable.

``startup_notices`` is pure (config in, lines out) so each notice is tested without a node.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.devices.service import has_devices
from p2pgrid.service import WithTransport

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

log = logging.getLogger("p2pgrid.node")

VALIDATOR_GRACE_S = 30.0       # real seconds a node may take to reach a validator before it is said
VALIDATOR_POLL_S = 1.0


def startup_notices(config: NodeConfig, account: str = "") -> list[str]:
    """What a node with ``config`` (and node key ``account``, hex) will not do, each with why and
    what changes it."""
    notices = []
    zone = config.zone
    if not (zone.validators and zone.gateway_account):
        missing = " and ".join(name for name, value in (("validators", zone.validators),
                                                         ("gateway_account", zone.gateway_account)) if not value)
        unread = " devices are not read," if has_devices(config) else ""
        notices.append(f"no ledger: [zone] has no {missing}; orders are gossiped but nobody can take them,"
                       f"{unread} and nothing is traded, metered or settled (add the zone preset's [zone] section)")
    if not config.rpc.enabled:
        notices.append("RPC off ([rpc] enabled = false): `p2pgrid order place`, `book`, `trade` and `trades` "
                       "cannot reach this node")
    devices = config.devices
    if not has_devices(config) and account != zone.gateway_account:    # the gateway is the grid: not metered
        notices.append("no devices in [devices]: this node's consumption and production are not metered")
    if devices.mode == "simulated" and devices.pv is not None and devices.pv.kwp > 0 and not devices.series_file:
        notices.append(f"simulated PV of {devices.pv.kwp:g} kWp has no devices.series_file: it produces 0 W")
    if not config.network.bootstrap and not config.network.mdns:
        notices.append("no bootstrap peers ([network] bootstrap) and mDNS off: this node waits for others to dial it")
    return notices


def identity_lines(config: NodeConfig, account: str, peer_id: str, listen_addrs: Sequence[str],
                   service_names: Sequence[str]) -> list[str]:
    """Who the node is and what it runs (INFO at start)."""
    lines = [f"node {config.node.name} ({config.node.role}, zone {config.zone.id}): account {account}, "
             f"peer id {peer_id}"]
    lines += [f"listening on {addr}" for addr in listen_addrs] or ["listening on no address"]
    lines.append(f"running: {', '.join(service_names)}")
    return lines


class StartupReport:
    """Logs the start-up report and watches for a reachable validator (see the module docstring)."""

    name = "startup-report"

    def __init__(self, *, grace_s: float = VALIDATOR_GRACE_S, poll_s: float = VALIDATOR_POLL_S) -> None:
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.validator_warned = False

    async def run(self, node: StartupHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.log_report(node)
        task_status.started()
        await self.watch_validators(node)

    def log_report(self, node: StartupHost) -> None:
        from p2pgrid.node.api import peer_id_base58

        names = [service.name for service in node.services]
        for line in identity_lines(node.config, node.key.account, peer_id_base58(node.key.public_key),
                                   node.transport.listen_addrs, names):
            log.info("%s", line)
        for notice in startup_notices(node.config, node.key.account):
            log.info("not doing: %s", notice)

    async def watch_validators(self, node: StartupHost) -> None:
        zone = node.config.zone
        validators = {bytes.fromhex(v.public_key) for v in zone.validators}
        if not validators or not zone.gateway_account or node.key.public_key in validators:
            return
        start = trio.current_time()
        while not validators & node.transport.peers():
            if not self.validator_warned and trio.current_time() - start >= self.grace_s:
                log.warning("no validator reachable %.0f s after start (%d in [zone] validators, %d peers "
                            "connected): ledger entries, trades and settlements cannot be certified",
                            self.grace_s, len(validators), len(node.transport.peers()))
                self.validator_warned = True
            await trio.sleep(self.poll_s)
        reached = len(validators & node.transport.peers())
        log.info("%d of %d validators reachable", reached, len(validators))


class StartupHost(WithTransport, Protocol):
    """What the start-up report reads of the node: its basics, transport and service list."""

    @property
    def services(self) -> Sequence[Any]: ...
