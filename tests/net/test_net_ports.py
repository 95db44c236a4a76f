"""Fixed listening ports are drawn below the kernel's ephemeral range (``p2pgrid.net.ports``)."""

import random
import socket

import pytest

from p2pgrid.net.ports import (FIXED_PORT_FLOOR, NoFreePort, ephemeral_range, fixed_port_range,
                               free_fixed_ports)


def test_fixed_ports_are_free_distinct_and_never_ephemeral():
    low, high = ephemeral_range()
    ports = free_fixed_ports(20, rng=random.Random(7))
    assert len(set(ports)) == 20
    assert all(not low <= port <= high and port >= FIXED_PORT_FLOOR for port in ports)
    for port in ports:                           # each can be listened on now
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()


def test_a_port_in_use_is_never_handed_out():
    rng_seed = 11
    first = free_fixed_ports(1, rng=random.Random(rng_seed))[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        taken.listen()
        assert first not in free_fixed_ports(1, rng=random.Random(rng_seed))


def test_the_range_reads_the_kernel_and_keeps_clear_of_an_unusual_one(tmp_path):
    path = tmp_path / "range"
    path.write_text("40000\t60999\n")
    assert ephemeral_range(path) == (40_000, 60_999)
    assert fixed_port_range((40_000, 60_999)) == range(FIXED_PORT_FLOOR, 40_000)
    assert fixed_port_range((1_024, 60_999)) == range(61_000, 65_536)
    assert ephemeral_range(tmp_path / "missing") == (32_768, 60_999)


def test_asking_for_more_ports_than_exist_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("p2pgrid.net.ports.fixed_port_range", lambda: range(20_000, 20_002))
    with pytest.raises(NoFreePort):
        free_fixed_ports(3)
