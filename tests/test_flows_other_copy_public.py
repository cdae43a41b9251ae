"""What another copy of the same account (same key: here a second node holding what alice's node directory held,
as a copied directory or a restored backup would) wrote on a public shift or on one sent only to users, over real
TLS to a real hub. Such revisions go to the hub's ``master`` or to the recipients' inboxes, which alice's user
node never pulls: before, `shift show` kept her older revision, an edit or publish continued it (a conflict in
``master`` or bob's inbox) and, once that copy had deleted the shift, brought it back there (a live revision beats
a tombstone). Now the node asks its hub for the revisions of its own shift (``revisions``, roles/othercopies.py)
before a show or change (``UserFlows.on_latest``, the API's shift routes; ``publish``) and joins them to
``user/feed`` as the other copy's, so ``shifts.account_revisions`` sees them as it does a group's.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

import flowmesh
from flowmesh import eventually, other_copy_tombstone
from shiftpeer.roles.names import FlowError
from shiftpeer.shifts import ShiftDeleted, ShiftGone
from test_flows_comment_delete_elsewhere import live_leaves
from test_flows_other_copy_tombstones import leaves_of
import test_flows_nodes
from test_flows_nodes import _caller, _hub_and_users
from tests.test_cli import run

mesh = flowmesh.mesh   # the fixtures
nodes = test_flows_nodes.nodes


async def published_and_copied(mesh, href: str, **where) -> tuple:
    """alice's shift published (``where``: public=True, to=[...]), and the other copy of her node made from her
    node's databases after that: (alice, the copy, shift id)."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = alice.new_shift(href, summary="first")
    await alice.publish(sid, **where)
    await eventually(lambda: sid in mesh.hub.ids("shared") and (where.get("public") or sid in bob.feed_ids()),
                     "the shift went out")
    copy = await mesh.other_copy("alice")
    return alice, copy, sid


def shown(alice, sid: str):
    """`shift show` as the API runs it: after the hub's revisions of an own shift joined the feed."""
    return alice.flows.on_latest(sid, lambda: alice.shifts.show(sid).to_json())


async def in_shared(mesh, sid: str, leaves: list) -> None:
    """Wait until the hub's ``shared`` (the merge of ``master`` and the inboxes) holds exactly ``leaves``."""
    shared = mesh.hub.db("shared")
    await eventually(lambda: mesh.hub.store.has_database("shared") and leaves_of(shared, sid) == sorted(leaves),
                     f"shared holds {leaves}")


@pytest_twisted.ensureDeferred
async def test_the_other_copys_edit_of_a_public_shift_is_shown_and_continued(mesh):
    """The other copy edited the public shift (its edit is in ``master``): `shift show` here shows that edit, and an
    edit here continues it, so ``master`` and ``shared`` hold one live revision and bob reads the new text. Before,
    `show` printed alice's older revision and the edit branched beside the other copy's (a conflict in master)."""
    alice, copy, sid = await published_and_copied(mesh, "https://example.org/public-edit-elsewhere", public=True)
    bob = mesh["bob"]
    theirs = copy.shifts.edit(sid, {"summary": "edited on the other copy"})["rev"]
    await in_shared(mesh, sid, [(theirs, False)])
    assert alice.shifts.show(sid).rev != theirs   # nothing alice's node reads holds it yet

    seen = await shown(alice, sid)
    assert (seen["rev"], seen["summary"], seen["conflicts"]) == (theirs, "edited on the other copy", [])
    assert "note" not in seen
    edited = await alice.flows.on_latest(sid, lambda: alice.shifts.edit(sid, {"summary": "edited here, after",
                                                                                 "rev": seen["rev"]}))
    assert "note" not in edited
    public = alice.store.database("user/public")
    assert public.get_repl_docs([(sid, [edited["rev"]])])[0]["history"][1] == theirs
    master = mesh.hub.db("master")
    await eventually(lambda: live_leaves(master, sid) == [edited["rev"]], "master: the edit alone")
    await in_shared(mesh, sid, [(edited["rev"], False)])
    got = await bob.flows.from_hub(sid)
    assert got["body"]["summary"] == "edited here, after"


