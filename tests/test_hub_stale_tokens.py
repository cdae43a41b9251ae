"""A hub's rules judge the visibility tokens in ``shared`` by what the record's winning revision justifies
today, not as they stand, so an older hub's leftovers decide nothing even before (or without) the rebuild.

The rebuild (roles/tokenrebuild.py) takes those tokens off once per store, but an operator who ran an older
version after the pass brings them back (docs/operators.md, *Upgrades*). Each store here is built as in
``tests/test_hub_token_rebuild.py`` (the real merge, then the older hub's leftovers through the store API)
and the rebuild is never run: the comment rule (``HubQueries.places_of``) takes a place only where the winning
revision's signed audience names it and that place's database holds the document by its author, and
queries honour an ``author:`` token only for the record's author (on a comment, also its shift's)."""

from __future__ import annotations

import time

from shiftpeer.roles import groups as groupmodel
from shiftpeer.roles.tokenjudge import Judge
from shiftpeer.roles.tokenrebuild import progress
from tests.helpers_identity import signed_doc
from tests import test_hub_token_rebuild
from tests.test_hub_token_rebuild import CLUB, LEGACY_ID, PUBLIC, Party, club_thread, hand_in

hub = test_hub_token_rebuild.hub   # the fixture: a hub on a real store, not started


def registered(hub, *parties: Party) -> None:
    for p in parties:
        hub.accounts.register(p.name, p.account)


def test_a_public_reply_to_a_widened_group_comment_stays_out_of_master(hub):
    """bob's club comment, which an older hub gave ``public`` (its edit took every token of its shift's
    record): a reply signed as public does not enter ``master``, since ``master`` never held the comment,
    and the club comment's place is still its own."""
    alice, bob = Party("alice"), Party("bob")
    registered(hub, alice, bob)
    shift, comment = club_thread(hub, alice, bob)
    shared = hub.store.database("shared")
    shared.add_vis(comment["id"], ["public"])   # the older hub's merge of the comment's edit
    assert "public" in shared.get(comment["id"]).vis and progress(shared) == {}

    reply = bob.comment(comment, PUBLIC, "to everyone")
    why = hub.rules.check(hub.store.database("master"), "master", bob.account, reply)
    assert why is not None and why.code == "not_there", why
    assert hub.queries.places(comment["id"]) == {"group:club"}
    assert hub.queries.places(shift["id"]) == {"public", "group:club", "group:other"}


def test_a_place_the_winning_revision_no_longer_names_takes_no_comment(hub):
    """alice's shift went to the clubs ``club`` and ``other``; her edit leaves ``other`` (that group refused
    it: ``audience.without``), and ``other`` keeps the earlier revision. ``shared``'s record keeps the token of
    ``other``, but a comment signed for ``other`` by a reader of both is refused there: the shift as it
    stands today does not go there."""
    alice, bob = Party("alice"), Party("bob")
    registered(hub, alice, bob)
    for g in ("club", "other"):
        hub.groups.create(g, "alice")
        hub.groups.update(g, lambda grp: groupmodel.invite(grp, "alice", "bob", "read"))
        hub.groups.update(g, lambda grp: groupmodel.join(grp, "bob"))
    both = {"public": False, "groups": ["club", "other"], "to": []}
    shift = alice.shift(both)
    hand_in(hub, "group/club", shift)
    hand_in(hub, "group/other", shift)
    hand_in(hub, "group/club", alice.edit(shift, summary="edited", audience=CLUB))
    assert "group:other" in hub.store.database("shared").get(shift["id"]).vis
    comment = bob.comment(shift, {"public": False, "groups": ["other"], "to": []})
    why = hub.rules.check(hub.store.database("group/other"), "group/other", bob.account, comment)
    assert why is not None and why.code == "not_there", why
    assert hub.queries.places(shift["id"]) == {"group:club"}


def test_a_leftover_author_token_no_longer_gives_carol_alices_club_shift(hub):
    """carol's tombstone under the old id of alice's club shift gave the record ``author:<carol>`` (and
    ``user:carol``) in an older hub's ``shared``: she got the club shift from ``get`` and from queries. An
    ``author:`` token now counts only for the record's author; alice and the club still get it."""
    alice, carol = Party("alice"), Party("carol")
    club = alice.shift(CLUB, docid=LEGACY_ID)
    hand_in(hub, "group/club", club)
    squat = signed_doc(carol.key, LEGACY_ID, {"type": "shift", "author": carol.account, "modified": time.time()},
                       deleted=True)
    shared = hub.store.database("shared")
    shared.bulk_replicated([squat], vis=["user:carol", f"author:{carol.account}"])   # the older hub's merge
    assert f"author:{carol.account}" in shared.get(LEGACY_ID).vis and progress(shared) == {}

    assert hub.queries.get(carol.account, "carol", [LEGACY_ID])["rows"] == []
    assert hub.queries.query(carol.account, "carol", {})["rows"] == []
    assert hub.queries.query(carol.account, "carol", {"filters": {"author": alice.account}})["rows"] == []
    assert [r["id"] for r in hub.queries.get(alice.account, "alice", [LEGACY_ID])["rows"]] == [LEGACY_ID]
    assert [r["id"] for r in hub.queries.query(alice.account, "alice", {})["rows"]] == [LEGACY_ID]


