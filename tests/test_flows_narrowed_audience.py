"""A shift's record in the hub's ``shared`` keeps the visibility tokens of every place it ever went, and
the winning revision is its newest: so a revision whose signed audience no longer names a place was still
served there. Alice published a shift to her group "inner" and to bob's "outer"; bob removed her from
"outer"; her next edit was refused there and her node wrote a revision without "outer" (docs/flows.md, *A
refused target leaves the audience*), delivered to "inner" alone. "outer" keeps the earlier revision, but
carol, who reads "outer" only, was given the edit by the hub's ``get`` and queries. The hub now serves a
shift under a place's token only when the winning revision's signed audience names that place.
Real hub and users over TLS on 127.0.0.1."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)

HREF = "https://example.org/narrowed"


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_an_edit_left_out_of_a_group_is_not_served_to_that_group(mesh):
    await mesh.start(users=("alice", "bob", "carol", "dave"))
    alice, bob, carol, dave = mesh["alice"], mesh["bob"], mesh["carol"], mesh["dave"]
    await alice.flows.group("new", "inner")
    await alice.flows.group("invite", "inner", user="dave", level="read")
    await dave.flows.group("join", "inner")
    await bob.flows.group("new", "outer")
    for user, level in (("alice", "publish"), ("carol", "read")):
        await bob.flows.group("invite", "outer", user=user, level=level)
        await mesh[user].flows.group("join", "outer")
    sid = alice.new_shift(HREF, summary="for both groups")
    await alice.publish(sid, groups=["inner", "outer"])
    await eventually(lambda: sid in carol.feed_ids() and sid in dave.feed_ids(), "both groups have it")
    await bob.flows.group("remove", "outer", user="alice")

    alice.shifts.edit(sid, {"summary": "inner circle only"})
    await eventually(lambda: "group:outer" in alice.flows.publisher.refused(sid), "outer refused the edit")
    await eventually(lambda: mesh.hub.db("shared").get(sid).body["summary"] == "inner circle only",
                     "shared holds the edit")

    def summaries(rows):
        return [r["body"]["summary"] for r in rows]

    assert summaries((await dave.flows.link.call("get", {"ids": [sid]}))["rows"]) == ["inner circle only"]
    assert "inner circle only" not in summaries((await carol.flows.link.call("get", {"ids": [sid]}))["rows"])
    for args in ({"filters": {"href": HREF}}, {"filters": {"group": "outer"}}):
        rows = (await carol.flows.link.call("query", args))["rows"]
        assert "inner circle only" not in summaries(rows), args
    assert mesh.hub.db("group/outer").get(sid).body["summary"] == "for both groups"   # outer keeps its revision

    # a comment made since takes the shift's audience (inner alone): outer's readers get no thread of it
    made = await dave.flows.comment(sid, "inner talk")
    assert made["audience"]["groups"] == ["inner"], made
    await eventually(lambda: made["id"] in mesh.hub.ids("shared"), "the comment in shared")
    assert [r["id"] for r in (await dave.flows.link.call("query", {"filters": {"thread": sid}}))["rows"]] == \
        [made["id"]]
    assert (await carol.flows.link.call("query", {"filters": {"thread": sid}}))["rows"] == []
    assert (await carol.flows.link.call("get", {"ids": [made["id"]]}))["rows"] == []
