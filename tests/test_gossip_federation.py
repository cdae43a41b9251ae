"""Hubs federated through ``master``, and full peers that find each other through their hub."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from shiftpeer.identity import NodeKey
from shiftpeer.identity.makecerts import main as make_certs
from shiftpeer.node import Node
from shiftpeer.nodesettings import NodeSettings
from tests.helpers_node import eventually
from tests.test_gossip_mesh import free_port, master_ids, publish


def node(directory, name: str, *, port: int | None = None, key: NodeKey | None = None, **settings) -> Node:
    """A started Node with its own key (or ``key``) in ``directory`` (listening on ``port`` when given)."""
    os.makedirs(directory, exist_ok=True)
    listen = [f"tcp:{port}:interface=127.0.0.1"] if port else []
    s = NodeSettings(directory=str(directory), store_path=os.path.join(directory, "store"), user=name,
                     listen=listen, **settings)
    n = Node(s, key or NodeKey.generate(), reactor=reactor)
    n.startService()
    return n


def cert_peer_id(certs: dict) -> str:
    """The TLS peer id of the hub that uses ``certs`` (what other hubs list in ``relays``)."""
    from cryptography import x509

    from shiftpeer.identity.tls import peer_id_of_cert

    with open(certs["tls_cert"], "rb") as f:
        return peer_id_of_cert(x509.load_pem_x509_certificate(f.read()))


def relays(directory, *peer_ids: str) -> None:
    """Write ``DIR/hub.json`` trusting ``peer_ids`` as relays (federated hubs)."""
    import json

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "hub.json"), "w") as f:
        json.dump({"relays": list(peer_ids)}, f)


def hub_certs(directory) -> dict:
    """A throwaway CA and a certificate for 127.0.0.1 in ``directory``: the hub's TLS settings."""
    assert make_certs([str(directory), "--host", "127.0.0.1", "--new-ca"]) == 0
    return {"tls_cert": str(directory / "127.0.0.1.pem"), "tls_key": str(directory / "127.0.0.1.key")}


def hub_and_full_peer(tmp_path, started: list, name: str = "fp1", **hub_settings) -> tuple[Node, Node, int, int]:
    """A hub (CA certificate for 127.0.0.1; more NodeSettings in ``hub_settings``) and a full peer ``name``
    listening and connected to it, both started and stopped with the test (``started``); returns (hub, full
    peer, hub port, full peer port)."""
    ph, pf = free_port(), free_port()
    certs = hub_certs(tmp_path / "c")
    hub = node(tmp_path / "hub", "op", port=ph, hub=True, **certs, **hub_settings)
    fp = node(tmp_path / name, name, port=pf, full_peer=True, connect=f"127.0.0.1:{ph}",
              ca=str(tmp_path / "c" / "ca.pem"))
    started += [hub, fp]
    return hub, fp, ph, pf


async def registered(n: Node) -> Node:
    flows = n.role("flows").flows
    await eventually(lambda: flows.link.connected and flows.link.account, timeout=10)
    await flows.register(n.settings.user)
    await flows.link.when_ready()
    return n


@pytest.fixture
def started():
    nodes: list[Node] = []
    yield nodes
    pytest_twisted.blockon(gatherResults([n.stopService() for n in reversed(nodes) if n.running]))


def shared_ids(hub: Node) -> set[str]:
    return {c.id for c in hub.store.database("shared").changes() if not c.deleted}


