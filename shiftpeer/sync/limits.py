"""Connection caps on the serving side: how many connections one address, one network, one block of
networks and one peer identity may hold, and all of them together.

Without them any address could open connections until the node ran out of file descriptors, any network
(an IPv6 /64 is 2^64 addresses) or block (an IPv6 /48 is 65,536 /64s) could hold every slot of the total cap
and keep honest peers out, and any authenticated peer could do the same through one key. ``SyncFactory``
counts every connection it accepts against its remote address, that address's network and its block from
the moment it is built (before TLS, so a flood costs no handshake) and, once the hello arrives and the
identity is known, against the peer's id; closing a connection frees every slot. The counting is here, the
refusing in ``protocol.py`` (docs/protocol.md section 8); the log lines of refusals go through
``refusallog`` so a flood cannot fill the log.
"""

from __future__ import annotations

import collections
import ipaddress
from typing import Any, Optional

from twisted.logger import Logger

from shiftpeer.sync.refusallog import REFUSAL_LOG_INTERVAL, RefusalLog

log = Logger()

#: Concurrent connections one peer identity may hold on a listener. A node opens one per hub or peer;
#: a few more cover reconnects racing the close of the old connection and tools run beside the node.
MAX_CONNECTIONS_PER_PEER = 8
#: Concurrent connections (authenticated or not) from one IP address. Many users may share an address
#: (NAT, a campus); past this the address needs the operator's say-so (config or ``--max-connections-per-address``).
MAX_CONNECTIONS_PER_ADDRESS = 64
#: Concurrent connections (authenticated or not) from one network: an IPv4 /24 or an IPv6 /64 (what one
#: site or one customer usually gets), all of loopback counted as one. Four addresses' worth at the address
#: cap, so a household or office with a few busy NATs fits; a flood then needs 16 networks, not one /64, to
#: hold the whole ``MAX_CONNECTIONS``. Never below the address cap (see ``ConnectionLimits``).
MAX_CONNECTIONS_PER_NETWORK = 256
#: Concurrent connections (authenticated or not) from one block: an IPv4 /16 or an IPv6 /48 (what one
#: provider's customer or one organisation usually gets: 65,536 /64s), all of loopback counted as one. A
#: quarter of ``MAX_CONNECTIONS``, four networks' worth, so a flood needs 4 blocks, not 16 networks of one
#: /48, to hold the total. Never below the network cap (see ``ConnectionLimits``).
MAX_CONNECTIONS_PER_BLOCK = 1024
#: Concurrent connections all listeners of a node accept in all (authenticated or not): the per-address,
#: per-network and per-block caps do not bound many blocks. Room for thousands of users and idle peers (the
#: reliability benchmark holds 1,000), well under a default file-descriptor limit raised for a server.
MAX_CONNECTIONS = 4096
#: The error code a peer gets when its identity is over the cap (the address cap closes before TLS: no frame).
TOO_MANY_CONNECTIONS = "too_many_connections"
#: The caps that refuse connections, as ``counters["connections_refused.<cap>"]`` and the metrics' ``limit`` label.
REFUSING_CAPS = ("total", "block", "network", "address", "peer")
#: Prefix lengths of the network an address is counted in, by IP version.
NETWORK_PREFIX = {4: 24, 6: 64}
#: Prefix lengths of the block (of networks) an address is counted in, by IP version.
BLOCK_PREFIX = {4: 16, 6: 48}
#: The network and block every loopback address (127.0.0.0/8, ::1) is counted in: all of them are this host.
LOOPBACK = "loopback"