def test_a_shifts_author_still_reads_every_comment_on_it_by_the_author_token(hub):
    """What the rebuild keeps, queries honour: a comment carries its shift author's ``author:`` token, so
    alice reads bob's comment for a group she does not read (she sent her shift there, then left), and
    bob reads his own; carol, whose token is on neither record, reads nothing."""
    alice, bob, carol = Party("alice"), Party("bob"), Party("carol")
    shift, comment = club_thread(hub, alice, bob)
    shared = hub.store.database("shared")
    assert {f"author:{alice.account}", f"author:{bob.account}"} <= set(shared.get(comment["id"]).vis)
    for who, party in (("alice", alice), ("bob", bob)):
        thread = hub.queries.query(party.account, who, {"filters": {"thread": shift["id"]}})["rows"]
        assert [r["id"] for r in thread] == [comment["id"]], who
    shared.add_vis(comment["id"], [f"author:{carol.account}"])   # a token nothing justifies
    assert hub.queries.query(carol.account, "carol", {"filters": {"thread": shift["id"]}})["rows"] == []
    assert hub.queries.get(carol.account, "carol", [comment["id"]])["rows"] == []


def test_a_club_token_an_older_merge_gave_a_comment_the_club_refused_shows_it_to_no_club_reader(hub):
    """alice's shift went to the club and to carol; carol (not in the club) signed her comment for both, the
    club refused it and her inbox took it. The merge before a comment reached only the places that took it gave
    the comment the club's token from the shift's record (its audience names the club): a comment's place token
    now counts in queries only where that place holds it, so bob, who reads the club, finds the comment
    neither by ``get`` nor in the thread; alice (the shift's) and carol (her own) still do."""
    alice, bob, carol = Party("alice"), Party("bob"), Party("carol")
    registered(hub, alice, bob, carol)
    hub.groups.create("club", "alice")
    hub.groups.update("club", lambda grp: groupmodel.invite(grp, "alice", "bob", "read"))
    hub.groups.update("club", lambda grp: groupmodel.join(grp, "bob"))
    shift = alice.shift({"public": False, "groups": ["club"], "to": ["carol"]})
    hand_in(hub, "group/club", shift)
    hand_in(hub, "inbox/carol", shift)
    comment = carol.comment(shift, shift["body"]["audience"], "between us")
    assert hub.rules.check(hub.store.database("group/club"), "group/club", carol.account, comment).code == \
        "group_level"
    hand_in(hub, "inbox/carol", comment)
    shared = hub.store.database("shared")
    shared.add_vis(comment["id"], ["group:club"])   # the older merge
    assert progress(shared) == {}

    ask = {"filters": {"thread": shift["id"]}}
    assert hub.queries.get(bob.account, "bob", [comment["id"]])["rows"] == []
    assert hub.queries.query(bob.account, "bob", ask)["rows"] == []
    for who, party in (("alice", alice), ("carol", carol)):
        assert [r["id"] for r in hub.queries.query(party.account, who, ask)["rows"]] == [comment["id"]], who


def test_a_comment_on_an_old_id_shift_keeps_its_shift_authors_token_and_no_leftover_of_its_record(hub):
    """bob's club comment on alice's club shift under an old id (no author in it, so a query asks ``Judge``):
    the comment's record carries alice's ``author:`` token, which the shift justifies, and carol's, a leftover
    of the shift's record (her tombstone under that id, which an older merge gave every comment the record's
    tokens). Only the shift's author's counts: alice reads the comment in her shift's thread, carol does not,
    and the rebuild would take off carol's token alone."""
    alice, bob, carol = Party("alice"), Party("bob"), Party("carol")
    club = alice.shift(CLUB, docid=LEGACY_ID)
    hand_in(hub, "group/club", club)
    comment = bob.comment(club, CLUB, "for the club")
    hand_in(hub, "group/club", comment)
    squat = signed_doc(carol.key, LEGACY_ID, {"type": "shift", "author": carol.account, "modified": time.time()},
                       deleted=True)
    shared = hub.store.database("shared")
    shared.bulk_replicated([squat], vis=[f"author:{carol.account}"])   # the older hub's merge of the squat
    shared.add_vis(comment["id"], [f"author:{carol.account}"])        # and of the comment after it
    assert shared.get(LEGACY_ID).body["author"] == alice.account

    held = shared.get(comment["id"])
    assert Judge(hub.store, shared).unjustified(held) == [f"author:{carol.account}"]
    ask = {"filters": {"thread": LEGACY_ID}}
    assert [r["id"] for r in hub.queries.query(alice.account, "alice", ask)["rows"]] == [comment["id"]]
    assert [r["id"] for r in hub.queries.get(alice.account, "alice", [comment["id"]])["rows"]] == [comment["id"]]
    assert hub.queries.query(carol.account, "carol", ask)["rows"] == []
    assert hub.queries.get(carol.account, "carol", [comment["id"]])["rows"] == []
