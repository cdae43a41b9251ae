"""The hub's ``revisions`` answer (``HubQueries.own_revisions``) on a real LMDB ``shared``: only the caller's
revisions of the document, live leaves first, and no more than one sync frame can carry (``MAX_OWN_LEAVES``
leaves, ``MAX_OWN_BYTES`` of bodies), so a document with many big branches never makes an answer the
connection would refuse as too large (sync/framing.py ``MAX_FRAME``)."""

from __future__ import annotations

import pytest

from shiftpeer.roles.names import FlowError
from shiftpeer.roles.queries import MAX_OWN_BYTES, MAX_OWN_LEAVES, HubQueries
from shiftpeer.store import Store, codec
from shiftpeer.store.revs import compute_rev
from shiftpeer.sync.framing import MAX_FRAME

ALICE, CAROL = "a" * 52, "c" * 52
SID = "some-shift"


@pytest.fixture
def shared(tmp_path):
    store = Store(str(tmp_path / "hub"))
    queries = HubQueries(store, accounts=None, groups=None, social=None)
    yield store.database("shared"), queries
    store.close()


def branch(n: int, author: str = ALICE, deleted: bool = False, text: str = "") -> dict:
    """A depth-1 revision of SID (a branch of its own), unsigned: ``shared`` stores what the merge gives it."""
    body = codec.in_canonical_order({"type": "shift", "author": author, "summary": f"{n} {text}"})
    rev = compute_rev(None, deleted, body)
    return {"id": SID, "rev": rev, "deleted": deleted, "body": body, "sig": b"s", "history": [rev]}


def test_only_the_callers_revisions_live_first(shared):
    db, queries = shared
    db.bulk_replicated([branch(1, deleted=True), branch(2), branch(3, author=CAROL)])
    rows = queries.own_revisions(ALICE, SID)
    assert [(r["body"]["summary"], r["deleted"]) for r in rows] == [("2 ", False), ("1 ", True)]
    assert queries.own_revisions(CAROL, SID)[0]["body"]["author"] == CAROL
    assert queries.own_revisions(ALICE, "no-such-id") == []
    for bad in (None, "", 7, "x" * 201):
        with pytest.raises(FlowError):
            queries.own_revisions(ALICE, bad)


def test_an_answer_fits_in_a_frame_however_many_big_branches(shared):
    db, queries = shared
    big = "x" * 900_000
    db.bulk_replicated([branch(n, text=big) for n in range(8)])
    rows = queries.own_revisions(ALICE, SID)
    weight = sum(len(codec.encode_body(r["body"])) for r in rows)
    assert 1 <= len(rows) < 8 and weight <= MAX_OWN_BYTES < MAX_FRAME // 2


def test_at_most_max_own_leaves(shared):
    db, queries = shared
    db.bulk_replicated([branch(n, deleted=True) for n in range(MAX_OWN_LEAVES + 20)])
    assert len(queries.own_revisions(ALICE, SID)) == MAX_OWN_LEAVES
