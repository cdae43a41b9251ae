"""A group's readers are served the revision the group holds when ``shared``'s winner is not theirs to see.

dave's shift went to the club and to bob. The club refused his later edit (he was removed from it), bob's
inbox took it, so ``shared``'s winner is the edit, which the club's readers may not see (``queries.served``).
They were given nothing by the hub: no row, no ``get``, and a comment of theirs on the shift was refused as
``not_visible``, though their feeds hold the club's revision. The hub now serves them the revision the club
holds (``HubQueries._shown``, ``Judge.place_revision``); a reader outside the club is given nothing new, and
no one is given, through the club, a revision the club refused.

Each store is built as the running hub builds it: signed documents in the source databases merged by the real
merge (``hand_in`` writes past the hub's rules: a database the rules would refuse a revision is simply not
handed it)."""

from __future__ import annotations

from shiftpeer.roles import audience
from shiftpeer.roles import groups as groupmodel
from shiftpeer.roles import tokenjudge
from shiftpeer.roles.queries import BODY_CBOR, received_row
from tests import test_hub_token_rebuild
from tests.test_hub_token_rebuild import LEGACY_ID, Party, hand_in

hub = test_hub_token_rebuild.hub   # the fixture: a hub on a real store, not started

CLUB_AND_BOB = {"public": False, "groups": ["club"], "to": ["bob"]}
HREF = "https://example.org/p"


def club(hub) -> dict[str, Party]:
    """alice's club, dave publishing and carol reading in it; bob and erin are not in it. All registered."""
    people = {name: Party(name) for name in ("alice", "bob", "carol", "dave", "erin")}
    for p in people.values():
        hub.accounts.register(p.name, p.account)
    hub.groups.create("club", "alice")
    for name, level in (("dave", "publish"), ("carol", "read")):
        hub.groups.update("club", lambda grp, n=name, lv=level: groupmodel.invite(grp, "alice", n, lv))
        hub.groups.update("club", lambda grp, n=name: groupmodel.join(grp, n))
    return people


def refused_by_the_club(hub, author: Party, doc: dict, **changes) -> dict:
    """``author``'s edit of ``doc`` that the club refused and bob's inbox took: ``shared``'s winner."""
    edit = author.edit(doc, **changes)
    hand_in(hub, "inbox/bob", edit)
    shared = hub.store.database("shared")
    assert shared.get(doc["id"]).rev == edit["rev"] and "group:club" in shared.get(doc["id"]).vis
    assert hub.store.database("group/club").get(doc["id"]).rev == doc["rev"]
    return edit


def revs(answer: dict) -> list[str]:
    return [r["rev"] for r in answer["rows"]]


def ask(hub, who: Party, args: dict) -> list[str]:
    return revs(hub.queries.query(who.account, who.name, args))


def get(hub, who: Party, docid: str) -> list[str]:
    return revs(hub.queries.get(who.account, who.name, [docid]))


def test_a_club_reader_is_served_the_revision_the_club_holds_and_never_the_edit_it_refused(hub):
    p = club(hub)
    shift = p["dave"].shift(CLUB_AND_BOB)
    hand_in(hub, "group/club", shift)
    hand_in(hub, "inbox/bob", shift)
    edit = refused_by_the_club(hub, p["dave"], shift, summary="posted after removal")   # still names the club
    assert "club" in edit["body"]["audience"]["groups"]

    carol = p["carol"]
    assert get(hub, carol, shift["id"]) == [shift["rev"]]
    for filters in ({}, {"href": HREF}, {"author": "dave"}, {"group": "club"}, {"space": "Notes"}):
        assert ask(hub, carol, {"filters": filters}) == [shift["rev"]], filters
    rows = hub.queries.query(carol.account, "carol", {"filters": {"group": "club"}, BODY_CBOR: True})["rows"]
    checked = received_row(rows[0])   # the club's revision as signed, with its parent: it checks on her node
    assert checked is not None and checked["body"]["summary"] == "s"

    # bob, whose inbox took the edit, is served the edit; dave his own edit
    for who in (p["bob"], p["dave"]):
        assert get(hub, who, shift["id"]) == [edit["rev"]], who.name
        assert ask(hub, who, {"filters": {"href": HREF}}) == [edit["rev"]], who.name
    # erin reads neither the club nor bob's inbox: nothing, by id, page or filter
    erin = p["erin"]
    assert get(hub, erin, shift["id"]) == []
    for filters in ({}, {"href": HREF}, {"author": "dave"}):
        assert ask(hub, erin, {"filters": filters}) == [], filters


def test_a_club_reader_is_served_the_clubs_revision_of_an_edit_that_left_the_club_out(hub):
    """dave's node left the club out of the edit it refused (``audience.without``): the winner no longer names
    the club, and the club's readers get the revision the club holds, as their feeds do."""
    p = club(hub)
    shift = p["dave"].shift(CLUB_AND_BOB)
    hand_in(hub, "group/club", shift)
    hand_in(hub, "inbox/bob", shift)
    refused_by_the_club(hub, p["dave"], shift, summary="bob only",
                        audience=audience.without(CLUB_AND_BOB, ["group:club"]))
    assert get(hub, p["carol"], shift["id"]) == [shift["rev"]]
    assert ask(hub, p["carol"], {"filters": {"href": HREF}}) == [shift["rev"]]
    assert get(hub, p["erin"], shift["id"]) == []


