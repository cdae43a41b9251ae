"""Deleting a comment whose own copy has two live revisions (the conflicts made as in
tests/test_shift_resolve.py) deletes the comment: before, only the winner got a tombstone, the other branch
became the winner and the comment stayed, on this node and in the group it went to."""

from __future__ import annotations

import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from tests.test_shift_resolve import add_branch


@pytest_twisted.ensureDeferred
async def test_deleting_a_conflicted_comment_deletes_every_branch(mesh):
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    sid = await mesh.club_shift("https://e.org/comment-conflict")
    private = alice.store.database("user/private")
    made = await alice.flows.publisher.comment(private.get_repl_docs([(sid, None)])[0], "hello")
    cid = made["id"]
    base = private.get(cid).rev
    await alice.flows.publisher.edit_comment(cid, "edited here")
    add_branch(private, cid, base, alice.key, text="edited on the other copy")
    assert len(private.get(cid).conflicts) == 1
    answer = await alice.flows.publisher.delete_comment(cid)
    assert answer["deleted"] is True
    assert [d["rev"] for d in private.get_repl_docs([(cid, None)]) if not d["deleted"]] == []
    club = mesh.hub.db("group/club")
    await eventually(lambda: club.get(cid) is not None and club.get(cid).deleted, "the group's copy deleted")
