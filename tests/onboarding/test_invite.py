"""Join bundles and join requests (``p2pgrid.onboarding.invite``), as properties: a zone preset
reads back as the zone it was written from, and no change to a signed bundle's bytes is accepted."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings, strategies as st

from p2pgrid.config import SlotSection, TariffSection, Validator, ZoneSection
from p2pgrid.errors import ConfigError
from p2pgrid.identity import NodeKey
from p2pgrid.node.api import peer_id_base58
from p2pgrid.onboarding.invite import (INVITE_PREFIX, Invite, InvalidInvite, InvalidJoinRequest, JoinRequest,
                                       WrongZone, invite_text, parse_preset, read_invite, read_join_request,
                                       render_preset, request_text)
from p2pgrid.wire import sign

OPERATOR = NodeKey(bytes(range(32)))
NEIGHBOUR, METER = NodeKey(bytes([7]) * 32), NodeKey(bytes([9]) * 32)
ADDRESS = f"/ip4/127.0.0.1/tcp/24101/p2p/{peer_id_base58(OPERATOR.public_key)}"
DAY_DIVISORS = [d for d in range(1, 3601) if 86_400 % d == 0]

zone_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)
hex_keys = st.binary(min_size=32, max_size=32).map(bytes.hex)


@st.composite
def zones(draw) -> ZoneSection:
    zone_id = draw(zone_ids)
    others = draw(st.lists(zone_ids.filter(lambda z: z != zone_id), max_size=3, unique=True))
    validators = draw(st.lists(st.tuples(hex_keys, st.sampled_from(["", ADDRESS, "/ip4/127.0.0.1/tcp/1/p2p/x\"y"])),
                               min_size=1, max_size=4, unique_by=lambda v: v[0]))
    return ZoneSection(
        id=zone_id, gateway_account=draw(hex_keys), credit_limit_uc=draw(st.integers(0, 10**12)),
        ledger_domain=draw(st.sampled_from(["", zone_id])),
        slots=SlotSection(length_s=draw(st.sampled_from(DAY_DIVISORS)), horizon_s=draw(st.integers(10**4 + 1, 10**6)),
                          gate_s=draw(st.integers(0, 10**4)), grace_s=draw(st.integers(0, 10**4))),
        tariffs=TariffSection(draw(st.integers(0, 10**9)), draw(st.integers(0, 10**9))),
        grid_fees={z: draw(st.integers(0, 10**6)) for z in others},
        validators=tuple(Validator(k, a) for k, a in validators))


@settings(max_examples=60, deadline=None)
@given(zones())
def test_a_rendered_preset_reads_back_as_the_same_zone(zone):
    assert parse_preset(render_preset(zone)) == zone


def street_invite() -> str:
    zone = ZoneSection(id="street", gateway_account=OPERATOR.account, validators=(Validator(OPERATOR.account, ADDRESS),))
    return invite_text(sign(Invite(OPERATOR.public_key, "street", render_preset(zone), (ADDRESS,), 1_800_000_000_000),
                            OPERATOR))


def encoded(text: str) -> bytes:
    body = text[len(INVITE_PREFIX):]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def as_text(data: bytes) -> str:
    return INVITE_PREFIX + base64.urlsafe_b64encode(data).decode().rstrip("=")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_no_change_to_a_bundles_bytes_is_accepted(data):
    original = encoded(street_invite())
    at = data.draw(st.integers(0, len(original) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[at]))
    changed = original[:at] + bytes([byte]) + original[at + 1:]
    with pytest.raises(InvalidInvite):
        read_invite(as_text(changed))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40))
def test_a_cut_bundle_is_refused(cut):
    with pytest.raises(InvalidInvite):
        read_invite(as_text(encoded(street_invite())[:-cut]))


def test_the_bundle_survives_line_breaks_and_checks_the_expected_zone():
    text = street_invite()
    wrapped = "\n".join(text[i:i + 70] for i in range(0, len(text), 70)) + "\n"
    assert read_invite(wrapped, zone="street").body.zone == "street"
    with pytest.raises(WrongZone):
        read_invite(text, zone="avenue")


def test_a_join_request_round_trips_and_is_bound_to_its_zone():
    request = JoinRequest(NEIGHBOUR.public_key, METER.public_key, "street", "anna", "household", 6000, 8000, 10_000,
                          1_800_000_000_000)
    text = request_text(sign(request, NEIGHBOUR))
    assert read_join_request(text, zone="street").body == request
    with pytest.raises(WrongZone):
        read_join_request(text, zone="avenue")
    body = text[len("p2pgrid-request:"):]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[raw.index(b"anna")] = ord("b")                                   # the name, after signing
    with pytest.raises(InvalidJoinRequest, match="bad signature"):
        read_join_request("p2pgrid-request:" + base64.urlsafe_b64encode(bytes(raw)).decode(), zone="street")


def test_a_preset_with_more_than_a_zone_table_is_refused():
    with pytest.raises(ConfigError, match="only hold a \\[zone\\] table"):
        parse_preset('[zone]\nid = "street"\n[network]\nmdns = true\n')
