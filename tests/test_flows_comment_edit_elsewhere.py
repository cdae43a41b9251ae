"""`comment edit` of a comment that another copy of the same account (same key: a copied node directory, a
restored backup) edited later, over real TLS to a real hub: the other copy's edit reached the group, and from
there only this node's ``user/feed``. The edit here builds on that latest revision, as every reader sees it:
before, it continued this copy's older revision, so the two edits were sibling branches (a conflict) in the
group, in every reader's feed and in the hub's ``shared``, and which text a thread showed was the branch
that happened to win."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh, other_copy_revision  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError
from test_flows_comment_delete_elsewhere import club_comment, hand_in, live_leaves


async def thread(user, sid: str) -> list[tuple[str, str]]:
    """(id, text) of each comment ``user``'s thread query shows on the shift."""
    answer = await user.flows.query({"filters": {"thread": sid}})
    return [(r["id"], r["body"]["text"]) for r in answer["rows"]]


@pytest_twisted.ensureDeferred
async def test_an_edit_builds_on_a_later_edit_only_the_feed_holds(mesh):
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid, cid, mine = await club_comment(mesh)
    later = other_copy_revision(alice, mine, text="edited on the other copy")
    await hand_in(mesh, later)
    assert alice.store.database("user/private").get(cid).rev == mine["rev"]

    # the revision a reader (and the author's own thread) shows is the one to edit; this copy's older one is stale
    with pytest.raises(FlowError, match="show it again") as stale:
        await alice.flows.edit_comment(cid, "from a stale revision", rev=mine["rev"])
    assert stale.value.code == "conflict"
    edited = await alice.flows.edit_comment(cid, "edited here, after", rev=later["rev"])
    assert edited["targets"] == {"group:club": "ok"}, edited
    assert later["rev"] in alice.store.database("user/private").get_repl_docs([(cid, None)])[0]["history"]

    club = mesh.hub.db("group/club")
    for name, db in (("the group", club), ("alice's feed", alice.feed()), ("bob's feed", bob.feed())):
        await eventually(lambda db=db: live_leaves(db, cid) == [edited["rev"]], f"{name}: one live revision")
    await eventually(lambda: mesh.hub.db("shared").get(cid).conflicts == [], "no conflict in shared")
    for user in (alice, bob):
        assert await thread(user, sid) == [(cid, "edited here, after")], user.name
    await eventually(lambda: alice.flows.publisher.pending() == [], "nothing left to deliver")
