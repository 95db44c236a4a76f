"""The PPA methods over real HTTP on 127.0.0.1 (two parties' nodes sharing one instantly
certifying ledger), and the CLI's renderings: offer, accept, show with its hash verified, a
tampered text flagged, termination without notice refused, settled positions."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

import p2pgrid.node.entry_kinds  # noqa: F401  settle_ppa and every other kind
from p2pgrid.cli.main import main
from p2pgrid.ledger.chain import LedgerState, process_entry
from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.ppa.api import PpaStatus
from p2pgrid.ppa.cli import ppa_calls, render_list, render_positions, render_show
from p2pgrid.ppa.service import PpaService
from p2pgrid.ppa.terms import TEMPLATE_TOML, terms_hash, parse_terms_toml
from p2pgrid.ppa.testing import InstantLedger
from p2pgrid.rpc import errors as codes
from p2pgrid.rpc.client import AsyncRpcClient, RpcCallError
from p2pgrid.rpc.server import serve_rpc
from p2pgrid.rpc.testing import FakeNode
from p2pgrid.settlement.entries import METER_KIND, METER_REGISTRATION_KIND, MeterEntryBody, SettlementLedgerRules
from p2pgrid.settlement.entries import plan_settlement
from p2pgrid.settlement.metering import MeterReading, MeterRegistration
from p2pgrid.settlement.rules import ImbalancePrices
from p2pgrid.units import SlotRules
from p2pgrid.wire import Source, sign

TOKEN = "test-token-0123456789abcdef"
SLOTS = SlotRules()
START = 1_798_761_600
SLOT = START + 12 * 3600
STATION, HOUSE = seeded_key("ppa-rpc-station"), seeded_key("ppa-rpc-house")
METER_KEYS = {STATION.public_key: seeded_key("ppa-rpc-meter-0"), HOUSE.public_key: seeded_key("ppa-rpc-meter-1")}


def text(renderable) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def template() -> str:
    return (TEMPLATE_TOML.replace("<seller account, 64 hex digits>", STATION.public_key.hex())
            .replace("<buyer account, 64 hex digits>", HOUSE.public_key.hex())
            .replace("<seller account>", STATION.public_key.hex()).replace("<zone>", "ppa-rpc"))


class Zone:
    def __init__(self, tmp_path):
        self.fx = LedgerFixture(zone="ppa-rpc")
        self.fx.rules = SettlementLedgerRules(self.fx.zone, self.fx.gateway.public_key, 0, slots=SLOTS,
                                              prices=ImbalancePrices(300_000, 80_000))
        self.state = LedgerState()
        self.now = [(START - 86_400) * 1000]
        for key in (STATION, HOUSE):
            self.add(self.fx.gateway, "mint", Mint(key.public_key, 1_000_000_000))
            self.add(self.fx.gateway, METER_REGISTRATION_KIND, MeterRegistration(
                self.fx.gateway.public_key, key.public_key, METER_KEYS[key.public_key].public_key, self.fx.zone, 0))
        self.services = {key.public_key: PpaService(InstantLedger(self.fx, key, self.state, lambda: self.now[0]),
                                                    tmp_path / name)
                         for key, name in ((STATION, "station"), (HOUSE, "house"))}

    def add(self, key, kind, body, time_ms=None):
        signed = self.fx.entry_on(self.state, key, kind, body, self.now[0] if time_ms is None else time_ms)
        process_entry(self.state, signed, self.fx.rules)

    def node(self, key) -> FakeNode:
        node = FakeNode()
        node.services = [self.services[key.public_key]]
        return node

    def meter_and_settle(self, export_wh: int, import_wh: int) -> None:
        created = SLOTS.slot_end_ms(SLOT) + 10_000
        for key, imp, exp in ((STATION, 0, export_wh), (HOUSE, import_wh, 0)):
            meter = METER_KEYS[key.public_key]
            self.add(key, METER_KIND, MeterEntryBody(sign(MeterReading(
                account=key.public_key, meter_key=meter.public_key, zone=self.fx.zone, slot=SLOT, import_wh=imp,
                export_wh=exp, green_wh=exp, green_source=Source.PV if exp else Source.NONE, import_total_wh=imp,
                export_total_wh=exp, created_ms=created), meter).encoded), created)
        kind, body = plan_settlement(self.state, self.fx.rules, SLOT)
        self.add(self.fx.gateway, kind, body, SLOTS.metering_due_ms(SLOT) + 30_000)
        self.now[0] = SLOTS.metering_due_ms(SLOT) + 60_000


async def test_two_parties_offer_accept_show_terminate_and_read_positions_over_rpc(tmp_path):
    zone = Zone(tmp_path)
    ppa_id = terms_hash(parse_terms_toml(template()))
    async with serve_rpc(zone.node(STATION), token=TOKEN, port=0) as station_rpc, \
            serve_rpc(zone.node(HOUSE), token=TOKEN, port=0) as house_rpc, \
            AsyncRpcClient(station_rpc.url, token=TOKEN) as station, AsyncRpcClient(house_rpc.url, token=TOKEN) as house:
        offered = await station.call(ppa_calls.ppa_offer(template()))
        assert (offered.ppa_id, offered.status, offered.text_verified) == (ppa_id, PpaStatus.OFFERED, True)
        [listed] = await house.call(ppa_calls.ppa_list())                 # the counterparty sees the offer
        assert listed.ppa_id == ppa_id and listed.text == ""
        with pytest.raises(RpcCallError) as own:
            await station.call(ppa_calls.ppa_accept(ppa_id))
        assert own.value.code == codes.LEDGER_ERROR
        agreed = await house.call(ppa_calls.ppa_accept(ppa_id))
        assert agreed.status is PpaStatus.AGREED
        # Both parties store the text; show verifies it against the id, and flags an edited copy.
        for name in ("station", "house"):
            assert (tmp_path / name / "ppa" / f"{ppa_id.hex()}.md").read_bytes() == offered.text.encode()
        shown = await house.call(ppa_calls.ppa_show(ppa_id))
        assert shown.text_verified and "25.0000 %" in shown.text and "matches" in text(render_show(shown))
        path = tmp_path / "house" / "ppa" / f"{ppa_id.hex()}.md"
        path.write_text(shown.text.replace("25.0000 %", "35.0000 %"), encoding="ascii")
        tampered = await house.call(ppa_calls.ppa_show(ppa_id))
        assert not tampered.text_verified and "DOES NOT MATCH" in text(render_show(tampered))
        # Termination needs the terms' notice (90 days).
        with pytest.raises(RpcCallError) as early:
            await house.call(ppa_calls.ppa_terminate(ppa_id, START + 86_400))
        assert early.value.code == codes.LEDGER_ERROR and "no_notice" in early.value.message
        # A settled slot: 25 % of 2000 Wh exported at 0.12 credits/kWh.
        zone.meter_and_settle(export_wh=2_000, import_wh=600)
        [position] = await house.call(ppa_calls.ppa_positions(ppa_id))
        assert (position.slot, position.contracted_wh, position.delivered_wh, position.paid_uc) == (SLOT, 500, 500,
                                                                                                      60_000)
        assert "60.000000" not in text(render_positions([position])) and "0.060000" in text(render_positions([position]))
        ended = await house.call(ppa_calls.ppa_terminate(ppa_id))         # the earliest slot the notice allows
        assert ended.status is PpaStatus.TERMINATED and ended.ends_slot < ended.end_slot
        assert "terminated" in text(render_list([ended]))


def test_draft_prints_the_text_and_its_hash_without_a_node(tmp_path, capsys):
    filled = tmp_path / "ppa.toml"
    filled.write_text(template(), encoding="utf-8")
    assert main(["ppa", "draft", str(filled), "--out", str(tmp_path / "ppa.md")]) == 0
    out = capsys.readouterr().out
    ppa_id = terms_hash(parse_terms_toml(template()))
    assert out.endswith(f"sha256 (the agreement's id): {ppa_id.hex()}\n")
    assert (tmp_path / "ppa.md").read_text(encoding="ascii") in out
    filled.write_text(template().replace('share_percent = "25"', 'share_percent = "125"'), encoding="utf-8")
    assert main(["ppa", "draft", str(filled)]) == 1
    assert "share_ppm: 1250000 above maximum 1000000" in capsys.readouterr().err
