"""Connection caps on the serving side: per peer identity and per remote address (shiftpeer/sync/limits.py).

Deterministic ones over in-memory TLS (iosim, a Clock); then the same over real TLS on 127.0.0.1.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from rel_idle import Client
from shiftpeer.api.metrics import NodeCollector
from shiftpeer.sync import AllowAll, RemoteError, SyncFactory, SyncProtocol
from shiftpeer.sync.limits import MAX_CONNECTIONS_PER_ADDRESS, MAX_CONNECTIONS_PER_PEER, Slots, address_key
from shiftpeer.sync.testing import MemoryStore, accept_all, connect_pair, peer_id_of
from test_sync_iosim import settle
from test_sync_network import Node, bounded, until


@pytest.fixture
def warnings():
    """The text of every warning logged during the test."""
    from twisted.logger import LogLevel, formatEvent

    seen: list[str] = []

    def observer(event: dict) -> None:
        if event.get("log_level") == LogLevel.warn:
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def serving_factory(clock, **kw) -> SyncFactory:
    factory = SyncFactory(MemoryStore(), None, AllowAll(), reactor=clock, validator=accept_all,
                          peer_id_of=peer_id_of, **kw)
    factory.rpc_handlers["ping"] = lambda conn, args: {"pong": conn.peer_id}
    return factory


class Mesh:
    """One serving factory and in-memory TLS connections to it from named identities, on one Clock."""

    def __init__(self, **kw) -> None:
        self.clock = Clock()
        self.server = serving_factory(self.clock, **kw)
        self.pairs: list = []

    def connect(self, name: str):
        pair = connect_pair(serving_factory(self.clock), self.server, self.clock, client_name=name)
        settle(pair.pump)
        self.pairs.append(pair)
        return pair

    def settle(self) -> None:
        for pair in self.pairs:
            settle(pair.pump)

    def ping(self, pair) -> object:
        out: list = []
        pair.client.call("ping", {}).addBoth(out.append)
        self.settle()
        return out[0] if out else None


def is_open(pair) -> bool:
    return pair.client.peer_id is not None and not pair.client._lost and not pair.client._closing


def test_defaults():
    """A factory caps 8 connections per identity and 64 per address unless told otherwise (256 per network,
    1,024 per block: tests/test_sync_limits_network.py)."""
    factory = serving_factory(Clock())
    assert (MAX_CONNECTIONS_PER_PEER, MAX_CONNECTIONS_PER_ADDRESS) == (8, 64)
    assert (factory.limits.per_peer, factory.limits.per_address) == (8, 64)


def test_the_connection_past_the_identity_cap_is_refused_and_the_others_keep_working(warnings):
    """With the default cap of 8, alice's ninth connection gets a too_many_connections error frame and is
    closed; her eight and bob's connection keep answering; the refusal is logged naming alice and counted."""
    mesh = Mesh()
    alices = [mesh.connect("alice") for _ in range(8)]
    assert all(is_open(p) for p in alices) and len(mesh.server.connections) == 8
    ninth = mesh.connect("alice")
    mesh.settle()
    assert ninth.client.peer_error["code"] == "too_many_connections"
    assert "at most 8 connections per peer" in ninth.client.peer_error["msg"]
    assert ninth.client._lost and ninth.server not in mesh.server.connections
    bob = mesh.connect("bob")
    for pair, name in zip([*alices, bob], ["alice"] * 8 + ["bob"]):
        assert mesh.ping(pair) == {"pong": name}
    assert mesh.server.counters["connections_refused.peer"] == 1
    assert mesh.server.counters["violations"] == 0   # a cap is not a protocol violation
    assert any("refused a sync connection from alice" in w and "max_connections_per_peer 8" in w
               for w in warnings), warnings


def test_closing_a_connection_frees_its_identity_slot():
    """Once one of alice's connections at the cap closes, her next connection is accepted."""
    mesh = Mesh(max_connections_per_peer=2)
    first, second = mesh.connect("alice"), mesh.connect("alice")
    assert mesh.connect("alice").client.peer_error["code"] == "too_many_connections"
    first.client.close()
    mesh.settle()
    assert first.client._lost and mesh.server.limits.peers.count("alice") == 1
    again = mesh.connect("alice")
    assert is_open(again) and again.client.peer_error is None
    assert mesh.ping(again) == {"pong": "alice"} and mesh.ping(second) == {"pong": "alice"}
    assert mesh.server.counters["connections_refused.peer"] == 1


