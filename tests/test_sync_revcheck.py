"""A replicated revision must hash its body under the parent its history names (docs/security.md, *A
malicious full peer*): the signature covers the revision but not the history, so every receiver recomputes
the hash. Over real TLS on 127.0.0.1, with LMDB stores and the default validator, pulled and pushed."""

from __future__ import annotations

import cbor2
import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc, verify_repl_doc
from shiftpeer.store.codec import encode_canonical, plain_encoder
from shiftpeer.store.revs import compute_rev, replicated_rev_ok, rev_matches

from helpers_identity import signed_doc
from test_sync_network import Nodes, snapshot, until

ALICE = NodeKey.generate()


def _body(text: str, **more) -> dict:
    """A shift body in canonical key order (as it arrives from its author's store)."""
    return cbor2.loads(encode_canonical({"author": ALICE.account_id, "summary": text,
                                         "content": {"text": text * 20, "x": 3}, **more}))


# -- the check itself -------------------------------------------------------------------------------------


def test_the_check_binds_a_revision_to_its_parent_depth_deleted_flag_and_body():
    """replicated_rev_ok over the body's plain bytes: the genuine revision passes, any other parent, depth,
    deleted flag or body fails; a history that does not start with the revision fails."""
    body, other = _body("one"), _body("two")
    plain = plain_encoder()(body)
    r1 = compute_rev(None, False, other)
    r1b = compute_rev(None, False, _body("three"))
    r2 = compute_rev(r1, False, body)
    assert replicated_rev_ok(r2, [r2, r1], False, plain, body)
    assert replicated_rev_ok(r2, [r2, r1], False, memoryview(plain), body)
    assert not replicated_rev_ok(r2, [r2, r1b], False, plain, body)          # another parent
    assert not replicated_rev_ok(r2, [r2, r1], True, plain, body)            # the deleted flag
    assert not replicated_rev_ok(r2, [r2, r1], False, plain_encoder()(other), other)   # another body
    wrong_depth = "3-" + r2.split("-")[1]
    assert not replicated_rev_ok(wrong_depth, [wrong_depth, r1], False, plain, body)
    assert not replicated_rev_ok(r2, [r1], False, plain, body)               # history not led by the rev
    assert not replicated_rev_ok(r2, "not a list", False, plain, body)
    assert not replicated_rev_ok(r2, [r2, 7], False, plain, body)
    assert not replicated_rev_ok(r2, [r2, "no-dash-depth"], False, plain, body)
    root = compute_rev(None, False, body)
    assert replicated_rev_ok(root, [root], False, plain, body) and replicated_rev_ok(root, None, False, plain, body)
    assert not replicated_rev_ok("1-" + "0" * 32, ["1-" + "0" * 32], False, plain, body)
    assert not replicated_rev_ok(r2, [r2, r1], False, b"\xa0", None)


def test_a_stemmed_history_names_no_parent_and_is_not_checked():
    """A history of one entry at depth > 1 (its sender stemmed the parent away) cannot be checked: accepted,
    as docs/security.md *Known gaps* says. At depth 1 a one-entry history is checked."""
    body = _body("one")
    plain = plain_encoder()(body)
    assert replicated_rev_ok("5-" + "0" * 32, ["5-" + "0" * 32], False, plain, body)
    assert not replicated_rev_ok("5-nothex", ["5-nothex"], False, plain, body)    # not a revision at all
    assert not replicated_rev_ok("1-" + "0" * 32, ["1-" + "0" * 32], False, plain, body)


def test_plain_bytes_first_then_the_canonical_encoding():
    """Keys out of canonical order: the plain bytes do not hash to the revision, the canonical encoding
    (built only then, and only when the body is given) does."""
    body = _body("one")
    assert plain_encoder()(body) == encode_canonical(body)
    shuffled = dict(reversed(list(body.items())))
    plain = plain_encoder()(shuffled)
    assert plain != encode_canonical(shuffled)
    rev = compute_rev(None, False, body)
    assert not rev_matches(rev, None, False, plain)
    assert rev_matches(rev, None, False, plain, shuffled)
    assert rev_matches(rev, None, False, encode_canonical(body))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(content=st.dictionaries(st.text(max_size=8), _JSON, max_size=5), deleted=st.booleans(),
       depth=st.integers(1, 5))
