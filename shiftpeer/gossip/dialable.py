"""Which addresses a node dials on an account's say-so: the proof of an announced address (``proofs.py``).

An announcement names a HOST:PORT the node then dials itself, so without a check any registered account
could make it open a TCP connection and send a TLS ClientHello to its own network: its loopback services,
the LAN behind it, link-local metadata services. By default only global unicast addresses are dialled
(``ipaddress``'s ``is_global``, less multicast); a host name is resolved once, every address it resolves
to must pass, and the node dials the addresses it checked, in turn until one answers (never the name again,
which could resolve elsewhere the second time). An IPv6 address that carries an IPv4 one (mapped, 6to4,
NAT64's 64:ff9b::/96) is judged by the IPv4 address it carries.

``private`` relaxes it: ``"loopback"`` also dials loopback addresses (a node listening on loopback only:
a test or demo mesh on one machine), ``"all"`` any unicast address (a mesh on a LAN). Multicast and
unspecified addresses are never dialled.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import implementer

#: Only global unicast addresses (the default of a node that listens beyond loopback).
PRIVATE_NONE = "none"
#: Global unicast and loopback addresses (the default of a node that listens on loopback only).
PRIVATE_LOOPBACK = "loopback"
#: Every unicast address: a mesh on a LAN (config.json ``"gossip": {"private_addresses": true}``).
PRIVATE_ALL = "all"
PRIVATE_MODES = (PRIVATE_NONE, PRIVATE_LOOPBACK, PRIVATE_ALL)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: At most this many of the addresses a host name resolves to are dialled (in turn) by one proof.
MAX_ADDRESSES = 4

#: resolve(host) -> Deferred firing with the IP addresses (text) the host name resolves to
Resolve = Callable[[str], Deferred]
#: dial(host, port) -> Deferred firing with the peer id of the TLS server answering there
Dial = Callable[[str, int], Deferred]


class Undialable(Exception):
    """The announced address is not one this node dials (a private address, or a name it cannot resolve)."""


def _embedded_ipv4(ip: Any) -> Any:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), else ``ip`` itself."""
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _kind(ip: Any) -> str:
    """What kind of non-global address ``ip`` is, for the log."""
    for kind in ("loopback", "link_local", "private", "reserved"):
        if getattr(ip, "is_" + kind):
            return kind.replace("_", "-")
    return "shared (carrier-grade NAT)" if ip in ipaddress.ip_network("100.64.0.0/10") else "non-global"


def private_mode(private_addresses: Optional[bool], listen: list[str]) -> str:
    """The mode a node's settings ask for: the ``private_addresses`` setting (shiftpeer.gossip.settings),
    else loopback addresses too when every sync listener is on loopback (the node is reachable from this
    machine only, whose processes can dial loopback themselves), else global addresses only."""
    from shiftpeer.endpoints import listens_on_loopback_only

    if private_addresses is not None:
        return PRIVATE_ALL if private_addresses else PRIVATE_NONE
    return PRIVATE_LOOPBACK if listens_on_loopback_only(listen) else PRIVATE_NONE


def why_not_dialable(address: str, private: str = PRIVATE_NONE) -> Optional[str]:
    """Why the node does not dial the IP address ``address`` under the ``private`` mode, or None."""
    ip = ipaddress.ip_address(address)
    seen = _embedded_ipv4(ip)
    if seen.is_multicast or seen.is_unspecified or ip.is_multicast or ip.is_unspecified:
        return f"{address} is a multicast or unspecified address"
    if ip.is_global and seen.is_global:
        return None
    loopback = ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and seen.is_loopback)
    if private == PRIVATE_ALL or (private == PRIVATE_LOOPBACK and loopback):
        return None
    return (f"{address} is a {_kind(seen)} address, not a global one (this node dials only global addresses "
            f"on an account's say-so{'; loopback too' if private == PRIVATE_LOOPBACK else ''}: config.json "
            f'"gossip": {{"private_addresses": true}} lets it dial private ones)')


def ip_literal(host: str) -> Optional[str]:
    """``host`` as an IP address (text), or None when it is a host name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def checked_dial(dial: Dial, resolve: Optional[Resolve], private: str = PRIVATE_NONE) -> Dial:
    """``dial`` behind the check: ``host`` resolved (once), every address checked, then the addresses dialled
    in turn (at most ``MAX_ADDRESSES``) until one completes a TLS handshake, as a dial of the name would. A
    refusal fails with ``Undialable``. Cancelling the Deferred stops the resolution or the dial."""
    if private not in PRIVATE_MODES:
        raise ValueError(f"private must be one of {', '.join(PRIVATE_MODES)}, not {private!r}")

    def dial_checked(host: str, port: int) -> Deferred:
        literal = ip_literal(host)
        if literal is not None:
            return _dial_checked([literal], None, port)
        if resolve is None:
            raise Undialable(f"{host} is a host name and this node resolves none")
        # cancelling it cancels the resolution, or the dial a callback returned (Twisted chains the cancel)
        return resolve(host).addCallback(_dial_checked, host, port)

    def _dial_checked(addresses: list, name: Optional[str], port: int) -> Deferred:
        if not addresses:
            raise Undialable(f"{name} resolves to no address")
        for address in addresses:
            why = why_not_dialable(address, private)
            if why is not None:
                raise Undialable(why if name is None else f"{name} resolves to {why}")
        return _in_turn(dial, addresses[:MAX_ADDRESSES], port)

    return lambda host, port: maybeDeferred(dial_checked, host, port)


def _in_turn(dial: Dial, addresses: list, port: int) -> Deferred:
    """The first answer of ``dial`` at ``addresses`` tried one after another (each failure moves on; the
    last one's failure is the answer's)."""
    current: list[Deferred] = []
    cancelled: list[bool] = []

    def cancel(_: Deferred) -> None:
        cancelled.append(True)
        current[-1].cancel()

    answer: Deferred = Deferred(cancel)

    def attempt(i: int) -> None:
        current.append(maybeDeferred(dial, addresses[i], port))
        current[-1].addCallbacks(answer.callback, failed, errbackArgs=(i,))

    def failed(failure: Any, i: int) -> None:
        if cancelled:
            return                       # Deferred.cancel fails the answer itself
        if i + 1 < len(addresses):
            attempt(i + 1)
        else:
            answer.errback(failure)

    attempt(0)
    return answer


def resolver(reactor: Any) -> Resolve:
    """``Resolve`` through the reactor's name resolver (getaddrinfo in a thread): IPv4 and IPv6 addresses,
    in the order the system prefers. Cancelling stops waiting (the lookup itself runs to its end)."""
    from twisted.internet.address import IPv4Address, IPv6Address
    from twisted.internet.interfaces import IResolutionReceiver

    def resolve(host: str) -> Deferred:
        answer: Deferred = Deferred()
        addresses: list[str] = []

        @implementer(IResolutionReceiver)
        class Receiver:
            def resolutionBegan(self, resolution: Any) -> None:
                pass

            def addressResolved(self, address: Any) -> None:
                addresses.append(address.host)

            def resolutionComplete(self) -> None:
                if not answer.called:
                    answer.callback(list(dict.fromkeys(addresses)))

        reactor.nameResolver.resolveHostName(Receiver(), host, 0, addressTypes=(IPv4Address, IPv6Address),
                                             transportSemantics="TCP")
        return answer

    return resolve
