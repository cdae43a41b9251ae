"""Tombstones another copy of the same account (same key: a copied node directory, a restored backup) wrote, by
its `shift resolve` or its `shift delete`, over real TLS to a real hub: they reach the group, and from there only
this node's ``user/feed``. A leaf such a tombstone continues is ended for this copy too
(``shifts.account_revisions``): `shift show` no longer lists it, an edit or publish builds on what the other copy
kept (its tombstones join the own copy first), a resolve no longer overrides its choice, and a shift it deleted is
deleted here: `shift show` says so, an edit, publish or resolve is refused at once (409 ``shift_gone``) and writes
nothing anywhere. Before, the feed's live revisions alone counted: the leaf the other copy tombstoned everywhere
was shown here as `rev`, and an edit of it brought it back beside the kept one (a live revision beats a tombstone),
a conflict again in the group and every reader's feed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytest_twisted

import flowmesh
from flowmesh import eventually, other_copy_revision, other_copy_tombstone
from shiftpeer.roles.names import FlowError
from shiftpeer.shifts import NoConflicts, ShiftDeleted, ShiftGone
from test_flows_comment_delete_elsewhere import live_leaves
from test_flows_losing_branch_elsewhere import held_alone
import test_flows_nodes
from test_flows_nodes import _caller, _hub_and_users
from test_flows_resolve import club_conflict
from test_flows_shift_edit_elsewhere import hand_in

mesh = flowmesh.mesh   # the fixtures
nodes = test_flows_nodes.nodes


async def tombstone_in(alice, tomb: dict) -> None:
    """The other copy delivers its tombstone to the club; alice's feed holds it from there (the leaf under it is
    no longer live in her feed)."""
    assert await alice.flows.link.deliver(tomb, ["group:club"]) == {"group:club": "ok"}
    ended = tomb["history"][1]
    await eventually(lambda: ended not in live_leaves(alice.feed(), tomb["id"]), "alice's feed has the tombstone")


async def other_copy_resolved(mesh, href: str) -> tuple[str, str, dict]:
    """alice's club shift, edited here (delivered), and edited beside that by the other copy of her account, which
    then resolved the conflict keeping its own edit: (shift id, her edit, the other copy's kept edit), once her
    feed holds that copy's tombstone of her edit."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    sid = await mesh.club_shift(href)
    private = alice.store.database("user/private")
    base = private.get_repl_docs([(sid, None)])[0]
    mine = alice.shifts.edit(sid, {"summary": "edited here"})["rev"]
    await eventually(lambda: alice.flows.publisher.targets(sid)["group:club"]["rev"] == mine, "her edit delivered")
    kept = other_copy_revision(alice, base, summary="edited on the other copy")
    await hand_in(alice, kept)
    await tombstone_in(alice, other_copy_tombstone(alice, private.get_repl_docs([(sid, [mine])])[0]))
    return sid, mine, kept


@pytest_twisted.ensureDeferred
async def test_show_takes_the_other_copys_resolve_and_a_resolve_here_no_longer_overrides_it(mesh):
    """The other copy kept its edit: `shift show` shows that edit with no conflict (before: the own edit, which that
    copy tombstoned everywhere, as `rev`, with the kept edit as its conflict), and a resolve here has nothing to
    resolve (before: it kept the own edit by default and tombstoned the other copy's choice)."""
    sid, mine, kept = await other_copy_resolved(mesh, "https://example.org/other-copy-resolved")
    alice, bob = mesh["alice"], mesh["bob"]
    await eventually(lambda: live_leaves(bob.feed(), sid) == [kept["rev"]], "bob sees the kept edit alone")

    shown = alice.shifts.show(sid)
    assert (shown.rev, shown.conflicts, shown.body["summary"]) == (kept["rev"], [], "edited on the other copy")
    with pytest.raises(NoConflicts):
        alice.shifts.resolve(sid)
    assert live_leaves(mesh.hub.db("group/club"), sid) == [kept["rev"]]
    assert live_leaves(alice.store.database("user/private"), sid) == [mine]   # nothing written by the refusal


@pytest_twisted.ensureDeferred
async def test_an_edit_after_the_other_copys_resolve_builds_on_the_kept_revision(mesh):
    """`shift edit --rev` the revision `shift show` prints builds on the other copy's kept edit, and that copy's
    tombstone joins the own copy first: the edited branch stays dead in the group, alice's copy and every feed.
    Before, the edit went on the own edit, which then lived again beside the kept one (a conflict everywhere)."""
    sid, mine, kept = await other_copy_resolved(mesh, "https://example.org/edit-after-resolve")
    alice, bob = mesh["alice"], mesh["bob"]

    edited = alice.shifts.edit(sid, {"summary": "edited here, after", "rev": alice.shifts.show(sid).rev})
    private = alice.store.database("user/private")
    assert private.get_repl_docs([(sid, [edited["rev"]])])[0]["history"][1] == kept["rev"]
    ended = [d for d in private.get_repl_docs([(sid, None)]) if d["deleted"]]
    assert [d["history"][1] for d in ended] == [mine]   # the other copy's tombstone is in the own copy
    await held_alone(mesh, sid, edited["rev"])
    assert bob.feed().get(sid).body["summary"] == "edited here, after"
    shown = alice.shifts.show(sid)
    assert (shown.rev, shown.conflicts) == (edited["rev"], [])


@pytest_twisted.ensureDeferred
async def test_a_publish_after_the_other_copy_kept_the_own_loser_publishes_it(mesh):
    """The own copy has a conflict; the other copy kept the branch that lost here and tombstoned the winner: `shift
    show` shows the loser (its body) with no conflict, and a publish is no longer refused as a conflict: the
    tombstone joins the own copy and the loser is the revision published, alone in the group and bob's inbox.
    Before, `shift show` showed the tombstoned winner and the publish was refused (409 conflict)."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid, winner, loser = await club_conflict(mesh)
    await eventually(lambda: alice.flows.publisher.targets(sid)["group:club"]["rev"] == winner, "the winner sent")
    private = alice.store.database("user/private")
    await hand_in(alice, private.get_repl_docs([(sid, [loser])])[0])   # the other copy's own branch
    await tombstone_in(alice, other_copy_tombstone(alice, private.get_repl_docs([(sid, [winner])])[0]))

    shown = alice.shifts.show(sid)
    assert (shown.rev, shown.conflicts) == (loser, [])
    assert shown.body == private.get(sid, rev=loser).body != private.get(sid).body   # the loser's, not the winner's
    published = await alice.publish(sid, to=["bob"])
    assert published["targets"]["user:bob"] == "ok", published
    assert private.get_repl_docs([(sid, [published["rev"]])])[0]["history"][1] == loser
    assert live_leaves(private, sid) == [published["rev"]]
    club = mesh.hub.db("group/club")
    await eventually(lambda: live_leaves(club, sid) == [published["rev"]], "the group: the published revision")
    await eventually(lambda: live_leaves(bob.feed(), sid) == [published["rev"]], "bob: the published revision")


def leaves_of(db, sid: str) -> list[tuple[str, bool]]:
    """Every leaf of ``sid`` in ``db``, live or not, as (rev, deleted)."""
    return sorted((d["rev"], d["deleted"]) for d in db.get_repl_docs([(sid, None)]))


@pytest_twisted.ensureDeferred
async def test_a_shift_the_other_copy_deleted_is_deleted_here_and_changes_are_refused(mesh):
    """The other copy deleted the shift: `shift show` says it is deleted (404, as for a shift deleted here), `shift
    edit`, `shift resolve` and `shift publish` (public, to a group, to a user) are refused at once with 409
    shift_gone, `shift delete` answers that it is already deleted, and none of them writes anything: not alice's
    databases, not the hub's places, not bob's feed. Before, `shift show` showed the shift and an edit brought it
    back to life in the group and bob's feed."""
    href = "https://example.org/other-copy-deleted"
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = await mesh.club_shift(href)
    private = alice.store.database("user/private")
    await tombstone_in(alice, other_copy_tombstone(alice, private.get_repl_docs([(sid, None)])[0]))
    await eventually(lambda: bob.feed().get(sid).deleted, "bob's feed: deleted")
    mine = {name: alice.store.database(name) for name in ("user/private", "user/public", "user/outbox")}
    seqs = {name: db.update_seq() for name, db in mine.items()}
    places = [n for n in ("group/club", "shared", "master", "inbox/bob") if mesh.hub.store.has_database(n)]
    on_hub = {n: leaves_of(mesh.hub.db(n), sid) for n in places}

    with pytest.raises(ShiftDeleted) as shown:
        alice.shifts.show(sid)
    assert (shown.value.status, shown.value.code) == (404, "not_found")
    assert "is deleted, by another copy of your account" in shown.value.message
    refusals = [lambda: alice.shifts.edit(sid, {"summary": "edited here"}), lambda: alice.shifts.resolve(sid)]
    for refused in refusals:
        with pytest.raises(ShiftGone) as gone:
            refused()
        assert (gone.value.status, gone.value.code) == (409, "shift_gone") and sid in gone.value.message
    for where in ({"public": True}, {"groups": ["club"]}, {"to": ["bob"]}):
        with pytest.raises(ShiftGone):
            await alice.publish(sid, **where)
    with pytest.raises(ShiftDeleted, match="already deleted"):
        alice.shifts.delete(sid)

    await alice.flows.publisher.flush()
    assert {name: db.update_seq() for name, db in mine.items()} == seqs
    assert alice.flows.publisher.pending() == []
    assert {n: leaves_of(mesh.hub.db(n), sid) for n in places} == on_hub
    assert not live_leaves(bob.feed(), sid) and not live_leaves(alice.feed(), sid)
    assert sid not in [r["id"] for r in (await alice.flows.query({"filters": {"href": href}}))["rows"]]


@pytest_twisted.ensureDeferred
async def test_comments_on_a_shift_the_other_copy_deleted_are_refused(mesh):
    """A shift the other copy deleted takes no new comment (404, as one deleted here), and an edit of a comment on it
    is refused at once (409 shift_gone): every place would refuse the revision. Before, the own copy counted as the
    shift: the comment was written and refused everywhere it went, and the edit answered `ok`."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    sid = await mesh.club_shift("https://example.org/comment-after-other-copy-deleted")
    made = await alice.flows.comment(sid, "before the delete")
    private = alice.store.database("user/private")
    await tombstone_in(alice, other_copy_tombstone(alice, private.get_repl_docs([(sid, None)])[0]))
    seq = private.update_seq()

    with pytest.raises(FlowError) as new:
        await alice.flows.comment(sid, "after the delete")
    assert new.value.code == "not_found"
    with pytest.raises(FlowError) as edit:
        await alice.flows.edit_comment(made["id"], "edited after the delete")
    assert edit.value.code == "shift_gone"
    assert private.update_seq() == seq


@pytest_twisted.ensureDeferred
async def test_the_api_says_deleted_and_refuses_changes_with_shift_gone(nodes):
    """Through a real node's API, its hub connected: `GET` of a shift the other copy deleted is 404 saying it is
    deleted (the own copy answers; asking the hub said only "no shift that you can see"), `PATCH`, resolve and
    publish are 409 shift_gone, `DELETE` is 404 already deleted."""
    hub, hub_api, api = await _hub_and_users(nodes, users=("alice", "bob"))
    call = _caller(api)
    await call("alice", "POST", "/v1/groups", {"name": "club"})
    await call("alice", "POST", "/v1/groups/club/invite", {"user": "bob", "level": "read"})
    await call("bob", "POST", "/v1/groups/club/join", {})
    sid = (await call("alice", "POST", "/v1/shifts", {"space": "Notes", "href": "https://example.org/api-gone"},
                      want=201))["id"]
    await call("alice", "POST", f"/v1/shifts/{sid}/publish", {"groups": ["club"]})
    node = nodes[1][1]
    private, feed = node.store.database("user/private"), node.store.database("user/feed")
    other_copy = SimpleNamespace(account=node.key.account_id, key=node.key)
    tomb = other_copy_tombstone(other_copy, private.get_repl_docs([(sid, None)])[0])
    assert await node.role("flows").flows.link.deliver(tomb, ["group:club"]) == {"group:club": "ok"}
    await eventually(lambda: feed.get(sid).deleted, "alice's feed has the tombstone")
    seq = private.update_seq()

    shown = await call("alice", "GET", f"/v1/shifts/{sid}", want=404)
    assert shown["code"] == "not_found" and "is deleted, by another copy of your account" in shown["error"]
    for method, path, body in (("PATCH", f"/v1/shifts/{sid}", {"summary": "edited"}),
                               ("POST", f"/v1/shifts/{sid}/resolve", {}),
                               ("POST", f"/v1/shifts/{sid}/publish", {"public": True})):
        assert (await call("alice", method, path, body, want=409))["code"] == "shift_gone"
    assert "already deleted" in (await call("alice", "DELETE", f"/v1/shifts/{sid}", want=404))["error"]
    assert private.update_seq() == seq


@pytest_twisted.ensureDeferred
async def test_a_comment_the_other_copy_deleted_is_not_edited_or_deleted_again(mesh):
    """A comment the other copy deleted (its tombstone in the group, and alice's feed) is gone here as one deleted
    here is: an edit or a delete of it is not_found (404) and writes nothing, and the thread no longer lists it.
    Before, the edit continued the own copy's revision, bringing the comment back in the group and bob's feed."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = await mesh.club_shift("https://example.org/comment-other-copy-deleted")
    cid = (await alice.flows.comment(sid, "to be deleted elsewhere"))["id"]
    await eventually(lambda: live_leaves(bob.feed(), cid), "bob has the comment")
    private = alice.store.database("user/private")
    await tombstone_in(alice, other_copy_tombstone(alice, private.get_repl_docs([(cid, None)])[0]))
    seq = private.update_seq()

    for change in (lambda: alice.flows.edit_comment(cid, "edited after"), lambda: alice.flows.delete_comment(cid)):
        with pytest.raises(FlowError) as refused:
            await change()
        assert refused.value.code == "not_found" and cid in refused.value.message
    assert private.update_seq() == seq
    thread = await alice.flows.query({"filters": {"thread": sid}})
    assert cid not in [r["id"] for r in thread["rows"]]
    await eventually(lambda: not live_leaves(bob.feed(), cid), "bob's feed: the comment deleted")
    assert not live_leaves(mesh.hub.db("group/club"), cid)
