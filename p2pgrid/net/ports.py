"""Fixed listening ports for nodes whose address must stay the same across restarts.

A port the kernel hands out for ``bind(port 0)`` comes from its ephemeral range (Linux:
``/proc/sys/net/ipv4/ip_local_port_range``, 32768–60999 by default) — the range it also draws the
local port of every outgoing connection from. A node written to listen on such a port finds it,
after a restart, taken by any process's outgoing connection now and then ("address already in
use"; seen in a simnet kill-and-restart run beside a busy test suite). Fixed ports are therefore
drawn *below* the ephemeral range, where the kernel never assigns one on its own, and checked
free by binding them (as a listener would: with ``SO_REUSEADDR``, so a port in TIME_WAIT counts
as free).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

FIXED_PORT_FLOOR = 20_000                 # below: well-known and registered services' ports
DEFAULT_EPHEMERAL_RANGE = (32_768, 60_999)
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class NoFreePort(OSError):
    """Not enough free ports below the ephemeral range."""


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range (the default where it cannot be read)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def fixed_port_range(ephemeral: tuple[int, int] | None = None) -> range:
    """The ports fixed listeners are drawn from: between the floor and the ephemeral range."""
    low = (ephemeral or ephemeral_range())[0]
    if low - 1 <= FIXED_PORT_FLOOR:            # an unusual range: keep clear of it from above
        return range(max((ephemeral or ephemeral_range())[1] + 1, FIXED_PORT_FLOOR), 65_536)
    return range(FIXED_PORT_FLOOR, low)


def free_fixed_ports(count: int, *, host: str = "127.0.0.1", rng: random.Random | None = None) -> list[int]:
    """``count`` distinct ports free on ``host`` now, outside the kernel's ephemeral range."""
    rng = rng or random.Random()
    candidates = fixed_port_range()
    held: list[socket.socket] = []
    try:
        for port in rng.sample(candidates, min(len(candidates), max(count * 8, 64))):
            if len(held) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        if len(held) < count:
            raise NoFreePort(f"found {len(held)} of {count} free ports in {candidates}")
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()
