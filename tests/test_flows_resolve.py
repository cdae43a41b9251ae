"""A resolved conflict reaches the places the shift was published, over real TLS to a real hub: the losing
branch's signed tombstone goes with the winner, so the hub's copy (and every feed it feeds) ends with the
revision the author kept and no conflict. Public shifts go by user/public's replication into ``master``;
group and user targets by the outbox's ``deliver``, which before this carried only the winning revision."""

from __future__ import annotations

import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.shifts import make_signer
from shiftpeer.store.revs import compute_rev
from tests.test_shift_resolve import add_branch

HREF = "https://example.org/resolve"


def live(db, docid: str) -> tuple[str, list[str]] | None:
    """(winning rev, other live revs) of a document, None when there is none."""
    doc = db.get(docid)
    return None if doc is None else (doc.rev, list(doc.conflicts))


async def club_conflict(mesh) -> tuple[str, str, str]:
    """alice's club shift with two live branches in her user/private: (id, winner, loser)."""
    alice = mesh["alice"]
    sid = await mesh.club_shift(HREF)
    private = alice.store.database("user/private")
    base = private.get(sid).rev
    mine = alice.shifts.edit(sid, {"summary": "here"})["rev"]
    other = add_branch(private, sid, base, alice.key, summary="elsewhere")
    return sid, max(mine, other), min(mine, other)


@pytest_twisted.ensureDeferred
async def test_keeping_the_loser_of_a_group_shift_reaches_the_group_and_its_readers(mesh):
    """Whichever branch the group got first, after ``resolve --keep LOSER`` the group and bob's feed hold
    the loser as the winner and no conflict: without the old winner's tombstone the group would keep it live
    beside the loser, and it would go on winning there."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid, winner, loser = await club_conflict(mesh)
    private = alice.store.database("user/private")
    publisher = alice.flows.publisher
    await eventually(lambda: publisher.targets(sid)["group:club"]["rev"] == winner, "the winner delivered")
    club = mesh.hub.db("group/club")
    assert live(club, sid)[0] == winner

    answer = alice.shifts.resolve(sid, keep=loser)
    assert answer["rev"] == loser and answer["removed"] == [winner]
    await eventually(lambda: live(club, sid) == (loser, []), "the group holds the kept revision alone")
    await eventually(lambda: live(bob.feed(), sid) == (loser, []), "bob's feed holds the kept revision alone")
    # the outbox records a delivery when the hub's answer arrives, which may come after the group holds it
    await eventually(lambda: publisher.targets(sid)["group:club"]["rev"] == loser and publisher.pending() == [],
                     "the outbox records the delivery")
    held = publisher.targets(sid)["group:club"]
    assert held["rev"] == loser and held["tombs"] == answer["tombstones"]
    assert publisher.pending() == []
    assert club.get(sid).body["summary"] == private.get(sid, rev=loser).body["summary"]


@pytest_twisted.ensureDeferred
async def test_resolving_a_public_shift_clears_the_conflict_in_master(mesh):
    """A public shift's conflict reached ``master`` by replication (every leaf goes); the tombstone goes the
    same way, and the hub's copy ends with the winner alone."""
    await mesh.start(users=("alice",))
    alice = mesh["alice"]
    sid = alice.new_shift(HREF)
    result = await alice.publish(sid, public=True)
    assert result["targets"] == {"public": "ok"}
    public = alice.store.database("user/public")
    base = public.get(sid).rev
    mine = alice.shifts.edit(sid, {"summary": "here"})["rev"]
    other = add_branch(public, sid, base, alice.key, summary="elsewhere")
    winner, loser = max(mine, other), min(mine, other)
    master = mesh.hub.db("master")
    await eventually(lambda: live(master, sid) == (winner, [loser]), "master holds the conflict")

    answer = alice.shifts.resolve(sid)
    assert answer["rev"] == winner and answer["database"] == "user/public"
    await eventually(lambda: live(master, sid) == (winner, []), "master holds the winner alone")
    await eventually(lambda: live(mesh.hub.db("shared"), sid) == (winner, []), "so does shared")