def test_the_cap_counts_only_connections_the_node_accepted():
    """Connections a node dials are not counted against its own caps: a client may hold more than the cap
    to different servers, and each server counts only its own."""
    clock = Clock()
    client = serving_factory(clock, max_connections_per_peer=1, max_connections_per_address=1)
    servers = [serving_factory(clock) for _ in range(3)]
    pairs = [connect_pair(client, s, clock, server_name="hub") for s in servers]
    for pair in pairs:
        settle(pair.pump)
    assert all(is_open(p) for p in pairs) and len(client.connections) == 3
    assert len(client.limits.peers) == 0 and len(client.limits.addresses) == 0


def accepted(factory: SyncFactory, host: str, port: int = 4000):
    """What the factory builds for a connection from ``host``, connected to a StringTransport."""
    proto = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_the_address_cap_drops_a_connection_before_anything_is_sent(warnings):
    """Past the per-address cap a new connection from that address is aborted at once with nothing written;
    another address is still accepted; closing one frees its slot; the refusal is logged and counted."""
    factory = serving_factory(Clock(), max_connections_per_address=3)
    held = [accepted(factory, "192.0.2.7") for _ in range(3)]
    assert all(isinstance(p, SyncProtocol) and not t.disconnected for p, t in held)
    refused, transport = accepted(factory, "192.0.2.7")
    assert not isinstance(refused, SyncProtocol)
    assert transport.disconnected and transport.value() == b""
    other, t = accepted(factory, "198.51.100.1")
    assert isinstance(other, SyncProtocol) and not t.disconnected
    held[0][0].connectionLost(Failure(ConnectionDone()))
    again, t = accepted(factory, "192.0.2.7")
    assert isinstance(again, SyncProtocol) and not t.disconnected
    assert factory.counters["connections_refused.address"] == 1
    assert any("refused a sync connection from 192.0.2.7" in w and "max_connections_per_address 3" in w
               for w in warnings), warnings


def test_the_total_cap_bounds_many_addresses_and_frees_on_close(warnings):
    """Connections from ever new addresses (an IPv6 /64 has 2^64) stop at max_connections in all: the next
    is aborted with nothing written whatever its address, and a close makes room again."""
    factory = serving_factory(Clock(), max_connections=4, max_connections_per_address=64)
    held = [accepted(factory, f"2001:db8::{i}") for i in range(1, 5)]
    assert all(isinstance(p, SyncProtocol) and not t.disconnected for p, t in held)
    refused, transport = accepted(factory, "2001:db8::99")
    assert not isinstance(refused, SyncProtocol) and transport.disconnected and transport.value() == b""
    held[1][0].connectionLost(Failure(ConnectionDone()))
    again, t = accepted(factory, "2001:db8::99")
    assert isinstance(again, SyncProtocol) and not t.disconnected
    assert factory.counters["connections_refused.total"] == 1
    assert factory.limits.open == 4
    assert any("max_connections 4" in w for w in warnings), warnings


def test_address_keys():
    """Connections are counted by IP: an IPv4-mapped IPv6 address is its IPv4 address; non-IP is not counted."""
    assert address_key(IPv4Address("TCP", "203.0.113.5", 1)) == "203.0.113.5"
    assert address_key(IPv6Address("TCP", "::ffff:203.0.113.5", 1)) == "203.0.113.5"
    assert address_key(IPv6Address("TCP", "2001:DB8::1", 1)) == "2001:db8::1"
    assert address_key(UNIXAddress(b"/tmp/s")) is None and address_key(None) is None


def test_slots_release_and_forget():
    """A slot given back frees room under the cap, and a key with no slots is forgotten (no growth)."""
    slots = Slots()
    assert slots.acquire("a", 2) and slots.acquire("a", 2) and not slots.acquire("a", 2)
    assert slots.acquire("b", None)
    slots.release("a")
    assert slots.acquire("a", 2) and slots.count("a") == 2
    for key in ("a", "a", "b"):
        slots.release(key)
    assert len(slots) == 0