@pytest_twisted.ensureDeferred
async def test_a_public_shift_the_other_copy_deleted_stays_deleted(mesh):
    """The other copy deleted the public shift (its tombstone is in ``master``): `shift show` says it is deleted,
    `shift edit`, `shift resolve` and `shift publish` are 409 shift_gone, `shift delete` answers that it is already
    deleted, nothing is written on alice's node, and ``master`` keeps the tombstone winning. Before, the edit went
    to user/public, replicated to ``master`` and brought the shift back for everyone."""
    alice, copy, sid = await published_and_copied(mesh, "https://example.org/public-deleted-elsewhere", public=True)
    bob = mesh["bob"]
    tomb = copy.shifts.delete(sid)["rev"]
    await in_shared(mesh, sid, [(tomb, True)])
    mine = {name: alice.store.database(name) for name in ("user/private", "user/public", "user/outbox")}
    seqs = {name: db.update_seq() for name, db in mine.items()}

    with pytest.raises(ShiftDeleted) as deleted:
        await shown(alice, sid)
    assert "by another copy of your account" in deleted.value.message
    for change in (lambda: alice.shifts.edit(sid, {"summary": "edited here"}), lambda: alice.shifts.resolve(sid)):
        with pytest.raises(ShiftGone):
            await alice.flows.on_latest(sid, change)
    for where in ({"public": True}, {"to": ["bob"]}):
        with pytest.raises(ShiftGone):
            await alice.publish(sid, **where)
    with pytest.raises(ShiftDeleted, match="already deleted"):
        await alice.flows.on_latest(sid, lambda: alice.shifts.delete(sid))

    await alice.flows.publisher.flush()
    assert {name: db.update_seq() for name, db in mine.items()} == seqs
    assert leaves_of(mesh.hub.db("master"), sid) == [(tomb, True)]
    assert await bob.flows.from_hub(sid) is None


@pytest_twisted.ensureDeferred
async def test_the_other_copys_edit_of_a_shift_sent_to_bob_is_shown_and_continued(mesh):
    """A shift sent only to bob: the other copy's edit went to bob's inbox (its outbox, copied with the node, names
    him). `shift show` here shows it, and an edit continues it: bob's inbox holds one live revision, the new one.
    Before, the edit branched beside the other copy's in bob's inbox."""
    alice, copy, sid = await published_and_copied(mesh, "https://example.org/direct-edit-elsewhere", to=["bob"])
    bob = mesh["bob"]
    theirs = copy.shifts.edit(sid, {"summary": "edited on the other copy"})["rev"]
    await eventually(lambda: live_leaves(bob.feed(), sid) == [theirs], "bob's feed: the other copy's edit")
    await in_shared(mesh, sid, [(theirs, False)])

    seen = await shown(alice, sid)
    assert (seen["rev"], seen["summary"], seen["conflicts"]) == (theirs, "edited on the other copy", [])
    edited = await alice.flows.on_latest(sid, lambda: alice.shifts.edit(sid, {"summary": "edited here, after"}))
    inbox = mesh.hub.db("inbox/bob")
    await eventually(lambda: live_leaves(inbox, sid) == [edited["rev"]], "bob's inbox: the edit alone")
    await eventually(lambda: live_leaves(bob.feed(), sid) == [edited["rev"]], "bob's feed: the edit alone")
    assert bob.feed().get(sid).body["summary"] == "edited here, after"


@pytest_twisted.ensureDeferred
async def test_a_shift_sent_to_bob_the_other_copy_deleted_stays_deleted(mesh):
    """The other copy deleted the shift sent only to bob (its tombstone went to bob's inbox): an edit, a publish or a
    resolve here is 409 shift_gone and writes nothing; bob's inbox and feed keep it deleted."""
    alice, copy, sid = await published_and_copied(mesh, "https://example.org/direct-deleted-elsewhere", to=["bob"])
    bob = mesh["bob"]
    tomb = copy.shifts.delete(sid)["rev"]
    await eventually(lambda: bob.feed().get(sid).deleted, "bob's feed: deleted")
    await in_shared(mesh, sid, [(tomb, True)])
    private = alice.store.database("user/private")
    seq = private.update_seq()

    for change in (lambda: alice.shifts.edit(sid, {"summary": "edited here"}), lambda: alice.shifts.resolve(sid)):
        with pytest.raises(ShiftGone):
            await alice.flows.on_latest(sid, change)
    with pytest.raises(ShiftGone):
        await alice.publish(sid, to=["bob"])
    await alice.flows.publisher.flush()
    assert private.update_seq() == seq
    assert leaves_of(mesh.hub.db("inbox/bob"), sid) == [(tomb, True)]
    assert bob.feed().get(sid).deleted


