"""A received document's plain payload is encoded by libipld, which writes -0.0 as 0.0: two bodies that
differ only in a zero's sign share a plain payload. No honest signature is over that payload (canonical CBOR
writes zeros in 16 bits): the canonical retry decides, the store keeps the canonical bytes, and the memory of
genuine documents is keyed by the payload that verified, so the twin is still refused as a forgery."""

from __future__ import annotations

import math

import cbor2
import pytest

from shiftpeer.identity import NodeKey, signing
from shiftpeer.identity.genuine import GenuineCache
from shiftpeer.store import codec
from shiftpeer.store.revs import compute_rev


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    monkeypatch.setattr(signing, "GENUINE", GenuineCache())


def _signed(key: NodeKey, zero: float) -> dict:
    body = codec.in_canonical_order({"author": key.account_id, "type": "shift", "pos": {"x": zero, "y": 2}})
    rev = compute_rev(None, False, body)
    sig = signing.sign_doc(key, "s1", rev, body, False)
    return {"id": "s1", "rev": rev, "sig": sig, "body": body, "deleted": False, "history": [rev]}


@pytest.mark.parametrize("zero", [0.0, -0.0])
def test_a_genuine_zero_of_either_sign_verifies_and_keeps_its_sign_in_the_stored_bytes(zero):
    doc = _signed(NodeKey.generate(), zero)
    assert signing.verify_chunk([doc]) == [True]
    stored = cbor2.loads(doc[codec.PLAIN_BODY])
    assert math.copysign(1, stored["pos"]["x"]) == math.copysign(1, zero)
    assert doc[codec.PLAIN_BODY] == codec.encode_body(doc["body"])   # the canonical bytes its author signed


def test_the_other_signs_twin_is_a_forgery_even_after_the_genuine_one_was_remembered():
    """The twin (the same signature and revision, -0.0 for 0.0) has the genuine one's plain payload; had the
    memory kept that payload, the twin would pass the signature check and be caught by its revision alone."""
    key = NodeKey.generate()
    genuine = _signed(key, 0.0)
    twin = {**genuine, "body": {**genuine["body"], "pos": {"x": -0.0, "y": 2}}}
    assert signing.prepare_check(genuine)[3] == signing.prepare_check(twin)[3]   # one plain payload
    assert signing.verify_repl_doc(genuine) is True
    assert signing.verify_repl_doc(genuine) is True   # remembered
    assert signing.verify_repl_doc(twin) is False
