"""Publishing end to end over real TLS: public, to groups, to users, edits and deletes, authorship."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.identity.signing import sign_doc, signing_payload
from shiftpeer.ids import new_token
from shiftpeer.shifts import NotAuthor, domain_of, make_signer
from shiftpeer.roles.names import FlowError
from shiftpeer.store.revs import compute_rev

HREF = "https://example.org/page"


async def _query_ids(user, **filters):
    answer = await user.flows.query({"filters": filters})
    return [r["id"] for r in answer["rows"]]


@pytest_twisted.ensureDeferred
async def test_publish_public_leaves_one_live_copy(mesh):
    """Publishing publicly moves the shift to user/public, the feed keeps exactly one live copy without
    conflicts, master and shared get it, and every user finds it by URL."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid = alice.new_shift(HREF)
    result = await alice.publish(sid, public=True)
    assert result["public"] is True
    assert alice.store.database("user/private").get(sid).deleted
    assert not alice.store.database("user/public").get(sid).deleted
    await eventually(lambda: alice.feed().get(sid) and alice.feed().get(sid).rev == result["rev"], "feed winner")
    doc = alice.feed().get(sid)
    assert not doc.deleted and doc.conflicts == []
    assert alice.feed().doc_count() == 1
    await eventually(lambda: sid in mesh.hub.ids("shared"), "shared")
    assert sid in mesh.hub.ids("master")
    for user in (alice, bob, carol):
        assert await _query_ids(user, href=HREF) == [sid]
    assert await mesh.who_sees(sid) == {"feed": {"alice"}, "hub": {"alice", "bob", "carol"}}
    # an edit after publishing reaches master and shared as the same single document
    alice.shifts.edit(sid, {"summary": "edited"})
    await eventually(lambda: mesh.hub.db("shared").get(sid).body["summary"] == "edited", "edit in shared")
    assert mesh.hub.db("master").get(sid).conflicts == []
    alice.shifts.delete(sid)
    await eventually(lambda: mesh.hub.db("shared").get(sid).deleted, "delete reaches shared")
    assert mesh.hub.db("master").get(sid).deleted
    assert await _query_ids(bob, href=HREF) == []


