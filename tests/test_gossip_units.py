"""The gossip building blocks without a network: in-flight registry, announce suppression, scores,
the neighbour set, and the lazy puller's decisions over a fake connection."""

from __future__ import annotations

import collections
import json

from twisted.internet.task import Clock

from shiftpeer.gossip.inflight import GossipPuller, InFlight, Seen
from shiftpeer.gossip.neighbours import NeighbourSet
from shiftpeer.gossip.scores import PeerScores, Refusal, strikes_relay
from shiftpeer.sync.manager import ReplicationManager
from shiftpeer.sync.testing import MemoryStore, RecordingConnection


def test_inflight_claims_once_and_wakes_waiters_on_each_state_change():
    """A revision is claimed by one owner; waiters are woken when it is verified, released or stored."""
    reg = InFlight()
    a, b = object(), object()
    assert reg.claim(("d", "1-x"), a, 0.0) and not reg.claim(("d", "1-x"), b, 0.0) and reg.claim(("d", "1-x"), a, 0.0)
    woken = []
    reg.wait(("d", "1-x"), lambda: woken.append("verified"))
    reg.verified(b, [{"id": "d", "rev": "1-x"}])          # not the owner: nothing happens
    assert woken == [] and reg.state(("d", "1-x")).doc is None
    reg.verified(a, [{"id": "d", "rev": "1-x"}])
    assert woken == ["verified"] and reg.state(("d", "1-x")).doc == {"id": "d", "rev": "1-x"}
    reg.wait(("d", "1-x"), lambda: woken.append("released"))
    reg.release(a, [("d", "1-x")])
    assert woken[-1] == "released" and reg.owner(("d", "1-x")) is None and reg.counters["released"] == 1
    reg.wait(("d", "1-x"), lambda: woken.append("free"))   # nothing in flight: called at once
    assert woken[-1] == "free" and len(reg) == 0


def test_seen_leaves_out_what_the_neighbour_holds_and_is_bounded():
    """Changes whose leaf revisions the neighbour announced are not announced back; memory is capped."""
    seen = Seen(limit=3)
    conn = collections.namedtuple("C", "peer_id")("p")
    seen.note("p", [("a", ["1-a"]), ("b", ["1-b", "2-b"])])
    ch = [["a", ["1-a"]], ["b", ["2-b", "3-b"]], ["c", ["1-c"]]]
    assert seen.announce_filter(conn, "master", ch) == [["b", ["2-b", "3-b"]], ["c", ["1-c"]]]
    seen.note("p", [("d", ["1-d"])])
    assert not seen.has("p", "a", ["1-a"]) and seen.has("p", "d", ["1-d"])
    assert seen.announce_filter(collections.namedtuple("C", "peer_id")("q"), "master", ch) == ch


def test_scores_ban_on_forgery_and_persist(tmp_path):
    """A connection we closed for forged data bans its peer, and the ban survives a restart."""
    path = str(tmp_path / "bans.json")
    clock = Clock()
    clock.advance(1000)
    scores = PeerScores(path, now=clock.seconds)
    conn = collections.namedtuple("C", "peer_id close_reason")("evil", {"code": "forged", "msg": "bad sig"})
    assert scores.closed(conn) and scores.banned("evil")
    assert json.load(open(path))["evil"] == {"why": "forged: bad sig", "since": 1000}
    assert PeerScores(path).listing() == [{"peer_id": "evil", "why": "forged: bad sig", "since": 1000}]
    ok = collections.namedtuple("C", "peer_id close_reason")("fine", None)
    assert not scores.closed(ok) and not scores.banned("fine")
    assert [scores.strike("slow", "slow") for _ in range(5)] == [""] * 5 and scores.score("slow") == 5
    scores.strike("slow", "delivered")
    assert scores.score("slow") == 0 and not scores.banned("slow")
    assert [scores.strike("liar", "refused") for _ in range(3)][-1] == "ban" and scores.banned("liar")


