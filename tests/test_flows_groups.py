"""Groups end to end over real TLS: create, invite, join, open groups, levels, leave and removal."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError

HREF = "https://example.org/groups"


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_invitation_join_and_levels(mesh):
    """An invite-only group lets in only invitees; a read member replicates it but cannot publish to it."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    await alice.flows.group("new", "club")
    with pytest.raises(FlowError, match="invitation only"):
        await carol.flows.group("join", "club")
    await alice.flows.group("invite", "club", user="bob", level="read")
    joined = await bob.flows.group("join", "club")
    assert joined["level"] == "read"
    members = await bob.flows.group("members", "club")
    assert members["members"] == {"alice": "owner", "bob": "read"}
    with pytest.raises(FlowError, match="only members"):
        await carol.flows.group("members", "club")
    sid = alice.new_shift(HREF)
    await alice.publish(sid, groups=["club"])
    await eventually(lambda: sid in bob.feed_ids(), "reader gets the shift")
    mine = bob.new_shift(HREF)
    with pytest.raises(FlowError, match="may not publish in group 'club' \\(you are at level read"):
        await bob.publish(mine, groups=["club"])
    with pytest.raises(FlowError, match="admin"):
        await bob.flows.group("invite", "club", user="carol")
    with pytest.raises(FlowError, match="no user"):
        await alice.flows.group("invite", "club", user="nobody")
    await alice.flows.group("level", "club", user="bob", level="publish")
    result = await bob.publish(mine, groups=["club"])
    assert result["targets"]["group:club"] == "ok"
    await eventually(lambda: mine in alice.feed_ids(), "owner gets the member's shift")
    assert sid not in carol.feed_ids() and mine not in carol.feed_ids()


@pytest_twisted.ensureDeferred
async def test_open_group_join_freely(mesh):
    """Anyone may join an open group at its join level and then receives what was published before."""
    await mesh.start()
    alice, carol = mesh["alice"], mesh["carol"]
    await alice.flows.group("new", "open-club", open=True)
    sid = alice.new_shift(HREF)
    await alice.publish(sid, groups=["open-club"])
    assert sid not in carol.feed_ids()
    joined = await carol.flows.group("join", "open-club")
    assert joined["level"] == "publish"
    await eventually(lambda: sid in carol.feed_ids(), "the new member catches up")


@pytest_twisted.ensureDeferred
async def test_leaving_stops_live_replication(mesh):
    """After leaving, a shift published to the group never reaches the former member, though its
    connection stays up; the remaining member still gets it."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    await alice.flows.group("new", "club", open=True)
    await bob.flows.group("join", "club")
    await carol.flows.group("join", "club")
    first = alice.new_shift(HREF)
    await alice.publish(first, groups=["club"])
    await eventually(lambda: first in bob.feed_ids() and first in carol.feed_ids(), "both members")
    bob_conn = bob.proto
    await bob.flows.group("leave", "club")
    second = alice.new_shift(HREF)
    await alice.publish(second, groups=["club"])
    await eventually(lambda: second in carol.feed_ids(), "remaining member")
    # bob's connection is the same one and still up, and he gets other things live (a direct send).
    third = alice.new_shift(HREF)
    await alice.publish(third, to=["bob"])
    await eventually(lambda: third in bob.feed_ids(), "bob still connected")
    assert bob.proto is bob_conn and bob.flows.link.connected
    assert second not in bob.feed_ids()


@pytest_twisted.ensureDeferred
async def test_removal_revokes_a_live_feed_on_the_serving_side(mesh):
    """When an admin removes a member, the hub ends that member's live group replication itself, even
    if the member's node keeps asking: nothing published afterwards reaches it."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    await alice.flows.group("new", "club", open=True)
    await bob.flows.group("join", "club")
    await carol.flows.group("join", "club")
    await eventually(lambda: "group/club" in bob.flows.link.pulls, "bob pulls the group")
    await alice.flows.group("remove", "club", user="bob")
    await eventually(lambda: bob.flows.link.pulls["group/club"].finished, "the hub ended bob's feed")
    sid = alice.new_shift(HREF)
    await alice.publish(sid, groups=["club"])
    await eventually(lambda: sid in carol.feed_ids(), "carol")
    # A stale node that asks again for the group is refused.
    again = bob.proto.pull("group/club", "user/feed")
    with pytest.raises(Exception, match="forbidden"):
        await again.done
    assert sid not in bob.feed_ids()
    with pytest.raises(FlowError, match="admin or higher"):
        await carol.flows.group("remove", "club", user="alice")


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_demotion_stops_a_live_push_into_the_group(mesh):
    """A publisher pushing live into a group database is cut off when demoted to reader."""
    await mesh.start()
    alice, bob = mesh["alice"], mesh["bob"]
    await alice.flows.group("new", "club", open=True)
    await bob.flows.group("join", "club")
    push = bob.proto.push("user/public", "group/club", live=True)
    await push.caught_up
    await alice.flows.group("level", "club", user="bob", level="read")
    await eventually(lambda: push.finished, "the hub stopped pulling bob's push")
    assert "group/club" in bob.flows.link.pulls and not bob.flows.link.pulls["group/club"].finished
