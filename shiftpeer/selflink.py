"""A hub operator's own account without setup: a hub with no ``--connect`` dials its own first listener.

The hub role serves other nodes; the node's user side (register, publish, groups, comments, messages)
reaches a hub only through a sync connection it dialled (``kind == "hub"``). On a hub without
``--connect`` that connection goes to the node's own first ``--listen`` endpoint, on loopback when the
listener is bound to every interface, as soon as it is bound (``tcp:0`` works: the port is read from the
bound listener, at every start). The client side presents the node key (the account that signs the
operator's documents, whatever key the hub's certificate has) and pins the server's key to the node's
own TLS peer id, so no CA file and no host name are needed, and nothing else can answer in its place.

Why a real TLS connection and not an in-process link: the user side and the hub side then run exactly
the code they run for every other user (the sync protocol, its authorization by peer id, the RPCs, the
reconnecting peer service with its status and backoff), so the operator's account cannot behave
differently from anyone else's, and no second transport needs testing. It costs one TLS handshake per
start (and per reconnect) on loopback and one of the listener's connections.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

#: The address under which the self link is listed (``node.peer_clients``, status) and its hub target.
SELF = "self"

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def hub_target(settings: Any) -> str | None:
    """Where the node's user side connects to its hub: the ``--connect`` address when one is given; on a
    hub without one that has a listener, ``SELF`` (its own first listener); else None (no hub)."""
    if settings.connect:
        return settings.connect
    if settings.hub and settings.listen:
        return SELF
    return None


class ListenerNotBound(Exception):
    """The listener the self link dials is not listening (it failed to bind, or has stopped)."""


@implementer(IStreamServerEndpoint)
class RecordingServerEndpoint:
    """A server endpoint that remembers the port it bound, so the node can dial itself on it."""

    def __init__(self, endpoint: Any, description: str) -> None:
        self._endpoint = endpoint
        self.description = description
        self.port: Any = None
        self._failure: Failure | None = None
        self._waiting: list[Deferred] = []

    def listen(self, factory: Any) -> Deferred:
        d = self._endpoint.listen(factory)
        d.addBoth(self._settled)
        return d

    def _settled(self, result: Any) -> Any:
        if isinstance(result, Failure):
            self._failure = result
        else:
            self.port = result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self._answer(d)
        return result

    def _answer(self, d: Deferred) -> None:
        if self.port is not None:
            d.callback(self.port)
        else:
            why = self._failure.getErrorMessage() if self._failure is not None else "not bound"
            d.errback(ListenerNotBound(f"the node's listener {self.description} is not listening: {why}"))

    def when_listening(self) -> Deferred:
        """Fires with the IListeningPort once bound; fails with ListenerNotBound if binding failed."""
        d: Deferred = Deferred()
        if self.port is not None or self._failure is not None:
            self._answer(d)
        else:
            self._waiting.append(d)
        return d


def loopback_endpoint(reactor: Any, address: Any) -> Any:
    """A client endpoint to a bound listener's address: a wildcard interface (``0.0.0.0``, ``::``) is
    dialled on loopback, a specific interface or a UNIX socket as it is."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint

    if isinstance(address, IPv4Address):
        return TCP4ClientEndpoint(reactor, _WILDCARDS.get(address.host, address.host), address.port)
    if isinstance(address, IPv6Address):
        return TCP6ClientEndpoint(reactor, _WILDCARDS.get(address.host, address.host), address.port)
    if isinstance(address, UNIXAddress):
        return UNIXClientEndpoint(reactor, address.name.decode() if isinstance(address.name, bytes)
                                  else address.name)
    raise ListenerNotBound(f"cannot dial the node's own listener at {address!r}")


def describe(address: Any) -> str:
    """HOST:PORT (or the socket path) the self link dials, for status."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        host = _WILDCARDS.get(address.host, address.host)
        return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        return name.decode() if isinstance(name, bytes) else str(name)
    return str(address)


@implementer(IStreamClientEndpoint)
class SelfEndpoint:
    """Dials the node's own listener (once it is bound) in mutual TLS with the given client creator."""

    def __init__(self, reactor: Any, listener: RecordingServerEndpoint, creator: Any) -> None:
        self._reactor = reactor
        self.listener = listener
        self._creator = creator
        self.dialled: str | None = None   # the address last dialled, for status

    def connect(self, factory: Any) -> Deferred:
        from shiftpeer.sync.client import tls_client_endpoint

        def dial(port: Any) -> Deferred:
            address = port.getHost()
            endpoint = loopback_endpoint(self._reactor, address)
            self.dialled = describe(address)
            return tls_client_endpoint(endpoint, self._creator).connect(factory)

        return self.listener.when_listening().addCallback(dial)


def self_link_creator(node: Any, material: Any) -> Any:
    """The client TLS creator of the self link: it presents the node key (the operator's account, the key
    that signs its documents) and accepts only a server presenting ``material``'s key (the node's own)."""
    from shiftpeer.identity.tls import client_creator

    own = getattr(material, "peer_id", None) or material.account_id
    return client_creator(node.key, expected_peer_id=own)


__all__ = ["SELF", "ListenerNotBound", "RecordingServerEndpoint", "SelfEndpoint", "hub_target",
           "loopback_endpoint", "self_link_creator", "describe"]
