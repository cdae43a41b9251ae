"""A revision a group refused is not served to that group's readers, though its author's node never left the
group out of its audience, over real TLS to a real hub.

dave's shift (and his comment) went to the club and to bob; alice removed dave from the club, and dave's node,
an older or a hostile one played here by a revision signed and handed in directly, edits it still naming the
club. bob's inbox takes the edit, the club refuses it and keeps the earlier revision. ``shared``'s record, whose
winner is now the edit, keeps the club's token (the club holds the document), and the winner's audience names
the club, so the hub served the club's readers the edit by query and ``get``: a post into a group that removed
him. A place's token now serves a row only while that place's database holds the winning revision
(``queries.served``, ``Judge.holds_winner``); the club's readers are served the revision the club holds, as
their feeds hold it, and may comment on it (``HubQueries._shown``: tests/test_hub_place_revision_served.py), bob
(whose inbox took the edit) finds the edit, and a public row is served as before, with no read of a place.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest_twisted

import flowmesh
from flowmesh import eventually, other_copy_revision
from shiftpeer.roles.queries import served
from tests.test_flows_comment_edit_audience import thread
from tests.test_flows_comment_only_where_taken import hand_in

mesh = flowmesh.mesh   # the fixture

HREF = "https://example.org/refused-edit"
EDIT = "posted after removal"


async def club_with_dave(net: flowmesh.Mesh) -> None:
    """alice's club: dave publishes in it, carol reads it; bob is not in it."""
    await net.start(users=("alice", "bob", "carol", "dave"))
    await net["alice"].flows.group("new", "club")
    for user, level in (("dave", "publish"), ("carol", "read")):
        await net["alice"].flows.group("invite", "club", user=user, level=level)
        await net[user].flows.group("join", "club")


def own_revision(user: flowmesh.UserParty, docid: str) -> dict:
    """The live winning revision of ``user``'s own document, as a repl doc (from ``user/private`` or, once it is
    public, ``user/public``)."""
    for name in ("user/private", "user/public"):
        docs = user.store.database(name).get_repl_docs([(docid, None)])
        if docs and not docs[0]["deleted"]:
            return docs[0]
    raise AssertionError(f"{user.name} holds no {docid}")


async def edit_still_naming_the_club(net: flowmesh.Mesh, docid: str, targets: list[str], **changes: str) -> dict:
    """dave (removed from the club) hands in an edit of ``docid`` whose signed audience still names the club (a
    node that never narrows); once the club has refused it and ``shared``'s winner is the edit, the edit."""
    dave, shared = net["dave"], net.hub.db("shared")
    edit = other_copy_revision(dave, own_revision(dave, docid), **changes)
    assert "club" in edit["body"]["audience"]["groups"], edit["body"]
    answer = await hand_in(dave, edit, targets)
    assert answer["group:club"].startswith("error:"), answer
    assert all(answer[t] == "ok" for t in targets if t != "group:club"), answer
    await eventually(lambda: shared.get(docid).rev == edit["rev"], "shared's winner is the edit")
    assert "group:club" in shared.get(docid).vis   # the record keeps the club's token: the club holds it
    assert net.hub.db("group/club").get(docid).rev != edit["rev"]   # at the revision it took
    return edit


def summaries(answer: dict) -> list[str]:
    return [r["body"]["summary"] for r in answer["rows"]]