@pytest_twisted.ensureDeferred
async def test_with_the_hub_away_a_change_goes_on_and_says_so(mesh):
    """The hub is not connected: an edit of a shift that went out is written on what this node holds (as before)
    and its answer says the hub was not asked; a shift that never left the node gets no note."""
    alice, copy, sid = await published_and_copied(mesh, "https://example.org/hub-away", public=True)
    draft = alice.new_shift("https://example.org/hub-away-draft")
    alice.disconnect()
    await eventually(lambda: not alice.flows.link.connected, "alice's hub connection closed")

    edited = await alice.flows.on_latest(sid, lambda: alice.shifts.edit(sid, {"summary": "edited offline"}))
    assert "not checked with the hub (the hub is not connected)" in edited["note"]
    assert alice.store.database("user/public").get(sid).rev == edited["rev"]
    quiet = await alice.flows.on_latest(draft, lambda: alice.shifts.edit(draft, {"summary": "a draft"}))
    assert "note" not in quiet
    published = await alice.publish(sid, to=["bob"])
    assert "not connected" in published["note"] and published["targets"]["user:bob"].startswith("pending")


@pytest_twisted.ensureDeferred
async def test_with_the_hub_away_a_comment_and_a_comments_delete_go_on_and_say_so(mesh):
    """As a publish does: with the hub not connected, a comment on alice's own shift that went out and the delete
    of her comment that went out are written on what this node holds, and their answers say the hub was not
    asked; connected, they carry no note."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    sid = alice.new_shift("https://example.org/hub-away-comments", summary="first")
    await alice.publish(sid, public=True)
    await eventually(lambda: sid in mesh.hub.ids("shared"), "the shift went out")
    made = await alice.flows.comment(sid, "while connected")
    assert "note" not in made
    alice.disconnect()
    await eventually(lambda: not alice.flows.link.connected, "alice's hub connection closed")

    offline = await alice.flows.comment(sid, "while away")
    assert "not checked with the hub (the hub is not connected)" in offline["note"]
    deleted = await alice.flows.delete_comment(made["id"])
    assert "not checked with the hub (the hub is not connected)" in deleted["note"]
    assert alice.store.database("user/public").get(made["id"]).deleted
    assert not alice.store.database("user/public").get(offline["id"]).deleted


@pytest_twisted.ensureDeferred
async def test_the_hub_gives_only_the_callers_own_revisions(mesh):
    """``revisions`` answers every leaf of the caller's own document, tombstones too, and nothing of anyone else's:
    bob asking for alice's public shift gets no row, an id that is not one is refused."""
    alice, copy, sid = await published_and_copied(mesh, "https://example.org/own-revisions", public=True)
    bob = mesh["bob"]
    tomb = copy.shifts.delete(sid)["rev"]
    await in_shared(mesh, sid, [(tomb, True)])

    rows = (await alice.flows.link.call("revisions", {"id": sid}))["rows"]
    assert [(r["rev"], r["deleted"]) for r in rows] == [(tomb, True)]
    assert (await bob.flows.link.call("revisions", {"id": sid}))["rows"] == []
    for bad in ({}, {"id": ""}, {"id": ["x"]}):
        with pytest.raises(FlowError) as refused:
            await bob.flows.link.call("revisions", bad)
        assert refused.value.code == "bad_request"


