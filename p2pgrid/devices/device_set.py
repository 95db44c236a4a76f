"""``DeviceSet``: the named devices a node samples, and the simulated site behind them if any.

Built by ``p2pgrid.devices.service.device_set_for`` from the node's config: a simulated site
(``simulated_device_set``) or the real hardware (``p2pgrid.devices.real_set``).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2pgrid.devices.base import DeviceKind

if TYPE_CHECKING:
    from p2pgrid.devices.device import Device
    from p2pgrid.devices.simulated import SimulatedSite


@dataclass
class DeviceSet:
    """Named devices to sample; ``site`` is the simulated site behind them, if any."""

    devices: dict[str, Device]
    site: SimulatedSite | None = None

    def open_links(self) -> AbstractAsyncContextManager[None]:
        """Connections the devices need while sampled (none for simulated devices)."""
        return nullcontext()

    def of_kind(self, kind: DeviceKind) -> str | None:
        return next((name for name, d in self.devices.items() if d.kind is kind), None)
