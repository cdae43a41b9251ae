"""`shiftpeer gossip unban` on a node that does not gossip (a user node) says so, in one line a person can
act on, instead of naming an API route that does not exist."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.helpers_node import make_node, node_cli


@pytest.fixture
def user_node(tmp_path):
    """A running node with the roles a plain user node runs: no full peer, no hub, so no gossip."""
    node = make_node(str(tmp_path / "alice"))
    node.startService()
    yield node
    pytest_twisted.blockon(node.stopService())


@pytest_twisted.ensureDeferred
async def test_unban_on_a_node_without_gossip_says_it_does_not_gossip(user_node, capsys):
    """Exit 1 with one line saying the node does not gossip and who does; the route answers 404
    `no_gossip` (a client can tell it from an id that is not banned, `not_found`)."""
    await user_node.when_ready()
    assert user_node.role("full-peer") is None and user_node.role("federation") is None
    cli = node_cli(capsys, user_node.settings.directory)
    for argv in (("gossip", "unban", "--all"), ("gossip", "unban", "somepeer")):
        status, out = await deferToThread(cli, *argv)
        assert status == 1, out
        assert out.count("\n") == 1 and "this node does not gossip" in out and "full peers and hubs" in out, out
        assert "no such API route" not in out
