"""A comment notification quotes the comment's text, so the hub sends it only to people who may read the
comment: a member removed from the group a shift went to is not notified of later comments on it, and a
notification they got while a member is withdrawn, not rewritten, when the comment is edited after they
lost access (docs/flows.md, Shared and visibility). Real hub and users over TLS on 127.0.0.1."""

from __future__ import annotations

import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from tests.test_flows_comment_edits import comment_notes

HREF = "https://example.org/club-talk"


async def _club_with_carol_removed(mesh) -> tuple[str, dict]:
    """Alice's club with bob and carol (publish level), a club shift of alice's, a comment of bob's that
    carol (an earlier commenter) was notified of; then alice removes carol from the club."""
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    await alice.flows.group("new", "club")
    for user in ("bob", "carol"):
        await alice.flows.group("invite", "club", user=user, level="publish")
        await mesh[user].flows.group("join", "club")
    sid = alice.new_shift(HREF)
    await alice.publish(sid, groups=["club"])
    await eventually(lambda: sid in bob.feed_ids() and sid in carol.feed_ids(), "the club shift in both feeds")
    await carol.flows.comment(sid, "carol was here")
    made = await bob.flows.comment(sid, "welcome")
    await eventually(lambda: [n["text"] for n in comment_notes(carol)] == ["welcome"], "carol notified")
    await alice.flows.group("remove", "club", user="carol")
    return sid, made


@pytest_twisted.ensureDeferred
async def test_a_removed_member_is_not_notified_of_later_comments(mesh):
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid, made = await _club_with_carol_removed(mesh)
    later = await bob.flows.comment(sid, "club secret")
    await eventually(lambda: "club secret" in [n["text"] for n in comment_notes(alice)], "alice notified")
    # alice's and carol's notifications are written in the same step on the hub
    notes = [mesh.hub.db("messages/carol").get(i).body for i in mesh.hub.ids("messages/carol")]
    assert [n["comment"] for n in notes if n.get("kind") == "comment"] == [made["id"]], (later["id"], notes)
    assert all("club secret" not in m.get("text", "") for m in carol.flows.messages()["rows"])


@pytest_twisted.ensureDeferred
async def test_an_edit_withdraws_the_notification_of_a_removed_member(mesh):
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid, made = await _club_with_carol_removed(mesh)
    await bob.flows.edit_comment(made["id"], "welcome, members only")
    await eventually(lambda: "welcome, members only" in [n["text"] for n in comment_notes(alice)],
                     "alice's notification quotes the edit")
    assert [n.get("text") for n in comment_notes(carol)] in (["welcome"], [])   # never the new text
    await eventually(lambda: comment_notes(carol) == [], "carol's notification withdrawn")
    assert all("members only" not in m.get("text", "") for m in carol.flows.messages()["rows"])
