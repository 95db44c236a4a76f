"""Forecasting (pure, floats): experts and the gate that weighs them by recent error.

* ``experts.py``  — persistence, same slot yesterday, 4-week same-weekday mean, exponential
  smoothing across days, and clear-sky × clear-sky-index experts for PV.
* ``clearsky.py`` — solar position and a clear-sky plane-of-array model in pure Python.
* ``gate.py``     — mixture of experts with exponentiated weights on rolling MAE per horizon.
* ``price.py``    — the price expert: the local price leaning on the published day-ahead reference.
* ``context.py``  — what an expert may know besides the series (slot length, site, reference).
* ``backtest.py`` — MAE per expert and for the gate, per horizon, and skill vs persistence.

A gradient-boosted expert is deliberately absent: it would need a heavy dependency in a pure
package, and on household series the seasonal experts plus per-horizon gating leave little for it
(the benchmark ``python -m simnet.bench agent`` reports the figures).

This package's ``__init__`` imports nothing: import the module you need.
"""