@pytest_twisted.ensureDeferred
async def test_keeping_the_winner_sends_only_the_tombstone(mesh):
    """The group holds both branches (the loser handed in too); resolving keeps the winner, whose revision
    every target already has: the tombstone alone is due, and the group ends with the winner alone."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid, winner, loser = await club_conflict(mesh)
    publisher = alice.flows.publisher
    await eventually(lambda: publisher.targets(sid)["group:club"]["rev"] == winner, "the winner delivered")
    losing = alice.store.database("user/private").get_repl_docs([(sid, [loser])])[0]
    assert await alice.flows.link.deliver(losing, ["group:club"]) == {"group:club": "ok"}
    club = mesh.hub.db("group/club")
    assert live(club, sid) == (winner, [loser])
    await eventually(lambda: live(bob.feed(), sid) == (winner, [loser]), "bob's feed has the conflict")

    answer = alice.shifts.resolve(sid)
    assert answer["rev"] == winner and answer["removed"] == [loser]
    await eventually(lambda: live(club, sid) == (winner, []), "the group holds the winner alone")
    await eventually(lambda: live(bob.feed(), sid) == (winner, []), "bob's feed holds the winner alone")


@pytest_twisted.ensureDeferred
async def test_a_resolve_made_offline_goes_out_on_reconnect(mesh):
    """Like an edit, a resolve made while the hub is down waits in the outbox: on reconnect the tombstone
    and the kept revision reach the group."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    await mesh.club_shift(HREF + "/first")   # the group exists, bob reads it
    await alice.flows.publisher.flush()      # bob may see it before alice's outbox notes the delivery
    alice.disconnect()
    await eventually(lambda: not alice.flows.link.connected, "alice offline")
    sid = alice.new_shift(HREF)
    await alice.publish(sid, groups=["club"])
    private = alice.store.database("user/private")
    base = private.get(sid).rev
    mine = alice.shifts.edit(sid, {"summary": "here"})["rev"]
    other = add_branch(private, sid, base, alice.key, summary="elsewhere")
    loser = min(mine, other)   # same depth: the lower hash loses
    answer = alice.shifts.resolve(sid, keep=loser)
    publisher = alice.flows.publisher
    assert [p[0] for p in publisher.pending()] == [sid]

    await alice.connect(mesh.hub)
    club = mesh.hub.db("group/club")
    await eventually(lambda: live(club, sid) == (loser, []), "the group holds the kept revision alone")
    assert club.get_repl_docs([(sid, answer["tombstones"])])[0]["deleted"] is True
    await eventually(lambda: live(mesh["bob"].feed(), sid) == (loser, []), "so does bob's feed")
    # the outbox clears when the hub's answer arrives, which may come after bob's feed has it
    await eventually(lambda: publisher.pending() == [], "the outbox empty")


@pytest_twisted.ensureDeferred
async def test_a_branch_only_the_feed_holds_is_shown_and_resolved(mesh):
    """Another copy of alice's account (same key, as after copying her node directory) edits the club shift
    too: the group holds both branches, and alice's feed (she reads the group) brings the other one back,
    while her user/private never saw it. `shift show` lists it; resolving keeps her revision and tombstones
    the other branch, which reaches the group and bob."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = await mesh.club_shift(HREF)
    private = alice.store.database("user/private")
    before = private.get_repl_docs([(sid, None)])[0]
    mine = alice.shifts.edit(sid, {"summary": "here"})["rev"]
    body = {**before["body"], "summary": "from the other copy"}
    theirs = compute_rev(before["rev"], False, body)
    branch = {"id": sid, "rev": theirs, "deleted": False, "body": body, "history": [theirs, *before["history"]],
              "sig": make_signer(alice.key)(sid, theirs, body, False)}
    await eventually(lambda: alice.flows.publisher.targets(sid)["group:club"]["rev"] == mine, "mine delivered")
    assert await alice.flows.link.deliver(branch, ["group:club"]) == {"group:club": "ok"}
    await eventually(lambda: len(alice.feed().get(sid).conflicts) == 1, "alice's feed has both branches")
    assert private.get(sid).conflicts == []
    shown = alice.shifts.show(sid)
    assert (shown.rev, shown.conflicts) == (mine, [theirs])

    answer = alice.shifts.resolve(sid)
    assert answer["rev"] == mine and answer["removed"] == [theirs]
    club = mesh.hub.db("group/club")
    await eventually(lambda: live(club, sid) == (mine, []), "the group holds alice's revision alone")
    for user in (alice, bob):
        await eventually(lambda: live(user.feed(), sid) == (mine, []), f"{user.name}'s feed holds it alone")
    assert alice.shifts.show(sid).conflicts == []