class Slots:
    """Counts open connections per key (an address or a peer id); a key is forgotten when its count is 0."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def acquire(self, key: str, cap: Optional[int]) -> bool:
        """Take a slot for ``key`` unless it already holds ``cap`` (None: no cap); True when taken."""
        held = self._held.get(key, 0)
        if cap is not None and held >= cap:
            return False
        self._held[key] = held + 1
        return True

    def release(self, key: str) -> None:
        """Give back one slot of ``key``."""
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def count(self, key: str) -> int:
        """Slots ``key`` holds now."""
        return self._held.get(key, 0)

    def __len__(self) -> int:
        return len(self._held)


class ConnectionLimits:
    """A listener's caps and counts: ``admit_address`` when a connection is accepted, ``admit_peer`` once its
    identity is known, ``release`` when it closes. Each refusal is counted in ``counters["connections_refused"]``
    and ``[".total"]`` / ``[".block"]`` / ``[".network"]`` / ``[".address"]`` / ``[".peer"]`` (the metrics read
    them) and logged naming the address, network, block or peer, at most once per ``log_interval`` seconds for
    each (``RefusalLog``).

    The network cap is never below the address cap, nor the block cap below the network cap: one address is a
    network's worth too and one network a block's, so raising ``per_address`` for users behind one NAT raises
    the caps above it with it (the benchmark's 1,000 idle connections from 127.0.0.1 need only
    ``--max-connections-per-address``)."""

    def __init__(self, counters: collections.Counter, *, per_peer: Optional[int] = MAX_CONNECTIONS_PER_PEER,
                 per_address: Optional[int] = MAX_CONNECTIONS_PER_ADDRESS,
                 per_network: Optional[int] = MAX_CONNECTIONS_PER_NETWORK,
                 per_block: Optional[int] = MAX_CONNECTIONS_PER_BLOCK,
                 total: Optional[int] = MAX_CONNECTIONS, clock: Any = None,
                 log_interval: float = REFUSAL_LOG_INTERVAL) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.per_peer = per_peer          # None: no cap
        self.per_address = per_address
        self.per_network = per_network if per_network is None or per_address is None \
            else max(per_network, per_address)
        self.per_block = per_block if per_block is None or self.per_network is None \
            else max(per_block, self.per_network)
        self.total = total
        self.open = 0                     # accepted connections not yet closed
        self.peers = Slots()
        self.addresses = Slots()
        self.networks = Slots()
        self.blocks = Slots()
        self.counters = counters
        self.refusals = RefusalLog(clock, log, log_interval)

    def admit_address(self, address: Optional[str]) -> bool:
        """Count a new accepted connection, from ``address`` (None: not IP, counted only in the total);
        False past the total cap, the address's, its network's or its block's."""
        if self.total is not None and self.open >= self.total:
            self._refused("total", "total", "any address", f"max_connections {self.total}",
                          "refused a sync connection from {address}: {count} connections are open on this node "
                          "(max_connections {cap})", address=address or "?", count=self.open, cap=self.total)
            return False
        if address is None:
            self.open += 1
            return True
        if not self.addresses.acquire(address, self.per_address):
            self._refused("address", address, address, f"max_connections_per_address {self.per_address}",
                          "refused a sync connection from {address}: {count} connections from that address are "
                          "open (max_connections_per_address {cap})", address=address,
                          count=self.addresses.count(address), cap=self.per_address)
            return False
        network = network_key(address)
        if not self._acquire_range("network", self.networks, network, self.per_network, address):
            self.addresses.release(address)
            return False
        if not self._acquire_range("block", self.blocks, block_key(address), self.per_block, address):
            self.networks.release(network)
            self.addresses.release(address)
            return False
        self.open += 1
        return True

    def _acquire_range(self, which: str, slots: Slots, key: str, cap: Optional[int], address: str) -> bool:
        """Take a slot of ``address``'s network or block (``which``) ``key``; refused (counted, logged) when full."""
        if slots.acquire(key, cap):
            return True
        self._refused(which, f"{which} {key}", f"{which} {key}", f"max_connections_per_{which} {cap}",
                      "refused a sync connection from {address}: {count} connections from its " + which + " {"
                      + which + "} are open (max_connections_per_" + which + " {cap})", address=address,
                      count=slots.count(key), cap=cap, **{which: key})
        return False

    def admit_peer(self, peer_id: str, address: Optional[str]) -> Optional[str]:
        """Count an authenticated connection of ``peer_id``; None when admitted, else the text of the refusal."""
        if self.peers.acquire(peer_id, self.per_peer):
            return None
        count = self.peers.count(peer_id)
        self._refused("peer", "peer " + peer_id, f"peer {peer_id}", f"max_connections_per_peer {self.per_peer}",
                      "refused a sync connection from {peer} at {address}: that identity has {count} "
                      "connections open (max_connections_per_peer {cap})", peer=peer_id, address=address or "?",
                      count=count, cap=self.per_peer)
        return (f"this node allows at most {self.per_peer} connections per peer and {peer_id} has {count} open; "
                f"close one before opening another")

    def release(self, peer_id: Optional[str], address: Optional[str]) -> None:
        """An accepted connection that held these slots (None: that one was not held) is gone."""
        self.open -= 1
        if peer_id is not None:
            self.peers.release(peer_id)
        if address is not None:
            self.addresses.release(address)
            self.networks.release(network_key(address))
            self.blocks.release(block_key(address))

    def _refused(self, which: str, key: str, what: str, why: str, message: str, **fields: Any) -> None:
        self.counters["connections_refused"] += 1
        self.counters["connections_refused." + which] += 1
        self.refusals.refused(key, what, why, message, **fields)


def address_key(addr: Any) -> Optional[str]:
    """The IP address a connection comes from, as counted (an IPv4-mapped IPv6 address counts as its IPv4
    address); None when the address is not IP (a UNIX socket, an in-memory test transport)."""
    host = getattr(addr, "host", None)
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def network_key(address: str) -> str:
    """The network an ``address_key`` is counted in: its IPv4 /24 or IPv6 /64 (``192.0.2.0/24``,
    ``2001:db8::/64``), ``loopback`` for 127.0.0.0/8 and ::1; a host that is not an IP address is its own."""
    return _prefix_key(address, NETWORK_PREFIX)


def block_key(address: str) -> str:
    """The block an ``address_key`` is counted in: its IPv4 /16 or IPv6 /48 (``192.0.0.0/16``,
    ``2001:db8::/48``), ``loopback`` for 127.0.0.0/8 and ::1; a host that is not an IP address is its own."""
    return _prefix_key(address, BLOCK_PREFIX)


def _prefix_key(address: str, prefix: dict[int, int]) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.is_loopback:
        return LOOPBACK
    return str(ipaddress.ip_network((ip, prefix[ip.version]), strict=False))


__all__ = ["BLOCK_PREFIX", "ConnectionLimits", "LOOPBACK", "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_ADDRESS",
           "MAX_CONNECTIONS_PER_BLOCK", "MAX_CONNECTIONS_PER_NETWORK", "MAX_CONNECTIONS_PER_PEER", "NETWORK_PREFIX",
           "REFUSING_CAPS", "TOO_MANY_CONNECTIONS", "Slots", "address_key", "block_key", "network_key"]
