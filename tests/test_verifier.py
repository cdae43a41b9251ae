"""The one signature check (identity/keys.py verify_with_key): ed25519-zebra where installed, libsodium
otherwise, with the same answers for every signature a signing library makes, and small-order keys
refused by both."""

from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

import shiftpeer.identity.keys as keys
from shiftpeer.identity import NodeKey, verify
from shiftpeer.identity.keys import account_id_of_raw, usable_public_key, verify_with_key
from shiftpeer.identity.signing import verify_repl_doc

from helpers_identity import signed_doc

#: A point of order 2 (y = -1), and a "signature" by it that the cofactored check (ZIP-215) accepts for
#: any message: R the identity, s = 0, so [8]sB = [8]R + [8]kA holds because [8]A is the identity.
SMALL_ORDER_KEY = bytes([0xEC]) + b"\xff" * 30 + b"\x7f"
TRIVIAL_SIGNATURE = (1).to_bytes(32, "little") + bytes(32)
ORDER_L = 2**252 + 27742317777372353535851937790883648493


@pytest.fixture(params=["ed25519-zebra", "libsodium"])
def verifier(request, monkeypatch):
    """Runs a test with each library doing the check (libsodium: as where zebra's wheel is missing)."""
    if request.param == "libsodium":
        monkeypatch.setattr(keys, "_zebra_verify", None)
    else:
        assert keys._zebra_verify is not None, "ed25519-zebra is a dependency: it must be installed"
    return request.param


def test_zebra_is_the_verifier_where_installed():
    assert keys.VERIFIER == "ed25519-zebra"


def test_genuine_altered_and_foreign_signatures(verifier):
    a, b = NodeKey.generate(), NodeKey.generate()
    msg = b"a shift's signed payload" * 40
    sig = a.sign(msg)
    assert verify_with_key(a.public_key, msg, sig)
    assert not verify_with_key(a.public_key, msg + b"!", sig)
    assert not verify_with_key(b.public_key, msg, sig)
    for i in (0, 31, 32, 63):   # R and s, first and last bytes
        bad = bytearray(sig)
        bad[i] ^= 1
        assert not verify_with_key(a.public_key, msg, bytes(bad))
    # the same signature with s + L (not canonical): malleated, refused by both
    s = int.from_bytes(sig[32:], "little") + ORDER_L
    assert s < 2**256
    assert not verify_with_key(a.public_key, msg, sig[:32] + s.to_bytes(32, "little"))
    assert verify(a.account_id, msg, sig) and not verify(b.account_id, msg, sig)


def test_malformed_input_is_false_not_an_exception(verifier):
    a = NodeKey.generate()
    sig = a.sign(b"m")
    assert verify_with_key(a.public_key, bytearray(b"m"), sig)    # a bytes-like message is fine
    for pk, msg, s in [(a.public_key[:31], b"m", sig), (a.public_key, b"m", sig[:63]), (a.public_key, b"m", None),
                       ("not bytes", b"m", sig), (a.public_key, object(), sig), (a.public_key, b"m", "x" * 64)]:
        assert verify_with_key(pk, msg, s) is False


def test_small_order_keys_never_verify(verifier):
    """Under ZIP-215 a small-order key "signs" anything: zebra's own check accepts the trivial signature
    (so this test would fail without the key check), the node refuses it, as a key and as an author."""
    import ed25519_zebra

    assert ed25519_zebra.ed_verify(TRIVIAL_SIGNATURE, b"anything", SMALL_ORDER_KEY) is True
    assert not usable_public_key(SMALL_ORDER_KEY)
    assert not usable_public_key((1).to_bytes(32, "little"))          # the identity point
    assert not verify_with_key(SMALL_ORDER_KEY, b"anything", TRIVIAL_SIGNATURE)
    author = account_id_of_raw(SMALL_ORDER_KEY)
    assert not verify(author, b"anything", TRIVIAL_SIGNATURE)
    body = {"author": author, "summary": "forged by anyone"}
    doc = {"id": "x", "rev": "1-" + "0" * 32, "deleted": False, "body": body, "sig": TRIVIAL_SIGNATURE,
           "history": ["1-" + "0" * 32]}
    assert not verify_repl_doc(doc)


