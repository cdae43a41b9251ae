"""A shift whose own copy has a conflict, and whose losing branch another copy of the same account (same key: a
copied node directory, a restored backup) edited on, over real TLS to a real hub: the other copy's edit reached
the group, and from there only this node's ``user/feed``. That edit continues the branch, so the branch is no
longer a leaf anywhere it went: `shift show` lists the edit in its place (as the revision shown when it is the
deeper one, which every place that holds both shows), `shift resolve` keeps or tombstones the edit, not the
branch under it, and `shift edit` builds on it when it is the revision shown. Before, `shifts.later_edit` followed
the own winner only: the edit was neither a conflict nor a later edit, a resolve tombstoned the branch under it
and left it live (and winning) in the group and every reader's feed, and an edit of the own winner went beside it.
"""

from __future__ import annotations

import pytest_twisted

import flowmesh
from flowmesh import eventually, other_copy_revision
from test_flows_comment_delete_elsewhere import live_leaves
from test_flows_resolve import club_conflict
from test_flows_shift_edit_elsewhere import hand_in

mesh = flowmesh.mesh   # the fixture


async def losing_branch_continued(mesh, href: str, winner_edits: int = 0) -> tuple[str, str, str, dict]:
    """alice's club shift with a conflict in her user/private (the winner delivered to the club, then edited
    ``winner_edits`` more times), whose losing branch the other copy of her account edited on and sent to the
    club: (shift id, her winner, her loser, the other copy's edit), once her feed holds that edit."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    sid, winner, loser = await club_conflict(mesh)
    for n in range(winner_edits):
        winner = alice.shifts.edit(sid, {"summary": f"here, again {n}"})["rev"]
    publisher = alice.flows.publisher
    await eventually(lambda: publisher.targets(sid)["group:club"]["rev"] == winner, "the winner delivered")
    private = alice.store.database("user/private")
    assert (private.get(sid).rev, private.get(sid).conflicts) == (winner, [loser])
    later = other_copy_revision(alice, private.get_repl_docs([(sid, [loser])])[0], summary="the loser, edited on")
    await hand_in(alice, later)
    return sid, winner, loser, later


async def held_alone(mesh, sid: str, rev: str) -> None:
    """The group, alice's copy and bob's feed end with ``rev`` as the shift's one live revision."""
    alice, bob = mesh["alice"], mesh["bob"]
    for name, db in (("the group", mesh.hub.db("group/club")), ("alice's copy", alice.store.database("user/private")),
                     ("alice's feed", alice.feed()), ("bob's feed", bob.feed())):
        await eventually(lambda db=db: live_leaves(db, sid) == [rev], f"{name}: {rev} alone")
    await eventually(lambda: alice.flows.publisher.pending() == [], "nothing left to deliver")


@pytest_twisted.ensureDeferred
async def test_show_lists_the_edit_of_the_losing_branch_and_resolve_keeps_it(mesh):
    """The other copy's edit is deeper than the own winner, so it wins in the group (bob sees it): `shift show`
    shows it, with the own winner as the conflict (the branch under the edit is not listed), and a resolve keeps
    it by default."""
    sid, winner, loser, later = await losing_branch_continued(mesh, "https://example.org/loser-continued")
    alice, bob = mesh["alice"], mesh["bob"]
    await eventually(lambda: bob.feed().get(sid).rev == later["rev"], "bob sees the other copy's edit")

    shown = alice.shifts.show(sid)
    assert (shown.rev, shown.conflicts) == (later["rev"], [winner])
    assert shown.body["summary"] == "the loser, edited on"
    resolved = alice.shifts.resolve(sid)
    assert (resolved["rev"], resolved["removed"]) == (later["rev"], [winner])
    await held_alone(mesh, sid, later["rev"])
    assert loser in alice.store.database("user/private").get_repl_docs([(sid, None)])[0]["history"]


