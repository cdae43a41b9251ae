"""``sync.client.peer_id_at``: the key a TLS server at an address presents, learnt by a connection that
closes once TLS is done (the proof of an announced gossip address, shiftpeer/gossip/proofs.py). Over real
sockets on 127.0.0.1: a TLS server's key is read, a port nobody listens on fails, and a server that never
answers the handshake is let go when the proof's timeout cancels it."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol

from shiftpeer.identity import NodeKey
from shiftpeer.identity.tls import TLSFactory, client_creator, server_creator
from shiftpeer.sync.client import peer_id_at, tls_client_endpoint
from tests.helpers_node import eventually


class _Silent(Protocol):
    """Accepts a connection and never answers; notes when it begins and ends."""

    made: list = []
    ended: list = []

    def connectionMade(self) -> None:
        _Silent.made.append(self)

    def connectionLost(self, reason=None) -> None:
        _Silent.ended.append(reason)


def _probe(port: int, key: NodeKey) -> Deferred:
    endpoint = tls_client_endpoint(HostnameEndpoint(reactor, "127.0.0.1", port), client_creator(key))
    return peer_id_at(endpoint)


@pytest_twisted.ensureDeferred
async def test_the_key_a_tls_server_presents_is_learnt_and_the_connection_closed():
    server, me = NodeKey.generate(), NodeKey.generate()
    ended: list = []

    class Watched(Protocol):
        def connectionLost(self, reason=None) -> None:
            ended.append(reason)

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        TLSFactory(server_creator(server), False, Factory.forProtocol(Watched)))
    try:
        assert await _probe(port.getHost().port, me).addTimeout(10, reactor) == server.account_id
        await eventually(lambda: ended, timeout=5)          # the probe does not keep the connection
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_port_nobody_listens_on_fails():
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Protocol))
    number = port.getHost().port
    await port.stopListening()
    with pytest.raises(ConnectionRefusedError):
        await _probe(number, NodeKey.generate()).addTimeout(10, reactor)


@pytest_twisted.ensureDeferred
async def test_cancelling_a_probe_stuck_in_the_handshake_closes_its_connection():
    _Silent.made, _Silent.ended = [], []
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(_Silent))
    try:
        probe = _probe(port.getHost().port, NodeKey.generate())
        await eventually(lambda: _Silent.made, timeout=5)
        probe.cancel()
        with pytest.raises(CancelledError):
            await probe
        await eventually(lambda: _Silent.ended, timeout=5)
    finally:
        await port.stopListening()

