"""Grid meter physics (pure): integrate a signed grid power into import/export Wh counters.

Like a real meter's registers, the counters are integers that only ever grow: import counts
energy drawn from the grid (grid power > 0), export counts energy fed in (grid power < 0). The
fraction of a Wh not yet counted is carried in a residual, so no energy is lost to rounding and
``counter + residual`` equals the exact integral.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0
ROUNDING_WH = 1e-9


@dataclass(frozen=True)
class MeterState:
    import_wh: int = 0
    export_wh: int = 0
    import_residual_wh: float = 0.0
    export_residual_wh: float = 0.0
    power_w: float = 0.0
    phase_power_w: tuple[float, ...] = ()


def count_energy(counter: int, residual: float, energy_wh: float) -> tuple[int, float]:
    """Add ``energy_wh`` (>= 0) to an integer counter, carrying the fraction in ``residual``."""
    total = residual + energy_wh
    # 1e-9 Wh absorbs float rounding (2499.9999999 after an exact 2500 Wh of steps)
    whole = math.floor(total + ROUNDING_WH)
    return counter + whole, max(0.0, total - whole)


def step_meter(state: MeterState, dt_s: float, grid_w: float, phases: int = 3) -> MeterState:
    """Advance by ``dt_s`` seconds at constant ``grid_w`` (+ import, − export), split evenly
    over ``phases``."""
    if dt_s < 0:
        raise ValueError(f"dt_s must be >= 0, got {dt_s}")
    energy_wh = abs(grid_w) * dt_s / SECONDS_PER_HOUR
    import_wh, import_res = state.import_wh, state.import_residual_wh
    export_wh, export_res = state.export_wh, state.export_residual_wh
    if grid_w > 0:
        import_wh, import_res = count_energy(import_wh, import_res, energy_wh)
    elif grid_w < 0:
        export_wh, export_res = count_energy(export_wh, export_res, energy_wh)
    return MeterState(import_wh, export_wh, import_res, export_res, grid_w,
                      tuple(grid_w / phases for _ in range(phases)))
