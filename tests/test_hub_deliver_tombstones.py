"""The hub's ``deliver`` takes a tombstone into a group only from a member or when the group holds the
document: a tombstone names no audience, so no group level was checked, and anyone registered wrote signed
tombstones of made-up ids into any group, where every reader's node replicates them. A member's tombstones
still go (a delete, a resolve made offline: tests/test_flows_resolve.py)."""

from __future__ import annotations

import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.ids import bound_id
from shiftpeer.shifts import make_signer
from shiftpeer.store.revs import compute_rev


def _tombstone_of_nothing(user) -> dict:
    """A signed tombstone, by ``user``, of an id no database holds."""
    sid = bound_id(user.account)
    body = {"type": "shift", "author": user.account, "modified": 1.0}
    rev = compute_rev(None, True, body)
    return {"id": sid, "rev": rev, "deleted": True, "body": body, "history": [rev],
            "sig": make_signer(user.key)(sid, rev, body, True)}


@pytest_twisted.ensureDeferred
async def test_a_tombstone_goes_only_where_its_shift_is(mesh):
    await mesh.start(users=("alice", "bob", "carol"))
    alice, carol = mesh["alice"], mesh["carol"]
    sid = await mesh.club_shift("https://e.org/tombs")   # group club: alice publishes, bob reads; carol is not in it
    tomb = _tombstone_of_nothing(carol)
    answer = await carol.flows.link.deliver(tomb, ["group:club"])
    assert answer == {"group:club": "error: only members of group 'club' may deliver to it"}, answer
    assert mesh.hub.db("group/club").get(tomb["id"]) is None

    alice.shifts.delete(sid)   # alice's own shift in the group: its tombstone still goes
    club = mesh.hub.db("group/club")
    await eventually(lambda: club.get(sid) is not None and club.get(sid).deleted, "the group's copy deleted")
