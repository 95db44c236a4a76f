"""Units, money and delivery-slot arithmetic (pure).

Settled values are integers, always:

* energy  — ``Wh``            (watt-hours)
* money   — ``Microcredits``  (µc; 1 credit = 1_000_000 µc)
* price   — ``PricePerKWh``   (µc per kWh)
* time    — ``Millis``        (milliseconds since the Unix epoch, UTC). Every pure function that
  depends on time takes ``now_ms`` as an argument; nothing here reads a clock.

A delivery **slot** is named by its start, in whole seconds since the epoch (``SlotStart``), and is
``length_s`` long (900 s by default), aligned to UTC: ``slot_start % length_s == 0``.
Trading for a slot opens ``horizon_s`` before its start and closes at *gate closure*, ``gate_s``
before its start. Meter readings for it are due by ``start + length + grace``.

The one rounding rule for the value of a trade (``trade_value``): floor of
``qty_wh * price / 1000``. The buyer pays and the seller receives that same integer, so money is
conserved exactly whatever the rounding; flooring favours the buyer by less than one µc per fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

from p2pgrid.errors import ConfigError

Wh = NewType("Wh", int)
Microcredits = NewType("Microcredits", int)
PricePerKWh = NewType("PricePerKWh", int)
Millis = NewType("Millis", int)
SlotStart = NewType("SlotStart", int)

MICROCREDITS_PER_CREDIT = 1_000_000
WH_PER_KWH = 1000
MS_PER_S = 1000

DEFAULT_SLOT_LENGTH_S = 900
DEFAULT_HORIZON_S = 24 * 3600
DEFAULT_GATE_S = 300
DEFAULT_GRACE_S = 300


def trade_value(qty_wh: int, price: int) -> Microcredits:
    """Money paid for ``qty_wh`` Wh at ``price`` µc/kWh: ``floor(qty_wh * price / 1000)``.

    >>> trade_value(1500, 300_000)   # 1.5 kWh at 0.30 credits/kWh
    450000
    >>> trade_value(1, 999)          # a fraction of a µc rounds down, for both sides alike
    0
    """
    if qty_wh < 0 or price < 0:
        raise ValueError("trade_value takes non-negative quantity and price")
    return Microcredits(qty_wh * price // WH_PER_KWH)


def credits(amount: int | str) -> Microcredits:
    """Whole or decimal credits as µc, exactly: ``credits("0.30") == 300_000``."""
    text = str(amount).strip()
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    if not (whole or frac) or not (whole or "0").isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a decimal amount of credits: {amount!r}")
    if len(frac) > 6:
        raise ValueError(f"more than 6 decimals (finer than 1 µc): {amount!r}")
    value = int(whole or "0") * MICROCREDITS_PER_CREDIT + int((frac or "0").ljust(6, "0"))
    return Microcredits(-value if negative else value)


def format_credits(value: int) -> str:
    """µc as a decimal string of credits: ``format_credits(-1_500_000) == "-1.500000"``."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), MICROCREDITS_PER_CREDIT)
    return f"{sign}{whole}.{frac:06d}"


def format_price(price: int) -> str:
    """µc/kWh as credits/kWh with 4 decimals, for people."""
    return f"{price / MICROCREDITS_PER_CREDIT:.4f}/kWh"


@dataclass(frozen=True)
class SlotRules:
    """The slot calendar of a zone. All fields in seconds."""

    length_s: int = DEFAULT_SLOT_LENGTH_S
    horizon_s: int = DEFAULT_HORIZON_S
    gate_s: int = DEFAULT_GATE_S
    grace_s: int = DEFAULT_GRACE_S

    def __post_init__(self) -> None:
        if self.length_s <= 0 or 86400 % self.length_s != 0:
            raise ConfigError(f"slot length_s must divide a day, got {self.length_s}")
        if not 0 <= self.gate_s < self.horizon_s:
            raise ConfigError("slot gate_s must be >= 0 and < horizon_s")
        if self.grace_s < 0:
            raise ConfigError("slot grace_s must be >= 0")

    def slot_of(self, t_ms: int) -> SlotStart:
        """The slot that contains instant ``t_ms``."""
        t_s = t_ms // MS_PER_S
        return SlotStart(t_s - t_s % self.length_s)

    def is_aligned(self, slot: int) -> bool:
        return slot % self.length_s == 0

    def slot_end_ms(self, slot: int) -> Millis:
        return Millis((slot + self.length_s) * MS_PER_S)

    def opens_ms(self, slot: int) -> Millis:
        """When trading for ``slot`` opens."""
        return Millis((slot - self.horizon_s) * MS_PER_S)

    def gate_closure_ms(self, slot: int) -> Millis:
        """When trading for ``slot`` closes (exclusive: at this instant it is closed)."""
        return Millis((slot - self.gate_s) * MS_PER_S)

    def metering_due_ms(self, slot: int) -> Millis:
        """Meter entries for ``slot`` must be in by this instant; then the slot settles."""
        return Millis((slot + self.length_s + self.grace_s) * MS_PER_S)

    def is_tradable(self, slot: int, now_ms: int) -> bool:
        """True while ``slot`` is open for trading at ``now_ms``."""
        return self.is_aligned(slot) and self.opens_ms(slot) <= now_ms < self.gate_closure_ms(slot)

    def tradable_slots(self, now_ms: int) -> list[SlotStart]:
        """Every slot open for trading at ``now_ms``, earliest first."""
        first = self.slot_of(now_ms + self.gate_s * MS_PER_S)
        if not self.is_tradable(first, now_ms):
            first = SlotStart(first + self.length_s)
        last_open = self.slot_of(now_ms + self.horizon_s * MS_PER_S)
        return [SlotStart(s) for s in range(first, last_open + 1, self.length_s)
                if self.is_tradable(s, now_ms)]
