"""A comment takes its shift's audience as the hub shows the shift, not from a stale copy in the commenter's
feed, over real TLS to a real hub. bob was removed from the club, so his feed keeps the club's copy of alice's
shift as it was; alice then published it publicly. Before, bob's comment took the old copy's audience (the club
only): the club refused it (bob may no longer comment there), the comment left that audience and went nowhere,
though the shift it answers is public."""

from __future__ import annotations

import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)


@pytest_twisted.ensureDeferred
async def test_a_comment_on_a_shift_gone_public_since_the_feed_copy_is_public(mesh):
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid = await mesh.club_shift("https://example.org/comment-stale-copy")
    await alice.flows.group("remove", "club", user="bob")
    await alice.publish(sid, public=True)
    await eventually(lambda: sid in mesh.hub.ids("master"), "the shift in master")
    assert bob.feed().get(sid).body["audience"]["public"] is False   # the copy bob's feed kept

    made = await bob.flows.comment(sid, "seen in public")
    # the shift's audience still names the club, which refuses bob; the public takes the comment
    assert made["public"] is True and made["targets"]["public"] == "ok", made
    await eventually(lambda: made["id"] in mesh.hub.ids("master"), "the comment in master")
    rows = (await carol.flows.query({"filters": {"thread": sid}}))["rows"]
    assert [r["id"] for r in rows] == [made["id"]]