def test_scores_read_the_older_ban_file_and_unban_clears_memory_and_file(tmp_path):
    """A ban list written before bans had a time ({peer: why}) still bans; unban of one peer, then of all,
    removes them from memory and from the file, and a restart sees them lifted."""
    path = tmp_path / "gossip-bans.json"
    path.write_text(json.dumps({"a": "3 refused documents", "b": "forged: x", "c": "invalid: y"}))
    scores = PeerScores(str(path))
    assert scores.listing()[0] == {"peer_id": "a", "why": "3 refused documents", "since": None}
    scores.strike("a", "slow")
    assert scores.unban(["a", "nobody"]) == ["a"] and not scores.banned("a") and scores.score("a") == 0
    assert set(json.load(open(path))) == {"b", "c"} and not PeerScores(str(path)).banned("a")
    assert scores.unban() == ["b", "c"] and scores.bans == {}
    assert json.load(open(path)) == {} and PeerScores(str(path)).bans == {}


def test_a_protected_peer_is_never_struck_or_banned_and_its_old_ban_is_lifted(tmp_path):
    """The node's own hub: refused strikes, a forged close and ban() leave it unbanned; protecting a peer
    that a ban list already names lifts that ban (in the file too)."""
    path = str(tmp_path / "bans.json")
    PeerScores(path).ban("hub", "3 refused documents")
    scores = PeerScores(path)
    assert scores.protect("hub") and not scores.banned("hub") and not PeerScores(path).banned("hub")
    assert [scores.strike("hub", "refused") for _ in range(5)] == [""] * 5 and scores.score("hub") == 0
    conn = collections.namedtuple("C", "peer_id close_reason")("hub", {"code": "forged", "msg": "bad sig"})
    scores.ban("hub", "anything")
    assert not scores.closed(conn) and not scores.banned("hub") and not PeerScores(path).banned("hub")


def test_only_rule_refusals_strike_the_relay():
    """A stateless rule broken strikes; an author conflict (depends on what we hold) and a plain reason
    (unknown kind) do not."""
    assert strikes_relay(Refusal("the signed audience is not public", "rule"))
    conflict = Refusal("author differs", "conflict", held="alice", offered="mallory")
    assert not strikes_relay(conflict) and conflict == "author differs" and conflict.details["held"] == "alice"
    assert not strikes_relay("some reason")


class _Service:
    def __init__(self, address):
        self.address, self.connection, self.stopped = address, None, False


def test_neighbour_set_dials_up_to_low_and_replaces_dead_ones():
    """The set dials candidates until `low` are live or pending, drops a dead one after `dead_after`
    seconds and dials a replacement; banned peers are forgotten."""
    clock = Clock()
    dialled, live = [], [0]
    scores = PeerScores()

    def dial(address):
        dialled.append(_Service(address))
        return dialled[-1]

    ns = NeighbourSet(clock, dial, lambda s: setattr(s, "stopped", True), lambda: live[0], scores,
                      low=2, high=3, dead_after=10, own=["me:1"])
    ns.add(["me:1", "a:1", "b:1", "c:1"])
    ns.tick()
    assert len(dialled) == 2 and "me:1" not in {s.address for s in dialled}
    first, second = dialled
    first.connection = collections.namedtuple("C", "peer_id")("pa")
    live[0] = 1
    clock.advance(11)
    ns.tick()
    assert second.stopped and len(dialled) == 3 and dialled[2].address not in (first.address, second.address)
    scores.ban("pa", "forged")
    ns.tick()
    assert first.stopped and first.address not in ns.candidates


def _puller(store, peer, reg, clock, rid=1, store_batch=None):
    mgr = ReplicationManager(RecordingConnection(peer), store, None, lambda docs: [True] * len(docs), collections.Counter(),
                             store_batch=store_batch)
    p = GossipPuller(mgr, rid, "master", "master", True, inflight=reg, seen=Seen(), clock=clock, timeout=2.0)
    mgr.pullers[rid] = p
    p.start()
    p.on_accept({"epoch": "e", "since": 0})
    return p


def _needs(p):
    return [m["want"] for m in p.mgr.conn.sent if m["t"] == "need"]