@pytest_twisted.ensureDeferred
async def test_two_federated_hubs_deliver_each_others_public_shifts(tmp_path, started):
    """A public shift published on either of two hubs configured as peers and as each other's relays
    reaches the other hub's master and shared, and the other hub's users find it with a query."""
    pa, pb = free_port(), free_port()
    ca, cb = hub_certs(tmp_path / "ca"), hub_certs(tmp_path / "cb")
    relays(tmp_path / "ha", cert_peer_id(cb))
    relays(tmp_path / "hb", cert_peer_id(ca))
    hub_a = node(tmp_path / "ha", "opa", port=pa, hub=True, peers=[f"127.0.0.1:{pb}"], **ca)
    hub_b = node(tmp_path / "hb", "opb", port=pb, hub=True, peers=[f"127.0.0.1:{pa}"], **cb)
    started += [hub_a, hub_b]
    assert hub_a.role("federation") is not None and hub_b.role("federation") is not None
    alice = node(tmp_path / "alice", "alice", connect=f"127.0.0.1:{pa}", ca=str(tmp_path / "ca" / "ca.pem"))
    bob = node(tmp_path / "bob", "bob", connect=f"127.0.0.1:{pb}", ca=str(tmp_path / "cb" / "ca.pem"))
    started += [alice, bob]
    await registered(alice)
    await registered(bob)

    from_a = await publish(alice, "from-a")
    from_b = await publish(bob, "from-b")
    for hub in (hub_a, hub_b):
        await eventually(lambda h=hub: {from_a, from_b} <= master_ids(h), timeout=15)
        await eventually(lambda h=hub: {from_a, from_b} <= shared_ids(h), timeout=15)
    for user, other in ((alice, from_b), (bob, from_a)):
        rows = (await user.role("flows").flows.query({"filters": {}, "limit": 50}))["rows"]
        assert other in {r["id"] for r in rows}


@pytest_twisted.ensureDeferred
async def test_hubs_not_listed_as_relays_keep_each_others_users_out_of_master(tmp_path, started):
    """Two hubs configured as peers but not as relays: each pulls the other's master, but a shift by a
    user registered only on the other hub stays out of its master and shared (logged, counted, no ban)."""
    pa, pb = free_port(), free_port()
    ca, cb = hub_certs(tmp_path / "ca"), hub_certs(tmp_path / "cb")
    hub_a = node(tmp_path / "ha", "opa", port=pa, hub=True, peers=[f"127.0.0.1:{pb}"], **ca)
    hub_b = node(tmp_path / "hb", "opb", port=pb, hub=True, peers=[f"127.0.0.1:{pa}"], **cb)
    started += [hub_a, hub_b]
    alice = node(tmp_path / "alice", "alice", connect=f"127.0.0.1:{pa}", ca=str(tmp_path / "ca" / "ca.pem"))
    started.append(alice)
    await registered(alice)
    from_a = await publish(alice, "from-a")
    await eventually(lambda: from_a in shared_ids(hub_a), timeout=15)
    gossip = hub_b.role("federation").gossip
    await eventually(lambda: gossip.counters["refused_unregistered"] >= 1, timeout=15)
    assert from_a not in master_ids(hub_b) and from_a not in shared_ids(hub_b)
    assert not gossip.scores.bans


@pytest_twisted.ensureDeferred
async def test_full_peers_find_each_other_through_the_hub_and_survive_its_loss(tmp_path, started):
    """Full peers that opted in are listed by their hub and dial each other; after the hub stops, a
    shift published at one full peer by an author they know from the hub still reaches the others,
    and queries answer from the local feed."""
    ph = free_port()
    certs = hub_certs(tmp_path / "c")
    hub = node(tmp_path / "hub", "op", port=ph, hub=True, **certs)
    started.append(hub)
    peers = []
    for i in range(3):
        fp = node(tmp_path / f"fp{i}", f"fp{i}", port=free_port(), full_peer=True, connect=f"127.0.0.1:{ph}",
                  ca=str(tmp_path / "c" / "ca.pem"))
        started.append(fp)
        peers.append(fp)
    for fp in peers:
        await registered(fp)
    first = await publish(peers[1], "via-hub")   # the others learn from the hub that fp1 is registered
    await eventually(lambda: all(first in master_ids(fp) for fp in peers), timeout=15)

    for fp in peers:
        fp.role("full-peer").discover()
    await eventually(lambda: all(len(fp.role("full-peer").gossip.pulls) >= 3 for fp in peers), timeout=15)
    await hub.stopService()
    second = await publish(peers[1], "after-the-hub")
    await eventually(lambda: all(second in master_ids(fp) for fp in peers), timeout=15)
    flows = peers[2].role("flows").flows
    await eventually(lambda: second in {d.id for d in peers[2].store.database("user/feed").docs_since(0)})
    rows = (await flows.query({"filters": {"href": "https://example.org/after-the-hub"}}))["rows"]
    assert [r["id"] for r in rows] == [second] and rows[0]["body"]["author"] == peers[1].account_id


