"""A hub answers a user node's query with each row's body as the bytes it stored (``body_cbor``), and the
user node checks the signature over the very bytes it decodes the body from (roles/queries.py
``stored_row``, ``received_row``): the same rows, the same checks, and nothing the hub changed gets through.
A hub or a user node that does not know ``body_cbor`` still gets and takes the decoded rows."""

from __future__ import annotations

import cbor2
import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.identity.keys import NodeKey
from shiftpeer.identity.signing import sign_doc
from shiftpeer.roles import queries
from shiftpeer.roles.names import FlowError
from shiftpeer.store import Store
from shiftpeer.store.codec import encode_body
from shiftpeer.store.revs import compute_rev
from tests.helpers_identity import count_signature_checks

HREF = "https://stored.example.org/page"


@pytest.fixture
def shared(tmp_path):
    """A database holding three signed shifts on HREF (and one elsewhere), as a hub's ``shared``."""
    store = Store(str(tmp_path / "store"))
    db = store.create_database("shared")
    key = NodeKey.generate()
    for i, href in enumerate([HREF, HREF, "https://elsewhere.example.org/", HREF]):
        body = {"type": "shift", "space": "Notes", "href": href, "summary": f"shift {i}",
                "author": key.account_id, "created": 1_700_000_000 + i, "audience": {"public": True}}
        db.put(f"{key.account_id}.s{i}", body, vis=["public"],
               sign=lambda *a: sign_doc(key, *a))
    yield db
    store.close()


def test_a_query_with_body_bytes_finds_the_same_documents_with_their_stored_bytes(shared):
    plain, cursor = shared.query("href", HREF, vis=["public"], limit=2)
    stored, stored_cursor = shared.query("href", HREF, vis=["public"], limit=2, body_bytes=True)
    assert stored_cursor == cursor and [d.id for d in stored] == [d.id for d in plain]
    for p, s in zip(plain, stored):
        assert tuple(s)[:-2] == tuple(p)                     # every Doc field as the plain query has it
        assert s.body_cbor == encode_body(p.body)            # the bytes the put stored
        assert s.parent is None                              # a first revision
        assert cbor2.loads(s.body_cbor) == p.body


def test_a_stored_row_is_received_as_the_row_the_hub_used_to_send(shared, monkeypatch):
    docs, _ = shared.query("href", HREF, vis=["public"], limit=10, body_bytes=True)
    assert len(docs) == 3
    calls = count_signature_checks(monkeypatch)
    for d in docs:
        sent = queries.stored_row(d)
        assert "body" not in sent and sent[queries.BODY_CBOR] == d.body_cbor
        assert queries.received_row(sent) == queries.row(d)
    assert len(calls) == 3
    for d in docs:   # asked again: remembered
        assert queries.received_row(queries.stored_row(d)) == queries.row(d)
    assert len(calls) == 3
    for _ in range(2):   # a decoded row is remembered under its payload's key: one key a row in the memory
        for d in docs:
            assert queries.received_row(queries.row(d)) == queries.row(d)
    assert len(calls) == 6


def test_a_received_row_is_refused_when_anything_in_it_is_not_what_the_author_signed(shared):
    doc = shared.query("href", HREF, vis=["public"], limit=1, body_bytes=True)[0][0]
    sent = queries.stored_row(doc)
    assert queries.received_row(sent) is not None            # remembered now: the refusals below still hold
    raw = sent[queries.BODY_CBOR]
    changed = raw.replace(b"shift 3", b"shift 9")
    assert changed != raw
    forged_body = cbor2.loads(changed)
    rev = compute_rev(None, False, forged_body)
    refused = [
        {**sent, queries.BODY_CBOR: changed},                                   # body changed, old revision
        {**sent, queries.BODY_CBOR: changed, "rev": rev, "history": [rev]},     # and a revision to match
        {**sent, queries.BODY_CBOR: raw.decode("latin-1")},                     # not bytes
        {**sent, queries.BODY_CBOR: b"\xff\x00"},                               # not CBOR
        {**sent, queries.BODY_CBOR: cbor2.dumps(["a", "list"])},                # not a map
        {**sent, "body": forged_body},                                          # two bodies: which one?
        {**sent, "sig": bytes(64)},                                             # not the author's signature
        {**sent, "deleted": True},                                              # not the signed flag
        "a row",
    ]
    for row in refused:
        assert queries.received_row(row) is None, row