def test_lazy_puller_asks_one_neighbour_then_borrows_or_falls_back_on_timeout():
    """Two pullers see the same revision: only the first asks for it, the second asks for nothing once
    the first has it; a puller whose owner never answers asks its own feeder after the timeout."""
    store, clock, reg = MemoryStore(), Clock(), InFlight()
    a, b, c = (_puller(store, peer, reg, clock) for peer in ("A", "B", "C"))
    ch = [["d1", ["1-aa"]]]
    a.on_changes({"seq": 1, "ch": ch})
    b.on_changes({"seq": 5, "ch": ch})
    assert _needs(a) == [[["d1", ["1-aa"]]]] and _needs(b) == []
    doc = {"id": "d1", "rev": "1-aa", "deleted": False, "body": {"author": "x"}, "sig": b"s", "history": ["1-aa"]}
    a.on_docs({"seq": 1, "docs": [doc], "more": False})
    clock.advance(0)
    assert _needs(b) == [[]]          # stored by A meanwhile (or borrowed, with a slower store): not asked
    assert store.database("master").get("d1") is not None and len(reg) == 0

    c.on_changes({"seq": 1, "ch": [["d2", ["1-bb"]]]})
    b.on_changes({"seq": 6, "ch": [["d2", ["1-bb"]]]})
    assert _needs(b) == [[]]
    clock.advance(2.0)
    assert _needs(b)[-1] == [["d2", ["1-bb"]]] and reg.counters["timeouts"] == 1


def test_lazy_puller_asks_itself_when_the_owner_fails():
    """When the neighbour that was asked for a body disconnects, a waiting puller asks its own at once."""
    store, clock, reg = MemoryStore(), Clock(), InFlight()
    a, b = _puller(store, "A", reg, clock), _puller(store, "B", reg, clock)
    a.on_changes({"seq": 1, "ch": [["d", ["1-cc"]]]})
    b.on_changes({"seq": 1, "ch": [["d", ["1-cc"]]]})
    from shiftpeer.sync.replication import SyncError

    a.fail(SyncError("disconnected", "gone"))
    clock.advance(0)
    assert _needs(b) == [[["d", ["1-cc"]]]] and reg.owner(("d", "1-cc")) is b


def test_lazy_puller_borrows_a_verified_body_still_being_stored():
    """While the first puller's batch is verified but not yet stored, the second takes the verified
    document into its own batch instead of asking its feeder, and stores it itself."""
    from twisted.internet.defer import Deferred

    store, clock, reg = MemoryStore(), Clock(), InFlight()
    a = _puller(store, "A", reg, clock, store_batch=lambda *args: Deferred())
    b = _puller(store, "B", reg, clock)
    doc = {"id": "d", "rev": "1-dd", "deleted": False, "body": {"author": "x"}, "sig": b"s", "history": ["1-dd"]}
    a.on_changes({"seq": 1, "ch": [["d", ["1-dd"]]]})
    a.on_docs({"seq": 1, "docs": [doc], "more": False})
    b.on_changes({"seq": 1, "ch": [["d", ["1-dd"]]]})
    assert _needs(b) == [[]] and reg.counters["borrowed"] == 1
    assert store.database("master").get("d").rev == "1-dd"


def _doc(docid, rev):
    return {"id": docid, "rev": rev, "deleted": False, "body": {"author": "x"}, "sig": b"s", "history": [rev]}


def test_lazy_patience_runs_from_the_owners_request_not_from_the_waiting_batch():
    """A batch that waited for one owner does not give up on a second owner that asked a moment ago: it
    waits for that owner's own patience, borrows nothing twice, strikes no one. (Under load, 96% of the
    lazy timeouts in `scripts/bench gossip` were such fetches, asked < 2 s before, over half < 0.5 s.)"""
    store, clock, reg = MemoryStore(), Clock(), InFlight()
    a, b, c = (_puller(store, peer, reg, clock) for peer in ("A", "B", "C"))
    strikes = []
    b.on_strike = lambda peer, why: strikes.append((peer, why))
    a.on_changes({"seq": 1, "ch": [["d1", ["1-aa"]]]})                    # A asks for d1 at 0
    b.on_changes({"seq": 1, "ch": [["d1", ["1-aa"]], ["d2", ["1-bb"]]]})  # B waits for A
    clock.advance(1.5)
    c.on_changes({"seq": 1, "ch": [["d2", ["1-bb"]]]})                    # C asks for d2 at 1.5
    clock.advance(0.4)
    a.on_docs({"seq": 1, "docs": [_doc("d1", "1-aa")], "more": False})
    clock.advance(0)
    assert _needs(b) == []                 # d1 is here; d2 is C's, asked 0.4 s ago: B waits on
    clock.advance(0.1)                     # B's batch is 2 s old, C's request is not
    assert _needs(b) == [] and reg.counters["timeouts"] == 0 and strikes == []
    clock.advance(0.3)
    c.on_docs({"seq": 1, "docs": [_doc("d2", "1-bb")], "more": False})
    clock.advance(0)
    assert _needs(b) == [[]] and reg.counters["timeouts"] == 0 and strikes == []
    assert b._timers == {} and b._wakes == {} and clock.getDelayedCalls() == []


