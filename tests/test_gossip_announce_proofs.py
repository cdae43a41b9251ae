"""A node serving ``gossip.announce`` (a hub, a full peer) hands an announced address out (``gossip.peers``)
only once it has dialled it itself and met the announcer's key there. It listed any ``host`` a registered
account named, someone else's host included, for every full peer to dial. The proof is bounded: one dial
in flight per announcer, a timeout, and a rest after a failure; a failure is logged and counted
(``announce_unproven`` in status and the metrics) and not explained to the announcer. Deterministic: a
Clock and a fake dial; tests/test_gossip_announce_registered.py has the real nodes over TLS."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from shiftpeer.gossip.core import Gossip
from shiftpeer.gossip.dialable import PRIVATE_ALL
from shiftpeer.gossip.proofs import PROOF_TIMEOUT, RETRY_AFTER
from shiftpeer.gossip.report import neighbours_report
from shiftpeer.identity import NodeKey
from shiftpeer.sync.testing import MemoryStore
from tests import test_fullpeer_intake

ALICE, BOB, CAROL = (NodeKey.generate().account_id for _ in range(3))
#: the fixture (bound here, not imported by name: a name the tests' arguments shadow)
logged = test_fullpeer_intake.logged


class _Conn:
    """An authenticated full peer's connection, as the gossip RPCs see it."""

    def __init__(self, factory, peer_id: str, host: str = "203.0.113.5") -> None:
        self.factory, self.peer_id, self.peer_roles = factory, peer_id, ("full-peer",)
        self.transport = SimpleNamespace(getPeer=lambda: SimpleNamespace(host=host, port=40000))
        self.replications = SimpleNamespace()
        self._closed: list[Deferred] = []
        factory.connections.add(self)

    def when_closed(self) -> Deferred:
        self._closed.append(Deferred())
        return self._closed[-1]

    def close(self) -> None:
        self.factory.connections.discard(self)
        for d in self._closed:
            d.callback(None)


class _Dials:
    """The injected dial: each call is recorded with the Deferred the test fires (the key found there)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Deferred]] = []

    def __call__(self, host: str, port: int) -> Deferred:
        self.calls.append((host, port, Deferred()))
        return self.calls[-1][2]

    def answer(self, peer_id: str) -> None:
        self.calls[-1][2].callback(peer_id)


def make_hub(**gossip):
    """A Gossip serving the RPCs with a Clock and a fake dial (``gossip``: more Gossip arguments);
    ``.conn(peer)`` connects a full peer."""
    clock, dials = Clock(), _Dials()
    factory = SimpleNamespace(connections=set(), counters=__import__("collections").Counter())
    g = Gossip(MemoryStore(), clock, dial=dials, **gossip)
    g.sync_counters = factory.counters
    return SimpleNamespace(gossip=g, clock=clock, dials=dials, factory=factory,
                           conn=lambda peer, **kw: _Conn(factory, peer, **kw))


@pytest.fixture
def hub():
    """``make_hub`` dialling private addresses too (``PRIVATE_ALL``): the tests name documentation
    addresses, and are about the proof; tests/test_gossip_announce_private.py has the check of the address."""
    return make_hub(private=PRIVATE_ALL)


def _peers(hub, asker: str = CAROL) -> list[str]:
    return hub.gossip.rpc_peers(hub.conn(asker), {})["peers"]


def test_an_announced_address_is_listed_once_the_announcers_key_answers_there(hub):
    """Alice announces 198.51.100.7:7702: the answer comes at once, not listed; nobody is given the address
    until the dial there meets alice's key; then it is listed, and announcing it again dials nothing."""
    alice = hub.conn(ALICE)
    g = hub.gossip
    assert g.rpc_announce(alice, {"port": 7702, "host": "198.51.100.7"}) == \
        {"address": "198.51.100.7:7702", "listed": False}
    assert [(h, p) for h, p, _ in hub.dials.calls] == [("198.51.100.7", 7702)]
    assert _peers(hub) == [] and g.announced == {}
    hub.dials.answer(ALICE)
    assert _peers(hub) == ["198.51.100.7:7702"]
    assert g.rpc_announce(alice, {"port": 7702, "host": "198.51.100.7"})["listed"] is True
    assert g.rpc_announce(alice, {"port": 7702})["listed"] is False    # her connecting address: proven anew
    assert len(hub.dials.calls) == 2 and _peers(hub) == ["198.51.100.7:7702"]   # kept until the new one is proven
    hub.dials.answer(ALICE)
    assert _peers(hub) == ["203.0.113.5:7702"] and g.counters["announce_unproven"] == 0


