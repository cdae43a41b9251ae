"""Ids and tokens people type on the command line; ids bound to their author."""

import pytest
import pytest_twisted

from shiftpeer.cli import build_parser
from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc, signing_payload, verify_repl_doc
from shiftpeer.identity.verifiers import verify_many
from shiftpeer.ids import AUTHOR_TAG_CHARS, bound_id, names_other_author, new_token
from shiftpeer.shifts import new_shift_id
from shiftpeer.store.revs import compute_rev

ALICE, MALLORY = NodeKey.generate(), NodeKey.generate()


def test_shift_ids_are_never_taken_for_options():
    """A fresh shift id never starts with '-' or '_', so `shift publish ID` always parses it as the id."""
    parser = build_parser()
    ids = [new_shift_id(NodeKey.generate().account_id) for _ in range(300)] + \
        [new_shift_id(ALICE.account_id) for _ in range(1700)]
    assert all(i[0].isalnum() for i in ids)
    assert len(set(ids)) == len(ids) and all(len(i) >= 21 for i in ids)
    for sid in ids[:200]:
        args = parser.parse_args(["--data", "d", "shift", "publish", sid, "--public"])
        assert args.id == sid


def test_invite_tokens_are_never_taken_for_options():
    """An invitation token never starts with '-' or '_', so `register --invite TOKEN` always parses."""
    parser = build_parser()
    for _ in range(500):
        token = new_token(16)
        assert token[0].isalnum()
        assert parser.parse_args(["--data", "d", "register", "--invite", token]).invite == token


def test_bound_ids_name_their_author_and_old_ids_name_no_one():
    a, m = ALICE.account_id, MALLORY.account_id
    for prefix in ("", "cm-", "notice-"):
        docid = bound_id(a, prefix)
        assert docid.startswith(prefix + a[:AUTHOR_TAG_CHARS] + ".")
        assert not names_other_author(docid, a)
        assert names_other_author(docid, m)
    for legacy in (new_token(16), "cm-" + new_token(12), "notice-abc", "d0", "doc.with.dots", a + "x"):
        assert not names_other_author(legacy, m), legacy


def _repl_doc(key, docid, body, history=()):
    rev = compute_rev(history[0] if history else None, False, body)
    return {"id": docid, "rev": rev, "deleted": False, "body": body,
            "sig": sign_doc(key, docid, rev, body, False), "history": [rev, *history]}


def test_no_one_can_write_a_revision_under_another_authors_bound_id():
    """The audit's takeover: mallory writes her own revision of alice's shift id, claiming alice's
    revisions as its history, for a node that does not hold the shift yet. The signature is mallory's and
    valid, but the id names alice, so every node refuses it (and mallory's own node will not sign it)."""
    sid = new_shift_id(ALICE.account_id)
    alice_doc = _repl_doc(ALICE, sid, {"type": "shift", "summary": "mine", "author": ALICE.account_id})
    assert verify_repl_doc(alice_doc)
    body = {"type": "shift", "summary": "HACKED", "author": MALLORY.account_id}
    rev = compute_rev(alice_doc["rev"], False, body)
    squat = {"id": sid, "rev": rev, "deleted": False, "body": body,
             "sig": MALLORY.sign(signing_payload(sid, rev, body, False)),
             "history": [rev, alice_doc["rev"]]}
    assert not verify_repl_doc(squat)
    with pytest.raises(ValueError, match="names another author"):
        sign_doc(MALLORY, sid, rev, body, False)
    # an id that is not bound keeps the old first-come rule: the signature alone decides
    assert verify_repl_doc(_repl_doc(MALLORY, "legacy-id", body))


@pytest_twisted.ensureDeferred
async def test_batches_checked_in_the_verification_processes_refuse_squatted_ids_too():
    """A pull's large batches are checked in the verification processes: the bound-id rule holds there."""
    docs = []
    for i in range(100):
        key = ALICE if i % 2 else MALLORY
        docs.append(_repl_doc(key, new_shift_id(key.account_id), {"n": i, "author": key.account_id}))
    squatted = {3, 40, 99}
    for i in squatted:    # mallory signs valid revisions under alice's ids
        sid = new_shift_id(ALICE.account_id)
        body = {"n": i, "author": MALLORY.account_id}
        rev = compute_rev(None, False, body)
        docs[i] = {"id": sid, "rev": rev, "deleted": False, "body": body,
                   "sig": MALLORY.sign(signing_payload(sid, rev, body, False)), "history": [rev]}
    results = await verify_many(docs)
    assert [i for i, ok in enumerate(results) if not ok] == sorted(squatted)
