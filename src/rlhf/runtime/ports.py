"""Free TCP ports for the local servers this project starts (Kafka, Triton, `rlhf up`).

The usual trick, bind port 0 and close the socket, hands back a port from the kernel's
ephemeral range: the same range every outgoing connection's source port comes from. In
the gap between the close and the server's own bind, a client connection (a Kafka
consumer, a gRPC channel, another test) can take that port, and the server then dies
with "Address already in use". Two such calls in a row can also return the same port.

So ports here are drawn at random from below the ephemeral range, which the kernel never
assigns on its own, checked free by binding them, and never handed out twice by one
process. Processes that pick ports independently could still meet, but only by both
drawing the same one of some 12,000 ports within the same moment.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

LOWEST_PORT = 20000
"""Bottom of the range drawn from (top: the start of the kernel's ephemeral range)."""

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
_lock = threading.Lock()
_random = random.SystemRandom()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for automatically assigned ports (Linux default 32768-60999)."""
    try:
        low, high = (int(x) for x in _EPHEMERAL_RANGE.read_text().split()[:2])
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def is_free(port: int) -> bool:
    """Whether a server could bind `port` on every IPv4 (and, if present, IPv6) address."""
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, host in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # the family exists in Python but not in this kernel
            continue
        with sock:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port no server listens on, outside the ephemeral range, new to this process."""
    low, _ = ephemeral_range()
    if low - LOWEST_PORT < 1000:  # an unusual kernel setting: fall back to the kernel
        return _kernel_port()
    with _lock:
        for _ in range(1000):
            port = _random.randrange(LOWEST_PORT, low)
            if port not in _handed_out and is_free(port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port in {LOWEST_PORT}-{low - 1} after 1000 tries")


def _kernel_port() -> int:
    with _lock:
        for _ in range(100):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("the kernel kept handing out ports already given to this process")
