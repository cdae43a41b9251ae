"""Node-level behaviour gossip relies on: a stopping node closes every sync connection it accepted."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from shiftpeer.identity import NodeKey
from shiftpeer.roles.fullpeer import listen_port
from tests.helpers_node import eventually
from tests.test_gossip_mesh import free_port, full_peer


@pytest_twisted.ensureDeferred
async def test_a_connection_still_in_its_handshake_is_closed_when_the_node_stops(tmp_path):
    """A connection accepted but not yet authenticated when the node stops is closed before the
    store is, so it can never reach a closed store (gossip peers redial while nodes stop)."""
    node = full_peer(tmp_path / "n", "n", NodeKey.generate(), free_port(), [])
    port = await listen_port(node)
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(Factory.forProtocol(Protocol))
    await eventually(lambda: len(node.accepted) == 1)
    proto = next(iter(node.accepted))
    assert proto not in node.sync_factory.connections
    closed = proto.when_closed()
    await node.stopService()
    assert closed.called
    client.transport.loseConnection()
