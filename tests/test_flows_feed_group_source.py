"""A ``group`` query answered from a node's own ``user/feed`` (a full peer always, any node while its hub is
away) shows what the hub's ``group/<g>`` brought, not whatever names the group in its signed audience: the
feed's pull of ``group/<g>`` gives its documents the ``group:<g>`` token (docs/flows.md, *Queries*). A full
peer's ``thread`` query shows a public comment only on a shift its ``master`` holds."""

from __future__ import annotations

import threading
import time

import pytest_twisted

import shiftpeer.roles.remote as remote
from flowmesh import eventually as eventually_mesh, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.identity import NodeKey
from shiftpeer.ids import bound_id
from shiftpeer.store.database import Database
from tests.helpers_identity import signed_doc
from tests.helpers_node import eventually
from tests.test_gossip_federation import hub_and_full_peer, registered, started  # noqa: F401 (the fixture)
from tests.test_gossip_mesh import master_ids, publish

CLUB = {"public": False, "groups": ["club"], "to": ["bob"]}


async def _group_ids(user, group: str = "club") -> list[str]:
    """The ids a ``group`` query answers with from the user's own feed (the hub is away or not asked)."""
    answer = await user.flows.query({"filters": {"group": group}})
    assert answer["source"] == "feed"
    return [r["id"] for r in answer["rows"]]


async def _offline(user) -> None:
    user.disconnect()
    await eventually_mesh(lambda: not user.flows.link.connected, f"{user.name} offline")


def _claiming(user, aud: dict) -> dict:
    """A shift by ``user`` whose signed audience is ``aud`` (naming a club it may not publish in), signed by
    hand as a node that skips its own checks would, as replication sends it."""
    now = 1795000000.0
    body = {"type": "shift", "space": "Notes", "href": "https://claim.example/", "domain": "claim.example",
            "summary": "not the club's", "content": {}, "author": user.account, "created": now, "modified": now,
            "audience": aud}
    return signed_doc(user.key, bound_id(user.account), body)