@settings(max_examples=60, deadline=None)
@given(msg=st.binary(max_size=2048), flip=st.integers(min_value=0, max_value=64 * 8 - 1))
def test_both_libraries_give_the_same_answers(msg, flip):
    """For genuine signatures and one-bit changes of them, zebra and libsodium agree."""
    k = NodeKey.generate()
    sig = k.sign(msg)
    bad = bytearray(sig)
    bad[flip // 8] ^= 1 << (flip % 8)
    answers = []
    for backend in (keys._zebra_verify, None):
        real = keys._zebra_verify
        keys._zebra_verify = backend
        try:
            answers.append((verify_with_key(k.public_key, msg, sig), verify_with_key(k.public_key, msg, bytes(bad))))
        finally:
            keys._zebra_verify = real
    assert answers[0] == answers[1] == (True, False)


def test_signed_shifts_verify_with_either(verifier):
    k = NodeKey.generate()
    body = {"author": k.account_id, "summary": "s", "content": {"x": 1.5}}
    doc = signed_doc(k, "x", body)
    assert verify_repl_doc(doc)
    doc["body"] = dict(body, summary="altered")
    assert not verify_repl_doc(doc)


_signed = signed_doc


@pytest.mark.parametrize("docid", ["x", "shift-" + "a" * 40, "d" * 300, "ünïcødé-☃-id"])
def test_the_validator_leaves_the_bodys_plain_cbor_for_the_store(docid):
    """The sync validator encodes [docid, rev, body, deleted, author] anyway; the slice it leaves on a
    genuine document is exactly the body's bytes in the payload that verified, whatever the lengths of the
    id and revision (one-, two- and three-byte heads, non-ASCII ids): here the canonical one (the keys are out
    of canonical order and a float is wider plainly), the bytes the store writes for its own edits.
    verify_repl_doc, which the roles call on rows they show, leaves its document as it was."""
    import cbor2

    from shiftpeer.identity.signing import verify_chunk
    from shiftpeer.store.codec import PLAIN_BODY, encode_canonical, plain_encoder

    k = NodeKey.generate()
    body = {"author": k.account_id, "summary": "é" * 30, "n": 2**40, "x": 1.5, "list": [1, {"a": None}]}
    doc = _signed(k, docid, body, deleted=True, parent="11-" + "f" * 32)
    row = dict(doc)
    assert verify_repl_doc(row) and row == doc
    forged = dict(doc, body=dict(body, summary="forged"))
    assert verify_chunk([doc, forged]) == [True, False]
    assert doc[PLAIN_BODY] == encode_canonical(body) != plain_encoder()(body)
    assert cbor2.loads(doc[PLAIN_BODY]) == body
    assert PLAIN_BODY not in forged


@pytest_twisted.ensureDeferred
async def test_batches_checked_in_the_verification_processes_carry_their_bytes_too():
    from shiftpeer.identity.verifiers import verify_many
    from shiftpeer.store.codec import PLAIN_BODY, encode_canonical, plain_encoder

    k = NodeKey.generate()
    docs = [_signed(k, f"d{i}", {"author": k.account_id, "n": i, "f": i + 0.25}) for i in range(40)]
    docs += [_signed(k, f"c{i}", {"n": i, "s": "t", "author": k.account_id}) for i in range(40)]
    docs[7]["sig"] = docs[8]["sig"]
    oks = await verify_many(docs)
    assert oks == [i != 7 for i in range(80)]
    # the bytes whose payload verified: the canonical ones for keys out of canonical order and floats wider
    # plainly (checked again), the plain ones, which are the same, for keys in that order and no float
    assert all(d[PLAIN_BODY] == encode_canonical(d["body"]) for i, d in enumerate(docs) if i != 7)
    assert all(d[PLAIN_BODY] == plain_encoder()(d["body"]) for d in docs[40:])
    assert PLAIN_BODY not in docs[7]


def test_the_rules_do_not_check_a_validated_signature_twice(monkeypatch):
    """refusal() skips the signature check for a document the validator marked, and still checks any
    other: one without the mark, or one whose string key only looks like it."""
    import shiftpeer.identity.signing as signing
    from shiftpeer.roles.validation import refusal
    from shiftpeer.store.codec import PLAIN_BODY

    k = NodeKey.generate()
    doc = _signed(k, "x", {"author": k.account_id, "summary": "s"})
    plain = dict(doc)
    assert signing.verify_chunk([doc]) == [True]
    calls = []
    real = signing.check_signature
    monkeypatch.setattr(signing, "check_signature", lambda *a: calls.append(1) or real(*a))
    assert refusal(None, doc) is None and calls == []
    assert refusal(None, plain) is None and calls == [1]
    lookalike = dict(plain, body=dict(plain["body"], summary="forged"))
    lookalike["PLAIN_BODY"] = b"x"
    lookalike[repr(PLAIN_BODY)] = b"x"
    assert refusal(None, lookalike) is not None


def test_the_store_writes_the_checked_bytes_as_it_would_encode_them(tmp_path):
    """A batch whose documents went through the signature check stores the same records as the same batch
    encoded by the store; a value under the key that is not bytes is ignored; the wire cannot carry it."""
    from shiftpeer.store import Store
    from shiftpeer.store.codec import PLAIN_BODY
    from shiftpeer.sync import messages
    from shiftpeer.sync.messages import ProtocolError

    k = NodeKey.generate()
    docs = []
    for i in range(3):
        body = {"author": k.account_id, "summary": f"s{i}", "content": {"x": i + 0.5}}
        docs.append(signed_doc(k, f"d{i}", body))
    from shiftpeer.identity.signing import verify_chunk

    checked = [dict(d) for d in docs]
    assert verify_chunk(checked) == [True] * 3 and all(PLAIN_BODY in d for d in checked)
    checked[2][PLAIN_BODY] = "not bytes"
    st = Store(str(tmp_path / "s"))
    try:
        a, b = st.create_database("a"), st.create_database("b")
        a.bulk_replicated(checked)
        b.bulk_replicated(docs)
        for d in docs:
            x, y = a.get(d["id"]), b.get(d["id"])
            assert (x.rev, x.body, x.sig) == (y.rev, y.body, y.sig) == (d["rev"], d["body"], d["sig"])
        assert a.get_repl_docs([(d["id"], None) for d in docs]) == b.get_repl_docs([(d["id"], None) for d in docs])
    finally:
        st.close()
    with pytest.raises(ProtocolError):
        messages.validate({"t": "docs", "rid": 1, "seq": 1, "docs": [checked[0]], "more": False})
