"""A gossip neighbour is told what was refused (deterministic: Clock, MemoryStore, in-memory TLS).

The gossip check (``Gossip.wrap_store_batch``) and the roles' intake (``_intake_store_batch``) leave
documents out of a gossiped batch; their ``store_batch`` fires with every (document, why) pair left out,
each with a short code, so the puller sends ``refused`` frames to the neighbour that sent them. The
strike and author-conflict decisions, the logs and the gossip counters stay as they were.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from shiftpeer.gossip.core import Gossip
from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc
from shiftpeer.roles.fullpeer import MASTER, FederationRole, FullPeerRole, firehose_check
from shiftpeer.roles.intake import KnownAuthors
from shiftpeer.roles.validation import HubRules
from shiftpeer.store.revs import compute_rev
from shiftpeer.sync import AllowAll, SyncFactory
from shiftpeer.sync.refusedrevs import RefusedRev
from shiftpeer.sync.testing import MemoryStore, accept_all, connect_pair, peer_id_of

NOT_PUBLIC = "the signed audience is not public"


def shift(key: NodeKey, sid: str, *, public: bool = True, summary: str = "s", parent: dict | None = None) -> dict:
    """A signed replicated shift by ``key`` (a new revision of ``parent`` when given)."""
    body = {"type": "shift", "space": "Notes", "href": f"https://example.org/{summary}", "summary": summary,
            "author": key.account_id, "created": 1795000000.0,
            "audience": {"public": public, "groups": [], "to": []}}
    rev = compute_rev(parent["rev"] if parent else None, False, body)
    return {"id": sid, "rev": rev, "deleted": False, "body": body, "sig": sign_doc(key, sid, rev, body, False),
            "history": [rev] + (parent["history"] if parent else [])}


def fired(d) -> list:
    out: list = []
    d.addBoth(out.append)
    assert len(out) == 1, "the store_batch Deferred has not fired"
    return out[0]


def codes(result) -> list[tuple[str, str]]:
    """(document id, reason code) of each pair a store_batch fired with."""
    return [(doc["id"], why.code) for doc, why in result]


def gossip_on(store: MemoryStore, clock: Clock, check, peer: str = "relay") -> tuple[Gossip, object]:
    """A Gossip whose pull from ``peer`` stores into ``store``'s master (the puller faked: only its db)."""
    g = Gossip(store, clock, check=check)
    db = store.database(MASTER)
    g.pulls[peer] = SimpleNamespace(db=db)
    return g, db


def test_the_gossip_check_fires_with_the_refused_documents_and_their_codes():
    """A gossip batch with a public shift, a non-public one and another author's revision of a shift held:
    the Deferred fires with the two refused documents, coded "audience" and "other_author", their
    Refusal kinds intact; only the public shift is stored; the non-public one strikes the relay (a rule),
    the author conflict does not; the counters are as before."""
    alice, mallory = NodeKey.generate(), NodeKey.generate()
    store, clock = MemoryStore(), Clock()
    g, db = gossip_on(store, clock, firehose_check)
    held = shift(alice, "held")
    db.bulk_replicated([held])
    ok, hidden = shift(alice, "ok"), shift(alice, "hidden", public=False)
    squatted = shift(mallory, "held", summary="mine now", parent=held)
    called = []
    sb = g.wrap_store_batch(lambda *a: called.append(a))   # gossip batches never reach the roles' inner
    result = fired(sb(store, db, [ok, hidden, squatted], "relay", MASTER, {"seq": 3, "epoch": "e"}))

    assert codes(result) == [("hidden", "audience"), ("held", "other_author")]
    assert [doc is d for (doc, _), d in zip(result, (hidden, squatted))] == [True, True]
    assert [why.kind for _, why in result] == ["rule", "conflict"] and result[0][1] == NOT_PUBLIC
    assert result[1][1].details == {"held": alice.account_id, "offered": mallory.account_id}
    assert called == []
    assert db.get("ok") is not None and db.get("hidden") is None and db.get("held").rev == held["rev"]
    assert db.get_checkpoint("relay", MASTER)["seq"] == 3
    clock.advance(0)
    assert g.scores.score("relay") == 1
    assert g.counters["refused"] == 2 and g.counters["author_conflict"] == 1


def test_a_gossip_batch_with_nothing_refused_and_other_batches_are_unchanged():
    """Nothing refused: the Deferred fires as the plain store does (no list); a batch that is not gossip
    goes to the inner store_batch, whose result comes back as it is."""
    alice = NodeKey.generate()
    store, clock = MemoryStore(), Clock()
    g, db = gossip_on(store, clock, firehose_check)
    inner_result = [({"id": "x", "rev": "1-a"}, "inner's")]
    sb = g.wrap_store_batch(lambda *a: succeed(inner_result))
    assert fired(sb(store, db, [shift(alice, "ok")], "relay", MASTER, {"seq": 1, "epoch": "e"})) is None
    assert fired(sb(store, db, [shift(alice, "p")], "relay", "user/public", {"seq": 1, "epoch": "e"})) is inner_result
    assert fired(sb(store, db, [shift(alice, "q")], "stranger", MASTER, {"seq": 1, "epoch": "e"})) is inner_result


class _Names:
    """The hub's answer to "which of these ids are registered" (AuthorNames.names_of)."""

    def __init__(self, registered: dict[str, str]) -> None:
        self.registered = registered

    def names_of(self, ids: list[str]):
        return succeed({i: self.registered.get(i) for i in ids})


