"""Connection caps on the serving side: how many connections one address, and one peer identity, may hold.

Without them any address could open connections until the node ran out of file descriptors, and any
authenticated peer could do the same through one key. ``SyncFactory`` counts every connection it accepts
against its remote address from the moment it is built (before TLS, so a flood costs no handshake) and,
once the hello arrives and the identity is known, against the peer's id; closing a connection frees both
slots. The counting is here, the refusing in ``protocol.py`` (docs/protocol.md section 8).
"""

from __future__ import annotations

import collections
import ipaddress
from typing import Any, Optional

from twisted.logger import Logger

log = Logger()

#: Concurrent connections one peer identity may hold on a listener. A node opens one per hub or peer;
#: a few more cover reconnects racing the close of the old connection and tools run beside the node.
MAX_CONNECTIONS_PER_PEER = 8
#: Concurrent connections (authenticated or not) from one IP address. Many users may share an address
#: (NAT, a campus); past this the address needs the operator's say-so (config or ``--max-connections-per-address``).
MAX_CONNECTIONS_PER_ADDRESS = 64
#: Concurrent connections all listeners of a node accept in all (authenticated or not): the per-address cap
#: does not bound many addresses (an IPv6 /64 is 2^64 of them). Room for thousands of users and idle peers
#: (the reliability benchmark holds 1,000), well under a default file-descriptor limit raised for a server.
MAX_CONNECTIONS = 4096
#: The error code a peer gets when its identity is over the cap (the address cap closes before TLS: no frame).
TOO_MANY_CONNECTIONS = "too_many_connections"


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
    identity is known, ``release`` when it closes. Each refusal is logged naming the address or peer and
    counted in ``counters["connections_refused.address"]`` / ``[".peer"]`` (the metrics read them)."""

    def __init__(self, counters: collections.Counter, *, per_peer: Optional[int] = MAX_CONNECTIONS_PER_PEER,
                 per_address: Optional[int] = MAX_CONNECTIONS_PER_ADDRESS,
                 total: Optional[int] = MAX_CONNECTIONS) -> None:
        self.per_peer = per_peer          # None: no cap
        self.per_address = per_address
        self.total = total
        self.open = 0                     # accepted connections not yet closed
        self.peers = Slots()
        self.addresses = Slots()
        self.counters = counters

    def admit_address(self, address: Optional[str]) -> bool:
        """Count a new accepted connection, from ``address`` (None: not IP, counted only in the total);
        False past the total cap or the address's."""
        if self.total is not None and self.open >= self.total:
            self._refused("total")
            log.warn("refused a sync connection from {address}: {count} connections are open on this node "
                     "(max_connections {cap})", address=address or "?", count=self.open, cap=self.total)
            return False
        if address is not None and not self.addresses.acquire(address, self.per_address):
            self._refused("address")
            log.warn("refused a sync connection from {address}: {count} connections from that address are "
                     "open (max_connections_per_address {cap})", address=address,
                     count=self.addresses.count(address), cap=self.per_address)
            return False
        self.open += 1
        return True

    def admit_peer(self, peer_id: str, address: Optional[str]) -> Optional[str]:
        """Count an authenticated connection of ``peer_id``; None when admitted, else the text of the refusal."""
        if self.peers.acquire(peer_id, self.per_peer):
            return None
        self._refused("peer")
        count = self.peers.count(peer_id)
        log.warn("refused a sync connection from {peer} at {address}: that identity has {count} connections "
                 "open (max_connections_per_peer {cap})", peer=peer_id, address=address or "?", count=count,
                 cap=self.per_peer)
        return (f"this node allows at most {self.per_peer} connections per peer and {peer_id} has {count} open; "
                f"close one before opening another")

    def release(self, peer_id: Optional[str], address: Optional[str]) -> None:
        """An accepted connection that held these slots (None: that one was not held) is gone."""
        self.open -= 1
        if peer_id is not None:
            self.peers.release(peer_id)
        if address is not None:
            self.addresses.release(address)

    def _refused(self, which: str) -> None:
        self.counters["connections_refused"] += 1
        self.counters["connections_refused." + which] += 1


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


__all__ = ["ConnectionLimits", "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_ADDRESS", "MAX_CONNECTIONS_PER_PEER", "TOO_MANY_CONNECTIONS", "Slots",
           "address_key"]
