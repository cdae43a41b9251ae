"""A comment whose author cannot read a group of its shift's keeps no token of that group in the hub's
``shared``, over real TLS to a real hub.

alice's shift is public and in the club; carol, outside the club, comments. Her node signed the shift's audience
(public and the club), the club refused her, and her node wrote a revision that leaves the club out. The hub's
merge gave the first revision the club's token through the shift's record (its signed audience named the club),
and a merge only added tokens, so the record kept it under a winner that names the club no more: the tokens'
rebuild (roles/tokenrebuild.py) took it off, and until then the hub's rule that a comment goes only where the
document it answers went let a club member's reply to carol's comment into the club, where carol's comment never
went. The merge then took off the tokens a comment's live revisions no longer named; now a comment reaches only
the places that take it (roles/merge.py, tests/test_flows_comment_only_where_taken.py), and carol's node leaves
the club out of the first revision it signs."""

from __future__ import annotations

import pytest_twisted

import flowmesh
from flowmesh import eventually
from shiftpeer.roles.tokenrebuild import Judge
from tests.test_flows_comment_edit_audience import thread
from tests.test_flows_widened_comment_tokens import signed_reply

mesh = flowmesh.mesh   # the fixture


@pytest_twisted.ensureDeferred
async def test_a_comment_the_club_refused_keeps_no_club_token_once_its_author_left_the_club_out(mesh):
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid = await mesh.club_shift("https://example.org/narrowed-comment")   # bob reads the club
    await alice.publish(sid, public=True)
    shared = mesh.hub.db("shared")
    await eventually(lambda: "public" in shared.get(sid).vis, "the shift is public")

    made = await carol.flows.comment(sid, "from outside the club")
    assert made["audience"] == {"public": True, "groups": [], "to": []}, made   # the club refused her
    assert made["targets"]["group:club"].startswith("error:"), made
    await eventually(lambda: getattr(shared.get(made["id"]), "rev", None) == made["rev"], "the narrowed revision")
    record = shared.get(made["id"])
    assert record.vis == sorted(["public", f"author:{carol.account}", f"author:{alice.account}"]), record.vis
    assert Judge(mesh.hub.store, shared).unjustified(record) == []
    assert made["id"] not in mesh.hub.ids("group/club")

    # a comment goes only where what it answers went: carol's went public, not to the club
    rules = mesh.hub.hub.rules
    reply = signed_reply(bob, made["id"], {"public": False, "groups": ["club"], "to": []})   # not as his node would
    assert rules.check(mesh.hub.db("group/club"), "group/club", bob.account, reply).code == "not_there"
    cp = await mesh.hub.hub.tokens.rebuild()
    assert cp["narrowed"] == 0, cp
    for user in (alice, bob, carol):   # it is public: everyone still finds it in the shift's thread
        assert await thread(user, sid) == [(made["id"], "from outside the club")], user.name