def test_refusals_are_exported_as_metrics():
    """The Prometheus collector reports refused connections by which cap refused them."""
    factory = serving_factory(Clock(), max_connections_per_address=1)
    accepted(factory, "192.0.2.1")
    accepted(factory, "192.0.2.1")
    node = SimpleNamespace(store=None, sync_factory=factory, api=SimpleNamespace(refused={}))
    family = next(m for m in NodeCollector(node).collect() if m.name == "shiftpeer_sync_connections_refused")
    assert {s.labels["limit"]: s.value for s in family.samples if s.name.endswith("_total")} == \
        {"total": 0, "block": 0, "network": 0, "address": 1, "peer": 0}


# ---------------------------------------------------------------- over real TLS on 127.0.0.1

def serving_node(tmp_path, **caps):
    """A node listening on 127.0.0.1 over real TLS with these caps and a ``ping`` RPC, for a fixture to yield
    from: closed after the test."""
    node = Node(tmp_path / "hub", **caps)
    node.factory.rpc_handlers["ping"] = lambda conn, args: {"pong": conn.peer_id}
    pytest_twisted.blockon(Deferred.fromCoroutine(node.listen()))
    yield node
    pytest_twisted.blockon(Deferred.fromCoroutine(node.close()))


@pytest.fixture
def hub(tmp_path):
    """A node listening on 127.0.0.1 over real TLS with small caps (3 per identity, 6 per address)."""
    yield from serving_node(tmp_path, max_connections_per_peer=3, max_connections_per_address=6)


@pytest_twisted.ensureDeferred
async def test_over_tls_an_identity_past_its_cap_is_told_and_others_are_served(hub):
    """Over real TLS alice's fourth connection is closed with a too_many_connections error she can read, her
    three and bob's keep working, and after she closes one a new one is accepted."""
    port = hub.port.getHost().port
    alice, bob = Client(reactor, port, hub.id), Client(reactor, port, hub.id)
    mine = [await bounded(alice.connect()) for _ in range(3)]
    fourth = await bounded(alice.connect())
    await bounded(fourth.when_closed())
    assert fourth.peer_error["code"] == "too_many_connections", fourth.peer_error
    theirs = await bounded(bob.connect())
    for conn in [*mine, theirs]:
        assert await bounded(conn.call("ping", {})) == {"pong": conn.factory.key.account_id}
    assert hub.factory.counters["connections_refused.peer"] == 1
    mine[0].close()
    await until(lambda: hub.factory.limits.peers.count(alice.key.account_id) == 2, what="the slot to free")
    again = await bounded(alice.connect())
    assert await bounded(again.call("ping", {})) == {"pong": alice.key.account_id}
    for conn in [*mine[1:], theirs, again]:
        conn.close()


class Silent(Protocol):
    """A TCP client that never starts TLS."""

    def __init__(self) -> None:
        self.lost: Deferred = Deferred()

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_over_tls_the_address_cap_counts_unauthenticated_connections_too(hub):
    """Six silent TCP connections from 127.0.0.1 fill its cap: an authenticated client from there is then cut
    before its handshake, and is accepted once one of them has gone; with it the address is full again."""
    port = hub.port.getHost().port
    ep = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    silent = [Silent() for _ in range(6)]
    for proto in silent:
        await bounded(connectProtocol(ep, proto))
    await until(lambda: hub.factory.limits.addresses.count("127.0.0.1") == 6, what="six counted connections")
    carol = Client(reactor, port, hub.id)
    with pytest.raises(RemoteError, match="closed before the handshake"):
        await bounded(carol.connect())
    assert hub.factory.counters["connections_refused.address"] == 1
    assert not any(p.lost.called for p in silent)   # the ones already there are untouched
    silent[0].transport.loseConnection()
    await bounded(silent[0].lost)
    await until(lambda: hub.factory.limits.addresses.count("127.0.0.1") == 5, what="the slot to free")
    conn = await bounded(carol.connect())
    assert await bounded(conn.call("ping", {})) == {"pong": carol.key.account_id}
    with pytest.raises(RemoteError, match="closed before the handshake"):   # carol's authenticated one counts too
        await bounded(Client(reactor, port, hub.id).connect())
    assert hub.factory.counters["connections_refused.address"] == 2
    conn.close()
    for proto in silent[1:]:
        proto.transport.loseConnection()
    await until(lambda: all(p.lost.called for p in silent), what="the silent connections to close")
