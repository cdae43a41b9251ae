"""A comment answers a shift: one whose ``shift`` names a comment is refused everywhere, with ``not_a_shift``.

Comments are a shift's thread (docs/flows.md, *Comments*: ``comment SHIFT_ID TEXT``, ``POST
/v1/shifts/{id}/comments``, the ``thread`` of a shift). Yet the node's ``comment`` took any id it could find,
a comment's too, and the hub took the reply: it was in no thread of the shift (a thread is the comments whose
``shift`` is that id), only the answered comment's author and its other repliers were notified (not the
shift's author), and its places were the comment's. Now the local API refuses it before writing anything, the
hub refuses one pushed or delivered (the same rules; a push's refusal is logged, counted and told to the pusher, as its other refusals), and a
full peer refuses one gossiped into its ``master`` (logged and counted, no strike)."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet.task import Clock

import flowmesh
from flowmesh import eventually
from shiftpeer.identity import NodeKey
from shiftpeer.ids import bound_id
from shiftpeer.roles.fullpeer import MASTER, firehose_check
from shiftpeer.roles.names import FlowError
from shiftpeer.sync.refusedrevs import RefusedRev
from shiftpeer.sync.testing import MemoryStore
from tests.helpers_identity import signed_doc
from tests import test_gossip_bans, test_hub_token_rebuild
from tests.test_gossip_refused import codes, fired, gossip_on, shift

mesh, logged, hub = flowmesh.mesh, test_gossip_bans.logged, test_hub_token_rebuild.hub   # the fixtures
PUBLIC = {"public": True, "groups": [], "to": []}


def reply_to(key: NodeKey, answered_id: str, text: str = "re") -> dict:
    """A comment by ``key`` whose ``shift`` is ``answered_id``, signed as public."""
    now = time.time()
    return signed_doc(key, bound_id(key.account_id, "cm-"), {
        "type": "comment", "shift": answered_id, "text": text, "author": key.account_id, "created": now,
        "modified": now, "audience": PUBLIC})


def comments_by(user) -> list:
    return [d for name in ("user/public", "user/private") for d in user.store.database(name).docs_since(0)
            if d.body.get("type") == "comment"]


@pytest_twisted.ensureDeferred
async def test_a_reply_to_a_comment_is_refused_by_the_node_and_by_the_hub(mesh, logged):
    await mesh.start(users=("alice", "bob", "carol"))
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid = alice.new_shift("https://example.org/answered")
    await alice.publish(sid, public=True)
    await eventually(lambda: sid in mesh.hub.ids("master"), "alice's shift in master")
    made = await bob.flows.comment(sid, "a comment")
    await eventually(lambda: mesh.hub.db("shared").get(made["id"]) is not None, "bob's comment in shared")

    # the node: nothing written
    with pytest.raises(FlowError) as refused:
        await carol.flows.comment(made["id"], "a reply")
    assert refused.value.code == "not_a_shift" and made["id"] in refused.value.message
    assert comments_by(carol) == []

    # the hub: one carol's node signs and pushes anyway is refused, logged and counted, and the pusher told
    reply = reply_to(carol.key, made["id"])
    carol.store.database("user/public").bulk_replicated([reply])
    push = carol.flows.link.push
    await eventually(lambda: push.refused_count, "the hub's refusal reaches carol")
    why = f"a comment answers a shift, and {made['id']} is a comment"
    assert push.refused == [RefusedRev(reply["id"], reply["rev"], "not_a_shift", why)]
    assert carol.factory.counters["revs_refused_by_peer"] == 1 and mesh.hub.factory.counters["revs_refused"] == 1
    assert any(f"refused {reply['id']} {reply['rev']} from {carol.account} into master: {why}" in line
               for line in logged)
    assert reply["id"] not in mesh.hub.ids("master") and mesh.hub.db("shared").get(reply["id"]) is None

    # an edit of that reply is refused before anything is written (no place would keep it)
    with pytest.raises(FlowError) as edit:
        await carol.flows.edit_comment(reply["id"], "edited")
    assert edit.value.code == "not_a_shift"
    assert carol.store.database("user/public").get(reply["id"]).rev == reply["rev"]

    # a comment on the shift still goes through, and notifies the shift's author and bob
    later = await carol.flows.comment(sid, "on the shift")
    await eventually(lambda: later["id"] in mesh.hub.ids("master"), "carol's comment on the shift in master")
    await eventually(lambda: {m.get("comment") for m in alice.flows.messages()["rows"]} >= {later["id"]},
                     "alice notified of carol's comment")
    assert not [m for who in (alice, bob) for m in who.flows.messages()["rows"] if m.get("comment") == reply["id"]]


def test_a_full_peer_keeps_a_gossiped_reply_to_a_comment_out_of_its_master(logged):
    """A gossiped comment whose ``shift`` is a comment its ``master`` holds is refused ("not_a_shift", told to
    the neighbour), logged and counted with the other refusals, and strikes no one (relays of older versions
    did not check it); a comment on the shift, and one on a document the node does not hold, pass."""
    alice, bob, carol = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    store, clock = MemoryStore(), Clock()
    g, db = gossip_on(store, clock, firehose_check)
    answered = shift(alice, "s1")
    comment = reply_to(bob, "s1", "on the shift")
    fired(g.wrap_store_batch(None)(store, db, [answered, comment], "relay", MASTER, {"seq": 2, "epoch": "e"}))
    reply, elsewhere = reply_to(carol, comment["id"]), reply_to(carol, "not-here-yet")
    result = fired(g.wrap_store_batch(None)(store, db, [reply, elsewhere], "relay", MASTER, {"seq": 4, "epoch": "e"}))
    assert codes(result) == [(reply["id"], "not_a_shift")]
    assert db.get(comment["id"]) is not None and db.get(reply["id"]) is None and db.get(elsewhere["id"]) is not None
    assert g.counters["refused"] == 1
    assert any(f"refused {reply['id']} {reply['rev']} from gossip neighbour relay: a comment answers a shift" in line
               for line in logged)
    clock.advance(0)
    assert g.scores.score("relay") == 0


def test_a_relay_hands_in_no_reply_to_a_comment_either(hub):
    """A configured relay (a federated hub) may hand in comments by authors the hub does not know, whose
    visibility it does not ask; what a comment answers is asked of every comment: a reply to a comment is
    refused, a comment on the shift is taken."""
    alice, bob, carol, relay = (test_hub_token_rebuild.Party(n) for n in ("alice", "bob", "carol", "relay"))
    hub.rules.relays.add(relay.account)
    answered = alice.shift(PUBLIC)
    comment = bob.comment(answered, PUBLIC, "on the shift")
    test_hub_token_rebuild.hand_in(hub, "master", answered, comment)
    master = hub.store.database("master")
    reply = reply_to(carol.key, comment["id"])
    assert hub.rules.check(master, "master", relay.account, reply).code == "not_a_shift"
    assert hub.rules.check(master, "master", relay.account, carol.comment(answered, PUBLIC)) is None
    assert hub.rules.check(master, "master", relay.account, carol.tombstone(reply)) is None   # one made before
