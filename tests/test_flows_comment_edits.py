"""Editing and deleting comments end to end over real TLS: the new revision or the tombstone reaches
the hub's ``shared``, the group and every other user, notifications follow it, and only the author
may do either."""

from __future__ import annotations

from typing import Any, Awaitable

import pytest
import pytest_twisted

from flowmesh import DEADLINE, eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError
from tests.helpers_node import eventually_async

HREF = "https://example.org/comment-edits"


async def thread_texts(user: Any, shift_id: str) -> list[str]:
    """The comment texts ``user`` sees on a shift, newest first (what GET .../comments lists)."""
    answer = await user.flows.query({"filters": {"thread": shift_id}})
    return [r["body"]["text"] for r in answer["rows"]]


def comment_notes(user: Any) -> list[dict]:
    """The comment notifications in the user's messages."""
    return [m for m in user.flows.messages()["rows"] if m.get("kind") == "comment"]


async def public_shift_with_comment(mesh: Any, text: str = "frist") -> tuple[str, dict]:
    """Alice publishes a shift publicly, bob comments on it, alice has been notified."""
    alice, bob = mesh["alice"], mesh["bob"]
    sid = alice.new_shift(HREF)
    await alice.publish(sid, public=True)
    await eventually(lambda: sid in mesh.hub.ids("shared"), "the shift in shared")
    made = await bob.flows.comment(sid, text)
    await eventually(lambda: [n["comment"] for n in comment_notes(alice)] == [made["id"]], "alice notified")
    return sid, made


@pytest_twisted.ensureDeferred
async def test_an_edit_reaches_everyone_and_notifies_nobody_again(mesh):
    """The author edits a comment on a public shift: the shift's author and a bystander see the new text
    in the thread, and the author's one notification now quotes it, still one, still the only unread."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid, made = await public_shift_with_comment(mesh)
    assert await thread_texts(carol, sid) == ["frist"]

    edited = await bob.flows.edit_comment(made["id"], "first!", rev=made["rev"])
    assert edited["id"] == made["id"] and edited["rev"] != made["rev"] and edited["public"] is True

    for user in (alice, carol, bob):
        await eventually_async(lambda u=user: thread_texts(u, sid), lambda t: t == ["first!"], DEADLINE)
    await eventually(lambda: [n["text"] for n in comment_notes(alice)] == ["first!"], "the notification follows")
    assert [n["comment"] for n in comment_notes(alice)] == [made["id"]]
    assert alice.flows.messages()["unread"] == 1
    assert comment_notes(carol) == [] and comment_notes(bob) == []
    assert mesh.hub.db("shared").get(made["id"]).body["text"] == "first!"


@pytest_twisted.ensureDeferred
async def test_a_deleted_public_comment_is_gone_for_everyone(mesh):
    """The author deletes a comment on a public shift: it leaves every thread, master and shared, and the
    notification quoting it is withdrawn from the shift author's messages."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid, made = await public_shift_with_comment(mesh, "oops, wrong page")
    kept = await carol.flows.comment(sid, "stays")
    await eventually_async(lambda: thread_texts(alice, sid), lambda t: t == ["stays", "oops, wrong page"], DEADLINE)

    gone = await bob.flows.delete_comment(made["id"])
    assert gone["id"] == made["id"] and gone["deleted"] is True

    for user in (alice, carol, bob):
        await eventually_async(lambda u=user: thread_texts(u, sid), lambda t: t == ["stays"], DEADLINE)
    await eventually(lambda: made["id"] not in mesh.hub.ids("master"), "tombstone in master")
    assert made["id"] not in mesh.hub.ids("shared") and kept["id"] in mesh.hub.ids("shared")
    await eventually(lambda: [n["comment"] for n in comment_notes(alice)] == [kept["id"]],
                     "the deleted comment's notification withdrawn")
    assert all("oops" not in m.get("text", "") for m in alice.flows.messages()["rows"])
    with pytest.raises(FlowError) as refused:
        await bob.flows.edit_comment(made["id"], "back again")
    assert refused.value.code == "not_found"


@pytest_twisted.ensureDeferred
async def test_group_comment_edit_and_delete_go_through_the_outbox(mesh):
    """A member's comment on a group shift lives in their user/private and reaches the group by delivery:
    the edit and then the tombstone are delivered to the group too, and members see each."""
    await mesh.start()
    alice, bob = mesh["alice"], mesh["bob"]
    sid = await mesh.club_shift(HREF)
    made = await bob.flows.comment(sid, "in the club")
    await eventually(lambda: made["id"] in alice.feed_ids("comment"), "alice's feed has the comment")

    edited = await bob.flows.edit_comment(made["id"], "in the club, edited")
    assert edited["targets"] == {"group:club": "ok"}
    assert mesh.hub.db("group/club").get(made["id"]).rev == edited["rev"]
    await eventually(lambda: alice.feed().get(made["id"]).body["text"] == "in the club, edited", "edit in feed")
    assert await thread_texts(alice, sid) == ["in the club, edited"]

    gone = await bob.flows.delete_comment(made["id"])
    assert gone["targets"] == {"group:club": "ok"} and gone["deleted"] is True
    assert made["id"] not in mesh.hub.ids("group/club")
    await eventually(lambda: made["id"] not in alice.feed_ids("comment"), "gone from alice's feed")
    assert await thread_texts(alice, sid) == [] and await thread_texts(bob, sid) == []
    await eventually(lambda: comment_notes(alice) == [], "notification withdrawn")


@pytest_twisted.ensureDeferred
async def test_only_the_author_may_edit_or_delete_and_bad_edits_change_nothing(mesh):
    """Another user (even the shift's author) is refused with not_author, an unknown id with not_found,
    a stale rev with conflict and bad text with bad_text; the comment everyone sees stays as it was."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid, made = await public_shift_with_comment(mesh)
    edited = await bob.flows.edit_comment(made["id"], "first!")
    await eventually(lambda: mesh.hub.db("shared").get(made["id"]).rev == edited["rev"], "edit in shared")

    async def code_of(call: Awaitable[Any]) -> str:
        with pytest.raises(FlowError) as refused:
            await call
        return refused.value.code

    for other in (alice, carol):
        assert await code_of(other.flows.edit_comment(made["id"], "hijacked")) == "not_author"
        assert await code_of(other.flows.delete_comment(made["id"])) == "not_author"
    assert await code_of(bob.flows.edit_comment("cm-no-such-comment", "x")) == "not_found"
    assert await code_of(bob.flows.delete_comment("cm-no-such-comment")) == "not_found"
    assert await code_of(alice.flows.edit_comment(sid, "a shift is not a comment")) == "not_found"
    assert await code_of(bob.flows.edit_comment(made["id"], "late", rev=made["rev"])) == "conflict"
    for bad in ("", "   ", "x" * 4001, 42, None):
        assert await code_of(bob.flows.edit_comment(made["id"], bad)) == "bad_text"

    assert bob.store.database("user/public").get(made["id"]).rev == edited["rev"]
    assert mesh.hub.db("shared").get(made["id"]).rev == edited["rev"]
    for user in (alice, carol):
        assert await thread_texts(user, sid) == ["first!"]
