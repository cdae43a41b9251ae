"""A comment goes only where the shift it answers went, not wherever that shift's signed audience claims.

A comment takes the shift's audience (docs/flows.md, *Comments*), and that audience is whatever the
shift's author signed. So carol, a registered user, signed a shift whose audience claimed "public" and
bob's group "club", and delivered it to bob's inbox alone: bob's reply, made in what was a private
exchange, went to the public firehose and into his club, where carol cannot publish. The hub now takes
a comment into a database only where the shift it answers is (its visibility in ``shared`` holds that
database's token), and a full peer makes a comment public only on a shift its ``master`` holds.
Real hub and users over TLS on 127.0.0.1.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted

from flowmesh import eventually as eventually_mesh, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.ids import bound_id
from shiftpeer.roles.names import FlowError
from tests.helpers_identity import signed_doc
from tests.helpers_node import eventually
from tests.test_gossip_federation import hub_and_full_peer, node, registered, started  # noqa: F401 (the fixture)
from tests.test_gossip_mesh import master_ids, publish

CLAIMED = {"public": True, "groups": ["club"], "to": ["bob"]}


def _shift_claiming(key, aud: dict) -> dict:
    """A shift signed by ``key`` whose audience claims ``aud``, as a ReplDoc for ``deliver``."""
    return signed_doc(key, bound_id(key.account_id), {
        "type": "shift", "space": "Notes", "href": "https://example.org/dm", "summary": "just us",
        "author": key.account_id, "created": time.time(), "audience": aud})


def _comments_in(mesh, dbname: str) -> set[str]:
    return {i for i in mesh.hub.ids(dbname) if mesh.hub.db(dbname).get(i).body.get("type") == "comment"}


@pytest_twisted.ensureDeferred
async def test_a_reply_to_a_shift_sent_only_to_me_stays_out_of_places_its_audience_claims(mesh):
    await mesh.start(users=("alice", "bob", "carol"))
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    await bob.flows.group("new", "club")
    await bob.flows.group("invite", "club", user="alice", level="read")
    await alice.flows.group("join", "club")
    shift = _shift_claiming(carol.key, CLAIMED)
    assert await carol.flows.link.deliver(shift, ["user:bob"]) == {"user:bob": "ok"}
    await eventually_mesh(lambda: shift["id"] in bob.feed_ids(), "the shift in bob's feed")

    made = await bob.flows.comment(shift["id"], "between you and me")
    assert made["targets"]["user:bob"] == "ok", made
    marker = bob.new_shift("https://example.org/later")   # user/public reaches master in order: after the reply
    await bob.publish(marker, public=True)
    await eventually_mesh(lambda: marker in mesh.hub.ids("master"), "bob's later public shift in master")
    # the reply went where the shift went (bob's inbox, and so carol sees it) and nowhere else
    assert made["id"] in _comments_in(mesh, "inbox/bob")
    assert made["id"] not in mesh.hub.ids("master")
    assert made["id"] not in _comments_in(mesh, "group/club"), made["targets"]
    assert (await carol.flows.link.call("get", {"ids": [made["id"]]}))["rows"]
    assert not (await alice.flows.link.call("get", {"ids": [made["id"]]}))["rows"]
    assert not (await alice.flows.link.call("query", {"filters": {"thread": shift["id"]}}))["rows"]


@pytest_twisted.ensureDeferred
async def test_a_full_peers_reply_to_a_shift_claiming_public_stays_out_of_its_master(tmp_path, started):  # noqa: F811
    """On a full peer a public comment enters the node's own ``master`` locally and is gossiped from there
    to every neighbour, which checks only that it is signed and public: the hub's check never sees it. So
    a full peer makes a comment public only on a shift its ``master`` holds (one the firehose took)."""
    hub, bob, ph, _ = hub_and_full_peer(tmp_path, started, "bob")
    carol = node(tmp_path / "carol", "carol", connect=f"127.0.0.1:{ph}", ca=str(tmp_path / "c" / "ca.pem"))
    started.append(carol)
    for n in (bob, carol):
        await registered(n)
    shift = _shift_claiming(carol.key, CLAIMED)
    assert await carol.role("flows").flows.link.deliver(shift, ["user:bob"]) == {"user:bob": "ok"}
    bob_feed = bob.store.database("user/feed")
    await eventually(lambda: bob_feed.get(shift["id"]) is not None, timeout=10)

    made = await bob.role("flows").flows.comment(shift["id"], "between you and me")
    marker = await publish(bob, "later")   # user/public reaches master in order: after the reply
    await eventually(lambda: marker in master_ids(bob), timeout=10)
    assert made["id"] not in master_ids(bob)
    assert made["audience"]["public"] is False, made
    await eventually(lambda: hub.store.database("inbox/bob").get(made["id"]) is not None, timeout=10)

    # a shift that says it is public alone, but is not in bob's master: no comment, rather than one to nowhere
    only_public = _shift_claiming(carol.key, {"public": True, "groups": [], "to": []})
    bob.store.database("user/feed").bulk_replicated([only_public])   # as a hostile hub could hand it over
    with pytest.raises(FlowError) as refused:
        await bob.role("flows").flows.comment(only_public["id"], "lost")
    assert refused.value.code == "not_public_here"
    assert not [d for d in bob.store.database("user/private").docs_since(0) if d.body.get("type") == "comment"
                and d.body.get("shift") == only_public["id"]]

    # a shift the firehose holds still gets a public reply
    public = await publish(carol, "open")
    await eventually(lambda: public in master_ids(bob), timeout=10)
    reply = await bob.role("flows").flows.comment(public, "a public answer")
    assert reply["audience"]["public"] is True, reply
    await eventually(lambda: reply["id"] in master_ids(hub), timeout=10)