@pytest_twisted.ensureDeferred
async def test_publish_to_group_reaches_members_only(mesh):
    """A group shift reaches the group database and each member's feed; non-members see nothing of it."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    await alice.flows.group("new", "cats")
    await alice.flows.group("invite", "cats", user="bob")
    await bob.flows.group("join", "cats")
    sid = alice.new_shift(HREF)
    result = await alice.publish(sid, groups=["cats"])
    assert result["targets"] == {"group:cats": "ok"}
    assert sid in mesh.hub.ids("group/cats")
    await eventually(lambda: sid in bob.feed_ids(), "bob's feed")
    await eventually(lambda: sid in mesh.hub.ids("shared"), "shared")
    assert sid in alice.feed_ids() and sid not in carol.feed_ids()
    assert sid not in mesh.hub.ids("master")
    assert await _query_ids(bob, href=HREF) == [sid]
    assert await _query_ids(carol, href=HREF) == []
    assert await _query_ids(bob, group="cats") == [sid]
    assert await mesh.who_sees(sid) == {"feed": {"alice", "bob"}, "hub": {"alice", "bob"}}


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_group_write_refused_for_non_member(mesh):
    """A user who is not a publishing member is refused up front, naming the group, while the hub is
    connected: nothing is written on their node, in the outbox, or on the hub."""
    await mesh.start()
    alice, carol = mesh["alice"], mesh["carol"]
    await alice.flows.group("new", "cats")
    sid = carol.new_shift(HREF)
    before = carol.store.database("user/private").get(sid).rev
    with pytest.raises(FlowError, match="group:cats: you may not publish in group 'cats'") as refused:
        await carol.publish(sid, groups=["cats"])
    assert refused.value.code == "forbidden"
    assert carol.store.database("user/private").get(sid).rev == before
    assert carol.store.database("user/outbox").get(sid) is None
    assert sid not in mesh.hub.ids("group/cats") and sid not in mesh.hub.ids("shared")


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_send_to_users_with_an_unknown_recipient(mesh):
    """Naming a user who does not exist refuses the whole publish up front (nothing changes); sending to
    several existing users stores a copy in each inbox."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid = alice.new_shift(HREF)
    before = alice.store.database("user/private").get(sid).rev
    with pytest.raises(FlowError, match="user:nobody: there is no user 'nobody' on this hub") as refused:
        await alice.publish(sid, to=["bob", "carol", "nobody"])
    assert refused.value.code == "no_user"
    assert alice.store.database("user/private").get(sid).rev == before
    assert alice.store.database("user/outbox").get(sid) is None
    result = await alice.publish(sid, to=["bob", "carol"])
    assert result["targets"] == {"user:bob": "ok", "user:carol": "ok"}
    await eventually(lambda: sid in bob.feed_ids() and sid in carol.feed_ids(), "recipients' feeds")
    assert sid in mesh.hub.ids("inbox/bob") and sid in mesh.hub.ids("inbox/carol")
    await eventually(lambda: sid in mesh.hub.ids("shared"), "shared")
    assert await _query_ids(carol, href=HREF) == [sid]
    assert await mesh.who_sees(sid) == {"feed": {"alice", "bob", "carol"}, "hub": {"alice", "bob", "carol"}}
    other = alice.new_shift(HREF)
    await alice.publish(other, to=["bob"])
    await eventually(lambda: other in mesh.hub.ids("shared") and other in bob.feed_ids(), "shared, bob")
    assert await mesh.who_sees(other) == {"feed": {"alice", "bob"}, "hub": {"alice", "bob"}}


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_a_refused_recipient_leaves_the_audience_for_good(mesh):
    """A recipient named while the hub was down, which the hub refuses on delivery, is left out of the
    signed audience: a later publish does not list it again, and when someone registers that name
    afterwards, no revision of the shift ever reaches them."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = alice.new_shift(HREF)
    alice.disconnect()
    await eventually(lambda: not alice.flows.link.connected, "alice offline")
    offline = await alice.publish(sid, to=["bob", "nobody"])
    assert offline["targets"] == {"user:bob": "pending: delivered when the hub is connected",
                                  "user:nobody": "pending: delivered when the hub is connected"}
    await alice.connect(mesh.hub)
    await eventually(lambda: "user:nobody" in alice.flows.publisher.refused(sid), "the hub refused nobody")
    assert "no user 'nobody'" in alice.flows.publisher.refused(sid)["user:nobody"]
    first = alice.flows.publisher.current(sid)
    assert first["body"]["audience"]["to"] == ["bob"]
    await eventually(lambda: bob.feed().get(sid) and bob.feed().get(sid).rev == first["rev"], "bob has it")
    assert bob.feed().get(sid).body["audience"]["to"] == ["bob"]
    await alice.flows.group("new", "x")
    second = await alice.publish(sid, groups=["x"])
    assert second["targets"] == {"user:bob": "ok", "group:x": "ok"}
    nobody = await mesh.add_user("nobody")
    edit = alice.shifts.edit(sid, {"summary": "after nobody registered"})
    await eventually(lambda: all(d is not None and d.rev == edit["rev"] for d in
                                 (bob.feed().get(sid), mesh.hub.db("group/x").get(sid))), "edit delivered")
    await alice.flows.publisher.flush()
    assert sid not in mesh.hub.ids("inbox/nobody") and sid not in nobody.feed_ids()
    assert (await mesh.who_sees(sid))["hub"] == {"alice", "bob"}


@pytest_twisted.ensureDeferred
async def test_publish_again_adds_targets_and_edits_reach_every_copy(mesh):
    """Publishing again keeps earlier targets; an edit and then a delete reach the group, every inbox,
    every feed and shared."""
    await mesh.start()
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    await alice.flows.group("new", "cats", open=True)
    await carol.flows.group("join", "cats")
    sid = alice.new_shift(HREF)
    await alice.publish(sid, to=["bob"])
    second = await alice.publish(sid, groups=["cats"])
    assert second["audience"] == {"public": False, "groups": ["cats"], "to": ["bob"]}
    assert second["targets"] == {"user:bob": "ok", "group:cats": "ok"}
    edit = alice.shifts.edit(sid, {"summary": "v2"})
    copies = lambda: [mesh.hub.db("inbox/bob").get(sid), mesh.hub.db("group/cats").get(sid),
                      mesh.hub.db("shared").get(sid), bob.feed().get(sid), carol.feed().get(sid)]
    await eventually(lambda: all(d is not None and d.rev == edit["rev"] for d in copies()), "edit everywhere")
    gone = alice.shifts.delete(sid)
    await eventually(lambda: all(d.rev == gone["rev"] and d.deleted for d in copies()), "delete everywhere")
    assert await _query_ids(bob, href=HREF) == []


@pytest_twisted.ensureDeferred
async def test_outbox_delivers_on_reconnect(mesh):
    """A revision written while the hub is unreachable waits in the outbox and goes out on reconnect."""
    await mesh.start()
    alice, bob = mesh["alice"], mesh["bob"]
    sid = alice.new_shift(HREF)
    await alice.publish(sid, to=["bob"])
    alice.disconnect()
    await eventually(lambda: not alice.flows.link.connected, "alice offline")
    edit = alice.shifts.edit(sid, {"summary": "offline edit"})
    await alice.connect(mesh.hub)
    await eventually(lambda: bob.feed().get(sid) and bob.feed().get(sid).rev == edit["rev"], "edit delivered")


def legacy_shift(user) -> str:
    """A shift under an id of the kind made before ids named their author (no author tag): for such ids
    only the revisions a node holds tell who the author is."""
    sid = new_token(16)
    now = 1795000000.0
    body = {"type": "shift", "space": "Notes", "href": HREF, "domain": domain_of(HREF), "summary": "s",
            "content": {}, "author": user.account, "created": now, "modified": now}
    user.store.database("user/private").put(sid, body, sign=make_signer(user.key))
    return sid


async def _hijack_attempt(alice, bob, sid: str) -> tuple:
    """Alice sends bob her shift; bob writes his own revision of it, signed by his key (by hand: sign_doc
    refuses an id that names alice). Returns (alice's revision as bob holds it, bob's revision)."""
    await alice.publish(sid, to=["bob"])
    await eventually(lambda: sid in bob.feed_ids(), "bob has it")
    held = bob.feed().get(sid)
    body = {**held.body, "summary": "hijacked", "author": bob.account}
    rev = compute_rev(held.rev, False, body)
    return held, {"id": sid, "rev": rev, "deleted": False, "body": body, "history": [rev, held.rev],
                  "sig": bob.key.sign(signing_payload(sid, rev, body, False))}


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_only_the_author_can_change_a_shift(mesh):
    """An edit signed by someone else, handed to the hub for another author's shift, is refused everywhere."""
    await mesh.start()
    alice, bob = mesh["alice"], mesh["bob"]
    sid = legacy_shift(alice)
    held, forged = await _hijack_attempt(alice, bob, sid)
    result = await bob.flows.link.call("deliver", {"doc": forged, "targets": ["user:bob"]})
    assert "only the shift's author" in result["user:bob"]
    assert mesh.hub.db("inbox/bob").get(sid).rev == held.rev
    # Claiming alice as author with bob's signature is refused too.
    fake = {**forged, "body": {**forged["body"], "author": alice.account}}
    result = await bob.flows.link.call("deliver", {"doc": fake, "targets": ["user:bob"]})
    assert "signature" in result["user:bob"]
    assert mesh.hub.db("shared").get(sid).body["summary"] == "s"
    # A shift made now has an id naming alice: bob's revision under it is refused for that, whatever is held.
    bound = alice.new_shift(HREF)
    held, squat = await _hijack_attempt(alice, bob, bound)
    result = await bob.flows.link.call("deliver", {"doc": squat, "targets": ["user:bob"]})
    assert "its id names another author" in result["user:bob"]
    assert mesh.hub.db("inbox/bob").get(bound).rev == held.rev


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_user_nodes_refuse_revisions_by_another_author_even_from_the_hub(mesh):
    """If a compromised hub serves a validly signed edit of alice's shift by someone else, bob's node
    keeps alice's revision; a document whose signature does not verify is never stored."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = legacy_shift(alice)
    await alice.publish(sid, to=["bob"])
    await eventually(lambda: sid in bob.feed_ids(), "bob has it")
    held = mesh.hub.db("inbox/bob").get(sid)
    mallory = type(alice.key).generate()
    body = {**held.body, "summary": "hijacked", "author": mallory.account_id}
    rev = compute_rev(held.rev, False, body)
    hijack = {"id": sid, "rev": rev, "deleted": False, "body": body, "history": [rev, held.rev],
              "sig": sign_doc(mallory, sid, rev, body, False)}
    mesh.hub.db("inbox/bob").bulk_replicated([hijack])  # the hub's own checks bypassed
    marker = bob.new_shift(HREF)
    await alice.publish(alice.new_shift(HREF), to=["bob"])
    await eventually(lambda: len(bob.feed_ids()) == 3, "later deliveries still arrive")
    assert bob.feed().get(sid).rev == held.rev and bob.feed().get(sid).body["summary"] == "s"
    assert marker in bob.feed_ids()
    forged_body = {**held.body, "summary": "tampered"}
    forged_rev = compute_rev(held.rev, False, forged_body)
    forged = {"id": sid, "rev": forged_rev, "deleted": False, "body": forged_body,
              "history": [forged_rev, held.rev], "sig": held.sig}
    mesh.hub.db("inbox/bob").bulk_replicated([forged])
    await eventually(lambda: not bob.flows.link.connected, "bob's node drops the forging connection")
    assert bob.feed().get(sid, forged_rev) is None and bob.feed().get(sid).rev == held.rev


@pytest_twisted.ensureDeferred
async def test_a_shift_in_my_feed_by_someone_else_cannot_be_changed_here(mesh):
    """alice's group shift in bob's feed: bob's node refuses to edit or delete it, naming the author (the
    API's 403), and nothing changes on either node, nor reaches the hub."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = await mesh.club_shift(HREF)
    before = bob.feed().get(sid)
    assert before.body["author"] == alice.account and bob.store.database("user/private").get(sid) is None
    for change in (lambda: bob.shifts.edit(sid, {"summary": "mine now"}), lambda: bob.shifts.delete(sid)):
        with pytest.raises(NotAuthor, match=f"shift {sid} is by {alice.account}; only its author may change it"):
            change()
    after = bob.feed().get(sid)
    assert (after.rev, after.deleted, after.body) == (before.rev, False, before.body)
    assert alice.shifts.show(sid).rev == before.rev == mesh.hub.db("shared").get(sid).rev
    assert not bob.store.database("user/private").docs_since(0) and not bob.store.database("user/public").docs_since(0)
