"""A comment reaches only the places that take it, over real TLS to a real hub.

alice's shift is in the club (bob reads it) and somewhere carol may see it; carol is not in the club. A comment
takes its shift's audience, so a node that signs it as it is names the club, which refuses carol (she cannot
read it). The hub's ``shared`` gave the comment the tokens of its shift's record that its signed audience named,
the club's among them, so until carol's node wrote a revision without the club (``publishing._narrow``) the
club's readers found it there as a club comment; a node that never narrows (an older or a hostile one, played
here by a revision signed and handed in directly) left it so for good. ``shared`` now gives a comment a place's
token only where that place's database took it (roles/merge.py), and carol's own node leaves the club out of
the first revision it signs when the hub says she cannot read it, so no refused revision is written at all.
"""

from __future__ import annotations

import pytest_twisted

import flowmesh
from flowmesh import eventually, signed_comment
from shiftpeer.roles.tokenjudge import Judge
from tests.test_flows_comment_edit_audience import thread

mesh = flowmesh.mesh   # the fixture


def tokens_seen(hub: flowmesh.HubParty, docid: str) -> list[list[str]]:
    """Every set of tokens ``shared`` gives ``docid`` from now on, one a commit of ``shared``."""
    shared, seen = hub.db("shared"), []

    def committed(dbname: str, seq: int) -> None:
        held = shared.get(docid) if dbname == "shared" else None
        if held is not None:
            seen.append(list(held.vis))

    hub.store.subscribe(committed)
    return seen


async def hand_in(user: flowmesh.UserParty, doc: dict, targets: list[str]) -> dict:
    """``doc`` pushed from ``user``'s ``user/public`` (when public) and delivered to ``targets``, as ``user``'s
    node would send it were it never to narrow; the hub's answer per target."""
    if doc["body"]["audience"]["public"]:
        user.store.database("user/public").bulk_replicated([doc])
    return await user.flows.link.deliver(doc, targets)


async def public_club_shift(net: flowmesh.Mesh, href: str) -> str:
    """alice's shift in the club (bob reads it) and public, once ``shared`` has it public; its id."""
    await net.start()
    sid = await net.club_shift(href)
    await net["alice"].publish(sid, public=True)
    await eventually(lambda: "public" in net.hub.db("shared").get(sid).vis, "the shift is public")
    return sid


@pytest_twisted.ensureDeferred
async def test_a_comment_the_club_refused_is_no_club_comment_though_its_node_never_narrows(mesh):
    sid = await public_club_shift(mesh, "https://example.org/never-narrowed")
    alice, bob, carol, shared = mesh["alice"], mesh["bob"], mesh["carol"], mesh.hub.db("shared")

    doc = signed_comment(carol, sid, {"public": True, "groups": ["club"], "to": []}, "from outside the club")
    seen = tokens_seen(mesh.hub, doc["id"])
    answer = await hand_in(carol, doc, ["group:club"])
    assert answer["group:club"].startswith("error:"), answer   # she cannot read the club
    await eventually(lambda: shared.get(doc["id"]) is not None, "the comment in shared")
    assert seen and not any("group:club" in vis for vis in seen), seen
    assert shared.get(doc["id"]).vis == sorted(["public", f"author:{carol.account}", f"author:{alice.account}"])
    assert Judge(mesh.hub.store, shared).unjustified(shared.get(doc["id"])) == []   # the rebuild agrees

    # it is public: everyone finds it in the thread, but the club's own thread does not take it for the club's
    for user in (alice, bob, carol):
        assert await thread(user, sid) == [(doc["id"], "from outside the club")], user.name
    club = await bob.flows.query({"filters": {"thread": sid, "group": "club"}})
    assert club["rows"] == [], club
    assert doc["id"] not in mesh.hub.ids("group/club")


@pytest_twisted.ensureDeferred
async def test_club_readers_never_see_a_comment_the_club_refused(mesh):
    """The shift went to the club and to carol alone: her comment goes to her inbox (she may see the shift
    there), the club refuses it, and it is not public, so a club token was the club's only way to it."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid = await mesh.club_shift("https://example.org/club-and-carol")
    await alice.publish(sid, to=["carol"])
    shared = mesh.hub.db("shared")
    await eventually(lambda: "user:carol" in shared.get(sid).vis, "the shift sent to carol")

    doc = signed_comment(carol, sid, {"public": False, "groups": ["club"], "to": ["carol"]}, "between us")
    seen = tokens_seen(mesh.hub, doc["id"])
    answer = await hand_in(carol, doc, ["group:club", "user:carol"])
    assert answer["user:carol"] == "ok" and answer["group:club"].startswith("error:"), answer
    await eventually(lambda: shared.get(doc["id"]) is not None, "the comment in shared")
    assert seen and not any("group:club" in vis for vis in seen), seen

    assert await thread(bob, sid) == []
    assert (await bob.flows.link.call("get", {"ids": [doc["id"]]}))["rows"] == []
    for user in (alice, carol):   # the shift's author, and the comment's own place
        assert await thread(user, sid) == [(doc["id"], "between us")], user.name
    assert (await mesh.who_sees(doc["id"]))["hub"] == {"alice", "carol"}
    cp = await mesh.hub.hub.tokens.rebuild()
    assert cp["narrowed"] == 0, cp


@pytest_twisted.ensureDeferred
async def test_the_commenters_node_leaves_out_a_group_it_may_not_comment_in_before_it_signs(mesh):
    sid = await public_club_shift(mesh, "https://example.org/narrowed-before-signing")
    alice, bob, carol, shared = mesh["alice"], mesh["bob"], mesh["carol"], mesh.hub.db("shared")

    made = await carol.flows.comment(sid, "from outside the club")
    assert made["audience"] == {"public": True, "groups": [], "to": []}, made
    assert made["targets"]["group:club"].startswith("error:") and "club" in made["targets"]["group:club"], made
    own = carol.store.database("user/public").get_repl_docs([(made["id"], None)])
    assert [d["history"] for d in own] == [[made["rev"]]]   # one revision: nothing was refused, nothing narrowed
    assert carol.flows.publisher.targets(made["id"]) == {} and carol.flows.publisher.refused(made["id"]) == {}
    await eventually(lambda: getattr(shared.get(made["id"]), "rev", None) == made["rev"], "the comment in shared")
    for user in (alice, bob, carol):
        assert await thread(user, sid) == [(made["id"], "from outside the club")], user.name

    # bob reads the club: his comment names it, as the shift does
    his = await bob.flows.comment(sid, "from the club")
    assert his["audience"] == {"public": True, "groups": ["club"], "to": []}, his
    assert his["targets"] == {"public": "ok", "group:club": "ok"}, his


@pytest_twisted.ensureDeferred
async def test_a_node_that_thinks_it_left_a_group_asks_the_hub_before_leaving_it_out(mesh):
    """What the node last heard of its groups may be old (another copy of the account joined since): a group
    it does not know it reads is asked about again, not left out on that word."""
    await mesh.start()
    alice, bob = mesh["alice"], mesh["bob"]
    sid = await mesh.club_shift("https://example.org/stale-memberships")
    bob.flows.link.account = {**bob.flows.link.account, "groups": {}}   # as before he joined
    made = await bob.flows.comment(sid, "from the club")
    assert made["audience"] == {"public": False, "groups": ["club"], "to": []}, made
    assert made["targets"] == {"group:club": "ok"}, made
    assert await thread(alice, sid) == [(made["id"], "from the club")]
