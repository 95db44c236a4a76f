"""Log lines for faults that repeat (a device that stays unreachable, a setpoint that keeps failing).

A fault seen every sampling period would fill the log with one line every second or two and still
never rise above INFO. ``RateLimitedWarning`` says it as a WARNING at once, then at most once per
``interval_s`` with the number of repeats it held back (those go to DEBUG), and says when the
fault cleared. Time is passed in (``now`` in seconds, e.g. ``trio.current_time()``).
"""

from __future__ import annotations

import logging
import math
from typing import Any


class RateLimitedWarning:
    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._next_s = -math.inf
        self._held_back = 0
        self._failing = False

    def warn(self, now: float, message: str, *args: Any) -> None:
        """One occurrence of the fault at ``now``."""
        self._failing = True
        if now < self._next_s:
            self._held_back += 1
            self.logger.debug(message, *args)
            return
        if self._held_back:
            message += f" ({self._held_back} more like it in the last {self.interval_s:g} s)"
        self.logger.warning(message, *args)
        self._next_s = now + self.interval_s
        self._held_back = 0

    def cleared(self, message: str, *args: Any) -> None:
        """The fault is gone: say so once (INFO), and warn at once if it comes back."""
        if self._failing:
            self.logger.info(message, *args)
        self._failing = False
        self._next_s = -math.inf
        self._held_back = 0


__all__ = ["RateLimitedWarning"]
