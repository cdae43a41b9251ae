"""Endpoints and services: mutual TLS around ``tcp:`` endpoints, and one reconnecting service per peer.

Mutual TLS wraps a plain TCP endpoint in ``TLSFactory`` (the ``ssl:`` endpoint string has no
client-certificate option; tahoe ``storage/http_server.py`` ``_TLSEndpointWrapper``)::

    listener = tls_server_endpoint(serverFromString(reactor, "tcp:7780"), server_creator(key))
    listener.listen(factory)

    peer = SyncPeerService(reactor, tls_client_endpoint(
               clientFromString(reactor, "tcp:hub.example:7780"), client_creator(key, hostname=...)),
           factory, on_connected=lambda conn: conn.pull("master", "user/feed"))
    peer.setServiceParent(node)

``SyncPeerService`` is a ``ClientService``: it reconnects with backoff, and every time a connection
is authenticated it calls ``on_connected(conn)``, which starts the replications for that connection;
they resume from their checkpoints.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shiftpeer.identity.tls import TLSFactory, peer_id_of_transport
from shiftpeer.sync.peererrors import why_closed, why_failed
from shiftpeer.sync.protocol import SyncFactory, SyncProtocol

log = Logger()


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """Listens on a TCP endpoint; every connection runs TLS (server side) under the given factory."""

    def __init__(self, endpoint: Any, creator: Any, clock: Any = None) -> None:
        self._endpoint, self._creator, self._clock = endpoint, creator, clock

    def listen(self, factory: Any) -> Deferred:
        return self._endpoint.listen(TLSFactory(self._creator, False, factory, clock=self._clock))


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """Connects with a TCP endpoint, then runs TLS (client side); fires with the *inner* protocol."""

    def __init__(self, endpoint: Any, creator: Any, clock: Any = None) -> None:
        self._endpoint, self._creator, self._clock = endpoint, creator, clock

    def connect(self, factory: Any) -> Deferred:
        d = self._endpoint.connect(TLSFactory(self._creator, True, outgoing(factory), clock=self._clock))
        return d.addCallback(lambda tls: tls.wrappedProtocol)


def tls_server_endpoint(endpoint: Any, creator: Any, clock: Any = None) -> TLSServerEndpoint:
    """Mutual TLS (identity.tls.server_creator) over a listening endpoint such as ``tcp:7780``."""
    return TLSServerEndpoint(endpoint, creator, clock)


def tls_client_endpoint(endpoint: Any, creator: Any, clock: Any = None) -> TLSClientEndpoint:
    """Mutual TLS (identity.tls.client_creator) over a connecting endpoint such as ``tcp:host:7780``."""
    return TLSClientEndpoint(endpoint, creator, clock)


@implementer(IHandshakeListener)
class _KeyProbe(Protocol):
    """Learns which key answers at an address: once TLS is done it reads the peer id and closes; no sync byte
    is sent (the other side sees a connection that ends before its hello, and logs nothing)."""

    def __init__(self, answer: Deferred) -> None:
        self.answer = answer

    def handshakeCompleted(self) -> None:
        if not self.answer.called:
            try:
                peer_id = peer_id_of_transport(self.transport)
            except Exception:
                self.answer.errback()
            else:
                self.answer.callback(peer_id)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.answer.called:
            self.answer.errback(reason)


def peer_id_at(endpoint: Any) -> Deferred:
    """The peer id of the TLS server ``endpoint`` (a ``tls_client_endpoint``) reaches: a Deferred that fails
    when the connection or the handshake does (a server whose key the client creator pins fails the
    handshake). Cancelling it stops the attempt, or aborts the connection made."""
    probes: list[_KeyProbe] = []

    def cancel(_: Deferred) -> None:
        connecting.cancel()
        for probe in probes:
            if probe.transport is not None:
                probe.transport.abortConnection()

    answer: Deferred = Deferred(cancel)

    def build() -> _KeyProbe:
        probes.append(_KeyProbe(answer))
        return probes[-1]

    def failed(f: Failure) -> None:
        if not answer.called:
            answer.errback(f)

    connecting = endpoint.connect(Factory.forProtocol(build))
    connecting.addErrback(failed)
    return answer


class _Outgoing(Factory):
    """Builds a SyncFactory's protocols for connections we dial (``build_outgoing``), so the serving side's
    connection caps (``SyncFactory.buildProtocol``) never count them."""

    def __init__(self, factory: SyncFactory) -> None:
        self.factory = factory

    def buildProtocol(self, addr: Any) -> SyncProtocol:
        return self.factory.build_outgoing(addr)


def outgoing(factory: Any) -> Any:
    """The factory to dial with: a SyncFactory wrapped so it builds outgoing connections, e.g.
    ``TLSFactory(client_creator(key), True, outgoing(factory))``; any other factory (a
    ``ClientService``'s proxy of ``_PeerFactory``) as it is."""
    return _Outgoing(factory) if isinstance(factory, SyncFactory) else factory


class _PeerFactory(Factory):
    """Builds the SyncFactory's outgoing protocols, adding this peer's connection and close hooks."""

    def __init__(self, sync_factory: SyncFactory, hook: Callable[[SyncProtocol], Any],
                 ended: Callable[[SyncProtocol], Any] | None = None) -> None:
        self.sync_factory = sync_factory
        self.hook = hook
        self.ended = ended
        #: the connection of the latest attempt, authenticated or not (SyncPeerService.stopService closes it)
        self.latest: Optional[SyncProtocol] = None

    def buildProtocol(self, addr: Any) -> SyncProtocol:
        proto = self.latest = self.sync_factory.build_outgoing(addr)
        proto.extra_hooks.append(self.hook)
        if self.ended is not None:
            proto.when_closed().addCallback(lambda _: self.ended(proto))
        return proto


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """Passes connection attempts through, reporting each failed one (refused, timed out, no such host)."""

    def __init__(self, endpoint: Any, failed: Callable[[Failure], Any]) -> None:
        self._endpoint, self._failed = endpoint, failed

    def connect(self, factory: Any) -> Deferred:
        def report(f: Failure) -> Failure:
            self._failed(f)
            return f

        return self._endpoint.connect(factory).addErrback(report)


class SyncPeerService(ClientService):
    """One outgoing peer: connect, reconnect with backoff, call ``on_connected(conn)`` once authenticated."""

    def __init__(self, reactor: Any, endpoint: Any, factory: SyncFactory, *,
                 on_connected: Optional[Callable[[SyncProtocol], Any]] = None,
                 retry_policy: Optional[Callable[[int], float]] = None, name: Optional[str] = None) -> None:
        self.sync_factory = factory
        self.on_connected = on_connected
        self.connection: Optional[SyncProtocol] = None
        #: why the last attempt failed or the last connection ended (None once authenticated), and when
        self.last_error: Optional[str] = None
        self.last_error_at: Optional[float] = None
        self._clock = reactor
        self._waiting: list[Deferred] = []
        self._peer_factory = _PeerFactory(factory, self._authenticated, self._ended)
        super().__init__(_ReportingEndpoint(endpoint, lambda f: self._error(why_failed(f))), self._peer_factory,
                         retryPolicy=retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=30.0),
                         clock=reactor)
        if name:
            self.setName(name)

    def _error(self, why: Optional[str]) -> None:
        if why is not None:
            self.last_error, self.last_error_at = why, self._clock.seconds()

    def _ended(self, conn: SyncProtocol) -> None:
        self._error(why_closed(conn))

    def _authenticated(self, conn: SyncProtocol) -> None:
        self.last_error = self.last_error_at = None
        self.connection = conn
        conn.when_closed().addBoth(lambda _: self._closed(conn))
        if self.on_connected is not None:
            self.on_connected(conn)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(conn)

    def _closed(self, conn: SyncProtocol) -> None:
        if self.connection is conn:
            self.connection = None

    def stopService(self) -> Deferred:
        """Stop reconnecting and close the current connection; fires once it is gone.

        The connection is closed by SyncProtocol, authenticated or still in its handshake: ClientService's
        own close (the TLS transport's loseConnection) waits for the protocol to unregister as the transport's
        producer, which only SyncProtocol.close does, so a stop during a handshake never finished."""
        conn = self._peer_factory.latest
        if conn is not None:
            conn.close()
        return super().stopService()

    def when_authenticated(self) -> Deferred:
        """Fires with the next (or current) authenticated connection."""
        from twisted.internet.defer import succeed
        if self.connection is not None and not self.connection._closing:
            return succeed(self.connection)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d
