"""``p2pgrid book / trade / trades`` against real nodes serving their local RPC."""

import trio

from p2pgrid.cli.main import main
from p2pgrid.node.status import read_status
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.wire import Side, Source


def run_cli(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr()


async def test_book_trade_and_trades_through_the_running_node(tmp_path, capsys):
    async with open_node_cluster(tmp_path, 5, rpc_nodes=(4,), funds_uc=10_000_000) as nodes:
        maker, me = nodes[3], nodes[4]
        rules = maker.config.zone.slot_rules
        slot = rules.tradable_slots(maker.clock.now_ms())[0]
        maker.place_order(Side.SELL, 800, 200_000, slot)
        with trio.fail_after(30):
            while me.trading.books.remaining(next(iter(maker.trading.own_orders))) == 0:
                await trio.sleep(0.02)
        data_dir = str(me.config.node.data_dir)

        code, out = await trio.to_thread.run_sync(run_cli, ["book", "--data-dir", data_dir, "--slot", str(slot)], capsys)
        assert code == 0 and "800" in out.out and "0.2000/kWh" in out.out

        code, out = await trio.to_thread.run_sync(
            run_cli, ["trade", "buy", "500", "--limit", "250000", "--data-dir", data_dir, "--slot", str(slot)], capsys)
        assert code == 0, out.err
        assert "route: buy 500/500 Wh" in out.out and "filled 500/500 Wh" in out.out

        code, out = await trio.to_thread.run_sync(run_cli, ["trades", "--data-dir", data_dir], capsys)
        assert code == 0 and "500" in out.out and "yes" in out.out

        # What the dashboard shows comes from the node's status: the trade as bought, the best ask
        # of the slot, and on the maker's side its open order with what was filled of it.
        mine = me.status()
        (trade,) = mine.recent_trades
        assert (trade.side, trade.qty_wh, trade.price, trade.value_uc) == ("bought", 500, 200_000, 100_000)
        assert trade.counterparty == maker.key.account and mine.ledger and mine.peer_id
        best = {line.slot: line for line in mine.best_prices}[slot]
        assert (best.ask, best.ask_wh, best.bid) == (200_000, 300, None)
        (own,) = maker.status().own_orders
        assert (own.side, own.qty_wh, own.filled_wh, own.price) == ("sell", 800, 500, 200_000)
        with trio.fail_after(10):
            while not getattr(read_status(me.config.node.data_dir), "recent_trades", ()):
                await trio.sleep(0.05)           # and the status file carries them to `p2pgrid status`
        (me.config.node.data_dir / "config.toml").write_text('[node]\ndata_dir = "."\n')
        code, out = await trio.to_thread.run_sync(run_cli, ["status", "--data-dir", data_dir], capsys)
        assert code == 0, out.err
        assert "bought 500 Wh at 0.2000 cr/kWh, paid 0.100000 cr" in out.out

        code, out = await trio.to_thread.run_sync(
            run_cli, ["trade", "buy", "500", "--limit", "100000", "--data-dir", data_dir, "--slot", str(slot)], capsys)
        assert code == 1 and out.err.count("\n") == 1 and "nothing to trade" in out.err


async def test_order_place_signs_and_gossips_through_the_running_nodes_rpc(tmp_path, capsys):
    async with open_node_cluster(tmp_path, 5, rpc_nodes=(4,)) as nodes:
        me, other = nodes[4], nodes[3]
        data_dir = me.config.node.data_dir
        (data_dir / "config.toml").write_text('[node]\ndata_dir = "."\n[agent]\norder_ttl_s = 600\n')
        place = ["order", "place", "--data-dir", str(data_dir), "--side", "sell", "--qty", "700", "--price", "90000",
                 "--slot", "+1"]
        with trio.fail_after(10):
            while getattr(read_status(data_dir), "state", None) != "running":    # what the command checks first
                await trio.sleep(0.05)

        code, out = await trio.to_thread.run_sync(run_cli, [*place, "--source", "pv", "--green"], capsys)
        assert code == 0, out.err
        first, *where = out.out.splitlines()
        order_id = bytes.fromhex(first.split()[1])
        slot = int(first.split()[-1])
        assert first == f"order {order_id.hex()} sell 700 Wh at 90000 µc/kWh for slot {slot}"
        # Where it went, said plainly: this node has a ledger and peers, so nothing more to warn of.
        assert len(where) == 1 and where[0].startswith("signed and queued for the next gossip batch of zone")
        assert "peers connected" in where[0] and " 0 peers" not in where[0]
        order = me.trading.own_orders[order_id].body
        assert (order.slot, order.qty_wh, order.limit_price, order.green, order.source) == (slot, 700, 90_000, True,
                                                                                           Source.PV)
        assert order.expiry_ms - order.created_ms in range(599_000, 600_001)     # [agent] order_ttl_s
        with trio.fail_after(30):
            while other.trading.books.remaining(order_id) != 700:
                await trio.sleep(0.02)

        code, out = await trio.to_thread.run_sync(run_cli, place, capsys)       # a sell names no source: mixed
        assert code == 0, out.err
        assert me.trading.own_orders[bytes.fromhex(out.out.split()[1])].body.source is Source.MIXED

        code, out = await trio.to_thread.run_sync(run_cli, [*place, "--source", "grid", "--green"], capsys)
        assert code == 1 and out.err.count("\n") == 1 and "node refused the order" in out.err
        assert "green source" in out.err


def test_without_a_running_node_the_error_is_one_line(tmp_path, capsys):
    code, out = run_cli(["book", "--data-dir", str(tmp_path)], capsys)
    assert code == 1 and out.err.count("\n") == 1 and "rpc" in out.err.lower()