def test_lazy_withheld_body_costs_the_patience_from_the_request_and_a_batch_waits_boundedly():
    """An owner that never delivers is bypassed ``timeout`` seconds after its own request (not after the
    waiter's arrival) and struck as slow; a batch whose revisions keep being claimed by others gives up on
    all of them ``MAX_WAIT`` patiences after it arrived."""
    store, clock, reg = MemoryStore(), Clock(), InFlight()
    a, b, c, d = (_puller(store, peer, reg, clock) for peer in ("A", "B", "C", "D"))
    strikes = []
    b.on_strike = lambda peer, why: strikes.append((peer, why))
    a.on_changes({"seq": 1, "ch": [["w", ["1-ww"]]]})                     # A asks at 0, never answers
    clock.advance(0.5)
    b.on_changes({"seq": 1, "ch": [["w", ["1-ww"]]]})
    clock.advance(1.499)
    assert _needs(b) == []
    clock.advance(0.001)                   # 2.0 s after A's request, 1.5 s after B's batch came
    assert _needs(b) == [[["w", ["1-ww"]]]] and strikes == [("A", "slow")] and reg.counters["timeouts"] == 1

    ch = [["k1", ["1-k1"]], ["k2", ["1-k2"]], ["k3", ["1-k3"]]]
    a.on_changes({"seq": 2, "ch": [ch[0]]})                                # A asks for k1 at 2.0
    b.on_changes({"seq": 2, "ch": ch})                                     # B's batch arrives at 2.0
    clock.advance(1.9)
    c.on_changes({"seq": 1, "ch": [ch[1]]})                                # C asks for k2 at 3.9
    clock.advance(0.1)
    assert len(_needs(b)) == 1             # k1 is late, but C asked for k2 only 0.1 s ago
    clock.advance(1.8)
    d.on_changes({"seq": 1, "ch": [ch[2]]})                                # D asks for k3 at 5.8
    clock.advance(0.199)
    assert len(_needs(b)) == 1             # k2 is late now, but D asked for k3 only 0.199 s ago...
    clock.advance(0.001)                   # ...and at 6.0 the batch is MAX_WAIT x 2 s old: it asks for all
    assert _needs(b)[-1] == ch and reg.counters["timeouts"] == 4
    assert strikes[1:] == [("A", "slow"), ("C", "slow"), ("D", "slow")]
    assert b._timers == {} and b._wakes == {}


def test_lazy_wait_for_a_withheld_body_ends_at_its_owners_deadline_when_the_others_arrive():
    """A batch waiting on a silent owner (asked at 0) and a young one (asked at 1.5) asks for the silent
    owner's revision at 2.0, as soon as the young one has delivered: not at its own arrival + 2 s."""
    store, clock, reg = MemoryStore(), Clock(), InFlight()
    a, b, c = (_puller(store, peer, reg, clock) for peer in ("A", "B", "C"))
    a.on_changes({"seq": 1, "ch": [["k1", ["1-k1"]]]})                     # A asks at 0, never answers
    clock.advance(1.5)
    c.on_changes({"seq": 1, "ch": [["k2", ["1-k2"]]]})                     # C asks at 1.5
    clock.advance(0.1)
    b.on_changes({"seq": 1, "ch": [["k1", ["1-k1"]], ["k2", ["1-k2"]]]})  # B arrives at 1.6
    clock.advance(0.1)
    c.on_docs({"seq": 1, "docs": [_doc("k2", "1-k2")], "more": False})
    clock.advance(0.299)
    assert _needs(b) == []
    clock.advance(0.001)                   # 2.0: A's request is a patience old
    assert _needs(b) == [[["k1", ["1-k1"]]]] and reg.counters["timeouts"] == 1
    assert reg.owner(("k1", "1-k1")) is a  # A keeps its claim; B's copy is its own
