"""`DELETE /v1/shifts/{id}` (`shift delete`) of a shift with more than one live revision deletes the shift: every
live revision gets a signed tombstone, so the shift is gone from the user's copy and the feed. Before, only the
winner was tombstoned; the answer said ``deleted: true`` while the other branch became the winner and the
shift was still there (the conflicts are made as in tests/test_shift_resolve.py, on a real node)."""

from __future__ import annotations

import pytest_twisted

from flowmesh import eventually as mesh_eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.api.token import read_token
from shiftpeer.shifts import FEED, PRIVATE
from tests.helpers_node import ApiTestClient, eventually
from tests.test_flows_resolve import club_conflict
from tests.test_shift_resolve import add_branch, conflicted, cora  # noqa: F401 (the cora fixture)


def live_leaves(db, shift_id: str) -> list[str]:
    return [d["rev"] for d in db.get_repl_docs([(shift_id, None)]) if not d["deleted"]]


@pytest_twisted.ensureDeferred
async def test_deleting_a_conflicted_shift_deletes_every_branch(cora):
    node, _ = cora
    api = ApiTestClient(await node.when_ready(), read_token(node.settings.directory))
    sid, winner, loser, _ = conflicted(node)
    code, answer = await api.request("DELETE", f"/v1/shifts/{sid}")
    assert code == 200 and answer["deleted"] is True, answer
    assert live_leaves(node.store.database(PRIVATE), sid) == []
    code, shown = await api.request("GET", f"/v1/shifts/{sid}")
    assert code in (404, 200) and (code == 404 or shown["deleted"] is True), shown
    feed = node.store.database(FEED)
    await eventually(lambda: live_leaves(feed, sid) == [], timeout=10)


@pytest_twisted.ensureDeferred
async def test_deleting_a_shift_also_deletes_its_branch_only_the_feed_holds(cora):
    """Another copy of the account made a branch that came back only to user/feed (`shift show` lists it as a
    conflict): a delete removes it too, instead of leaving it live in the feed, where it then showed as the
    shift and every change of it was refused as 'only its author may change it' though it is the user's."""
    node, _ = cora
    api = ApiTestClient(await node.when_ready(), read_token(node.settings.directory))
    made = node.shifts.create({"space": "Notes", "href": "https://e.org/f", "summary": "base"})
    sid = made["id"]
    mine = node.shifts.edit(sid, {"summary": "here"})["rev"]
    feed = node.store.database(FEED)
    await eventually(lambda: feed.get(sid) is not None and feed.get(sid).rev == mine, timeout=10)
    theirs = add_branch(feed, sid, made["rev"], node.key, summary="from the other copy")
    assert node.shifts.show(sid).conflicts == [theirs]
    code, answer = await api.request("DELETE", f"/v1/shifts/{sid}")
    assert code == 200 and answer["deleted"] is True, answer
    assert live_leaves(node.store.database(PRIVATE), sid) == []
    await eventually(lambda: live_leaves(feed, sid) == [], timeout=10)
    code, shown = await api.request("GET", f"/v1/shifts/{sid}")
    assert code == 404 or shown["deleted"] is True, shown


@pytest_twisted.ensureDeferred
async def test_deleting_a_shift_also_deletes_a_later_edit_only_the_feed_holds(cora):
    """Another copy of the account edited the shift on from this copy's revision (not a conflict: `shift show`
    leaves it alone); a delete here tombstones it too, or it would win over the tombstone everywhere (it is
    the deeper leaf) and the shift would stay, changeable nowhere."""
    node, _ = cora
    api = ApiTestClient(await node.when_ready(), read_token(node.settings.directory))
    made = node.shifts.create({"space": "Notes", "href": "https://e.org/later", "summary": "base"})
    sid = made["id"]
    feed = node.store.database(FEED)
    await eventually(lambda: feed.get(sid) is not None, timeout=10)
    later = add_branch(feed, sid, made["rev"], node.key, summary="edited on the other copy")
    assert feed.get(sid).rev == later and node.shifts.show(sid).conflicts == []
    code, answer = await api.request("DELETE", f"/v1/shifts/{sid}")
    assert code == 200 and answer["deleted"] is True, answer
    await eventually(lambda: live_leaves(feed, sid) == [], timeout=10)
    code, shown = await api.request("GET", f"/v1/shifts/{sid}")
    assert code == 404 or shown["deleted"] is True, shown


@pytest_twisted.ensureDeferred
async def test_deleting_a_conflicted_group_shift_deletes_it_in_the_group(mesh):
    """Over a real hub: both branches were in the group; after the delete the outbox delivers each tombstone,
    so the group, and bob's feed, hold no live revision of it."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid, winner, loser = await club_conflict(mesh)
    publisher = alice.flows.publisher
    await mesh_eventually(lambda: publisher.targets(sid)["group:club"]["rev"] == winner, "the winner delivered")
    losing = alice.store.database(PRIVATE).get_repl_docs([(sid, [loser])])[0]
    assert await alice.flows.link.deliver(losing, ["group:club"]) == {"group:club": "ok"}
    club = mesh.hub.db("group/club")
    assert live_leaves(club, sid) != [] and len(live_leaves(club, sid)) == 2
    answer = alice.shifts.delete(sid)
    assert answer["deleted"] is True
    await mesh_eventually(lambda: live_leaves(club, sid) == [], "the group holds no live revision")
    await mesh_eventually(lambda: live_leaves(bob.feed(), sid) == [], "nor does bob's feed")
    await mesh_eventually(lambda: publisher.pending() == [], "nothing left to deliver")
