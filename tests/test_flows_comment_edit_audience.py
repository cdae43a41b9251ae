"""A comment's edit keeps the comment within its signed audience, over real TLS to a real hub. A comment takes
the audience of its shift as its author found it (here: the club), and the hub's ``shared`` also gives it the
shift's visibility; before, each revision took the shift's visibility as it was when that revision arrived, so
once the shift had been published further (publicly, here) a mere edit of the comment (a typo fixed) showed it
to everyone that audience reached, in every thread, though its author had written and signed it for the club."""

from __future__ import annotations

import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)


async def thread(user, sid: str) -> list[tuple[str, str]]:
    """(id, text) of each comment ``user``'s thread query shows on the shift."""
    answer = await user.flows.query({"filters": {"thread": sid}})
    return [(r["id"], r["body"]["text"]) for r in answer["rows"]]


async def club_comment_then_public(net, href: str) -> tuple[str, dict]:
    """bob's comment for the club on alice's club shift, which alice then publishes; (shift id, the comment
    as made) once ``shared`` has both."""
    alice, bob = net["alice"], net["bob"]
    sid = await net.club_shift(href)
    made = await bob.flows.comment(sid, "for the club")
    shared = net.hub.db("shared")
    await eventually(lambda: shared.get(made["id"]) is not None, "the comment in shared")
    await alice.publish(sid, public=True)
    await eventually(lambda: "public" in shared.get(sid).vis, "the shift is public")
    return sid, made


@pytest_twisted.ensureDeferred
async def test_an_edit_does_not_show_a_club_comment_to_the_public_the_shift_went_to_later(mesh):
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid, made = await club_comment_then_public(mesh, "https://example.org/comment-edit-audience")
    shared = mesh.hub.db("shared")
    assert await thread(carol, sid) == []

    await bob.flows.edit_comment(made["id"], "for the club, typo fixed")
    await eventually(lambda: shared.get(made["id"]).body["text"] == "for the club, typo fixed", "the edit in shared")
    for user in (alice, bob):
        assert await thread(user, sid) == [(made["id"], "for the club, typo fixed")], user.name
    assert await thread(carol, sid) == []
    assert (await carol.flows.link.call("get", {"ids": [made["id"]]}))["rows"] == []
