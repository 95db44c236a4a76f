"""Forecasting (pure, floats): experts and the gate that weighs them by recent error.

* ``experts.py``  — persistence, same slot yesterday, 4-week same-weekday mean, exponential
  smoothing across days, and clear-sky × clear-sky-index experts for PV.
* ``clearsky.py`` — solar position and a clear-sky plane-of-array model in pure Python.
* ``gate.py``     — mixture of experts with exponentiated weights on rolling MAE per horizon.
* ``backtest.py`` — MAE per expert and for the gate, per horizon, and skill vs persistence.

A gradient-boosted expert is deliberately absent: it would need a heavy dependency in a pure
package, and on household series the seasonal experts plus per-horizon gating leave little for it
(the benchmark ``python -m simnet.bench agent`` reports the figures).
"""

from p2pgrid.forecast.backtest import BacktestResult, backtest
from p2pgrid.forecast.clearsky import PvSite, clear_sky_ghi, clear_sky_poa, slot_clear_sky, sun_vector
from p2pgrid.forecast.experts import EXPERTS, LOAD_EXPERTS, PV_EXPERTS, SeriesContext
from p2pgrid.forecast.gate import (Forecast, GateConfig, GateConfigError, GateState, combine, new_gate, observe,
                                   step, weights)

__all__ = [
    "EXPERTS", "LOAD_EXPERTS", "PV_EXPERTS", "BacktestResult", "Forecast", "GateConfig", "GateConfigError",
    "GateState", "PvSite", "SeriesContext", "backtest", "clear_sky_ghi", "clear_sky_poa", "combine", "new_gate",
    "observe", "slot_clear_sky", "step", "sun_vector", "weights",
]
