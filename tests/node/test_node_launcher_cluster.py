"""Real node processes on 127.0.0.1: orders gossip everywhere, and no process outlives the cluster."""

import dataclasses
import os
import subprocess
import sys

import pytest

from simnet.launcher import Cluster, ClusterError, ClusterSettings, NodeSpec, default_specs

pytestmark = pytest.mark.slow


def assert_no_process_left(pids):
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)        # nor anything else in the node's process group


def test_four_real_nodes_see_every_order_and_stop_cleanly(tmp_path):
    per_node = 6
    settings = ClusterSettings(speed=60.0, tick_ms=300, orders_per_tick=2, max_orders=per_node,
                               publish_interval_ms=200)
    specs = default_specs(4)
    specs[1] = dataclasses.replace(specs[1], extra={"rpc.enabled": True})    # `order place` goes through the RPC
    with Cluster(tmp_path, specs, settings) as cluster:
        cluster.start(timeout_s=120)
        pids = cluster.pids()
        assert len(pids) == 4
        placed = subprocess.run(
            [sys.executable, "-m", "p2pgrid.cli.main", "order", "place", "--data-dir", str(cluster.nodes[1].data_dir),
             "--side", "sell", "--qty", "500", "--price", "100000", "--slot", "+1", "--source", "pv", "--green"],
            capture_output=True, text=True, timeout=60)
        assert placed.returncode == 0, placed.stderr
        assert placed.stdout.startswith("order ")
        total = 4 * per_node + 1
        final = cluster.wait_for(
            lambda s: all(x is not None and x.orders_seen == total for x in s)
            and sum(x.orders_published for x in s) == total,
            timeout_s=120, what="every order to reach every node")
        assert all(not s.rejects for s in final)
    assert set(cluster.clean_exits().values()) == {0}
    assert all(s.state == "stopped" for s in cluster.statuses())
    assert_no_process_left(pids)


def test_a_node_that_fails_to_start_is_reported_and_nothing_is_left_running(tmp_path):
    specs = [NodeSpec("good", "station", 1), NodeSpec("broken", "consumer", 2, extra={"agent.tick_ms": 0})]
    cluster = Cluster(tmp_path, specs, ClusterSettings())
    with pytest.raises(ClusterError, match=r"node broken exited with code 1: .*agent\.tick_ms"):
        with cluster:
            cluster.start(timeout_s=120)
    pids = cluster.pids()
    assert len(pids) == 2
    assert_no_process_left(pids)
