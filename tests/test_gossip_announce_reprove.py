"""A proven announced address was proven again only when its node announced a new one: a node that stopped
answering there (its listener gone, its address handed to another machine) stayed listed for every full
peer to dial for as long as its hub connection lasted. The node serving ``gossip.announce`` now proves a
listed address again about every ``reprove_every`` seconds (600 by default, drawn within 20% so proofs do
not bunch up) while its announcer stays connected, through the same proofs (one in flight, the timeout);
one that fails is unlisted, logged and counted (``announce_unlisted``). Deterministic (a Clock and a fake
dial), and real nodes over TLS on 127.0.0.1."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from shiftpeer.gossip.core import REPROVE_EVERY, REPROVE_JITTER
from shiftpeer.gossip.dialable import PRIVATE_ALL
from shiftpeer.gossip.proofs import PROOF_TIMEOUT
from tests import test_fullpeer_intake, test_gossip_federation
from tests.helpers_node import eventually
from tests.test_gossip_announce_proofs import ALICE, BOB, CAROL, _peers, make_hub
from tests.test_gossip_federation import hub_and_full_peer, registered

logged, started = test_fullpeer_intake.logged, test_gossip_federation.started
EARLIEST, LATEST = REPROVE_EVERY * (1 - REPROVE_JITTER), REPROVE_EVERY * (1 + REPROVE_JITTER)


def _connect(hub, peer: str):
    """A full peer's connection whose close reaches the Gossip as a real one's does (``connected`` hooks
    ``_closed`` on every firehose connection)."""
    conn = hub.conn(peer)
    conn.when_closed().addBoth(lambda _: hub.gossip._closed(conn))
    return conn


@pytest.fixture
def hub():
    """``make_hub`` (documentation addresses: private ones dialled), alice connected and listed at
    198.51.100.7:7702."""
    h = make_hub(private=PRIVATE_ALL)
    h.alice = _connect(h, ALICE)
    h.gossip.rpc_announce(h.alice, {"port": 7702, "host": "198.51.100.7"})
    h.dials.answer(ALICE)
    assert _peers(h) == ["198.51.100.7:7702"]
    return h


def test_a_listed_address_is_proven_again_while_its_node_stays_connected(hub, logged):
    """No dial before REPROVE_EVERY less the jitter; one by REPROVE_EVERY plus it, of the listed address;
    her key answers: still listed (no new log line), and the next proof follows the same way."""
    hub.clock.advance(EARLIEST - 0.01)
    assert len(hub.dials.calls) == 1
    hub.clock.advance(LATEST - EARLIEST)
    assert [(h, p) for h, p, _ in hub.dials.calls] == [("198.51.100.7", 7702)] * 2
    hub.dials.answer(ALICE)
    assert _peers(hub) == ["198.51.100.7:7702"] and not [x for x in logged if "listing" in x]
    hub.clock.advance(LATEST)
    assert len(hub.dials.calls) == 3


def test_a_listed_address_that_no_longer_answers_with_its_key_is_unlisted(hub, logged):
    """At the re-proof another key answers (the address went to another node): alice is unlisted (she stays
    connected), full peers asking are no longer given the address, and it is logged and counted; no further
    re-proof is scheduled."""
    hub.clock.advance(LATEST)
    hub.dials.answer(CAROL)
    g = hub.gossip
    assert _peers(hub) == [] and g.announced == {} and hub.alice in hub.factory.connections
    assert g.counters["announce_unlisted"] == 1 and g.counters["announce_unproven"] == 1
    assert hub.factory.counters["gossip.announce_unlisted"] == 1
    lines = [x for x in logged if "no longer listing" in x]
    assert len(lines) == 1 and ALICE in lines[0] and "198.51.100.7:7702" in lines[0] and CAROL in lines[0]
    assert hub.clock.getDelayedCalls() == []


def test_a_re_proof_that_gets_no_answer_in_time_unlists_the_address(hub):
    hub.clock.advance(LATEST)
    hub.clock.advance(PROOF_TIMEOUT)
    assert hub.dials.calls[-1][2].called and _peers(hub) == [] and hub.gossip.counters["announce_unlisted"] == 1


def test_a_failed_new_announcement_does_not_put_the_re_proof_off(hub):
    """Alice announces a new address that fails (she rests 60 s): the listed one is kept, and its re-proof
    still dials (a rest bounds the addresses an account picks, not the one the hub proved), so announcing
    bad addresses in a loop cannot keep a dead address listed."""
    alice, g = hub.alice, hub.gossip
    hub.clock.advance(EARLIEST - 5)
    g.rpc_announce(alice, {"port": 9999, "host": "192.0.2.1"})
    hub.dials.calls[-1][2].errback(ConnectionRefusedError())
    assert _peers(hub) == ["198.51.100.7:7702"] and g.proofs.resting
    hub.clock.advance(LATEST - EARLIEST + 5)
    assert hub.dials.calls[-1][:2] == ("198.51.100.7", 7702) and len(hub.dials.calls) == 3


def test_a_re_proof_due_while_a_new_announcement_is_proven_waits_for_it(hub):
    """The re-proof falls while the proof of a new address runs: no second dial in flight; the new address
    proven is listed and is the one proven next time."""
    alice, g = hub.alice, hub.gossip
    [due] = hub.clock.getDelayedCalls()          # the re-proof
    hub.clock.advance(due.getTime() - hub.clock.seconds() - 1)
    g.rpc_announce(alice, {"port": 7703, "host": "198.51.100.8"})
    hub.clock.advance(1)
    assert len(hub.dials.calls) == 2 and not due.active()
    hub.dials.answer(ALICE)
    assert _peers(hub) == ["198.51.100.8:7703"]
    hub.clock.advance(PROOF_TIMEOUT)
    assert len(hub.dials.calls) == 2
    hub.clock.advance(LATEST)
    assert hub.dials.calls[-1][:2] == ("198.51.100.8", 7703)


def test_a_node_that_disconnects_is_not_proven_again(hub):
    """Alice leaves: unlisted at once (as before), her re-proof timer is gone, and a re-proof under way
    when she leaves is cancelled without counting against her."""
    hub.alice.close()
    assert hub.clock.getDelayedCalls() == [] and hub.gossip.announced == {}
    hub.clock.advance(LATEST)
    assert len(hub.dials.calls) == 1
    bob = _connect(hub, BOB)
    hub.gossip.rpc_announce(bob, {"port": 7702, "host": "198.51.100.9"})
    hub.dials.answer(BOB)
    hub.clock.advance(LATEST)
    assert len(hub.dials.calls) == 3
    bob.close()
    assert hub.dials.calls[-1][2].called and hub.clock.getDelayedCalls() == []
    assert hub.gossip.counters["announce_unproven"] == 0 and hub.gossip.counters["announce_unlisted"] == 0


def test_a_host_name_is_resolved_again_at_each_re_proof():
    """node.example was proven at a global address; at the re-proof it resolves to the hub's LAN: nothing
    is dialled and the name is unlisted (a name cannot be pointed inward once it is listed)."""
    answers = [["8.8.8.8"], ["10.0.0.7"]]

    def resolve(host: str) -> Deferred:
        d: Deferred = Deferred()
        d.callback(answers.pop(0))
        return d

    hub = make_hub(resolve=resolve)
    g = hub.gossip
    g.rpc_announce(hub.conn(ALICE), {"port": 7702, "host": "node.example"})
    hub.dials.answer(ALICE)
    assert _peers(hub) == ["node.example:7702"]
    hub.clock.advance(LATEST)
    assert len(hub.dials.calls) == 1 and _peers(hub) == []
    assert g.counters["announce_undialable"] == 1 and g.counters["announce_unlisted"] == 1


def test_stopping_cancels_the_timers_and_proofs(hub):
    hub.clock.advance(LATEST)
    hub.gossip.stop()
    assert hub.dials.calls[-1][2].called and hub.clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_a_full_peer_that_stops_listening_is_unlisted_while_it_stays_connected(tmp_path, started, logged):
    """Real hub and full peer over TLS on 127.0.0.1, the hub proving listed addresses every second: the full
    peer is listed; it stops listening (its hub connection stays up); at the next re-proof the hub's dial is
    refused and the address leaves the list full peers are given."""
    hub, fp, ph, pf = hub_and_full_peer(tmp_path, started, "fp", reprove_every=1.0)
    gossip = hub.role("federation").gossip
    await registered(fp)
    await eventually(lambda: fp.account_id in gossip.announced, timeout=15)
    assert gossip.reprove_every == 1.0            # the node's setting (config.json "gossip" reprove_every)
    conn = fp.role("full-peer").hub_conn
    port = await fp.listeners[0].when_listening()
    await port.stopListening()
    await eventually(lambda: fp.account_id not in gossip.announced, timeout=15)
    assert conn in conn.factory.connections and gossip.counters["announce_unlisted"] == 1
    assert [x for x in logged if "no longer listing" in x and f"127.0.0.1:{pf}" in x and fp.account_id in x]
    assert hub.status()["gossip"]["events"]["announce_unlisted"] == 1