def test_a_club_reader_may_comment_on_the_shift_the_club_holds_and_erin_may_not(hub):
    p = club(hub)
    shift = p["dave"].shift(CLUB_AND_BOB)
    hand_in(hub, "group/club", shift)
    hand_in(hub, "inbox/bob", shift)
    refused_by_the_club(hub, p["dave"], shift, summary="posted after removal")

    comment = p["carol"].comment(shift, CLUB_AND_BOB, "on what the club holds")
    assert hub.rules.check(hub.store.database("group/club"), "group/club", p["carol"].account, comment) is None
    hand_in(hub, "group/club", comment)
    assert ask(hub, p["carol"], {"filters": {"thread": shift["id"]}}) == [comment["rev"]]

    stranger = p["erin"].comment(shift, CLUB_AND_BOB, "no")
    why = hub.rules.check(hub.store.database("inbox/bob"), "inbox/bob", p["erin"].account, stranger)
    assert why is not None and why.code == "not_visible", why


def test_a_comment_edit_the_club_refused_leaves_the_clubs_revision_in_the_thread(hub):
    """alice's shift went to the club and bob; dave's comment took that audience, and his edit of it after his
    removal reached bob's inbox only: the club's readers keep his earlier comment in the thread."""
    p = club(hub)
    shift = p["alice"].shift(CLUB_AND_BOB)
    hand_in(hub, "group/club", shift)
    hand_in(hub, "inbox/bob", shift)
    comment = p["dave"].comment(shift, CLUB_AND_BOB, "for the club")
    hand_in(hub, "group/club", comment)
    hand_in(hub, "inbox/bob", comment)
    edit = refused_by_the_club(hub, p["dave"], comment, text="posted after removal")

    thread = {"filters": {"thread": shift["id"]}}
    assert ask(hub, p["carol"], thread) == [comment["rev"]]
    assert get(hub, p["carol"], comment["id"]) == [comment["rev"]]
    assert ask(hub, p["bob"], thread) == [edit["rev"]]
    assert ask(hub, p["erin"], thread) == []


def test_a_revision_in_the_club_by_another_author_or_leaving_the_club_out_is_served_to_no_one(hub):
    """The club's revision stands in only when the record's author wrote it and its signed audience names
    the club: what the merge itself would take from the club."""
    p = club(hub)
    shift = p["dave"].shift(CLUB_AND_BOB)
    hand_in(hub, "inbox/bob", shift)
    narrowed = p["dave"].edit(shift, audience=audience.without(CLUB_AND_BOB, ["group:club"]))
    hand_in(hub, "group/club", narrowed)   # past the rules, which refuse it: its audience does not name the club
    hub.store.database("shared").add_vis(shift["id"], ["group:club"])   # a token, as an older merge gave
    assert get(hub, p["carol"], shift["id"]) == []
    assert ask(hub, p["carol"], {"filters": {"href": HREF}}) == []

    old = p["dave"].shift(CLUB_AND_BOB, docid=LEGACY_ID)   # an id made before ids named their author
    hand_in(hub, "inbox/bob", old)
    hand_in(hub, "group/club", p["erin"].shift(CLUB_AND_BOB, docid=LEGACY_ID))   # erin's squat, in the club
    hub.store.database("shared").add_vis(LEGACY_ID, ["group:club"])
    assert hub.store.database("shared").get(LEGACY_ID).rev == old["rev"]
    assert get(hub, p["carol"], LEGACY_ID) == []
    assert ask(hub, p["carol"], {"filters": {"href": HREF}}) == []


def test_a_row_a_token_serves_reads_no_place(hub, monkeypatch):
    """The stand-in is asked only of rows ``served`` refuses: a page of public rows and of the club's rows
    that the club holds at their winning revision asks no place for its revision."""
    p = club(hub)
    for i in range(20):
        hand_in(hub, "master", p["dave"].shift({"public": True, "groups": [], "to": []}, href=f"{HREF}/{i}"))
        hand_in(hub, "group/club", p["dave"].shift(CLUB_AND_BOB, href=f"{HREF}/club/{i}"))
    asked: list[str] = []
    original = tokenjudge.Judge.place_revision
    monkeypatch.setattr(tokenjudge.Judge, "place_revision",
                        lambda self, doc, token: asked.append(token) or original(self, doc, token))
    assert len(ask(hub, p["carol"], {"limit": 50})) == 40 and asked == []
    shift = p["dave"].shift(CLUB_AND_BOB)   # and one the club holds at an earlier revision: asked once
    hand_in(hub, "group/club", shift)
    refused_by_the_club(hub, p["dave"], shift, summary="posted after removal")
    assert shift["rev"] in ask(hub, p["carol"], {"limit": 50}) and asked == ["group:club"]
