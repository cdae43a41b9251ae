"""Loopback ports for tests that must know a node's port before it listens (restarts, --peer lists, URLs).

Binding port 0 and closing it hands out a port from the kernel's ephemeral range, the same range every
outgoing connection takes its source port from: a node dialling its own listener, or any other connection,
could take that port before the test's node listened on it ("Address already in use", seen in CI). These
ports come from below that range instead, from a block of their own for each pytest-xdist worker, are
never handed out twice in one process, and were free when handed out.
"""

from __future__ import annotations

import os
import random
import socket

#: Below Linux's default ephemeral range (32768-60999, /proc/sys/net/ipv4/ip_local_port_range)
FIRST, LAST = 20000, 32767
_given: set[int] = set()


def _block() -> range:
    """This process's share of FIRST..LAST: one block per xdist worker (gw0, gw1, ...), all of it otherwise."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (LAST - FIRST + 1) // max(1, count)
    start = FIRST + (index % max(1, count)) * size
    return range(start, start + size)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on and no outgoing connection will take from under us."""
    block = _block()
    for _ in range(1000):
        port = random.choice(block)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {block.start}-{block.stop - 1}")