@pytest_twisted.ensureDeferred
async def test_keeping_the_own_winner_tombstones_the_edit_of_the_losing_branch(mesh):
    """`shift resolve --keep` the own winner: the other copy's edit gets the tombstone (the branch under it is
    no leaf), so the group and bob's feed end with the winner alone; before, the tombstone went on the branch
    and the edit stayed live, winning there."""
    sid, winner, loser, later = await losing_branch_continued(mesh, "https://example.org/keep-own-winner")
    alice = mesh["alice"]

    resolved = alice.shifts.resolve(sid, keep=winner)
    assert (resolved["rev"], resolved["removed"]) == (winner, [later["rev"]])
    tomb = alice.store.database("user/private").get_repl_docs([(sid, [resolved["tombstones"][0]])])[0]
    assert tomb["deleted"] and tomb["history"][1] == later["rev"]
    await held_alone(mesh, sid, winner)
    assert mesh["bob"].feed().get(sid).body == alice.store.database("user/private").get(sid).body


@pytest_twisted.ensureDeferred
async def test_an_edit_builds_on_the_edit_of_the_losing_branch(mesh):
    """`shift edit --rev` the revision `shift show` prints continues the other copy's edit (it joins the own copy
    first): the edit wins in the group and the other copy's edit is no longer live beside it; the own winner
    stays the one conflict, and a resolve leaves the edit alone everywhere."""
    sid, winner, loser, later = await losing_branch_continued(mesh, "https://example.org/edit-on-continued")
    alice, bob = mesh["alice"], mesh["bob"]

    edited = alice.shifts.edit(sid, {"summary": "edited here, after", "rev": alice.shifts.show(sid).rev})
    private = alice.store.database("user/private")
    assert private.get_repl_docs([(sid, [edited["rev"]])])[0]["history"][1] == later["rev"]
    club = mesh.hub.db("group/club")
    await eventually(lambda: sorted(live_leaves(club, sid)) == sorted([edited["rev"], winner]),
                     "the group: the edit, and the own winner still in conflict")
    await eventually(lambda: bob.feed().get(sid).rev == edited["rev"], "bob sees the edit")
    shown = alice.shifts.show(sid)
    assert (shown.rev, shown.conflicts) == (edited["rev"], [winner])
    alice.shifts.resolve(sid)
    await held_alone(mesh, sid, edited["rev"])
    assert bob.feed().get(sid).body["summary"] == "edited here, after"


@pytest_twisted.ensureDeferred
async def test_a_shallower_edit_of_the_losing_branch_is_listed_as_the_conflict(mesh):
    """The own winner was edited on past the other copy's edit, so it still wins: `shift show` lists that edit
    as the conflict in place of the branch under it, a resolve keeping the winner tombstones it, and everywhere
    ends with the winner alone."""
    sid, winner, loser, later = await losing_branch_continued(mesh, "https://example.org/shallow-continued",
                                                              winner_edits=2)
    alice = mesh["alice"]
    shown = alice.shifts.show(sid)
    assert (shown.rev, shown.conflicts) == (winner, [later["rev"]])
    resolved = alice.shifts.resolve(sid)
    assert (resolved["rev"], resolved["removed"]) == (winner, [later["rev"]])
    await held_alone(mesh, sid, winner)


@pytest_twisted.ensureDeferred
async def test_deleting_also_deletes_the_edit_of_the_losing_branch(mesh):
    """A delete tombstones the own winner and the other copy's edit (not the branch under it): no live
    revision is left in the group or any feed. A delete did so before (it is the guard of
    ``shifts.delete_everywhere``, which now takes the live revisions from ``account_revisions`` as well)."""
    sid, winner, loser, later = await losing_branch_continued(mesh, "https://example.org/delete-continued")
    alice, bob = mesh["alice"], mesh["bob"]
    assert alice.shifts.delete(sid)["deleted"] is True
    for name, db in (("the group", mesh.hub.db("group/club")), ("alice's copy", alice.store.database("user/private")),
                     ("bob's feed", bob.feed())):
        await eventually(lambda db=db: live_leaves(db, sid) == [], f"{name}: no live revision")
    await eventually(lambda: alice.flows.publisher.pending() == [], "nothing left to deliver")
