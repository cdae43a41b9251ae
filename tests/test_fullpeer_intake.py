"""Who may put a document into the public firehose through gossip: only authors registered on the hub.

A peer announcing the full-peer role is pulled from by full peers and by the hub; these tests dial a
full peer and the hub the way an attacker would (a bare SyncFactory, real TLS on 127.0.0.1) and offer
public shifts by a key never registered and by a registered key.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc
from shiftpeer.identity.tls import client_creator
from shiftpeer.store import Store
from shiftpeer.store.revs import compute_rev
from shiftpeer.sync import SyncFactory
from shiftpeer.sync.authz import AllowAll
from shiftpeer.sync.client import outgoing
from tests.helpers_node import eventually, eventually_async
from tests.test_gossip_federation import hub_certs, node, registered, shared_ids, started  # noqa: F401
from tests.test_gossip_mesh import free_port, master_ids


def public_shift(key: NodeKey, doc_id: str, summary: str) -> dict:
    """A public shift on https://example.org/SUMMARY signed by ``key``, as replication carries it."""
    body = {"type": "shift", "space": "Notes", "href": f"https://example.org/{summary}", "summary": summary,
            "author": key.account_id, "created": time.time(), "audience": {"public": True, "groups": [], "to": []}}
    rev = compute_rev(None, False, body)
    return {"id": doc_id, "rev": rev, "deleted": False, "body": body,
            "sig": sign_doc(key, doc_id, rev, body, False), "history": [rev]}


class Relay:
    """A bare peer announcing the full-peer role whose ``master`` holds one public shift by ``key``."""

    def __init__(self, path, key: NodeKey, summary: str) -> None:
        self.key = key
        self.store = Store(str(path))
        self.factory = SyncFactory(self.store, key, AllowAll(), reactor=reactor, roles=("full-peer",))
        self.id = f"intake-{summary}"
        self.store.create_database("master").bulk_replicated([public_shift(key, self.id, summary)])
        self.proto = None

    async def dial(self, port: int) -> None:
        tls = TLSMemoryBIOFactory(client_creator(self.key), True, outgoing(self.factory))
        wrapper = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(tls)
        self.proto = wrapper.wrappedProtocol
        await self.proto.when_ready()

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.abortConnection()
        self.store.close()


@pytest.fixture
def logged():
    """Every log event's formatted text while the test runs."""
    from twisted.logger import formatEvent

    lines: list[str] = []
    observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


async def _mesh(tmp_path, started):  # noqa: F811
    """A hub, a registered full peer fp1 listening, a registered user bob, and a registered key mallory."""
    ph, p1 = free_port(), free_port()
    certs = hub_certs(tmp_path / "c")
    ca = str(tmp_path / "c" / "ca.pem")
    hub = node(tmp_path / "hub", "op", port=ph, hub=True, **certs)
    fp1 = node(tmp_path / "fp1", "fp1", port=p1, full_peer=True, connect=f"127.0.0.1:{ph}", ca=ca)
    bob = node(tmp_path / "bob", "bob", connect=f"127.0.0.1:{ph}", ca=ca)
    mallory = node(tmp_path / "mallory", "mallory", connect=f"127.0.0.1:{ph}", ca=ca)
    started += [hub, fp1, bob, mallory]
    for n in (fp1, bob, mallory):
        await registered(n)
    return hub, fp1, bob, mallory, ph, p1


async def _everywhere(hub, fp1, bob, sid: str) -> dict:
    """Where ``sid`` is: fp1's and the hub's master, the hub's shared, and what the hub gives bob."""
    rows = (await bob.role("flows").flows.link.call("get", {"ids": [sid]}))["rows"]
    return {"fp1 master": sid in master_ids(fp1), "hub master": sid in master_ids(hub),
            "hub shared": sid in shared_ids(hub), "bob gets it": bool(rows)}


@pytest.mark.parametrize("target", ["full peer", "hub"])
@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_a_stranger_offering_a_public_shift_reaches_no_one(tmp_path, started, logged, target):  # noqa: F811
    """A key never registered dials a full peer (or the hub) announcing the full-peer role and offers a
    public shift: it is not stored there, so neither the hub's master and shared nor bob (asking the hub)
    get it; the refusal is logged naming the author, the shift and the neighbour, counted, and no one
    is banned. A registered author's shift offered the same way still reaches the full peer, the hub's
    master and shared, and bob."""
    hub, fp1, bob, mallory, ph, p1 = await _mesh(tmp_path, started)
    stranger = Relay(tmp_path / "stranger", NodeKey.generate(), "from-a-stranger")
    honest = Relay(tmp_path / "relay", mallory.key, "from-mallory")
    victim = fp1.role("full-peer") if target == "full peer" else hub.role("federation")
    try:
        await stranger.dial(p1 if target == "full peer" else ph)
        await honest.dial(p1 if target == "full peer" else ph)
        gossip = victim.gossip
        await eventually(lambda: gossip.counters["refused_unregistered"] >= 1, timeout=15)
        await eventually_async(lambda: _everywhere(hub, fp1, bob, honest.id), lambda w: all(w.values()))
        assert not any((await _everywhere(hub, fp1, bob, stranger.id)).values())
        line = next(x for x in logged if stranger.id in x and "refused" in x)
        assert line.count(stranger.key.account_id) >= 2   # the author, and the neighbour that handed it in
        assert not gossip.scores.bans
        assert gossip.sync_counters["gossip.refused_unregistered"] >= 1   # the metrics count it too
    finally:
        stranger.close()
        honest.close()
