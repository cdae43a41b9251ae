"""Comments, notifications, notices, read marks, follows and favorites end to end over real TLS."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError

HREF = "https://example.org/social"


def _messages(user) -> list[dict]:
    return user.flows.messages()["rows"]


@pytest_twisted.ensureDeferred
async def test_comments_notify_author_and_earlier_commenters(mesh):
    """Comments on a public shift reach the thread for everyone; the author and earlier commenters get
    a notification in their feed, the commenter does not get one for their own comment."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid = alice.new_shift(HREF)
    await alice.publish(sid, public=True)
    await eventually(lambda: sid in mesh.hub.ids("shared"), "shared")
    first = await bob.flows.comment(sid, "nice one")
    await eventually(lambda: any(m.get("comment") == first["id"] for m in _messages(alice)), "alice notified")
    second = await carol.flows.comment(sid, "agreed")
    await eventually(lambda: any(m.get("comment") == second["id"] for m in _messages(bob)), "bob notified")
    await eventually(lambda: any(m.get("comment") == second["id"] for m in _messages(alice)), "alice again")
    assert not any(m.get("kind") == "comment" for m in _messages(carol))
    note = next(m for m in _messages(bob) if m.get("comment") == second["id"])
    assert note["from"] == "carol" and note["shift"] == sid and note["text"] == "agreed"
    thread = await carol.flows.query({"filters": {"thread": sid}})
    assert [r["id"] for r in thread["rows"]] == [second["id"], first["id"]]
    assert [r["body"]["text"] for r in thread["rows"]] == ["agreed", "nice one"]


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_group_comments_stay_in_the_group(mesh):
    """A reader comments on a group shift: members see the thread, outsiders cannot see or comment."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid = await mesh.club_shift(HREF)
    result = await bob.flows.comment(sid, "from a reader")
    assert result["targets"] == {"group:club": "ok"}
    await eventually(lambda: any(m.get("comment") == result["id"] for m in _messages(alice)), "alice notified")
    await eventually(lambda: result["id"] in alice.feed_ids("comment"), "comment in the group feed")
    thread = await alice.flows.query({"filters": {"thread": sid}})
    assert [r["id"] for r in thread["rows"]] == [result["id"]]
    assert (await carol.flows.query({"filters": {"thread": sid}}))["rows"] == []
    with pytest.raises(FlowError, match="can see"):
        await carol.flows.comment(sid, "let me in")


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_notices_and_read_marks(mesh):
    """An operator notice reaches every user's feed; marking read lowers the unread count; a non-operator
    cannot post notices."""
    await mesh.start()
    alice, bob = mesh["alice"], mesh["bob"]
    mesh.hub.hub.operators.add(alice.account)
    posted = mesh.hub.hub.social.post_notice("maintenance at noon")
    await alice.flows.notice("new version out")
    for user in mesh.users.values():
        await eventually(lambda u=user: u.flows.messages()["unread"] == 2, f"{user.name}: two notices")
    rows = bob.flows.messages()["rows"]
    assert {r["text"] for r in rows} == {"maintenance at noon", "new version out"}
    assert bob.flows.mark_read([posted["id"]])["unread"] == 1
    assert [r["read"] for r in bob.flows.messages()["rows"] if r["id"] == posted["id"]] == [True]
    assert bob.flows.mark_read()["unread"] == 0
    assert alice.flows.messages()["unread"] == 2
    with pytest.raises(FlowError, match="operators"):
        await bob.flows.notice("I am not an operator")


@pytest_twisted.ensureDeferred
async def test_follows_and_favorites(mesh):
    """"From people I follow" is a query; favorites have a count and a "my favorites" query."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    by_alice = alice.new_shift(HREF)
    by_bob = bob.new_shift(HREF)
    await alice.publish(by_alice, public=True)
    await bob.publish(by_bob, public=True)
    await eventually(lambda: {by_alice, by_bob} <= mesh.hub.ids("shared"), "shared")
    assert (await carol.flows.query({"following": True}))["rows"] == []
    await carol.flows.follow("alice")
    followed = await carol.flows.query({"following": True})
    assert [r["id"] for r in followed["rows"]] == [by_alice]
    await carol.flows.follow("bob")
    await carol.flows.follow("alice", on=False)
    assert [r["id"] for r in (await carol.flows.query({"following": True}))["rows"]] == [by_bob]
    assert (await carol.flows.favorite(by_alice))["count"] == 1
    assert (await bob.flows.favorite(by_alice))["count"] == 2
    assert (await bob.flows.favorite(by_alice, on=False))["count"] == 1
    mine = await carol.flows.query({"favorites": True})
    assert [r["id"] for r in mine["rows"]] == [by_alice]
    with pytest.raises(FlowError, match="can see"):
        await carol.flows.favorite("no-such-shift")


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_a_comment_cannot_reach_a_shift_its_author_cannot_see(mesh):
    """A hostile user who forges a public comment on a group shift they cannot see gets it refused:
    nothing reaches master, shared or the author's messages."""
    await mesh.start()
    alice, carol = mesh["alice"], mesh["carol"]
    await alice.flows.group("new", "club")
    sid = alice.new_shift(HREF)
    await alice.publish(sid, groups=["club"])
    await eventually(lambda: sid in mesh.hub.ids("shared"), "shared")
    forged = await carol.flows.publisher.comment({"id": sid, "body": {"audience": {"public": True}}}, "psst")
    await eventually(lambda: carol.flows.link.push.seq >= carol.store.database("user/public").update_seq(),
                     "pushed to the hub")
    assert forged["id"] not in mesh.hub.ids("master") and forged["id"] not in mesh.hub.ids("shared")
    assert not any(m.get("kind") == "comment" for m in _messages(alice))


@pytest_twisted.ensureDeferred
async def test_a_full_peer_answers_following_and_favorites_from_its_feed(mesh):
    """A full peer asks the hub only whom the user follows and what they favorited, then answers from its
    own feed: --following and --favorites each, and both at once (shifts that are both). Offline, these
    two queries say the hub is needed (an ordinary node too), while other queries still answer."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    peer = await mesh.add_user("fp", full_peer=True)
    by_alice, by_bob = alice.new_shift(HREF), bob.new_shift(HREF)
    await alice.publish(by_alice, public=True)
    await bob.publish(by_bob, public=True)
    await eventually(lambda: {by_alice, by_bob} <= peer.feed_ids(), "both shifts in the full peer's feed")

    async def ids(**q) -> list[str]:
        answer = await peer.flows.query(q)
        assert answer["source"] == "feed"
        return [r["id"] for r in answer["rows"]]

    assert await ids(following=True) == [] and await ids(favorites=True) == []
    await peer.flows.follow("alice")
    await peer.flows.favorite(by_bob)
    assert await ids(following=True) == [by_alice]
    assert await ids(favorites=True) == [by_bob]
    assert await ids(following=True, favorites=True) == []
    await peer.flows.favorite(by_alice)
    assert await ids(following=True, favorites=True) == [by_alice]
    assert await ids(favorites=True, filters={"author": "bob"}) == [by_bob]

    for user in (peer, bob):
        user.disconnect()
        await eventually(lambda u=user: not u.flows.link.connected, f"{user.name} offline")
        for q in ({"following": True}, {"favorites": True}):
            with pytest.raises(FlowError, match="follows and favorites are kept on the hub, which is not "
                                                "connected") as refused:
                await user.flows.query(q)
            assert refused.value.code == "not_connected"
    assert {r["id"] for r in (await peer.flows.query({}))["rows"]} == {by_alice, by_bob}
