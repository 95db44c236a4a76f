"""Hypothesis strategies for wire messages, shared by tests and simnet."""

from __future__ import annotations

from hypothesis import strategies as st

from p2pgrid.wire import MAX_PRICE, MAX_QTY_WH, Cancel, Order, Side, Source

zones = st.from_regex(r"[a-z0-9][a-z0-9-]{0,15}", fullmatch=True)
public_keys = st.binary(min_size=32, max_size=32)
order_ids = st.binary(min_size=16, max_size=16)
timestamps_ms = st.integers(0, 2**50)


@st.composite
def orders(draw: st.DrawFn, owner: bytes | None = None) -> Order:
    side = draw(st.sampled_from(Side))
    source = draw(st.sampled_from(Source))
    created = draw(timestamps_ms)
    return Order(
        order_id=draw(order_ids),
        owner=owner if owner is not None else draw(public_keys),
        side=side,
        zone=draw(zones),
        slot=draw(st.integers(0, 2**40)) * 900,
        qty_wh=draw(st.integers(1, MAX_QTY_WH)),
        limit_price=draw(st.integers(0, MAX_PRICE)),
        green=source.is_green and draw(st.booleans()),
        source=source,
        created_ms=created,
        expiry_ms=created + draw(st.integers(1, 10**9)),
        nonce=draw(st.integers(0, 2**63 - 1)),
    )


@st.composite
def cancels(draw: st.DrawFn, owner: bytes | None = None) -> Cancel:
    return Cancel(
        order_id=draw(order_ids),
        owner=owner if owner is not None else draw(public_keys),
        zone=draw(zones),
        slot=draw(st.integers(0, 2**40)) * 900,
        created_ms=draw(timestamps_ms),
    )