@pytest_twisted.ensureDeferred
async def test_a_shift_edit_the_club_refused_is_not_served_to_club_readers(mesh):
    await club_with_dave(mesh)
    bob, carol, dave = mesh["bob"], mesh["carol"], mesh["dave"]
    sid = dave.new_shift(HREF, summary="for the club and bob")
    await dave.publish(sid, groups=["club"], to=["bob"])
    public = dave.new_shift(HREF, summary="for everyone and the club")
    await dave.publish(public, public=True, groups=["club"])
    await eventually(lambda: {sid, public} <= carol.feed_ids() and sid in bob.feed_ids(), "both shifts arrived")
    await mesh["alice"].flows.group("remove", "club", user="dave")

    await edit_still_naming_the_club(mesh, sid, ["group:club", "user:bob"], summary=EDIT)

    # carol reads the club: the edit nowhere, the club's revision (as in her feed) by id, by page, by author and
    # by group filter; and she may comment on it, in the club
    held = mesh.hub.db("group/club").get(sid).rev
    assert [r["rev"] for r in (await carol.flows.link.call("get", {"ids": [sid]}))["rows"]] == [held]
    for filters in ({"href": HREF}, {"author": "dave"}, {"group": "club"}):
        got = summaries(await carol.flows.link.call("query", {"filters": filters}))
        assert EDIT not in got and "for the club and bob" in got, (filters, got)
    assert carol.feed().get(sid).body["summary"] == "for the club and bob"   # the club's revision, in her feed
    made = await carol.flows.comment(sid, "on what the club holds")
    assert made["targets"].get("group:club") == "ok", made
    await eventually(lambda: made["id"] in mesh.hub.ids("shared"), "the comment in shared")
    assert await thread(carol, sid) == [(made["id"], "on what the club holds")]

    # bob, whose inbox took the edit, finds it
    assert summaries(await bob.flows.link.call("get", {"ids": [sid]})) == [EDIT]
    assert EDIT in summaries(await bob.flows.link.call("query", {"filters": {"href": HREF}}))

    # the public shift's edit goes to master, which takes it (and dave's node, which holds it, leaves the club
    # out of its next revision): everyone, the club's readers too, is served the revision master holds
    edit = other_copy_revision(dave, own_revision(dave, public), summary="public edit")
    answer = await hand_in(dave, edit, ["group:club"])
    assert answer["group:club"].startswith("error:"), answer
    shared = mesh.hub.db("shared")
    await eventually(lambda: not dave.flows.publisher.pending() and shared.get(public).body["summary"] == "public edit"
                     and shared.get(public).rev == dave.flows.publisher.current(public)["rev"], "master took it")
    assert mesh.hub.db("group/club").get(public).body["summary"] == "for everyone and the club"
    for user in (bob, carol):
        rows = (await user.flows.link.call("get", {"ids": [public]}))["rows"]
        assert [r["rev"] for r in rows] == [shared.get(public).rev], user.name
        assert "public edit" in summaries(await user.flows.link.call("query", {"filters": {"href": HREF}}))


@pytest_twisted.ensureDeferred
async def test_a_comment_edit_the_club_refused_is_not_served_to_club_readers(mesh):
    """alice's shift went to the club, bob and dave; dave's comment takes that audience, and his edit of it after
    the removal goes to bob's inbox and his own (he still sees the shift there), not to the club."""
    await club_with_dave(mesh)
    alice, bob, carol, dave = mesh["alice"], mesh["bob"], mesh["carol"], mesh["dave"]
    sid = alice.new_shift(HREF, summary="for the club, bob and dave")
    await alice.publish(sid, groups=["club"], to=["bob", "dave"])
    await eventually(lambda: sid in carol.feed_ids() and sid in bob.feed_ids(), "the shift arrived")
    made = await dave.flows.comment(sid, "for the club")
    assert made["targets"].get("group:club") == "ok", made
    await eventually(lambda: made["id"] in carol.feed_ids("comment"), "carol has the comment")
    await alice.flows.group("remove", "club", user="dave")

    targets = sorted(made["targets"])
    await edit_still_naming_the_club(mesh, made["id"], targets, text=EDIT)

    assert await thread(carol, sid) == [(made["id"], "for the club")]   # the club's revision, as in her feed
    rows = (await carol.flows.link.call("get", {"ids": [made["id"]]}))["rows"]
    assert [r["body"]["text"] for r in rows] == ["for the club"]
    assert carol.feed().get(made["id"]).body["text"] == "for the club"
    for user in (alice, bob):   # the shift's author; bob's inbox took the edit
        assert await thread(user, sid) == [(made["id"], EDIT)], user.name


def test_only_a_row_no_cheaper_token_serves_asks_whether_its_place_holds_the_winner():
    """``served`` asks its judge (a read of the place's database) last: a public shift, or the asker's own, is
    served without one; a shift reached through a group's token only when the judge says the group holds it."""
    asked: list[str] = []

    def judge(doc, token):
        asked.append(token)
        return token == "group:club"

    body = {"type": "shift", "author": "dave", "audience": {"public": True, "groups": ["club", "other"], "to": []}}
    doc = SimpleNamespace(id="s", rev="2-x", body=body, vis=["author:dave", "group:club", "group:other", "public"])
    assert served(doc, {"public", "group:club"}, judge) and asked == []
    assert served(doc, {"author:dave", "group:other"}, judge) and asked == []
    assert not served(doc, {"group:other"}, judge) and asked == ["group:other"]
    assert served(doc, {"group:club"}, judge) and asked == ["group:other", "group:club"]