def test_every_genuine_revision_passes_over_its_plain_bytes(content, deleted, depth):
    """Whatever the body (floats, key order as made), its genuine revision passes the check over the plain
    bytes the validator has, and the same body under another parent does not."""
    body = {"content": content, "author": ALICE.account_id}
    parent = None if depth == 1 else f"{depth - 1}-" + "ab" * 16
    rev = compute_rev(parent, deleted, body)
    history = [rev] if parent is None else [rev, parent]
    assert replicated_rev_ok(rev, history, deleted, plain_encoder()(body), body)
    other = f"{max(depth - 1, 1)}-" + "cd" * 16
    assert not replicated_rev_ok(rev, [rev, other], deleted, plain_encoder()(body), body)


def test_verify_repl_doc_refuses_a_genuine_signature_on_a_revision_that_does_not_hash_its_body():
    """The author's own key signing a made-up revision, or another body under a genuine revision: the
    signature verifies, the document is still refused (it is what every receiver's validator calls)."""
    real = signed_doc(ALICE, "s1", _body("one"))
    assert verify_repl_doc(real)
    bogus = "1-" + "0" * 32
    made_up = dict(real, rev=bogus, history=[bogus], sig=sign_doc(ALICE, "s1", bogus, real["body"], False))
    assert not verify_repl_doc(made_up)
    twin_body = _body("two")
    twin = dict(real, body=twin_body, sig=sign_doc(ALICE, "s1", real["rev"], twin_body, False))
    assert not verify_repl_doc(twin)


# -- over real TLS ------------------------------------------------------------------------------------------


class Warnings:
    """The warnings logged while a block runs (``with Warnings() as w``)."""

    def __init__(self):
        self.events: list[dict] = []

    def __enter__(self):
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self.events.append)

    def closed(self, peer: str, code: str) -> list[dict]:
        return [e for e in self.events if e.get("log_format", "").startswith("closing the connection to")
                and e.get("peer") == peer and e.get("code") == code]


def _genuine_edit():
    """alice's shift s1: a first revision, a later edit of it, and a conflicting first revision."""
    r1 = signed_doc(ALICE, "s1", _body("first"))
    r2 = signed_doc(ALICE, "s1", _body("edited"), parent=r1["rev"])
    r1b = signed_doc(ALICE, "s1", _body("elsewhere"))
    return r1, r2, r1b


def _bystanders(n: int) -> list[dict]:
    return [signed_doc(ALICE, f"ok{i}", _body(f"fine {i}")) for i in range(n)]


async def _send(nodes, direction: str, hostile_docs: list[dict], held: list[dict]):
    """The hostile node holds `hostile_docs` (written as they are, the store takes any history) and sends
    its database to the honest one, which already holds `held`: pushed into it, or pulled by it. Returns
    (honest node, hostile node, the replication's handle, the honest database before)."""
    hostile, honest = nodes("hostile"), nodes("honest")
    src = hostile.store.create_database("relay")
    src.bulk_replicated(hostile_docs)
    dst = honest.store.create_database("inbox")
    if held:
        dst.bulk_replicated(held)
    before = snapshot(dst)
    if direction == "push":
        await honest.listen()
        conn = await hostile.connect(honest).when_authenticated()
        rep = conn.push("relay", "inbox")
    else:
        await hostile.listen()
        conn = await honest.connect(hostile).when_authenticated()
        rep = conn.pull("relay", "inbox")
    return honest, hostile, rep, before


async def _refused(nodes, direction, hostile_docs, held, gone):
    """Sends, then checks the refusal: counted and logged naming the hostile peer like a forged signature,
    the honest database unchanged (the documents in `gone` absent), the replication ended."""
    with Warnings() as w:
        honest, hostile, rep, before = await _send(nodes, direction, hostile_docs, held)
        await until(lambda: honest.factory.counters["violation.forged"] >= 1, what="the refusal")
        await until(lambda: rep.finished, what="the replication to end")
        assert w.closed(hostile.id, "forged"), "the refusal names the peer"
    dst = honest.store.database("inbox")
    assert snapshot(dst) == before
    for docid, rev in gone:
        assert dst.get(docid, rev) is None


@pytest.mark.allow_logged_errors
@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("others", [0, 100], ids=["inline", "in-processes"])
@pytest_twisted.ensureDeferred
async def test_a_genuine_revision_sent_under_another_parent_is_refused(tmp_path, direction, others):
    """(a) A relay attaches alice's genuine later edit to another parent (her conflicting first revision), so
    that the edit would show as a conflict on a node holding the first revision. The receiver refuses it like
    a forged signature: nothing from the batch is stored, the connection is closed with `forged`, counted and
    logged naming the relay. With 100 other documents the batch is checked in the verification processes."""
    r1, r2, r1b = _genuine_edit()
    regrafted = dict(r2, history=[r2["rev"], r1b["rev"]])
    assert verify_repl_doc(dict(r2)) and not verify_repl_doc(dict(regrafted))
    async with Nodes(tmp_path) as nodes:
        await _refused(nodes, direction, [r1b, regrafted, *_bystanders(others)], [r1],
                       gone=[("s1", r2["rev"]), ("s1", r1b["rev"])])


