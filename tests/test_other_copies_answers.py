"""What a user node does with the hub's answer to ``revisions`` (roles/othercopies.py), deterministically (a
``task.Clock``, a real LMDB store, a stand-in for the hub link): a revision joins ``user/feed`` only when it is a
genuine revision of the asked document by this account; a hub that does not answer in time, refuses, or answers
with something that is not a list of revisions changes nothing, and the answer says the hub was not asked."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed

from flowmesh import other_copy_revision, other_copy_tombstone
from shiftpeer.identity import NodeKey
from shiftpeer.ids import bound_id
from shiftpeer.roles.names import FlowError
from shiftpeer.roles.othercopies import ASK_TIMEOUT, OtherCopies
from shiftpeer.shifts import FEED, PRIVATE, PUBLIC, ShiftDeleted, Shifts, make_signer
from shiftpeer.store import Store


class HubStandIn:
    """The hub link as OtherCopies uses it: connected and registered, answering ``revisions`` with ``answer``."""

    def __init__(self, answer: Deferred) -> None:
        self.connected = True
        self.account = {"name": "alice"}
        self.answer = answer
        self.asked: list[tuple[str, dict]] = []

    def call(self, method: str, args: dict) -> Deferred:
        self.asked.append((method, args))
        return self.answer


@pytest.fixture
def alice(tmp_path):
    """alice's node: a store with her public shift (user/public, as a publish leaves it), her key and a clock."""
    store = Store(str(tmp_path / "alice"))
    for name in (PRIVATE, PUBLIC, FEED, "user/outbox"):
        store.create_database(name)
    key, clock = NodeKey.generate(), task.Clock()
    shifts = Shifts(store, key.account_id, make_signer(key), clock)
    sid = shifts.create({"space": "Notes", "href": "https://example.org/answers"})["id"]
    doc = store.database(PRIVATE).get_repl_docs([(sid, None)])[0]
    store.database(PUBLIC).bulk_replicated([doc])
    yield SimpleNamespace(store=store, key=key, account=key.account_id, clock=clock, sid=sid, doc=doc)
    store.close()


def asking(alice, answer: Deferred) -> tuple[OtherCopies, HubStandIn]:
    link = HubStandIn(answer)
    return OtherCopies(alice.store, alice.account, link, alice.clock), link


def fired(d: Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "the catch-up has not fired"
    return out[0]


def test_a_hub_that_does_not_answer_in_time_changes_nothing_and_the_answer_says_so(alice):
    copies, link = asking(alice, Deferred())
    feed = alice.store.database(FEED)
    seq = feed.update_seq()
    d = copies.catch_up(alice.sid)
    assert link.asked == [("revisions", {"id": alice.sid})]
    alice.clock.advance(ASK_TIMEOUT - 0.1)
    assert not d.called
    alice.clock.advance(0.1)
    note = fired(d)
    assert f"it did not answer within {ASK_TIMEOUT:g} s" in note and "not checked with the hub" in note
    assert feed.update_seq() == seq


@pytest.mark.parametrize("answer", [lambda: fail(FlowError("unknown method revisions", "hub_failed")),
                                    lambda: succeed({"rows": "not a list"}), lambda: succeed(["no", "map"])])
def test_a_refusal_or_an_odd_answer_changes_nothing(alice, answer):
    copies, _ = asking(alice, answer())
    feed = alice.store.database(FEED)
    seq = feed.update_seq()
    note = fired(copies.catch_up(alice.sid))
    assert "not checked with the hub" in note
    assert feed.update_seq() == seq


def test_only_genuine_revisions_of_the_document_by_this_account_join_the_feed(alice):
    """A hostile hub's rows: a revision signed by another key (another author, under alice's id), the account's revision with its body
    altered, one of another document, one whose revision does not check (its history names another parent), and
    junk, beside the other copy's genuine tombstone: only the tombstone joins the feed, and the shift is then
    deleted here for `shift show`."""
    me = SimpleNamespace(key=alice.key, account=alice.account)
    stranger = NodeKey.generate()
    tomb = other_copy_tombstone(me, alice.doc)
    own_id = bound_id(stranger.account_id)   # signed under the stranger's own id, then put under alice's
    theirs = {**other_copy_revision(SimpleNamespace(key=stranger, account=stranger.account_id),
                                    {**alice.doc, "id": own_id, "body": {**alice.doc["body"],
                                                                         "author": stranger.account_id}}),
              "id": alice.sid}
    edit = other_copy_revision(me, alice.doc, summary="edited elsewhere")
    altered = {**edit, "body": {**edit["body"], "summary": "altered by the hub"}}
    other_id = {**edit, "id": alice.sid + "x"}
    reparented = {**edit, "history": [edit["rev"], "1-" + "0" * 32]}
    rows = [theirs, altered, other_id, reparented, "junk", {"id": alice.sid}, tomb]
    copies, _ = asking(alice, succeed({"rows": rows}))

    assert fired(copies.catch_up(alice.sid)) is None
    feed = alice.store.database(FEED)
    assert [(d["rev"], d["deleted"]) for d in feed.get_repl_docs([(alice.sid, None)])] == [(tomb["rev"], True)]
    shifts = Shifts(alice.store, alice.account, make_signer(alice.key), alice.clock)
    with pytest.raises(ShiftDeleted, match="by another copy of your account"):
        shifts.show(alice.sid)


def test_a_document_that_is_not_the_users_own_live_one_is_not_asked_about(alice):
    copies, link = asking(alice, Deferred())
    for docid in ("no-such-shift", "", "a/b", None):
        assert fired(copies.catch_up(docid)) is None
    assert link.asked == []
