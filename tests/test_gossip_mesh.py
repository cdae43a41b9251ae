"""Full peers gossiping ``master`` over real TLS on 127.0.0.1: convergence, restarts, a hostile node."""

from __future__ import annotations

import os
import random

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc, signing_payload, verify_repl_doc
from shiftpeer.node import Node
from shiftpeer.nodesettings import NodeSettings
from shiftpeer.store.revs import compute_rev
from tests.helpers_node import eventually
from tests.ports import free_port

N = 8


def full_peer(directory, name: str, key: NodeKey, port: int, peers: list[int], **kw) -> Node:
    """A full-peer Node listening on ``port`` and dialling the given ports as ``--peer``."""
    os.makedirs(directory, exist_ok=True)
    settings = NodeSettings(directory=str(directory), store_path=os.path.join(directory, "store"), user=name,
                            full_peer=True, listen=[f"tcp:{port}:interface=127.0.0.1"],
                            peers=[f"127.0.0.1:{p}" for p in peers], **kw)
    node = Node(settings, key, reactor=reactor)
    node.startService()
    return node


def master_ids(node: Node) -> set[str]:
    return {c.id for c in node.store.database("master").changes() if not c.deleted}


async def publish(node: Node, summary: str) -> str:
    sid = node.shifts.create({"space": "Notes", "href": f"https://example.org/{summary}",
                              "summary": summary})["id"]
    await node.role("flows").flows.publish(sid, public=True)
    return sid


def hostile_docs(victim: NodeKey, forger: NodeKey) -> list[dict]:
    """A shift claiming the victim as author but signed by the forger, and a genuine one altered."""
    body = {"type": "shift", "space": "Notes", "href": "https://example.org/forged", "summary": "forged",
            "author": victim.account_id, "created": 1.0, "audience": {"public": True, "groups": [], "to": []}}
    rev = compute_rev(None, False, body)
    forged = {"id": "forged-1", "rev": rev, "deleted": False, "body": body,
              "sig": forger.sign(signing_payload("forged-1", rev, body, False)), "history": [rev]}
    genuine = dict(body, summary="genuine")
    grev = compute_rev(None, False, genuine)
    altered_body = dict(genuine, summary="altered by a relay")
    altered = {"id": "altered-1", "rev": grev, "deleted": False, "body": altered_body,
               "sig": sign_doc(victim, "altered-1", grev, genuine, False), "history": [grev]}
    return [forged, altered]


@pytest.fixture
def started():
    nodes: list[Node] = []
    yield nodes
    pytest_twisted.blockon(gatherResults([n.stopService() for n in nodes if n.running]))


@pytest_twisted.ensureDeferred
async def test_mesh_of_eight_converges_with_restart_and_hostile_node(tmp_path, started):
    """Eight full peers (degree 4) converge on every shift published at random nodes, one of them
    stopped and restarted meanwhile, while a hostile neighbour's forged and altered shifts are stored
    nowhere and it ends up banned by the nodes it reached."""
    rng = random.Random(6)
    ports = [free_port() for _ in range(N + 1)]
    keys = [NodeKey.generate() for _ in range(N + 1)]
    honest: list[Node] = []
    for i in range(N):
        node = full_peer(tmp_path / f"p{i}", f"p{i}", keys[i], ports[i], [ports[(i + 1) % N], ports[(i + 3) % N]])
        honest.append(node)
        started.append(node)
    hostile = full_peer(tmp_path / "evil", "evil", keys[N], ports[N], [ports[0], ports[2], ports[5]])
    started.append(hostile)
    bad = hostile_docs(keys[1], keys[N])
    hostile.store.database("master").bulk_replicated(bad)

    published = set()
    for k in range(12):
        published.add(await publish(rng.choice(honest), f"a{k}"))
    await eventually(lambda: all(master_ids(n) >= published for n in honest), timeout=20)

    victim = 3
    await honest[victim].stopService()
    for k in range(12):
        published.add(await publish(rng.choice([n for i, n in enumerate(honest) if i != victim]), f"b{k}"))
    restarted = full_peer(tmp_path / f"p{victim}", f"p{victim}", keys[victim], ports[victim],
                          [ports[(victim + 1) % N], ports[(victim + 3) % N]])
    honest[victim] = restarted
    started.append(restarted)
    for k in range(12):
        published.add(await publish(rng.choice(honest), f"c{k}"))

    await eventually(lambda: all(master_ids(n) == published for n in honest), timeout=30)
    await eventually(lambda: published <= {d.id for d in restarted.store.database("user/feed").docs_since(0)},
                     timeout=10)
    for node in honest:
        db = node.store.database("master")
        assert not master_ids(node) & {"forged-1", "altered-1"}
        assert all(verify_repl_doc(d) for d in db.get_repl_docs([(i, None) for i in master_ids(node)]))
    gossip = [n.role("full-peer").gossip for n in honest]
    assert sum(keys[N].account_id in g.scores.bans for g in gossip) >= 1
    assert all(keys[N].account_id not in g.pulls for g in gossip)


@pytest_twisted.ensureDeferred
async def test_reconnect_between_peers_in_sync_costs_constant_bytes(tmp_path, started):
    """Two full peers holding the same 80 shifts reconnect and exchange only the handshake, the pull
    requests and their checkpoints' answers: a few hundred bytes, no changes or documents."""
    pa, pb = free_port(), free_port()
    a = full_peer(tmp_path / "a", "a", NodeKey.generate(), pa, [pb])
    b = full_peer(tmp_path / "b", "b", NodeKey.generate(), pb, [])
    started += [a, b]
    ids = set()
    for k in range(40):
        ids.add(await publish(a, f"a{k}"))
        ids.add(await publish(b, f"b{k}"))
    await eventually(lambda: master_ids(a) == ids == master_ids(b), timeout=20)

    def checkpointed(x, y):
        pull = x.role("full-peer").gossip.pulls.get(y.account_id)
        return pull is not None and pull.handle.seq == y.store.database("master").update_seq()

    await eventually(lambda: checkpointed(a, b) and checkpointed(b, a), timeout=10)
    service = a.peer_clients[f"127.0.0.1:{pb}"]
    old = service.connection
    old.close()
    await old.when_closed()
    conn = await service.when_authenticated()
    pulls = [a.role("full-peer").gossip.pulls, b.role("full-peer").gossip.pulls]
    await eventually(lambda: all(len(p) == 1 and next(iter(p.values())).handle.is_caught_up for p in pulls),
                     timeout=10)
    assert conn.bytes_in + conn.bytes_out < 1000, (conn.bytes_in, conn.bytes_out)
    assert conn.frames_in <= 6 and conn.frames_out <= 6