@pytest_twisted.ensureDeferred
async def test_through_the_api_and_the_cli(nodes, capsys):
    """Through real nodes' API: a public shift whose tombstone the other copy pushed to the hub's ``master`` is 404
    deleted for `GET`, 409 shift_gone for `PATCH`, resolve and publish, and ``master`` keeps the tombstone alone.
    With the hub stopped, `shiftpeer shift edit` of another public shift prints its new revision, as before, and
    on standard error the note that the hub was not asked."""
    hub, _, api = await _hub_and_users(nodes, users=("alice",))
    call = _caller(api)
    gone, kept = [(await call("alice", "POST", "/v1/shifts", {"space": "Notes", "href": f"https://example.org/{n}"},
                              want=201))["id"] for n in ("api-gone", "api-kept")]
    for sid in (gone, kept):
        await call("alice", "POST", f"/v1/shifts/{sid}/publish", {"public": True})
    shared = hub.store.database("shared")
    await eventually_held(hub, [gone, kept])
    tmp_path, started = nodes
    node = next(n for n in started if n.settings.directory == str(tmp_path / "alice"))
    public = node.store.database("user/public")
    tomb = other_copy_tombstone(SimpleNamespace(account=node.key.account_id, key=node.key),
                                public.get_repl_docs([(gone, None)])[0])
    hub.store.database("master").bulk_replicated([tomb])   # what the other copy's push of user/public does
    await eventually(lambda: leaves_of(shared, gone) == [(tomb["rev"], True)], "shared: the tombstone")
    seq = public.update_seq()

    shown = await call("alice", "GET", f"/v1/shifts/{gone}", want=404)
    assert "is deleted, by another copy of your account" in shown["error"]
    for method, path, body in (("PATCH", f"/v1/shifts/{gone}", {"summary": "edited"}),
                               ("POST", f"/v1/shifts/{gone}/resolve", {}),
                               ("POST", f"/v1/shifts/{gone}/publish", {"public": True})):
        assert (await call("alice", method, path, body, want=409))["code"] == "shift_gone"
    assert public.update_seq() == seq
    assert leaves_of(hub.store.database("master"), gone) == [(tomb["rev"], True)]
    assert "note" not in await call("alice", "GET", f"/v1/shifts/{kept}")

    started.remove(hub)
    await hub.stopService()
    await eventually(lambda: not node.role("flows").flows.link.connected, "alice's hub connection closed")
    capsys.readouterr()
    status, out, err = await deferToThread(run, capsys, "--data", str(tmp_path / "alice"),
                                           "shift", "edit", kept, "--summary", "edited offline")
    assert status == 0, err
    assert out.strip() == public.get(kept).rev
    assert err.startswith("shiftpeer: note: not checked with the hub (the hub is not connected)"), err


async def eventually_held(hub, ids: list[str]) -> None:
    await eventually(lambda: hub.store.has_database("shared") and
                     all(hub.store.database("shared").get(i) is not None for i in ids), "shared holds them")


@pytest_twisted.ensureDeferred
async def test_comments_the_other_copy_deleted_publicly_are_gone_here(mesh):
    """The other copy deleted alice's public comment, then her public shift: an edit or a delete of the comment is
    404 not_found (as for one deleted here), then a new comment on the shift is 404 too, nothing is written, and
    ``master`` keeps both tombstones. Before, the edit brought the comment back in ``master`` and the new comment
    answered `public: ok` while ``master`` refused it."""
    await mesh.start(users=("alice",))
    alice = mesh["alice"]
    [sid] = await mesh.public_shifts("https://example.org/comment-public-elsewhere", n=1)
    cid = (await alice.flows.comment(sid, "hello"))["id"]
    await eventually(lambda: cid in mesh.hub.ids("shared"), "shared has the comment")
    copy = await mesh.other_copy("alice")
    await copy.flows.delete_comment(cid)
    await eventually(lambda: cid not in mesh.hub.ids("shared"), "shared: the comment deleted")
    mine = {name: alice.store.database(name) for name in ("user/private", "user/public")}
    seqs = {name: db.update_seq() for name, db in mine.items()}

    for change in (lambda: alice.flows.edit_comment(cid, "edited after"), lambda: alice.flows.delete_comment(cid)):
        with pytest.raises(FlowError) as refused:
            await change()
        assert refused.value.code == "not_found" and "another copy of your account" in refused.value.message
    copy.shifts.delete(sid)
    await eventually(lambda: sid not in mesh.hub.ids("shared"), "shared: the shift deleted")
    with pytest.raises(FlowError) as refused:
        await alice.flows.comment(sid, "after the delete")
    assert refused.value.code == "not_found"
    assert {name: db.update_seq() for name, db in mine.items()} == seqs
    master = mesh.hub.db("master")
    assert not live_leaves(master, cid) and not live_leaves(master, sid)
