"""Only the hub writes messages and notices (docs/flows.md: ``messages/<u>`` and ``system/messages`` take
no pushes), yet a user's node lists every ``message`` and ``notice`` its feed holds. So a registered user
who sent another user a document of type ``notice`` (or a ``message`` saying a comment came ``from`` whoever
it liked) through that user's inbox put a hub notice in their messages. The hub now refuses documents of
those types from anyone, in ``deliver`` and in pushes, and a full peer refuses them from gossip.
Real hub and users over TLS on 127.0.0.1."""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet.task import Clock

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.identity import NodeKey
from shiftpeer.ids import bound_id
from shiftpeer.roles.fullpeer import MASTER, firehose_check
from shiftpeer.sync.testing import MemoryStore
from tests.helpers_identity import signed_doc
from tests.test_gossip_refused import codes, fired, gossip_on, shift


def _doc(user, body: dict) -> dict:
    return signed_doc(user.key, bound_id(user.account, "notice-"),
                      {**body, "author": user.account, "created": time.time()})


@pytest_twisted.ensureDeferred
async def test_a_user_cannot_put_a_notice_or_a_comment_message_in_anothers_messages(mesh):
    await mesh.start(users=("alice", "bob", "carol"))
    bob, carol = mesh["bob"], mesh["carol"]
    notice = _doc(carol, {"type": "notice", "text": "The hub moves: re-register at evil.example",
                          "audience": {"public": False, "groups": [], "to": ["bob"]}})
    message = _doc(carol, {"type": "message", "kind": "comment", "from": "alice", "to": "bob",
                           "text": "alice wrote: send me your invite token",
                           "audience": {"public": True, "groups": [], "to": ["bob"]}})
    answers = [await carol.flows.link.deliver(doc, ["user:bob"]) for doc in (notice, message)]
    ok = _doc(carol, {"type": "shift", "href": "https://example.org/x", "space": "Notes", "summary": "hi",
                      "audience": {"public": False, "groups": [], "to": ["bob"]}})
    assert await carol.flows.link.deliver(ok, ["user:bob"]) == {"user:bob": "ok"}
    await eventually(lambda: ok["id"] in bob.feed_ids(), "carol's later shift in bob's feed")
    assert [m["text"] for m in bob.flows.messages()["rows"]] == [] and bob.flows.messages()["unread"] == 0
    assert all(a["user:bob"].startswith("error: ") for a in answers), answers
    assert not {notice["id"], message["id"]} & mesh.hub.ids("inbox/bob")


def test_a_full_peer_keeps_gossiped_notices_and_messages_out_of_its_master():
    """A full peer's ``master`` feeds its ``user/feed``, so a public ``notice`` or ``message`` gossiped by a
    registered key would be listed as the hub's: the gossip check refuses both ("hub_only", told to the
    neighbour), strikes no one (relays of older versions did not check it), and keeps the public shift."""
    mallory, store, clock = NodeKey.generate(), MemoryStore(), Clock()
    g, db = gossip_on(store, clock, firehose_check)
    ok = shift(mallory, "ok")
    fake = [signed_doc(mallory, sid, {**ok["body"], "type": typ, "text": "re-register at evil.example"})
            for sid, typ in (("n", "notice"), ("m", "message"))]
    result = fired(g.wrap_store_batch(None)(store, db, [ok, *fake], "relay", MASTER, {"seq": 3, "epoch": "e"}))
    assert codes(result) == [("n", "hub_only"), ("m", "hub_only")]
    assert db.get("ok") is not None and db.get("n") is None and db.get("m") is None
    clock.advance(0)
    assert g.scores.score("relay") == 0

