"""What the tokens an older hub gave a widened comment opened, over real TLS to a real hub, and the rebuild
that takes them off (roles/tokenrebuild.py).

An older hub gave each revision of a comment every token of its shift's record, so bob's edit of a comment
he wrote for the club, on a shift alice had since made public, left ``public`` on the comment's record in
``shared`` (docs/security.md, *Bugs this work found*). The hub's queries do not serve a document under a
token its winning audience does not name (``queries.served``), so carol cannot read the comment. The hub's
rule that a comment goes only where the document it answers went read the tokens as they are: a reply to the
club comment, signed as public, entered ``master`` (and so every full peer's firehose), and the hub showed it
to carol in the comment's thread. That rule now asks where the comment went as its winning revision stands
(``HubQueries.places_of``), so the reply is refused (``not_there``) with the stale token still on the record,
as after the rebuild takes it off."""

from __future__ import annotations

import pytest_twisted

import flowmesh
from flowmesh import eventually
from tests.test_flows_comment_edit_audience import club_comment_then_public, thread

PUBLIC = {"public": True, "groups": [], "to": []}
mesh = flowmesh.mesh   # the fixture


def signed_reply(user, comment_id: str, aud: dict = PUBLIC) -> dict:
    """A reply to ``comment_id`` that ``user`` signed for ``aud`` (their own node would give it the
    comment's audience; any node may sign what it likes)."""
    return flowmesh.signed_comment(user, comment_id, aud, "a reply")


@pytest_twisted.ensureDeferred
async def test_a_widened_comments_stale_token_lets_no_reply_where_the_comment_never_went(mesh):
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid, made = await club_comment_then_public(mesh, "https://example.org/widened-comment")
    shared, master = mesh.hub.db("shared"), mesh.hub.db("master")
    await bob.flows.edit_comment(made["id"], "for the club, typo fixed")
    await eventually(lambda: shared.get(made["id"]).body["text"].endswith("typo fixed"), "the edit in shared")
    shared.add_vis(made["id"], ["public"])   # what an older hub's merge gave that edit

    # the stale token serves nothing: carol reads neither the comment nor its shift's thread
    assert (await carol.flows.link.call("get", {"ids": [made["id"]]}))["rows"] == []
    assert await thread(carol, sid) == []
    # nor does it say where the comment went: master never held it
    rules = mesh.hub.hub.rules
    reply = signed_reply(bob, made["id"])
    assert rules.check(master, "master", bob.account, reply).code == "not_there"

    cp = await mesh.hub.hub.tokens.rebuild()
    assert cp["narrowed"] == 1 and "public" not in shared.get(made["id"]).vis
    assert rules.check(master, "master", bob.account, reply).code == "not_there"
    bob.store.database("user/public").bulk_replicated([reply])   # bob's node pushes user/public to master
    marker = bob.new_shift("https://example.org/after-the-reply")  # user/public reaches master in order
    await bob.publish(marker, public=True)
    await eventually(lambda: marker in mesh.hub.ids("master"), "bob's later public shift in master")
    assert reply["id"] not in mesh.hub.ids("master")
    assert await thread(carol, made["id"]) == []
    assert [i for i, _ in await thread(alice, sid)] == [made["id"]]   # the club comment is where it was
