"""A row found genuine is not checked again (identity/genuine.py): a user node asking its hub for the same
page twice checks each row's signature once, and anything changed in a row, even under the same
signature, is checked again and refused."""

from __future__ import annotations

import pytest
import pytest_twisted

import shiftpeer.identity.signing as signing
from flowmesh import mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.identity.genuine import GenuineCache
from shiftpeer.identity.keys import NodeKey
from shiftpeer.identity.signing import verify_repl_doc
from shiftpeer.roles import queries
from shiftpeer.store import revs
from shiftpeer.store.codec import encode_canonical
from shiftpeer.store.revs import compute_rev
from tests.helpers_identity import count_signature_checks, signed_doc


def test_the_least_recently_used_payload_is_forgotten_first():
    cache = GenuineCache(size=2)
    a, b, c = (GenuineCache.key(bytes(64), p) for p in (b"a", b"b", b"c"))
    cache.add(a)
    cache.add(b)
    assert cache.seen(a)            # a is now the most recently used
    cache.add(c)
    assert len(cache) == 2 and cache.seen(a) and cache.seen(c) and not cache.seen(b)
    assert cache.hits == 3
    with pytest.raises(ValueError):
        GenuineCache(size=0)


def test_the_key_tells_payloads_and_signatures_apart():
    sig = bytes(range(64))
    assert GenuineCache.key(sig, b"payload") != GenuineCache.key(sig, b"payloae")
    assert GenuineCache.key(sig, b"payload") != GenuineCache.key(bytes(64), b"payload")


def test_a_genuine_row_seen_again_costs_no_check(monkeypatch):
    key = NodeKey.generate()
    doc = signed_doc(key, f"{key.account_id}.one", {"author": key.account_id, "summary": "hi"})
    calls = count_signature_checks(monkeypatch)
    assert verify_repl_doc(doc) and len(calls) == 1
    assert verify_repl_doc(dict(doc)) and len(calls) == 1          # the same bytes: remembered
    assert signing.GENUINE.hits == 1


def test_a_changed_body_under_the_remembered_signature_is_checked_and_refused(monkeypatch):
    """The memory is keyed by the payload's bytes, not by id and revision: a row whose body changed (with
    a revision recomputed to match, so only the signature can tell) is checked again and refused, every
    time it comes."""
    key = NodeKey.generate()
    doc = signed_doc(key, f"{key.account_id}.two", {"author": key.account_id, "summary": "hi"})
    calls = count_signature_checks(monkeypatch)
    assert verify_repl_doc(doc)
    body = {**doc["body"], "summary": "HACKED"}
    rev = compute_rev(None, False, body)
    forged = {**doc, "body": body, "rev": rev, "history": [rev]}
    assert not verify_repl_doc(forged) and not verify_repl_doc(forged)
    assert len(calls) >= 3 and signing.GENUINE.hits == 0      # checked each time, never remembered


@pytest_twisted.ensureDeferred
async def test_a_page_asked_again_checks_no_signature_and_still_drops_what_the_hub_altered(mesh, monkeypatch):
    await mesh.start(users=("alice", "bob"))
    bob = mesh["bob"]
    kept, altered = await mesh.public_shifts("https://again.example/")
    calls = count_signature_checks(monkeypatch)
    query = {"filters": {"href": "https://again.example/"}}

    first = [r["id"] for r in (await bob.flows.query(query))["rows"]]
    assert sorted(first) == sorted([kept, altered]) and len(calls) == 2
    second = [r["id"] for r in (await bob.flows.query(query))["rows"]]
    assert second == first and len(calls) == 2                        # both rows remembered

    # The hub now serves the altered shift with a new body under alice's old signature.
    mesh.hub.serve_altered(altered, summary="HACKED")
    third = [r["id"] for r in (await bob.flows.query(query))["rows"]]
    assert third == [kept] and len(calls) == 3                        # only the changed row checked


def _stored(doc: dict) -> dict:
    """A row as a hub answers a user node's query: the body as its stored bytes (roles/queries.py)."""
    sent = {k: v for k, v in doc.items() if k != "body"}
    return {**sent, queries.BODY_CBOR: encode_canonical(doc["body"])}


def _count_revision_checks(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = revs.replicated_rev_ok

    def counting(rev, *args, **kw):
        calls.append(rev)
        return real(rev, *args, **kw)

    monkeypatch.setattr(revs, "replicated_rev_ok", counting)
    return calls


def _edited_doc(key: NodeKey, name: str) -> tuple[dict, str]:
    """A shift's second revision as its author's node sends it (history: it and its parent), and the
    first revision's id."""
    body = {"author": key.account_id, "summary": "first"}
    first = signed_doc(key, f"{key.account_id}.{name}", body)
    return signed_doc(key, first["id"], {**body, "summary": "edited"}, parent=first["rev"]), first["rev"]


def test_a_row_that_came_as_bytes_seen_again_costs_no_signature_and_no_revision_check(monkeypatch):
    """A hub's answer row found genuine once (signature and revision) is the same answer for the same
    bytes: a Space asking the page again pays one hash a row (signing.row_key)."""
    key = NodeKey.generate()
    doc, _ = _edited_doc(key, "again")
    sigs, rev_checks = count_signature_checks(monkeypatch), _count_revision_checks(monkeypatch)
    assert queries.received_row(_stored(doc)) == doc
    assert len(sigs) == 1 and len(rev_checks) == 1
    for _ in range(3):
        assert queries.received_row(_stored(doc)) == doc
    assert len(sigs) == 1 and len(rev_checks) == 1


def test_a_remembered_row_changed_in_anything_its_check_reads_is_checked_again_and_refused(monkeypatch):
    """The row's key covers the id, revision, deleted flag, signature, body bytes and the parent its history
    names: a relay that attaches the remembered revision to another parent, or changes anything else, is
    checked again and refused, every time."""
    key = NodeKey.generate()
    doc, parent = _edited_doc(key, "changed")
    sent = _stored(doc)
    assert queries.received_row(sent) == doc                         # remembered from here on
    other_parent = revs.compute_rev(None, False, {"author": key.account_id, "summary": "another first"})
    body = {**doc["body"], "summary": "HACKED"}
    forged_rev = revs.compute_rev(parent, False, body)
    refused = {
        "another parent": {**sent, "history": [doc["rev"], other_parent]},
        "another id": {**sent, "id": f"{key.account_id}.other"},
        "deleted": {**sent, "deleted": True},
        "another signature": {**sent, "sig": bytes(64)},
        "another body, its revision to match": {**sent, queries.BODY_CBOR: encode_canonical(body),
                                                "rev": forged_rev, "history": [forged_rev, parent]},
    }
    rev_checks = _count_revision_checks(monkeypatch)
    for what, row in refused.items():
        before = len(rev_checks)
        assert queries.received_row(row) is None, what
        assert queries.received_row(dict(row)) is None, what
        assert len(rev_checks) == before + 2, what                   # checked both times: never remembered
    assert queries.received_row(sent) == doc
