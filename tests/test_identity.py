"""Node keys, account ids and shift signatures."""

from __future__ import annotations

import os
import stat

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives.asymmetric import ec

from shiftpeer.identity import (
    KeyFileError,
    NodeKey,
    is_account_id,
    is_peer_id,
    peer_id_of_public_key,
    public_key_of,
    verify,
)
from shiftpeer.identity.signing import sign_doc, signing_payload, verify_repl_doc
from shiftpeer.identity.verifiers import verify_many

from helpers_identity import count_signature_checks, signed_doc


def make_doc(key: NodeKey, n: int = 0, **over) -> dict:
    body = {"author": key.account_id, "space": "notes", "href": f"http://example.com/{n}",
            "summary": "a note", "content": {"x": 1.5, "tags": ["a", "b"]}}
    doc = signed_doc(key, f"shift-{n}", body)
    doc.update(over)
    return doc


def test_account_id_round_trips():
    """An account id is 52 lowercase base32 characters that decode back to the raw public key."""
    key = NodeKey.generate()
    assert len(key.account_id) == 52 and key.account_id == key.account_id.lower()
    assert "=" not in key.account_id
    assert public_key_of(key.account_id) == key.public_key
    assert is_account_id(key.account_id) and is_peer_id(key.account_id)
    assert peer_id_of_public_key(key.private_key.public_key()) == key.account_id


def test_non_ed25519_keys_get_a_distinct_x_id():
    """A non-Ed25519 certificate key gets an 'x'-prefixed 53-character id that can never sign."""
    pid = peer_id_of_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert pid.startswith("x") and len(pid) == 53
    assert is_peer_id(pid) and not is_account_id(pid)
    with pytest.raises(ValueError):
        public_key_of(pid)
    assert not verify(pid, b"msg", b"\0" * 64)


def test_sign_and_verify():
    """A signature verifies under the signer's id only, and for the signed message only."""
    a, b = NodeKey.generate(), NodeKey.generate()
    sig = a.sign(b"hello")
    assert len(sig) == 64
    assert verify(a.account_id, b"hello", sig)
    assert not verify(a.account_id, b"hellO", sig)
    assert not verify(b.account_id, b"hello", sig)
    assert not verify("not-an-id", b"hello", sig)
    assert not verify(a.account_id, b"hello", sig[:63])


def test_key_save_and_load(tmp_path):
    """A saved key loads back with the same id and certificate, from a 0600 file it won't overwrite."""
    key = NodeKey.generate()
    key.save(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "node.key").st_mode)
    assert mode == 0o600
    loaded = NodeKey.load(tmp_path)
    assert loaded.account_id == key.account_id
    assert loaded.certificate() == key.certificate()
    with pytest.raises(FileExistsError):
        key.save(tmp_path)


def test_key_load_errors(tmp_path):
    """Loading a missing or non-Ed25519 key file fails with a KeyFileError naming the problem."""
    with pytest.raises(KeyFileError, match="cannot read"):
        NodeKey.load(tmp_path)
    (tmp_path / "node.key").write_bytes(b"garbage")
    with pytest.raises(KeyFileError, match="PEM"):
        NodeKey.load(tmp_path)


def test_signed_doc_verifies():
    """A document signed by its author verifies."""
    assert verify_repl_doc(make_doc(NodeKey.generate()))


@pytest.mark.parametrize(
    "alter",
    [
        lambda d: d["body"].__setitem__("summary", "forged"),
        lambda d: d.__setitem__("rev", "2-" + "f" * 32),
        lambda d: d.__setitem__("id", "other-shift"),
        lambda d: d.__setitem__("deleted", True),
        lambda d: d["body"].__setitem__("author", NodeKey.generate().account_id),
        lambda d: d.__setitem__("sig", bytes(64)),
        lambda d: d.__setitem__("sig", None),
        lambda d: d.pop("sig"),
        lambda d: d["body"].pop("author"),
        lambda d: d.__setitem__("body", "not a map"),
    ],
    ids=["body", "rev", "id", "deleted", "author", "zero-sig", "no-sig", "missing-sig",
         "no-author", "bad-body"],
)
def test_altered_doc_fails(alter):
    """Changing any signed field (or the signature) makes verification fail, without raising."""
    doc = make_doc(NodeKey.generate())
    alter(doc)
    assert not verify_repl_doc(doc)


def test_payload_is_canonical():
    """The payload does not depend on map key order, and is the documented CBOR array."""
    import cbor2

    k = NodeKey.generate()
    b1 = {"author": k.account_id, "a": 1, "b": {"y": 2, "x": 1}}
    b2 = {"b": {"x": 1, "y": 2}, "a": 1, "author": k.account_id}
    p = signing_payload("id", "1-" + "0" * 32, b1, False)
    assert p == signing_payload("id", "1-" + "0" * 32, b2, False)
    assert cbor2.loads(p) == ["id", "1-" + "0" * 32, b1, False, k.account_id]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=30), kids, max_size=5),
    max_leaves=20,
)
_AUTHOR = NodeKey.generate()


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.text(max_size=30), _JSON, max_size=8),
       docid=st.text(min_size=1, max_size=300), deleted=st.booleans())
