"""Hypothesis strategies and small builders for settlement, metering and certificate tests."""

from __future__ import annotations

from hypothesis import strategies as st

from p2pgrid.pools.entries import SwapRecord
from p2pgrid.settlement.entries import trade_of_swap
from p2pgrid.settlement.rules import GridFee, MeterEntry, TradeRecord, ZoneTariffs
from p2pgrid.wire import Side, Source

SLOT = 1_800_000_000 - 1_800_000_000 % 900      # a slot start in 2027
GATEWAY = b"\xee" * 32
ZONES = ("north", "south")
ACCOUNTS = tuple(bytes([i]) * 32 for i in range(1, 7))
ZONE_OF = {account: ZONES[i % 2] for i, account in enumerate(ACCOUNTS)}

RETAIL = 300_000      # µc/kWh: 0.30 credits per kWh drawn from the grid
FEED_IN = 80_000      # µc/kWh: 0.08 credits per kWh fed into the grid
FEE_NS = 20_000       # µc/kWh grid fee north -> south (and back)


def tariffs(fee: int = FEE_NS) -> ZoneTariffs:
    return ZoneTariffs(gateway=GATEWAY, shortfall_price=RETAIL, feed_in_price=FEED_IN,
                       grid_fees=(GridFee("north", "south", fee), GridFee("south", "north", fee)))


def trade(trade_id: int, seller: bytes, buyer: bytes, qty_wh: int, price: int, *, green: bool = False,
          seller_zone: str = "north", buyer_zone: str = "north", slot: int = SLOT) -> TradeRecord:
    return TradeRecord(trade_id=trade_id.to_bytes(16, "big"), slot=slot, seller=seller, buyer=buyer,
                       seller_zone=seller_zone, buyer_zone=buyer_zone, qty_wh=qty_wh, price=price, green=green)


def meter(account: bytes, import_wh: int = 0, export_wh: int = 0, green_wh: int = 0, *,
          zone: str = "north", slot: int = SLOT) -> MeterEntry:
    return MeterEntry(account=account, zone=zone, slot=slot, import_wh=import_wh, export_wh=export_wh,
                      green_wh=green_wh, green_source=Source.PV if green_wh else Source.NONE,
                      entry_hash=bytes([account[0]]) * 8 + slot.to_bytes(8, "big"))


def swap(swap_id: int, host: bytes, trader: bytes, side: Side, energy_wh: int, credits_uc: int, *,
         slot: int = SLOT) -> TradeRecord:
    """A certified pool swap as settlement sees it (``settlement.entries.trade_of_swap``)."""
    record = SwapRecord(pool_id=b"p" * 16, host=host, trader=trader, side=side, slot=slot, energy_wh=energy_wh,
                        credits_uc=credits_uc)
    return trade_of_swap(swap_id.to_bytes(16, "big"), record, ZONE_OF.get(host, "north"))


@st.composite
def trade_sets(draw: st.DrawFn) -> list[TradeRecord]:
    """Book trades and pool swaps of one slot (swaps: credits any value the curve could charge)."""
    n = draw(st.integers(0, 12))
    trades = []
    for i in range(n):
        seller, buyer = draw(st.lists(st.sampled_from(ACCOUNTS), min_size=2, max_size=2, unique=True))
        trades.append(trade(draw(st.integers(0, 10**6)) * 100 + i, seller, buyer,
                            qty_wh=draw(st.integers(1, 5_000)), price=draw(st.integers(0, 1_000_001)),
                            green=draw(st.booleans()), seller_zone=ZONE_OF[seller], buyer_zone=ZONE_OF[buyer]))
    for i in range(draw(st.integers(0, 6))):
        host, trader = draw(st.lists(st.sampled_from(ACCOUNTS), min_size=2, max_size=2, unique=True))
        trades.append(swap(draw(st.integers(0, 10**6)) * 100 + i, host, trader, draw(st.sampled_from(Side)),
                           energy_wh=draw(st.integers(1, 5_000)), credits_uc=draw(st.integers(1, 5_000_000))))
    return trades


@st.composite
def meter_sets(draw: st.DrawFn) -> list[MeterEntry]:
    metered = draw(st.lists(st.sampled_from(ACCOUNTS), unique=True))
    return [meter(a, import_wh=draw(st.integers(0, 8_000)), export_wh=draw(st.integers(0, 8_000)),
                  green_wh=draw(st.integers(0, 8_000)), zone=ZONE_OF[a]) for a in metered]
