"""Author filters given as user names: a full peer (which answers from its own feed, where documents
name authors by account id) asks the hub for the account, or refuses clearly; never an empty answer
that looks like "no shifts"."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError


async def _ids(user, **q) -> list[str]:
    return [r["id"] for r in (await user.flows.query(q))["rows"]]


@pytest_twisted.ensureDeferred
async def test_full_peer_resolves_author_names_through_the_hub(mesh):
    """On a full peer, feed --author alice returns alice's shifts (as by her account id); an unknown
    name is no_user and a malformed one bad_name; offline, a name it already resolved still works and
    a new one is refused as not_connected, while account ids keep working."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    peer = await mesh.add_user("fp", full_peer=True)
    a1, b1, a2 = alice.new_shift("https://au.example/1"), bob.new_shift("https://au.example/2"), \
        alice.new_shift("https://au.example/3")
    for user, sid in ((alice, a1), (bob, b1), (alice, a2)):
        await user.publish(sid, public=True)
    await eventually(lambda: {a1, b1, a2} <= peer.feed_ids(), "the firehose in the full peer's feed")

    by_name = await peer.flows.query({"filters": {"author": "alice"}})
    assert by_name["source"] == "feed" and [r["id"] for r in by_name["rows"]] == [a2, a1]
    assert await _ids(peer, filters={"author": alice.account}) == [a2, a1]
    assert await _ids(peer, filters={"author": ["bob", alice.account], "domain": "au.example"}) == [a2, b1, a1]
    with pytest.raises(FlowError, match="no user 'nobody' on the hub") as unknown:
        await peer.flows.query({"filters": {"author": ["alice", "nobody"]}})
    assert unknown.value.code == "no_user"
    with pytest.raises(FlowError, match="is not valid") as malformed:
        await peer.flows.query({"filters": {"author": "Alice!"}})
    assert malformed.value.code == "bad_name"

    peer.disconnect()
    await eventually(lambda: not peer.flows.link.connected, "offline")
    assert await _ids(peer, filters={"author": "alice"}) == [a2, a1]
    assert await _ids(peer, filters={"author": bob.account}) == [b1]
    with pytest.raises(FlowError, match="not connected: give the account id") as offline:
        await peer.flows.query({"filters": {"author": "carol"}})
    assert offline.value.code == "not_connected"


@pytest_twisted.ensureDeferred
async def test_accounts_rpc_checks_its_caller_and_arguments(mesh):
    """The hub's accounts RPC maps names to account ids (None when unregistered) for registered callers
    only, and refuses anything but a short list of well-formed names."""
    await mesh.start(users=("alice", "bob"))
    bob = mesh["bob"]
    answer = await bob.flows.link.call("accounts", {"names": ["alice", "nobody"]})
    assert answer == {"accounts": {"alice": mesh["alice"].account, "nobody": None}}
    for args, code in (({"names": "alice"}, "bad_request"), ({"names": []}, "bad_request"),
                       ({"names": ["x"] * 101}, "bad_request"), ({"names": ["../x"]}, "bad_name")):
        with pytest.raises(FlowError) as refused:
            await bob.flows.link.call("accounts", args)
        assert refused.value.code == code, args
    stranger = await mesh.add_user("dave", register=False)
    with pytest.raises(FlowError) as unregistered:
        await stranger.flows.link.call("accounts", {"names": ["alice"]})
    assert unregistered.value.code == "not_registered"
    answer = await bob.flows.link.call("accounts", {"ids": [mesh["alice"].account, stranger.account]})
    assert answer == {"accounts": {}, "names": {mesh["alice"].account: "alice", stranger.account: None}}
    for args in ({"ids": "x"}, {"ids": [1]}, {"ids": ["x"] * 60, "names": ["y"] * 41}):
        with pytest.raises(FlowError) as refused:
            await bob.flows.link.call("accounts", args)
        assert refused.value.code == "bad_request", args


@pytest_twisted.ensureDeferred
async def test_names_of_account_ids_for_display(mesh):
    """A node shows names for account ids the hub knows (one call, then cached: offline they still
    show); an id the hub has no name for, or one not cached while offline, is left out, not an error."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    stranger = await mesh.add_user("erin", register=False)
    names = bob.flows.authors
    assert await names.names_of([alice.account, stranger.account, "not-an-id"]) == {alice.account: "alice"}
    bob.disconnect()
    await eventually(lambda: not bob.flows.link.connected, "offline")
    assert await names.names_of([alice.account, bob.account]) == {alice.account: "alice"}


@pytest_twisted.ensureDeferred
async def test_author_name_on_the_authors_own_node_keeps_her_drafts(mesh):
    """On alice's own (ordinary) node, feed --author alice answers from the hub and still merges in her
    unpublished shifts; another author's filter does not."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    published = alice.new_shift("https://own.example/p")
    await alice.publish(published, public=True)
    draft = alice.new_shift("https://own.example/d")
    await eventually(lambda: published in mesh.hub.ids("shared"), "shared")
    assert await _ids(alice, filters={"author": "alice"}) == [draft, published]
    assert await _ids(alice, filters={"author": alice.account}) == [draft, published]
    assert await _ids(alice, filters={"author": "bob"}) == []
    assert await _ids(bob, filters={"author": "alice"}) == [published]


@pytest_twisted.ensureDeferred
async def test_hub_refuses_an_author_name_no_one_registered(mesh):
    """A user node's feed answered by the hub: --author alice gives alice's shifts, an unknown name is
    no_user (as on a full peer), not an empty page that reads as "no shifts"."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = alice.new_shift("https://au.example/hub")
    await alice.publish(sid, public=True)
    await eventually(lambda: sid in mesh.hub.ids("shared"), "the shift in the hub's shared")
    answer = await bob.flows.query({"filters": {"author": "alice"}})
    assert answer["source"] == "shared" and [r["id"] for r in answer["rows"]] == [sid]
    with pytest.raises(FlowError, match="no user 'nobody' on this hub") as unknown:
        await bob.flows.query({"filters": {"author": ["alice", "nobody"]}})
    assert unknown.value.code == "no_user"
