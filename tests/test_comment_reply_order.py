"""A comment answering a comment shows nowhere, whatever order things arrived in and whoever took it.

Every place refuses a comment whose ``shift`` names a comment it holds (``not_a_shift``,
tests/test_comment_answers_a_shift.py). One that arrives before the comment it answers is taken, as a comment
whose shift has not arrived is (a full peer's gossip, a hub's relay), and older versions took any. So what
serves comments leaves such a reply out once the answered comment is there: a full peer's ``thread`` and
other queries from its feed, and the hub's queries, ``get`` and notifications; the hub's merge and its
tokens' rebuild give it no place (its author's token alone: they may still delete it). A thread query for a
comment's id answers an empty page, on the hub and from a node's feed alike."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest_twisted

from shiftpeer.identity import NodeKey
from shiftpeer.ids import bound_id
from shiftpeer.roles.fullpeer import MASTER, firehose_check
from shiftpeer.roles.tokenjudge import Judge
from tests.helpers_identity import signed_doc
from tests.helpers_node import eventually
from tests import test_gossip_federation, test_hub_token_rebuild
from tests.test_comment_answers_a_shift import reply_to
from tests.test_gossip_federation import hub_and_full_peer, registered
from tests.test_gossip_mesh import publish
from tests.test_hub_token_rebuild import PUBLIC, Party, hand_in, run_pass

hub = test_hub_token_rebuild.hub   # the fixture: a hub on a real store, not started
started = test_gossip_federation.started   # the fixture: nodes stopped with the test
EMPTY = {"rows": [], "next_cursor": None}


def public_comment(key: NodeKey, shift_id: str, text: str = "on the shift") -> dict:
    """A public comment by ``key`` on ``shift_id``, signed as a gossip neighbour hands it over."""
    now = time.time()
    return signed_doc(key, bound_id(key.account_id, "cm-"), {
        "type": "comment", "shift": shift_id, "text": text, "author": key.account_id, "created": now,
        "modified": now, "audience": PUBLIC})


async def gossiped(fp, *docs: dict) -> list:
    """Hand ``docs`` to the full peer's ``master`` as a gossip neighbour's batch: through the gossip layer's
    check (``firehose_check``) and store; returns what it refused."""
    gossip, master = fp.role("full-peer").gossip, fp.store.database(MASTER)
    gossip.pulls["relay"] = SimpleNamespace(db=master)   # the neighbour's pull, faked to its database
    try:
        refused = await gossip.wrap_store_batch(None)(fp.store, master, list(docs), "relay", MASTER,
                                                      {"seq": 1, "epoch": "e"})
    finally:
        del gossip.pulls["relay"]
    return refused or []


def ids(answer: dict) -> list[str]:
    return [r["id"] for r in answer["rows"]]


@pytest_twisted.ensureDeferred
async def test_a_reply_gossiped_before_the_comment_it_answers_shows_in_no_answer_once_it_arrives(
        tmp_path, started):
    """carol's public reply to dave's comment reaches bob's full peer first: the gossip check takes it (its
    master does not hold the comment yet). Once the comment arrives, bob's thread of the comment is empty, as
    the hub answers, his thread of the shift has the comment alone, and a query for comments leaves the reply
    out; his master still holds it (replicated content signed by others: nothing deletes it)."""
    _, bob, _, _ = hub_and_full_peer(tmp_path, started, "bob")
    await registered(bob)
    flows, feed = bob.role("flows").flows, bob.store.database("user/feed")
    sid = await publish(bob, "answered")
    await eventually(lambda: bob.store.database(MASTER).get(sid) is not None, timeout=10)
    dave, carol = NodeKey.generate(), NodeKey.generate()
    comment = public_comment(dave, sid)
    reply = reply_to(carol, comment["id"])

    assert await gossiped(bob, reply) == []   # taken: what it answers has not arrived
    assert await gossiped(bob, comment) == []
    await eventually(lambda: feed.get(reply["id"]) is not None and feed.get(comment["id"]) is not None, timeout=10)
    assert firehose_check(bob.store.database(MASTER), reply).code == "not_a_shift"   # refused from now on

    thread = await flows.query({"filters": {"thread": comment["id"]}})
    assert {k: thread[k] for k in EMPTY} == EMPTY and thread["source"] == "feed"
    assert ids(await flows.query({"filters": {"thread": sid}})) == [comment["id"]]
    assert ids(await flows.query({"filters": {"type": "comment"}})) == [comment["id"]]
    both = await flows.query({"filters": {"thread": [sid, comment["id"]], "type": "comment"}})
    assert ids(both) == [comment["id"]]
    assert bob.store.database(MASTER).get(reply["id"]).rev == reply["rev"]


def older_hubs_thread(hub) -> tuple[Party, dict, dict, dict]:
    """alice's public shift and bob's public comment on it, merged as a hub today merges them, and carol's
    public reply to bob's comment as an older hub took it: in ``master`` and in ``shared`` with the tokens its
    merge gave (its source's, its author's and those of the comment's record its audience names)."""
    alice, bob, carol = Party("alice"), Party("bob"), Party("carol")
    shift = alice.shift(PUBLIC)
    comment = bob.comment(shift, PUBLIC)
    hand_in(hub, "master", shift, comment)
    reply = reply_to(carol.key, comment["id"])
    hub.store.database("master").bulk_replicated([reply])
    shared = hub.store.database("shared")
    shared.bulk_replicated([reply], vis=["public", f"author:{carol.account}", *shared.get(comment["id"]).vis])
    return carol, shift, comment, reply


def answers(hub, who: Party, *queries: dict) -> list[list[str]]:
    return [ids(hub.queries.query(who.account, who.name, q)) for q in queries]


def test_a_reply_to_a_comment_an_older_hub_took_is_served_to_no_one_after_the_rebuild(hub):
    """The rebuild leaves carol's reply its author's token alone: no one finds it in the comment's thread,
    the shift's, a query for comments or ``get``, carol included (her node deletes it from its own copy); the
    comment and the shift are served as before, and the merge and the rebuild agree on every token."""
    carol, shift, comment, reply = older_hubs_thread(hub)
    dave = Party("dave")
    cp = run_pass(hub.store)
    shared = hub.store.database("shared")
    assert shared.get(reply["id"]).vis == [f"author:{carol.account}"] and cp["narrowed"] == 1
    assert hub.queries.places(reply["id"]) == set()
    for who in (dave, carol):
        assert hub.queries.query(who.account, who.name, {"filters": {"thread": comment["id"]}}) == EMPTY
        assert answers(hub, who, {"filters": {"thread": shift["id"]}}, {"filters": {"type": "comment"}}) == \
            [[comment["id"]], [comment["id"]]]
        assert ids(hub.queries.get(who.account, who.name, [reply["id"], comment["id"], shift["id"]])) == \
            [comment["id"], shift["id"]]
    assert [d.id for d in shared.docs_since(0) if Judge(hub.store, shared).unjustified(d)] == []


def test_before_the_rebuild_the_hubs_queries_leave_the_reply_out_already(hub):
    """Until the rebuild reaches it (it runs while the hub serves), or after an older version gave the tokens
    again, queries judge what a comment answers, not its tokens."""
    carol, shift, comment, reply = older_hubs_thread(hub)
    dave = Party("dave")
    assert "public" in hub.store.database("shared").get(reply["id"]).vis
    assert hub.queries.query(dave.account, dave.name, {"filters": {"thread": comment["id"]}}) == EMPTY
    assert answers(hub, dave, {"filters": {"type": "comment"}}) == [[comment["id"]]]
    assert ids(hub.queries.get(carol.account, carol.name, [reply["id"]])) == []


def test_a_relays_reply_merged_before_the_comment_it_answers_loses_its_places_when_it_arrives(hub):
    """A relay hands in carol's reply before bob's comment (nothing refuses it: the hub does not hold the
    comment yet), so the merge gives it ``public``; merging the comment takes that off, as the rebuild would,
    and it reaches no one. A reply merged in the same batch as the comment, after it, gets no place at all."""
    alice, bob, carol = Party("alice"), Party("bob"), Party("carol")
    shift = alice.shift(PUBLIC)
    hand_in(hub, "master", shift)
    comment, later = bob.comment(shift, PUBLIC), bob.comment(shift, PUBLIC, "another")
    early = reply_to(carol.key, comment["id"], "early")
    hand_in(hub, "master", early)
    shared = hub.store.database("shared")
    assert "public" in shared.get(early["id"]).vis
    hand_in(hub, "master", comment, later, reply_to(carol.key, later["id"], "same batch"))

    judge = Judge(hub.store, shared)
    assert [d.id for d in shared.docs_since(0) if judge.unjustified(d)] == []
    replies = [d for d in shared.docs_since(0) if d.body.get("author") == carol.account]
    assert len(replies) == 2 and all(d.vis == [f"author:{carol.account}"] for d in replies)
    dave = Party("dave")
    assert answers(hub, dave, {"filters": {"type": "comment"}}) == [[later["id"], comment["id"]]]
    assert hub.queries.query(dave.account, dave.name, {"filters": {"thread": comment["id"]}}) == EMPTY


def test_a_relays_reply_to_a_deleted_comment_is_refused_as_a_full_peer_refuses_it(hub):
    """A deleted comment is still no shift: the hub refuses a relay's reply to it (``not_a_shift``), as a full
    peer whose master holds the tombstone does, and the merge would give it no place."""
    alice, bob, carol, relay = Party("alice"), Party("bob"), Party("carol"), Party("relay")
    hub.rules.relays.add(relay.account)
    shift = alice.shift(PUBLIC)
    comment = bob.comment(shift, PUBLIC)
    hand_in(hub, "master", shift, comment)
    hand_in(hub, "master", bob.tombstone(comment))
    master = hub.store.database("master")
    assert master.get(comment["id"]).deleted
    reply = reply_to(carol.key, comment["id"])
    assert hub.rules.check(master, "master", relay.account, reply).code == "not_a_shift"
    assert firehose_check(master, reply).code == "not_a_shift"
