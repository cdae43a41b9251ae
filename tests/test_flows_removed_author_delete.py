"""A member removed from a group edits, then deletes, a shift they had published there (found by the model test,
tests/test_flows_model.py).

The edit is refused in the group (the author may no longer publish there), so the group leaves the shift's audience
and the outbox's targets. Before, the later delete then went nowhere: the group, every reader's feed and the hub's
``shared`` kept the shift live for good, though the hub takes a tombstone where the group holds the document."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)

HREF = "https://example.org/removed-author"


async def removed_after_publishing(mesh) -> str:
    """bob publishes a shift to alice's club, alice's feed gets it, and alice removes bob; returns its id."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    await alice.flows.group("new", "club")
    await alice.flows.group("invite", "club", user="bob", level="publish")
    await bob.flows.group("join", "club")
    sid = bob.new_shift(HREF)
    await bob.publish(sid, groups=["club"])
    await eventually(lambda: sid in alice.feed_ids(), "alice has bob's shift")
    await alice.flows.group("remove", "club", user="bob")
    return sid


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_a_removed_author_s_delete_after_a_refused_edit_leaves_the_group(mesh):
    sid = await removed_after_publishing(mesh)
    alice, bob = mesh["alice"], mesh["bob"]
    club = mesh.hub.db("group/club")
    before = club.get(sid).rev
    bob.shifts.edit(sid, {"summary": "after removal"})
    await eventually(lambda: "group:club" in bob.flows.publisher.refused(sid), "the hub refused the edit")
    assert club.get(sid).rev == before and not club.get(sid).deleted
    bob.shifts.delete(sid)
    await eventually(lambda: club.get(sid).deleted, "the group holds the delete")
    await eventually(lambda: sid not in alice.feed_ids(), "alice's feed holds the delete")
    assert await mesh.who_sees(sid) == {"feed": set(), "hub": set()}
    assert bob.flows.publisher.pending() == []


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_the_delete_reaches_the_group_when_the_author_comes_back(mesh):
    """Edited and deleted while offline: the refusal comes on reconnecting, and the delete after it."""
    sid = await removed_after_publishing(mesh)
    alice, bob = mesh["alice"], mesh["bob"]
    bob.disconnect()
    await eventually(lambda: not bob.flows.link.connected, "bob offline")
    bob.shifts.edit(sid, {"summary": "offline"})
    await bob.connect(mesh.hub)
    await eventually(lambda: "group:club" in bob.flows.publisher.refused(sid), "the hub refused the edit")
    bob.shifts.delete(sid)
    await eventually(lambda: mesh.hub.db("group/club").get(sid).deleted, "the group holds the delete")
    await eventually(lambda: sid not in alice.feed_ids(), "alice's feed holds the delete")
