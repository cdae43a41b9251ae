"""Stopping a SyncPeerService whose connection is still in its TLS handshake (shiftpeer/sync/client.py).

The hang once seen in test_sync_network.py::test_refusals_leave_other_connections_working under load: the
peer service reconnects (the hub dropped the old connection), the test ends and stops it while the new
connection's handshake is in flight. ClientService's close (the TLS transport's loseConnection) waits for the
registered producer, the SyncProtocol, to unregister, which only SyncProtocol.close does; so the handshake
finished, the connection authenticated and stayed open, and the stop never fired. Here a TCP gate holds the
handshake back until the stop has been asked for, so the race happens every time.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from shiftpeer.identity.tls import client_creator
from shiftpeer.sync.client import SyncPeerService, tls_client_endpoint
from test_sync_network import Nodes, bounded, until


class Relay(Protocol):
    """The gate's connection to the real listener: passes its bytes back to the gated client."""

    def __init__(self, gate: "Gate") -> None:
        self.gate = gate

    def dataReceived(self, data: bytes) -> None:
        self.gate.transport.write(data)

    def connectionLost(self, reason=None) -> None:
        self.gate.transport.loseConnection()


class Gate(Protocol):
    """A TCP connection accepted and held: what the client sends waits until ``open`` relays it to ``port``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.held: list[bytes] = []
        self.relay: Relay | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.relay is None:
            self.held.append(data)
        else:
            self.relay.transport.write(data)

    async def open(self) -> None:
        relay = Relay(self)
        await bounded(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), relay))
        self.relay = relay
        relay.transport.write(b"".join(self.held))

    def connectionLost(self, reason=None) -> None:
        if self.relay is not None:
            self.relay.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_stopping_a_peer_service_mid_handshake_closes_the_connection(tmp_path):
    """A stop asked for while the connection is in its TLS handshake fires once the handshake is over: the
    connection is closed, never authenticated, and the hub's side goes too."""
    async with Nodes(tmp_path) as nodes:
        a, hub = nodes("a"), nodes("hub")
        await hub.listen()
        gates: list[Gate] = []

        def gate() -> Gate:
            gates.append(Gate(hub.port.getHost().port))
            return gates[-1]

        gate_port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(gate))
        connected: list = []
        try:
            endpoint = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", gate_port.getHost().port),
                                           client_creator(a.key, expected_peer_id=hub.id))
            svc = SyncPeerService(reactor, endpoint, a.factory, on_connected=connected.append,
                                  retry_policy=lambda attempt: 0.02)
            svc.startService()
            await until(lambda: gates and gates[0].held, what="the TLS ClientHello to reach the gate")
            stopped = svc.stopService()
            assert not stopped.called                  # the TLS close waits for the handshake
            await gates[0].open()
            await bounded(stopped, what="the peer service to stop")
            assert connected == [] and svc.connection is None and not a.factory.connections
            await until(lambda: hub.factory.limits.open == 0, what="the hub's side to close")
        finally:
            await gate_port.stopListening()