def test_stored_bytes_out_of_canonical_order_still_verify(shared):
    """A body stored with its keys in another order (a replicated one written as it came) is not the byte
    string the author signed: the check falls back to the canonical encoding, as for a decoded row."""
    doc = shared.query("href", HREF, vis=["public"], limit=1, body_bytes=True)[0][0]
    reordered = cbor2.dumps(dict(reversed(list(doc.body.items()))))
    assert reordered != doc.body_cbor and cbor2.loads(reordered) == doc.body
    got = queries.received_row({**queries.stored_row(doc), queries.BODY_CBOR: reordered})
    assert got == queries.row(doc)


def test_the_hub_sends_stored_bytes_only_to_an_asker_that_names_them(tmp_path):
    from tests.flowmesh import HubParty
    hub = HubParty(tmp_path / "hub")
    key = NodeKey.generate()
    hub.hub.accounts.register("alice", key.account_id)
    body = {"type": "shift", "space": "Notes", "href": HREF, "summary": "s", "author": key.account_id,
            "created": 1_700_000_000, "audience": {"public": True}}
    hub.db("shared").put(f"{key.account_id}.x", body, vis=["public"], sign=lambda *a: sign_doc(key, *a))
    ask = {"filters": {"href": HREF}}
    old = hub.hub.queries.query(key.account_id, "alice", ask)
    new = hub.hub.queries.query(key.account_id, "alice", {**ask, queries.BODY_CBOR: True})
    assert [r["body"] for r in old["rows"]] == [body]
    assert [cbor2.loads(r[queries.BODY_CBOR]) for r in new["rows"]] == [body]
    assert [queries.received_row(r) for r in new["rows"]] == old["rows"]
    hub.hub.stop()
    hub.store.close()


@pytest_twisted.ensureDeferred
async def test_a_user_node_pages_the_same_whichever_rows_its_hub_sends(mesh, monkeypatch):
    """A hub that predates ``body_cbor`` ignores it and sends decoded rows: the user node's pages, with its
    unpublished shifts merged in, are the same."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    published = [alice.new_shift(HREF, summary=f"p{i}") for i in range(4)]
    for sid in published:
        await alice.publish(sid, public=True)
    await eventually(lambda: set(published) <= mesh.hub.ids("shared"), "shared")
    drafts = [alice.new_shift(HREF, summary=f"d{i}") for i in range(2)]

    async def pages() -> list[list[str]]:
        out, cursor = [], None
        for _ in range(10):
            answer = await alice.flows.query({"filters": {"href": HREF}, "limit": 2, "cursor": cursor})
            assert answer["source"] == "shared"
            out.append([r["id"] for r in answer["rows"]])
            cursor = answer["next_cursor"]
            if cursor is None:
                return out
        raise AssertionError("more than 10 pages")

    new = await pages()
    monkeypatch.setattr(queries, "stored_row", queries.row)   # the hub's answers as an older hub sends them
    old = await pages()
    assert new == old
    assert sorted(i for page in new for i in page) == sorted(published + drafts)


@pytest_twisted.ensureDeferred
async def test_a_bad_query_or_cursor_fails_the_deferred_and_asks_the_hub_nothing(mesh, monkeypatch):
    await mesh.start(users=("alice",))
    flows = mesh["alice"].flows
    asked: list[str] = []
    real = flows.link.call
    monkeypatch.setattr(flows.link, "call", lambda method, args: asked.append(method) or real(method, args))
    for bad in ({"limit": 0}, {"filters": {"href": "not a url"}}, {"cursor": "f2.bm90IGpzb24"}, "a string"):
        d = flows.query(bad)
        with pytest.raises(FlowError) as e:
            await d
        assert e.value.code == "bad_request"
    assert asked == []