def test_another_key_at_the_address_is_not_listed_but_logged_and_counted(hub, logged):
    """Bob names carol's node's address: the key there is carol's, so bob's announcement is never listed;
    the node logs it naming bob, the address and the key met, counts it in status and the metrics, and tells
    bob nothing more than "not listed". Announcing again within RETRY_AFTER dials nothing."""
    bob = hub.conn(BOB)
    g = hub.gossip
    g.rpc_announce(bob, {"port": 7702, "host": "198.51.100.7"})
    hub.dials.answer(CAROL)
    assert _peers(hub) == [] and g.announced == {}
    assert g.counters["announce_unproven"] == 1 and hub.factory.counters["gossip.announce_unproven"] == 1
    assert neighbours_report(g, None, {}, {}, 0.0)["events"]["announce_unproven"] == 1
    lines = [x for x in logged if "not listing" in x]
    assert len(lines) == 1 and BOB in lines[0] and "198.51.100.7:7702" in lines[0] and CAROL in lines[0]
    assert g.rpc_announce(bob, {"port": 7702, "host": "198.51.100.7"}) == \
        {"address": "198.51.100.7:7702", "listed": False}
    assert g.rpc_announce(bob, {"port": 7703})["listed"] is False
    assert len(hub.dials.calls) == 1                       # resting: no dial, whatever the address
    hub.clock.advance(RETRY_AFTER)
    g.rpc_announce(bob, {"port": 7703})
    assert len(hub.dials.calls) == 2


def test_a_proof_that_gets_no_answer_in_time_is_cancelled_and_not_listed(hub, logged):
    """The address answers nothing: after PROOF_TIMEOUT seconds the dial is cancelled, the address is not
    listed, and the timeout is logged and counted."""
    g = hub.gossip
    g.rpc_announce(hub.conn(ALICE), {"port": 7702, "host": "198.51.100.7"})
    dial = hub.dials.calls[0][2]
    hub.clock.advance(PROOF_TIMEOUT - 0.1)
    assert not dial.called and not g.proofs.resting
    hub.clock.advance(0.1)
    assert dial.called and _peers(hub) == [] and g.counters["announce_unproven"] == 1
    assert [x for x in logged if "not listing" in x and ALICE in x and f"within {PROOF_TIMEOUT:g} seconds" in x]
    assert not hub.clock.getDelayedCalls()


def test_announcing_again_during_a_proof_dials_once(hub):
    """Alice announces twice (the second time another address) while the first proof runs: one dial; the
    second answer names the address under proof, which is the one listed once her key answers."""
    alice = hub.conn(ALICE)
    g = hub.gossip
    g.rpc_announce(alice, {"port": 7702, "host": "198.51.100.7"})
    assert g.rpc_announce(alice, {"port": 9999, "host": "192.0.2.1"}) == \
        {"address": "198.51.100.7:7702", "listed": False}
    assert len(hub.dials.calls) == 1
    hub.dials.answer(ALICE)
    assert _peers(hub) == ["198.51.100.7:7702"]


def test_an_announcer_gone_before_its_proof_ends_is_neither_listed_nor_counted(hub, logged):
    """Alice disconnects while her address is being proven: the dial is cancelled, nothing is listed,
    counted or logged against her address; she rests as after a failure, so reconnecting and announcing
    in a loop does not dial without a bound."""
    alice = hub.conn(ALICE)
    g = hub.gossip
    g.rpc_announce(alice, {"port": 7702, "host": "198.51.100.7"})
    alice.close()
    assert hub.dials.calls[0][2].called and hub.clock.getDelayedCalls() == []
    assert g.announced == {} and g.counters["announce_unproven"] == 0 and not [x for x in logged if "listing" in x]
    g.rpc_announce(hub.conn(ALICE), {"port": 7702, "host": "198.51.100.7"})
    assert len(hub.dials.calls) == 1
    hub.clock.advance(RETRY_AFTER)
    g.rpc_announce(hub.conn(ALICE), {"port": 7702, "host": "198.51.100.7"})
    assert len(hub.dials.calls) == 2


def test_a_node_that_cannot_dial_lists_nobody():
    """Without a dial there is no proof, so no announcement is taken (none is listed unchecked)."""
    g = Gossip(MemoryStore(), Clock())
    with pytest.raises(ValueError, match="lists no full peers"):
        g.rpc_announce(_Conn(SimpleNamespace(connections=set()), ALICE), {"port": 7702})
    assert g.announced == {}
