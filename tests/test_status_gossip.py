"""Status lists a full peer's gossip neighbours (peer id, address, direction, state, strikes); other nodes none."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from shiftpeer.cli import print_status
from shiftpeer.identity import NodeKey
from shiftpeer.node import Node
from tests.helpers_node import eventually, make_node
from tests.test_gossip_mesh import free_port, full_peer


@pytest.fixture
def started():
    nodes: list[Node] = []
    yield nodes
    pytest_twisted.blockon(gatherResults([n.stopService() for n in nodes if n.running]))


def _neighbours(node: Node) -> dict:
    return {n["peer_id"]: n for n in node.status()["gossip"]["neighbours"]}


@pytest_twisted.ensureDeferred
async def test_full_peers_show_each_other_as_live_gossip_neighbours(tmp_path, started, capsys):
    """Full peer A dials B: A's status shows B as a live outgoing neighbour at the address it dialled,
    B's shows A as a live incoming one, and `shiftpeer status` prints them; a dead address A also dials
    shows as connecting."""
    pa, pb, dead = free_port(), free_port(), free_port()
    b = full_peer(tmp_path / "b", "b", NodeKey.generate(), pb, [])
    a = full_peer(tmp_path / "a", "a", NodeKey.generate(), pa, [pb, dead])
    started += [a, b]

    await eventually(lambda: _neighbours(a).get(b.account_id, {}).get("state") == "live"
                     and _neighbours(b).get(a.account_id, {}).get("state") == "live", timeout=20)
    seen_by_a = _neighbours(a)[b.account_id]
    assert seen_by_a["address"] == f"127.0.0.1:{pb}" and seen_by_a["direction"] == "out"
    assert seen_by_a["static"] is True and seen_by_a["strikes"] == 0
    seen_by_b = _neighbours(b)[a.account_id]
    assert seen_by_b["direction"] == "in" and seen_by_b["address"].startswith("127.0.0.1:")
    gossip = a.status()["gossip"]
    assert gossip["live"] == 1 and gossip["low"] == 4 and gossip["high"] == 8 and gossip["banned"] == 0
    assert {"address": f"127.0.0.1:{dead}", "state": "connecting", "peer_id": None} \
        .items() <= next(n for n in gossip["neighbours"] if n["peer_id"] is None).items()

    print_status(a.status())
    out = capsys.readouterr().out
    assert "gossip:    1 live neighbour(s) (keeps 4-8)" in out
    assert f"127.0.0.1:{pb}" in out and "live" in out and b.account_id[:12] in out


@pytest_twisted.ensureDeferred
async def test_a_node_that_does_not_gossip_shows_no_neighbours(tmp_path, capsys):
    """A user node (no full-peer role) has no gossip section in its status, nor in `shiftpeer status`."""
    node = make_node(str(tmp_path / "n"))
    node.startService()
    try:
        await node.when_ready()
        st = node.status()
        assert st["gossip"] is None
        print_status(st)
        assert "gossip" not in capsys.readouterr().out
    finally:
        await node.stopService()