@pytest_twisted.ensureDeferred
async def test_an_inbox_shift_claiming_a_group_is_not_in_its_feed_answer(mesh):
    """Carol, not in club, sends bob a shift whose audience names club: it reaches his feed through his
    inbox, and his feed's club query (the hub away) leaves it out, as the hub's answer does; alice's club
    shift is in both."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    honest = await mesh.club_shift("https://club.example/")
    doc = _claiming(carol, CLUB)
    forged = doc["id"]
    result = await carol.flows.link.call("deliver", {"doc": doc, "targets": ["user:bob"]})
    assert result["user:bob"] == "ok"
    await eventually_mesh(lambda: forged in bob.feed_ids(), "the claiming shift in bob's feed")
    hub_answer = await bob.flows.query({"filters": {"group": "club"}})
    assert hub_answer["source"] == "shared" and [r["id"] for r in hub_answer["rows"]] == [honest]
    await _offline(bob)
    assert await _group_ids(bob) == [honest]
    assert alice.account != carol.account


@pytest_twisted.ensureDeferred
async def test_a_full_peers_public_shift_claiming_a_group_is_not_in_its_answer(mesh):
    """On a full peer, carol's public shift whose audience also names club arrives with the firehose; the
    peer's club query leaves it out, and shows alice's club shift."""
    await mesh.start(users=("alice", "carol"))
    alice, carol = mesh["alice"], mesh["carol"]
    fp = await mesh.add_user("bob", full_peer=True)   # club_shift's reader
    honest = await mesh.club_shift("https://club.example/")
    doc = _claiming(carol, {"public": True, "groups": ["club"], "to": []})
    carol.flows.publisher.stop()   # a node that skips its checks: nothing narrows the claim the hub refuses
    carol.store.database("user/public").bulk_replicated([doc])   # pushed to the hub's master, then gossiped
    forged = doc["id"]
    await eventually_mesh(lambda: forged in fp.feed_ids(), "the claiming shift in the full peer's feed")
    assert fp.feed().get(forged).body["audience"]["groups"] == ["club"]
    assert await _group_ids(fp) == [honest]
    assert await _group_ids(fp, "other") == []
    assert alice.account != carol.account


@pytest_twisted.ensureDeferred
async def test_a_group_shift_that_arrived_first_from_the_inbox_shows_once_the_group_sends_it(mesh, monkeypatch):
    """Alice sends a shift to club and to bob before bob joins club: it reaches bob's feed from his inbox
    only. Once he joins, the pull of group/club has nothing to send for it, yet tags it, and his feed's club
    query shows it. The tagging is a job of the store's writer thread, never a write in the reactor's
    (which would wait for a commit under way)."""
    threads: list[str] = []
    real = Database.add_vis_held

    def recording(self, docids, tokens):
        threads.append(threading.current_thread().name)
        return real(self, docids, tokens)

    monkeypatch.setattr(Database, "add_vis_held", recording)
    await mesh.start()
    alice, bob = mesh["alice"], mesh["bob"]
    await alice.flows.group("new", "club")
    sid = alice.new_shift("https://both.example/")
    await alice.publish(sid, groups=["club"], to=["bob"])
    await eventually_mesh(lambda: sid in bob.feed_ids(), "bob has it from his inbox")
    assert "group:club" not in bob.feed().get(sid).vis
    await alice.flows.group("invite", "club", user="bob", level="read")
    await bob.flows.group("join", "club")
    await eventually_mesh(lambda: "group:club" in bob.feed().get(sid).vis, "the group pull tags the shift bob holds")
    assert threads and set(threads) == {"shiftpeer-store-writer"}, threads
    await _offline(bob)
    assert await _group_ids(bob) == [sid]


@pytest_twisted.ensureDeferred
async def test_a_feed_pulled_before_tokens_were_kept_is_tagged_when_the_group_is_pulled_again(mesh, monkeypatch):
    """A node that pulled group/club before the feed kept its source (its checkpoint says nothing of
    tokens) compares the whole group again on its next pull and tags what it holds, sending nothing."""
    monkeypatch.setattr(remote, "feed_source", lambda dbname: {})   # the pull as it was before
    await mesh.start()
    bob = mesh["bob"]
    sid = await mesh.club_shift("https://old.example/")
    assert "group:club" not in bob.feed().get(sid).vis
    await _offline(bob)
    assert await _group_ids(bob) == []   # fails closed until the group is pulled again
    monkeypatch.undo()
    await bob.connect(mesh.hub)
    await eventually_mesh(lambda: "group:club" in bob.feed().get(sid).vis, "the renewed pull tags the old shift")
    pull = bob.flows.link.pulls["group/club"]
    await eventually_mesh(lambda: pull.is_caught_up, "caught up")
    assert pull.docs == 0
    await _offline(bob)
    assert await _group_ids(bob) == [sid]


def _public_comment(key, shift_id: str) -> dict:
    """A public comment by ``key`` on ``shift_id``, as a gossip neighbour may hand it over (signed, public)."""
    return signed_doc(key, bound_id(key.account_id, "cm-"), {
        "type": "comment", "shift": shift_id, "text": "seen it", "author": key.account_id,
        "created": time.time(), "modified": time.time(), "audience": {"public": True, "groups": [], "to": []}})


@pytest_twisted.ensureDeferred
async def test_a_full_peers_thread_leaves_out_a_public_comment_on_a_shift_its_master_does_not_hold(
        tmp_path, started):  # noqa: F811
    """On a full peer a public comment naming bob's club shift arrives through ``master`` (gossip checks only
    that it is signed and public; the hub would refuse it: its author cannot see the shift). Bob's thread
    query leaves it out, and still shows his own club comment and a public comment on a public shift."""
    hub, bob, _, _ = hub_and_full_peer(tmp_path, started, "bob")
    await registered(bob)
    flows = bob.role("flows").flows
    await flows.group("new", "club")
    club = bob.shifts.create({"space": "Notes", "href": "https://example.org/club", "summary": "club"})["id"]
    await flows.publish(club, groups=["club"])
    mine = await flows.comment(club, "club only")
    stranger = NodeKey.generate()
    sneaked = _public_comment(stranger, club)
    bob.store.database("master").bulk_replicated([sneaked])   # as a gossip neighbour hands it over
    feed = bob.store.database("user/feed")
    await eventually(lambda: feed.get(sneaked["id"]) is not None and feed.get(mine["id"]) is not None, timeout=10)
    thread = await flows.query({"filters": {"thread": club}})
    assert thread["source"] == "feed" and [r["id"] for r in thread["rows"]] == [mine["id"]]

    public = await publish(bob, "open")
    await eventually(lambda: public in master_ids(bob), timeout=10)
    open_reply = _public_comment(stranger, public)
    bob.store.database("master").bulk_replicated([open_reply])
    await eventually(lambda: feed.get(open_reply["id"]) is not None, timeout=10)
    assert [r["id"] for r in (await flows.query({"filters": {"thread": public}}))["rows"]] == [open_reply["id"]]