@pytest.mark.allow_logged_errors
@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("variant", ["made-up-rev", "two-bodies-one-rev"])
@pytest_twisted.ensureDeferred
async def test_a_signed_revision_that_does_not_hash_its_body_is_refused(tmp_path, direction, variant):
    """(b) The author's own key signs a revision that is not the hash of the body: a made-up one, or her
    genuine revision's id over a second body (so that nodes would hold two bodies under one id for ever)."""
    r1, r2, _ = _genuine_edit()
    if variant == "made-up-rev":
        bogus = "2-" + "0" * 32
        bad = dict(r2, rev=bogus, history=[bogus, r1["rev"]], sig=sign_doc(ALICE, "s1", bogus, r2["body"], False))
    else:
        twin = _body("a second body")
        bad = dict(r2, body=twin, sig=sign_doc(ALICE, "s1", r2["rev"], twin, False))
    async with Nodes(tmp_path) as nodes:
        await _refused(nodes, direction, [r1, bad, *_bystanders(3)], [r1], gone=[("s1", bad["rev"])])


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest_twisted.ensureDeferred
async def test_a_body_with_keys_out_of_canonical_order_and_the_right_revision_is_accepted(tmp_path, direction):
    """(c) A body that travels with its keys out of canonical order (its plain bytes are not the canonical
    ones the revision hashes) but whose revision is right is stored, with no violation: the check retries
    with the canonical encoding, as the signature check does."""
    body = _body("shuffled")
    shuffled = dict(reversed(list(body.items())))
    r1 = signed_doc(ALICE, "s1", body)
    r2 = signed_doc(ALICE, "s1", shuffled, parent=r1["rev"])
    assert r2["rev"] == compute_rev(r1["rev"], False, body)
    async with Nodes(tmp_path) as nodes:
        honest, hostile, rep, _ = await _send(nodes, direction, [r1, r2, *_bystanders(3)], [r1])
        assert list(hostile.store.database("relay").get("s1").body) == list(shuffled)   # sent in that order
        dst = honest.store.database("inbox")
        await until(lambda: dst.get("s1") is not None and dst.get("s1").rev == r2["rev"]
                    and dst.get("ok2") is not None, what="the edit to arrive")
        doc = dst.get("s1")
        assert doc.body == body and doc.conflicts == [] and doc.sig == r2["sig"]
        assert not any(k.startswith("violation.") for k in honest.factory.counters)


def test_the_rules_refuse_it_outside_a_sync_batch_too():
    """The hub's deliver RPC and other callers outside a sync batch go through roles.validation.refusal,
    which calls the same check: a regrafted revision is refused as bad_signature, the genuine one is not."""
    from shiftpeer.roles.validation import refusal

    r1, r2, r1b = _genuine_edit()
    assert refusal(None, dict(r2)) is None
    why = refusal(None, dict(r2, history=[r2["rev"], r1b["rev"]]))
    assert why is not None and why.code == "bad_signature" and "revision" in str(why)


@pytest.mark.allow_logged_errors
@pytest_twisted.ensureDeferred
async def test_a_regrafted_revision_riding_along_with_live_changes_is_refused(tmp_path, monkeypatch):
    """Live mode sends small batches' documents inline with their changes (no need/docs round trip): the
    same check refuses a regrafted revision there, after the honest part of the pull was stored."""
    r1, r2, r1b = _genuine_edit()
    with Warnings() as w:
        async with Nodes(tmp_path) as nodes:
            honest, hostile, rep, _ = await _send(nodes, "pull", [r1, *_bystanders(3)], [])
            await rep.caught_up
            dst = honest.store.database("inbox")
            before = snapshot(dst)
            assert set(before) == {"s1", "ok0", "ok1", "ok2"}
            from shiftpeer.sync.puller import Puller

            asked = []
            real_on_docs = Puller.on_docs
            monkeypatch.setattr(Puller, "on_docs", lambda self, msg: asked.append(msg) or real_on_docs(self, msg))
            hostile.store.database("relay").bulk_replicated([r1b, dict(r2, history=[r2["rev"], r1b["rev"]])])
            await until(lambda: honest.factory.counters["violation.forged"] == 1, what="the refusal")
            assert snapshot(dst) == before and dst.get("s1", r2["rev"]) is None
            assert asked == []     # the revision came inline with its change, not in a docs frame
        assert w.closed(hostile.id, "forged")