@pytest_twisted.ensureDeferred
async def test_while_the_hub_is_down_a_new_authors_shift_waits_for_the_hub(tmp_path, started):
    """Hub stopped: a full peer cannot ask whether an author it has not seen is registered, so it refuses
    that author's gossiped shift (no ban); when the hub is back the shift arrives through its master."""
    ph, p0, p1 = free_port(), free_port(), free_port()
    certs = hub_certs(tmp_path / "c")
    ca = str(tmp_path / "c" / "ca.pem")
    hub_key = NodeKey.generate()
    hub = node(tmp_path / "hub", "op", port=ph, key=hub_key, hub=True, **certs)
    fp0 = node(tmp_path / "fp0", "fp0", port=p0, full_peer=True, connect=f"127.0.0.1:{ph}", ca=ca,
               peers=[f"127.0.0.1:{p1}"])
    fp1 = node(tmp_path / "fp1", "fp1", port=p1, full_peer=True, connect=f"127.0.0.1:{ph}", ca=ca)
    started += [fp0, fp1, hub]
    for fp in (fp0, fp1):
        await registered(fp)
    gossip = fp0.role("full-peer").gossip
    await eventually(lambda: fp1.account_id in gossip.pulls, timeout=15)
    await hub.stopService()
    late = await publish(fp1, "new-author-while-the-hub-is-down")
    await eventually(lambda: gossip.counters["refused_unregistered"] >= 1, timeout=15)
    assert late not in master_ids(fp0) and not gossip.scores.bans
    hub = node(tmp_path / "hub", "op", port=ph, key=hub_key, hub=True, **certs)
    started.append(hub)
    await eventually(lambda: late in master_ids(hub) and late in master_ids(fp0), timeout=30)
    assert not gossip.scores.bans


@pytest_twisted.ensureDeferred
async def test_a_full_peer_restarted_while_its_hub_is_down_still_takes_the_authors_it_holds(tmp_path, started):
    """fp0 holds fp1's shift (its hub vouched for fp1). The hub stops and fp0 restarts: fp1's next shift,
    gossiped, still reaches fp0, whose master holds documents by fp1. Before, the authors a full peer knew
    lived only in memory: restarted while its hub was down, it refused every author it held (logged
    `its author is not known to be registered on our hub`), so gossip carried nothing until the hub came
    back (docs/fullpeer.md promises the shifts of authors it already knows)."""
    ph, p0, p1 = free_port(), free_port(), free_port()
    certs = hub_certs(tmp_path / "c")
    ca = str(tmp_path / "c" / "ca.pem")
    hub = node(tmp_path / "hub", "op", port=ph, hub=True, **certs)
    fp1 = node(tmp_path / "fp1", "fp1", port=p1, full_peer=True, connect=f"127.0.0.1:{ph}", ca=ca)
    fp0_settings = dict(port=p0, full_peer=True, connect=f"127.0.0.1:{ph}", ca=ca, peers=[f"127.0.0.1:{p1}"])
    fp0 = node(tmp_path / "fp0", "fp0", **fp0_settings)
    started += [fp0, fp1, hub]
    for fp in (fp0, fp1):
        await registered(fp)
    first = await publish(fp1, "before-the-restart")
    await eventually(lambda: first in master_ids(fp0), timeout=15)
    await hub.stopService()
    await fp0.stopService()

    fp0 = node(tmp_path / "fp0", "fp0", key=fp0.key, **fp0_settings)
    started.append(fp0)
    gossip = fp0.role("full-peer").gossip
    await eventually(lambda: fp1.account_id in gossip.pulls, timeout=15)
    late = await publish(fp1, "after-the-restart")
    await eventually(lambda: late in master_ids(fp0) or gossip.counters["refused_unregistered"], timeout=15)
    assert late in master_ids(fp0) and not gossip.counters["refused_unregistered"]