def test_full_peer_intake_and_the_gossip_check_report_every_refusal_together():
    """On a full peer with a hub, a gossiped batch holds a stranger's shift (intake: "unregistered"), a
    registered author's non-public shift (gossip check: "audience") and a public one: the store_batch
    the node installs fires with both refusals, intake's first, and stores only the public shift; the
    intake refusal is counted as refused_unregistered and strikes no one."""
    bob, stranger = NodeKey.generate(), NodeKey.generate()
    store, clock = MemoryStore(), Clock()
    store.create_database(MASTER)
    role = FullPeerRole(SimpleNamespace())
    role.gossip, db = gossip_on(store, clock, firehose_check)
    role.known = KnownAuthors(_Names({bob.account_id: "bob"}))
    sb = role._intake_store_batch(role.gossip.wrap_store_batch(None))   # what install_sync puts in place
    docs = [shift(stranger, "theirs"), shift(bob, "hidden", public=False), shift(bob, "ok")]
    result = fired(sb(store, db, docs, "relay", MASTER, {"seq": 2, "epoch": "e"}))

    assert codes(result) == [("theirs", "unregistered"), ("hidden", "audience")]
    assert "not known to be registered" in result[0][1]
    assert sorted(c.id for c in db.changes()) == ["ok"]
    clock.advance(0)
    assert role.gossip.counters["refused_unregistered"] == 1 and role.gossip.counters["refused"] == 1
    assert role.gossip.scores.score("relay") == 1            # the non-public shift only


def test_intake_alone_reports_its_refusals_when_the_inner_store_refuses_nothing():
    """A batch whose only refusal is intake's fires with that refusal although the inner store_batch
    fires with no list; a batch from the node's own hub is taken whole and teaches its authors."""
    stranger, carol = NodeKey.generate(), NodeKey.generate()
    store, clock = MemoryStore(), Clock()
    store.create_database(MASTER)
    role = FullPeerRole(SimpleNamespace())
    role.gossip, db = gossip_on(store, clock, firehose_check)
    role.gossip.pulls["hub"] = role.gossip.pulls["relay"]
    role.known = KnownAuthors(_Names({}))
    role.hub_conn = SimpleNamespace(peer_id="hub")
    sb = role._intake_store_batch(role.gossip.wrap_store_batch(None))
    result = fired(sb(store, db, [shift(stranger, "theirs"), shift(carol, "c1")], "relay", MASTER,
                      {"seq": 1, "epoch": "e"}))
    assert codes(result) == [("theirs", "unregistered"), ("c1", "unregistered")]
    assert fired(sb(store, db, [shift(carol, "c2")], "hub", MASTER, {"seq": 1, "epoch": "e"})) is None
    result = fired(sb(store, db, [shift(carol, "c3"), shift(stranger, "again")], "relay", MASTER,
                      {"seq": 2, "epoch": "e"}))
    assert codes(result) == [("again", "unregistered")]
    assert sorted(c.id for c in db.changes()) == ["c2", "c3"]


class _Accounts:
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def name_of(self, account_id: str):
        return self.names.get(account_id)


def test_a_hubs_federation_intake_and_rules_report_every_refusal_together():
    """On a hub, a gossiped batch from a full peer that is not a relay holds an unregistered author's shift
    (intake: "unregistered"), a registered user's non-public shift (the hub's rules: "audience") and a
    public one: the store_batch fires with both refusals and stores the public shift."""
    bob, stranger = NodeKey.generate(), NodeKey.generate()
    store, clock = MemoryStore(), Clock()
    store.create_database(MASTER)
    rules = HubRules(_Accounts({bob.account_id: "bob"}), groups=None)
    role = FederationRole(SimpleNamespace())
    role.rules = rules
    role.gossip, db = gossip_on(store, clock, lambda db, doc: rules.check(db, MASTER, None, doc))
    sb = role._intake_store_batch(role.gossip.wrap_store_batch(None))
    docs = [shift(stranger, "theirs"), shift(bob, "hidden", public=False), shift(bob, "ok")]
    result = fired(sb(store, db, docs, "relay", MASTER, {"seq": 2, "epoch": "e"}))
    assert codes(result) == [("theirs", "unregistered"), ("hidden", "audience")]
    assert sorted(c.id for c in db.changes()) == ["ok"]
    assert role.gossip.counters["refused_unregistered"] == 1


def test_over_in_memory_tls_the_sending_neighbour_is_told_and_the_pull_records_it():
    """A gossip pull over a real in-memory TLS handshake: the neighbour's non-public shift is left out;
    the pull's Replication records it with its code, the neighbour's feeder counts it as refused by the
    peer, the public shift is stored and the connection stays up."""
    alice = NodeKey.generate()
    clock = Clock()
    src, dst = MemoryStore(), MemoryStore()
    src.create_database(MASTER)
    make = lambda store: SyncFactory(store, None, AllowAll(), reactor=clock, roles=("full-peer",),  # noqa: E731
                                     validator=accept_all, peer_id_of=peer_id_of)
    receiver, sender = make(dst), make(src)
    g = Gossip(dst, clock, check=firehose_check)
    g.install(receiver)
    pair = connect_pair(receiver, sender, clock)
    pair.pump.flush()
    hidden = shift(alice, "hidden", public=False)
    src.database(MASTER).bulk_replicated([shift(alice, "ok"), hidden])
    assert g.connected(pair.client)
    for _ in range(20):
        pair.pump.flush()
        clock.advance(0.1)
    rep = g.pulls[pair.client.peer_id].handle
    assert rep.is_caught_up
    assert rep.refused == [RefusedRev("hidden", hidden["rev"], "audience", NOT_PUBLIC)] and rep.refused_count == 1
    assert sender.counters["revs_refused_by_peer"] == 1 and receiver.counters["revs_refused"] == 1
    held = dst.database(MASTER)
    assert held.get("ok") is not None and held.get("hidden") is None
    assert not pair.client._closing and not pair.server._closing