def test_payload_from_the_stored_body_bytes_is_the_same(body, docid, deleted):
    """The store's put hands the body's canonical CBOR to the signer, which splices it into the payload
    instead of encoding the body again: the bytes signed are exactly the ones encoded from scratch, so
    every other node's check (which encodes from scratch) accepts the signature."""
    from shiftpeer.store.codec import encode_body

    body = {**body, "author": _AUTHOR.account_id}
    rev = "2-" + "ab" * 16
    assert (signing_payload(docid, rev, body, deleted, encode_body(body))
            == signing_payload(docid, rev, body, deleted))


def test_a_put_signs_what_every_node_verifies(tmp_path):
    """A shift written with the store's put and sign_doc verifies as a replicated document."""
    import functools

    from shiftpeer.store import Store

    store = Store(str(tmp_path / "s"))
    db = store.create_database("master")
    body = {"author": _AUTHOR.account_id, "summary": "é" * 40, "n": 2**40, "f": 0.5, "l": [1, {"b": 1, "a": 2}]}
    db.put("shift-1", body, sign=functools.partial(sign_doc, _AUTHOR))
    [doc] = db.get_repl_docs([("shift-1", [db.get("shift-1").rev])])
    assert verify_repl_doc(doc)
    doc["body"]["summary"] = "e" * 40
    assert not verify_repl_doc(doc)
    store.close()


def test_sign_refuses_someone_elses_shift():
    """A node key will not sign a shift whose author is another account."""
    a, b = NodeKey.generate(), NodeKey.generate()
    with pytest.raises(ValueError):
        sign_doc(a, "id", "1-" + "0" * 32, {"author": b.account_id}, False)


@pytest_twisted.ensureDeferred
async def test_verify_many_flags_exactly_the_forged():
    """verify_many over a large batch (threaded) returns False exactly at the forged entries."""
    keys = [NodeKey.generate() for _ in range(3)]
    docs = [make_doc(keys[i % 3], i) for i in range(300)]
    forged = {5, 77, 150, 151, 299}
    for i in forged:
        docs[i]["body"]["summary"] = "forged"
    results = await verify_many(docs)
    assert [i for i, ok in enumerate(results) if not ok] == sorted(forged)


@pytest_twisted.ensureDeferred
async def test_verify_many_small_and_empty_batches():
    """Small and empty batches are verified too (inline), in order."""
    k = NodeKey.generate()
    docs = [make_doc(k, i) for i in range(3)]
    docs[1]["rev"] = "9-" + "0" * 32
    assert await verify_many(docs) == [True, False, True]
    assert await verify_many([]) == []


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_KEY = NodeKey.generate()


@settings(max_examples=60, deadline=None)
@given(content=st.dictionaries(st.text(max_size=8), _json, max_size=5), deleted=st.booleans())
def test_signature_survives_a_cbor_round_trip(content, deleted):
    """Any JSON-like body still verifies after the store's plain CBOR encode/decode round trip."""
    import cbor2

    body = {"author": _KEY.account_id, "content": content}
    doc = signed_doc(_KEY, "x", body, deleted)
    assert verify_repl_doc(cbor2.loads(cbor2.dumps(doc)))


def test_verify_fast_path_checks_the_plain_encoding_once(monkeypatch):
    """A float-free body in canonical key order (as it arrives from its author) costs one verify, over
    bytes equal to the canonical payload."""
    import cbor2

    k = NodeKey.generate()
    body = {"author": k.account_id, "n": 3, "content": {"text": "hi", "tags": ["a"]}}
    doc = signed_doc(k, "x", body)
    doc["body"] = cbor2.loads(cbor2.dumps(body, canonical=True))     # key order as on the wire
    calls = count_signature_checks(monkeypatch)
    assert verify_repl_doc(doc)
    assert calls == [signing_payload("x", doc["rev"], body, False)]


def test_verify_falls_back_to_the_canonical_payload(monkeypatch):
    """Floats (shortest form in canonical CBOR) or reordered keys fail the plain check; the canonical one
    then decides: genuine documents verify, altered ones do not."""
    k = NodeKey.generate()
    doc = make_doc(k)                                   # content has the float 1.5
    doc["body"] = dict(reversed(list(doc["body"].items())))
    calls = count_signature_checks(monkeypatch)
    assert verify_repl_doc(doc) and len(calls) == 2
    doc["body"]["content"] = {"x": 2.5, "tags": ["a", "b"]}
    assert not verify_repl_doc(doc)
