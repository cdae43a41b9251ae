"""`shift edit` of a shift that another copy of the same account (same key: a copied node directory, a restored
backup) edited later, over real TLS to a real hub: the other copy's edit reached the group, and from there only
this node's ``user/feed``. `shift show` shows that latest revision, and an edit, a publish and a resolve build
on it: before, `show` kept this copy's older revision and the edit (or publish) continued it, so the two were
sibling branches (a conflict) in the group, every reader's feed and the hub's ``shared`` (as a comment edit
was, tests/test_flows_comment_edit_elsewhere.py)."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh, other_copy_revision  # noqa: F401 (the mesh fixture)
from shiftpeer.shifts import EditConflict
from test_flows_comment_delete_elsewhere import live_leaves


async def hand_in(alice, later: dict) -> None:
    """The other copy delivers its revision to the club; alice's feed gets it from there."""
    assert await alice.flows.link.deliver(later, ["group:club"]) == {"group:club": "ok"}
    await eventually(lambda: later["rev"] in live_leaves(alice.feed(), later["id"]), "alice's feed has it")


async def edited_elsewhere(mesh, href: str) -> tuple[str, dict, dict]:
    """alice's club shift, which the other copy of her account edited on from her revision: (shift id, her
    revision, the other copy's), once her feed holds the other copy's."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    sid = await mesh.club_shift(href)
    mine = alice.store.database("user/private").get_repl_docs([(sid, None)])[0]
    later = other_copy_revision(alice, mine, summary="edited on the other copy")
    await hand_in(alice, later)
    return sid, mine, later


@pytest_twisted.ensureDeferred
async def test_an_edit_builds_on_a_later_edit_only_the_feed_holds(mesh):
    sid, mine, later = await edited_elsewhere(mesh, "https://example.org/shift-edit-elsewhere")
    alice, bob = mesh["alice"], mesh["bob"]

    shown = alice.shifts.show(sid)
    assert (shown.rev, shown.body["summary"], shown.conflicts) == (later["rev"], "edited on the other copy", [])
    with pytest.raises(EditConflict, match="show it again"):
        alice.shifts.edit(sid, {"summary": "from a stale revision", "rev": mine["rev"]})
    edited = alice.shifts.edit(sid, {"summary": "edited here, after", "rev": shown.rev})
    assert later["rev"] in alice.store.database("user/private").get_repl_docs([(sid, None)])[0]["history"]

    club = mesh.hub.db("group/club")
    for name, db in (("the group", club), ("alice's feed", alice.feed()), ("bob's feed", bob.feed())):
        await eventually(lambda db=db: live_leaves(db, sid) == [edited["rev"]], f"{name}: one live revision")
    await eventually(lambda: mesh.hub.db("shared").get(sid).conflicts == [], "no conflict in shared")
    assert bob.feed().get(sid).body["summary"] == "edited here, after"
    await eventually(lambda: alice.flows.publisher.pending() == [], "nothing left to deliver")


@pytest_twisted.ensureDeferred
async def test_a_resolve_keeps_the_later_edit_in_place_of_the_revision_it_continues(mesh):
    """The own copy has a conflict and the other copy edited on from its winner: `shift show` shows that edit
    with the conflict, and `shift resolve` keeps it by default, so every place ends with it alone."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = await mesh.club_shift("https://example.org/shift-resolve-elsewhere")
    private = alice.store.database("user/private")
    base = private.get_repl_docs([(sid, None)])[0]
    parent = {**base, "rev": base["history"][1], "history": base["history"][1:]}
    private.bulk_replicated([other_copy_revision(alice, parent, summary="a branch here")])
    winner, loser = private.get(sid).rev, private.get(sid).conflicts[0]
    later = other_copy_revision(alice, private.get_repl_docs([(sid, [winner])])[0], summary="later, elsewhere")
    await hand_in(alice, later)

    shown = alice.shifts.show(sid)
    assert (shown.rev, shown.conflicts) == (later["rev"], [loser])
    resolved = alice.shifts.resolve(sid)
    assert (resolved["rev"], resolved["removed"]) == (later["rev"], [loser])
    for name, db in (("the group", mesh.hub.db("group/club")), ("alice's copy", private), ("bob's feed", bob.feed())):
        await eventually(lambda db=db: live_leaves(db, sid) == [later["rev"]], f"{name}: the later edit alone")
    await eventually(lambda: alice.flows.publisher.pending() == [], "nothing left to deliver")


@pytest_twisted.ensureDeferred
async def test_publishing_builds_on_a_later_edit_only_the_feed_holds(mesh):
    """Publishing writes a revision too: it carries the other copy's later edit (publicly, here) rather than
    branching beside it from this copy's older revision."""
    sid, _, _ = await edited_elsewhere(mesh, "https://example.org/publish-elsewhere")
    alice, bob = mesh["alice"], mesh["bob"]

    published = await alice.publish(sid, public=True)
    assert published["targets"] == {"public": "ok", "group:club": "ok"}, published
    for name, db in (("the group", mesh.hub.db("group/club")), ("alice's feed", alice.feed()),
                     ("bob's feed", bob.feed())):
        await eventually(lambda db=db: live_leaves(db, sid) == [published["rev"]], f"{name}: one live revision")
    await eventually(lambda: live_leaves(mesh.hub.db("master"), sid) == [published["rev"]], "master has it alone")
    assert mesh.hub.db("master").get(sid).body["summary"] == "edited on the other copy"
