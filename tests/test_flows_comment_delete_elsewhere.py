"""`comment delete` of a comment that another copy of the same account (same key: a copied node directory, a
restored backup) edited on, over real TLS to a real hub: the other copy's revision reached the group, and from
there only this node's ``user/feed``. The delete tombstones it too, as a shift delete does
(tests/test_shift_delete_conflicts.py): before, only this copy's own revisions got a tombstone, the other
copy's edit (the deeper leaf, or a live branch beside the tombstone) stayed the comment everywhere."""

from __future__ import annotations

import pytest_twisted

from flowmesh import eventually, mesh, other_copy_revision  # noqa: F401 (the mesh fixture)

HREF = "https://example.org/comment-elsewhere"


def live_leaves(db, docid: str) -> list[str]:
    return [d["rev"] for d in db.get_repl_docs([(docid, None)]) if not d["deleted"]]


async def club_comment(mesh) -> tuple[str, str, dict]:
    """alice's comment on her club shift, delivered to the group: (shift id, comment id, its repl doc)."""
    alice = mesh["alice"]
    sid = await mesh.club_shift(HREF)
    private = alice.store.database("user/private")
    made = await alice.flows.comment(sid, "hello")
    assert made["targets"] == {"group:club": "ok"}
    return sid, made["id"], private.get_repl_docs([(made["id"], None)])[0]


async def hand_in(mesh, doc: dict) -> None:
    """The other copy delivers ``doc`` to the group; alice's and bob's feeds get it from there."""
    alice, bob = mesh["alice"], mesh["bob"]
    assert await alice.flows.link.deliver(doc, ["group:club"]) == {"group:club": "ok"}
    for user in (alice, bob):
        await eventually(lambda u=user: doc["rev"] in live_leaves(u.feed(), doc["id"]), f"{user.name}'s feed has it")


async def assert_gone_everywhere(mesh, cid: str, sid: str) -> None:
    club = mesh.hub.db("group/club")
    await eventually(lambda: live_leaves(club, cid) == [], "the group holds no live revision of the comment")
    for user in (mesh["alice"], mesh["bob"]):
        await eventually(lambda u=user: live_leaves(u.feed(), cid) == [], f"{user.name}'s feed holds none")
        thread = await user.flows.query({"filters": {"thread": sid}})
        assert [r["id"] for r in thread["rows"]] == [], user.name
    await eventually(lambda: mesh["alice"].flows.publisher.pending() == [], "nothing left to deliver")


@pytest_twisted.ensureDeferred
async def test_deleting_a_comment_also_deletes_a_later_edit_only_the_feed_holds(mesh):
    """The other copy edited on from this copy's revision: alice's feed holds the edit as the winner."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    sid, cid, mine = await club_comment(mesh)
    later = other_copy_revision(alice, mine, text="edited on the other copy")
    await hand_in(mesh, later)
    assert alice.feed().get(cid).rev == later["rev"]
    assert alice.store.database("user/private").get(cid).rev == mine["rev"]

    answer = await alice.flows.delete_comment(cid)
    assert answer["deleted"] is True and answer["targets"] == {"group:club": "ok"}, answer
    await assert_gone_everywhere(mesh, cid, sid)


@pytest_twisted.ensureDeferred
async def test_deleting_a_comment_also_deletes_a_branch_only_the_feed_holds(mesh):
    """Both copies edited the same revision: the feed holds the other copy's branch beside this one's."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    sid, cid, base = await club_comment(mesh)
    await alice.flows.edit_comment(cid, "edited here")
    await hand_in(mesh, other_copy_revision(alice, base, text="edited on the other copy"))
    assert len(live_leaves(alice.feed(), cid)) == 2

    answer = await alice.flows.delete_comment(cid)
    # two tombstones: the answer names the one that wins, which the group got (it said pending for the other)
    assert answer["deleted"] is True and answer["targets"] == {"group:club": "ok"}, answer
    assert answer["rev"] == alice.store.database("user/private").get(cid).rev
    await assert_gone_everywhere(mesh, cid, sid)

