"""Idle-connection abuse: hold many authenticated TLS connections to a hub, then time a normal client.

``open_idle`` opens connections in waves (so the listen backlog is never the limit), each finishing the
TLS handshake and the sync hello and then saying nothing; ``measure`` times small one-shot replications
and RPC round trips from a normal client meanwhile. Used by tests/test_reliability_abuse.py (100 idle
connections, hub in process) and scripts/benchmarks/reliability.py (1,000, hub in a child process).
"""

from __future__ import annotations

import resource
import time
from typing import Any

from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint

from shiftpeer.identity import NodeKey
from shiftpeer.identity.tls import client_creator
from shiftpeer.sync import Policy, SyncFactory
from shiftpeer.sync.client import tls_client_endpoint
from shiftpeer.sync.testing import MemoryStore


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards ``wanted`` (up to the hard limit); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Client:
    """One client identity with its own (memory) store; ``connect`` gives an authenticated SyncProtocol."""

    def __init__(self, reactor: Any, port: int, hub_id: str, roles: tuple = ("user",), key: Any = None) -> None:
        self.reactor = reactor
        self.key = key or NodeKey.generate()
        self.factory = SyncFactory(MemoryStore(), self.key, Policy(), reactor=reactor, roles=roles)
        self.endpoint = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30),
                                            client_creator(self.key, expected_peer_id=hub_id))

    async def connect(self) -> Any:
        proto = await self.endpoint.connect(self.factory)
        return await proto.when_ready()


async def open_idle(reactor: Any, port: int, hub_id: str, n: int, *, identities: int = 20, wave: int = 100) -> list:
    """Open ``n`` authenticated connections that then stay silent; returns their protocols."""
    clients = [Client(reactor, port, hub_id) for _ in range(identities)]
    conns: list = []
    for start in range(0, n, wave):
        results = await DeferredList([ensureDeferred(clients[i % identities].connect())
                                      for i in range(start, min(n, start + wave))], consumeErrors=True)
        conns.extend(proto for ok, proto in results if ok)
    return conns


def held(conns: list) -> int:
    """How many of the idle connections are still open."""
    return sum(1 for c in conns if not c._closing)


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


async def measure(conn: Any, rounds: int, db: str = "small") -> dict:
    """Time ``rounds`` one-shot replications of ``db`` (into a fresh local database each time) and as many
    ``ping`` RPCs; returns p50/p99/max in milliseconds."""
    repl: list[float] = []
    rpc: list[float] = []
    for i in range(rounds):
        t0 = time.perf_counter()
        await conn.pull(db, f"copy{i}", live=False).caught_up
        repl.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        await conn.call("ping", {})
        rpc.append((time.perf_counter() - t0) * 1000)
    return {"replication_p50_ms": round(percentile(repl, 50), 2), "replication_p99_ms": round(percentile(repl, 99), 2),
            "replication_max_ms": round(max(repl), 2), "rpc_p50_ms": round(percentile(rpc, 50), 2),
            "rpc_p99_ms": round(percentile(rpc, 99), 2), "rounds": rounds}


def close_all(conns: list) -> None:
    for c in conns:
        if c.transport is not None:
            c.transport.abortConnection()


__all__ = ["Client", "open_idle", "held", "measure", "percentile", "raise_fd_limit", "close_all"]
