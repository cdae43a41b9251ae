"""The per-network and per-block connection caps (shiftpeer/sync/limits.py): many addresses of one IPv4 /24 or
IPv6 /64, or of loopback, share one cap, and many networks of one IPv4 /16 or IPv6 /48 share a wider one, so a
flood from one network or one block cannot hold every slot of the total cap.

Deterministic ones with StringTransports; then loopback over real TLS on 127.0.0.1 (clients bound to other
127/8 source addresses, which are the same host and, as counted, the same network).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from rel_idle import Client
from shiftpeer.identity.tls import client_creator
from shiftpeer.sync import RemoteError, SyncProtocol
from shiftpeer.sync.client import tls_client_endpoint
from shiftpeer.sync.limits import (LOOPBACK, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS, MAX_CONNECTIONS_PER_BLOCK,
                                   MAX_CONNECTIONS_PER_NETWORK, ConnectionLimits, address_key, block_key,
                                   network_key)
from shiftpeer.sync.refusallog import REFUSAL_LOG_INTERVAL
from test_sync_limits import Silent, accepted, serving_factory, serving_node, warnings  # noqa: F401 (a fixture)
from test_sync_network import bounded, until


def accepted6(factory, host: str):
    """What the factory builds for a connection from the IPv6 ``host``, connected to a StringTransport."""
    proto = factory.buildProtocol(IPv6Address("TCP", host, 4000))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def is_served(built) -> bool:
    proto, transport = built
    return isinstance(proto, SyncProtocol) and not transport.disconnected


def is_dropped_silently(built) -> bool:
    proto, transport = built
    return not isinstance(proto, SyncProtocol) and transport.disconnected and transport.value() == b""


def test_defaults():
    """A network may hold 256 connections (four addresses' worth at the address cap of 64) unless told otherwise."""
    assert (MAX_CONNECTIONS_PER_NETWORK, MAX_CONNECTIONS_PER_ADDRESS) == (256, 64)
    assert serving_factory(Clock()).limits.per_network == 256


def test_network_keys():
    """IPv4 counts by /24 (an IPv4-mapped address as its IPv4 address), IPv6 by /64 (scope dropped); every
    loopback address is one network; a host that is not an IP address is its own network."""
    assert network_key("192.0.2.77") == network_key("192.0.2.1") == "192.0.2.0/24"
    assert network_key("192.0.3.1") == "192.0.3.0/24"
    assert network_key(address_key(IPv6Address("TCP", "::ffff:203.0.113.5", 1))) == "203.0.113.0/24"
    assert network_key("2001:db8::1") == network_key("2001:db8::ffff:1:2:3") == "2001:db8::/64"
    assert network_key("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert network_key(address_key(IPv6Address("TCP", "fe80::1%eth0", 1))) == "fe80::/64"
    assert network_key("127.0.0.1") == network_key("127.200.3.4") == network_key("::1") == LOOPBACK
    assert network_key("some-host") == "some-host"


def test_many_addresses_of_one_64_cannot_hold_the_total_cap(warnings):
    """Connections from ever new addresses of one /64 stop at the network cap, before anything is sent and
    without taking an address slot; the total cap keeps room for other networks, whose peers are served; the
    refusal is logged naming the network and counted; closing one frees the network's slot."""
    factory = serving_factory(Clock(), max_connections=8, max_connections_per_address=1,
                              max_connections_per_network=4)
    flood = [accepted6(factory, f"2001:db8::{i:x}") for i in range(1, 5)]
    assert all(map(is_served, flood))
    for i in range(5, 40):
        assert is_dropped_silently(accepted6(factory, f"2001:db8::{i:x}"))
    assert factory.counters["connections_refused.network"] == 35
    assert factory.counters["connections_refused"] == 35 and factory.counters["connections_refused.total"] == 0
    assert factory.limits.addresses.count("2001:db8::5") == 0 and factory.limits.open == 4
    honest = [accepted6(factory, "2001:db8:0:1::1"), accepted(factory, "198.51.100.1"),
              accepted(factory, "198.51.100.2"), accepted(factory, "203.0.113.9")]
    assert all(map(is_served, honest)) and factory.limits.open == 8
    flood[2][0].connectionLost(Failure(ConnectionDone()))
    assert factory.limits.networks.count("2001:db8::/64") == 3
    assert is_served(accepted6(factory, "2001:db8::99"))
    assert any("refused a sync connection from 2001:db8::5" in w and "network 2001:db8::/64" in w
               and "max_connections_per_network 4" in w for w in warnings), warnings


def test_an_ipv4_24_shares_one_cap_and_its_neighbour_does_not():
    """192.0.2.1 to .3 fill a /24 capped at 3; 192.0.2.200 is refused, 192.0.3.1 is served."""
    factory = serving_factory(Clock(), max_connections_per_address=1, max_connections_per_network=3)
    assert all(is_served(accepted(factory, f"192.0.2.{i}")) for i in (1, 2, 3))
    assert is_dropped_silently(accepted(factory, "192.0.2.200"))
    assert is_served(accepted(factory, "192.0.3.1"))
    assert factory.counters["connections_refused.network"] == 1


def test_loopback_is_one_network():
    """127.0.0.1, other 127/8 addresses and ::1 are one host: they share the network cap."""
    factory = serving_factory(Clock(), max_connections_per_address=2, max_connections_per_network=4)
    assert all(is_served(accepted(factory, host)) for host in ("127.0.0.1", "127.0.0.1", "127.0.0.2"))
    assert is_served(accepted6(factory, "::1"))
    assert is_dropped_silently(accepted(factory, "127.9.9.9"))
    assert factory.limits.networks.count(LOOPBACK) == 4


def test_the_network_cap_is_never_below_the_address_cap():
    """An operator who raises the address cap for users behind one address (the benchmark: 1,010 from
    127.0.0.1) raises the network cap with it; a network cap above the address cap stays as set."""
    assert ConnectionLimits({}, per_address=1010, per_network=256).per_network == 1010
    assert ConnectionLimits({}, per_address=64, per_network=300).per_network == 300
    assert ConnectionLimits({}, per_address=64, per_network=None).per_network is None
    factory = serving_factory(Clock(), max_connections_per_address=300)
    assert all(is_served(accepted(factory, "127.0.0.1")) for _ in range(300))
    assert is_dropped_silently(accepted(factory, "127.0.0.1"))
    assert factory.counters["connections_refused.address"] == 1


def test_defaults_hold_the_address_cap_from_loopback():
    """With the default caps one loopback address gets its 64 connections (what the tests and tools run on
    one machine rely on); the 65th is refused by the address cap, not the network's."""
    factory = serving_factory(Clock())
    assert all(is_served(accepted(factory, "127.0.0.1")) for _ in range(64))
    assert is_dropped_silently(accepted(factory, "127.0.0.1"))
    assert factory.counters["connections_refused.address"] == 1
    assert factory.counters["connections_refused.network"] == 0


# ---------------------------------------------------------------- the block: IPv4 /16, IPv6 /48

def test_block_defaults_and_keys():
    """A block may hold 1,024 connections (four networks' worth, a quarter of the total) unless told otherwise;
    IPv4 counts by /16, IPv6 by /48, loopback is one block as it is one network."""
    assert (MAX_CONNECTIONS_PER_BLOCK, MAX_CONNECTIONS) == (1024, 4096)
    assert serving_factory(Clock()).limits.per_block == 1024
    assert block_key("192.0.2.77") == block_key("192.0.255.1") == "192.0.0.0/16"
    assert block_key("192.1.0.1") == "192.1.0.0/16"
    assert block_key(address_key(IPv6Address("TCP", "::ffff:203.0.113.5", 1))) == "203.0.0.0/16"
    assert block_key("2001:db8::1") == block_key("2001:db8:0:ffff::1") == "2001:db8::/48"
    assert block_key("2001:db8:1::1") == "2001:db8:1::/48"
    assert block_key("127.0.0.1") == block_key("127.200.3.4") == block_key("::1") == LOOPBACK
    assert block_key("some-host") == "some-host"


def block_refusals(warnings: list[str], block: str) -> list[str]:
    return [w for w in warnings if w.startswith("refused ") and f"block {block}" in w]


def test_many_64s_of_one_48_cannot_hold_the_total_cap(warnings):
    """With the default caps, 1,024 connections from 1,024 /64s of one /48 (each well under its network cap)
    fill the block: the 1,025th and later are dropped before anything is sent, counted as the block's and
    logged once for the interval, then summed up; the total cap keeps room, and another /48 is served."""
    clock = Clock()
    factory = serving_factory(clock)
    assert all(is_served(accepted6(factory, f"2001:db8:0:{i:x}::1")) for i in range(1024))
    for i in range(1024, 1034):
        assert is_dropped_silently(accepted6(factory, f"2001:db8:0:{i:x}::1"))
    assert factory.counters["connections_refused.block"] == 10 and factory.counters["connections_refused"] == 10
    assert factory.limits.open == 1024 and factory.limits.blocks.count("2001:db8::/48") == 1024
    assert factory.limits.networks.count("2001:db8:0:400::/64") == 0 and \
        factory.limits.addresses.count("2001:db8:0:400::1") == 0     # a refused one holds no slot
    lines = block_refusals(warnings, "2001:db8::/48")
    assert len(lines) == 1, lines
    assert "refused a sync connection from 2001:db8:0:400::1: 1024 connections from its block 2001:db8::/48" \
        in lines[0] and "max_connections_per_block 1024" in lines[0]
    assert is_served(accepted6(factory, "2001:db8:1::1"))
    clock.advance(REFUSAL_LOG_INTERVAL)
    assert block_refusals(warnings, "2001:db8::/48")[1:] == [
        "refused 9 more sync connections from block 2001:db8::/48 in the last 60 s (max_connections_per_block 1024)"]


def test_many_24s_of_one_16_cannot_hold_the_total_cap(warnings):
    """IPv4 likewise: 4 connections from each of the 256 /24s of 192.0.0.0/16 fill its block; the next, from a
    /24 holding only 4, is refused by the block cap; 192.1.0.1 is served; a close frees the block's slot."""
    factory = serving_factory(Clock())
    held = [accepted(factory, f"192.0.{n}.{a}") for n in range(256) for a in range(1, 5)]
    assert all(map(is_served, held))
    assert is_dropped_silently(accepted(factory, "192.0.7.200"))
    assert factory.counters["connections_refused.block"] == 1 and factory.counters["connections_refused.network"] == 0
    assert len(block_refusals(warnings, "192.0.0.0/16")) == 1
    assert is_served(accepted(factory, "192.1.0.1"))
    held[0][0].connectionLost(Failure(ConnectionDone()))
    assert factory.limits.blocks.count("192.0.0.0/16") == 1023
    assert is_served(accepted(factory, "192.0.7.200"))


def test_the_block_cap_is_never_below_the_network_cap():
    """Raising the network cap (or the address cap, which raises the network cap) raises the block cap with it;
    a block cap above the network cap stays as set. Loopback is one block: 1,100 connections from 127.0.0.1 need
    only the address cap."""
    assert ConnectionLimits({}, per_network=2000, per_block=1024).per_block == 2000
    assert ConnectionLimits({}, per_address=1500, per_network=256, per_block=1024).per_block == 1500
    assert ConnectionLimits({}, per_network=256, per_block=3000).per_block == 3000
    assert ConnectionLimits({}, per_network=256, per_block=None).per_block is None
    assert ConnectionLimits({}, per_network=256, per_block=1).per_block == 256
    factory = serving_factory(Clock(), max_connections_per_address=1100)
    assert all(is_served(accepted(factory, "127.0.0.1")) for _ in range(1100))
    assert is_dropped_silently(accepted(factory, "127.0.0.1"))
    assert factory.counters["connections_refused.address"] == 1 and factory.counters["connections_refused.block"] == 0


def test_a_small_block_cap_refuses_its_block_and_not_others():
    """Set low, the block cap stops a /48 whose /64s are each under the network cap; the next /48 is served."""
    factory = serving_factory(Clock(), max_connections_per_address=1, max_connections_per_network=2,
                              max_connections_per_block=3)
    assert all(is_served(accepted6(factory, f"2001:db8:0:{i}::1")) for i in (1, 2, 3))
    assert is_dropped_silently(accepted6(factory, "2001:db8:0:4::1"))
    assert is_served(accepted6(factory, "2001:db8:1:1::1"))
    assert factory.counters["connections_refused.block"] == 1


# ---------------------------------------------------------------- over real TLS on 127.0.0.1

@pytest.fixture
def loopback_hub(tmp_path):
    """A node on 127.0.0.1 over real TLS allowing 2 connections per address and 3 per network."""
    yield from serving_node(tmp_path, max_connections_per_address=2, max_connections_per_network=3)


@pytest_twisted.ensureDeferred
async def test_over_tls_loopback_addresses_share_the_network_cap(loopback_hub):
    """Silent TCP connections from 127.0.0.1 (two) and 127.0.0.2 (one) fill loopback's cap of 3: an
    authenticated client from 127.0.0.3 is cut before its handshake although its address holds nothing; once
    one silent connection goes, it is served."""
    hub = loopback_hub
    port = hub.port.getHost().port
    silent = [Silent() for _ in range(3)]
    for proto, source in zip(silent, ("127.0.0.1", "127.0.0.1", "127.0.0.2")):
        await bounded(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0)),
                                      proto))
    await until(lambda: hub.factory.limits.networks.count(LOOPBACK) == 3, what="three counted connections")
    carol = Client(reactor, port, hub.id)
    carol.endpoint = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30,
                                                            bindAddress=("127.0.0.3", 0)),
                                         client_creator(carol.key, expected_peer_id=hub.id))
    with pytest.raises(RemoteError, match="closed before the handshake"):
        await bounded(carol.connect())
    assert hub.factory.counters["connections_refused.network"] == 1
    assert hub.factory.limits.addresses.count("127.0.0.3") == 0
    assert not any(p.lost.called for p in silent)
    silent[2].transport.loseConnection()
    await bounded(silent[2].lost)
    await until(lambda: hub.factory.limits.networks.count(LOOPBACK) == 2, what="the slot to free")
    conn = await bounded(carol.connect())
    assert await bounded(conn.call("ping", {})) == {"pong": carol.key.account_id}
    conn.close()
    for proto in silent[:2]:
        proto.transport.loseConnection()
    await until(lambda: all(p.lost.called for p in silent[:2]), what="the silent connections to close")
