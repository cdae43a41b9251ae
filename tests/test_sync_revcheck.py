"""A replicated revision must hash its body under the parent its history names (docs/security.md, *A
malicious full peer*): the signature covers the revision but not the history, so every receiver recomputes
the hash. A revision that does not check under a signature that verifies is refused on its own (an honest
relay built before the check may hold it): left out, logged, counted, the sender told, the rest of the batch
stored. Over real TLS on 127.0.0.1, with LMDB stores and the default validator, pulled and pushed."""

from __future__ import annotations

import cbor2
import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import formatEvent, globalLogPublisher

from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import BAD_REVISION, STEMMED_HISTORY, sign_doc, verify_repl_doc
from shiftpeer.store.codec import encode_canonical, plain_encoder
from shiftpeer.store import revs
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


def test_a_stemmed_history_names_no_parent_and_is_refused():
    """A history of one entry at depth > 1 (its sender stemmed the parent away) cannot be checked, so it
    fails (honest nodes never send one: a leaf keeps its parent). rev_fault says why a revision failed:
    stemmed, a well-formed history the body does not hash under, or a malformed one (which no store holds)."""
    body = _body("one")
    plain = plain_encoder()(body)
    genuine = compute_rev(compute_rev(None, False, _body("zero")), False, body)
    assert not replicated_rev_ok(genuine, [genuine], False, plain, body)       # its own body: still no parent
    assert not replicated_rev_ok(genuine, None, False, plain, body)
    assert revs.rev_fault(genuine, [genuine]) == revs.rev_fault(genuine, None) == revs.STEMMED
    assert revs.rev_fault("1-" + "0" * 32, ["1-" + "0" * 32]) == revs.MISMATCH   # depth 1: checked, and wrong
    assert revs.rev_fault(genuine, [genuine, "1-" + "0" * 32]) == revs.MISMATCH
    for rev, history in [("5-nothex", ["5-nothex"]), (genuine, [genuine, "3-" + "0" * 32]),
                         (genuine, ["1-" + "0" * 32]), (genuine, "not a list"), (genuine, []), (7, [7])]:
        assert revs.rev_fault(rev, history) == revs.MALFORMED, (rev, history)


def test_a_stored_leaf_always_keeps_its_parent(tmp_path):
    """What makes refusing stemmed histories safe: the store keeps, for each leaf, its parent however far the
    tree is stemmed (rev_limit is at least 2), so every revision it sends names its parent."""
    from shiftpeer.store import Store

    with pytest.raises(ValueError, match="rev_limit"):
        Store(str(tmp_path / "one"), rev_limit=1)
    store = Store(str(tmp_path / "two"), rev_limit=2)
    try:
        db = store.create_database("d")
        rev = None
        for i in range(6):
            rev = db.put("s1", {"author": ALICE.account_id, "n": i}, parent=rev)
        [doc] = db.get_repl_docs([("s1", None)])
        assert doc["history"][0] == rev and len(doc["history"]) == 2 and revs.rev_depth(doc["history"][1]) == 5
    finally:
        store.close()


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
    signature verifies, the document is still refused, as a bad revision (a falsy BAD_REVISION, code
    bad_revision), not as a forgery (False); the same with a bad signature is False, as is a malformed
    history. It is what every receiver's validator calls."""
    real = signed_doc(ALICE, "s1", _body("one"))
    assert verify_repl_doc(real) is True
    bogus = "1-" + "0" * 32
    made_up = dict(real, rev=bogus, history=[bogus], sig=sign_doc(ALICE, "s1", bogus, real["body"], False))
    assert verify_repl_doc(made_up) is BAD_REVISION and not BAD_REVISION and BAD_REVISION.code == "bad_revision"
    twin_body = _body("two")
    twin = dict(real, body=twin_body, sig=sign_doc(ALICE, "s1", real["rev"], twin_body, False))
    assert verify_repl_doc(twin) is BAD_REVISION
    assert verify_repl_doc(twin) is BAD_REVISION          # remembered as genuinely signed: the same answer
    assert verify_repl_doc(dict(made_up, sig=bytes(64))) is False
    assert verify_repl_doc(dict(twin, history=[real["rev"], "7-" + "0" * 32])) is False   # malformed
    r2 = signed_doc(ALICE, "s1", _body("edited"), parent=real["rev"])
    assert verify_repl_doc(dict(r2, history=[r2["rev"]])) is STEMMED_HISTORY and STEMMED_HISTORY.code == "bad_revision"


@pytest_twisted.ensureDeferred
async def test_every_validator_path_gives_the_same_answers():
    """verify_many inline (a small batch), in the verification processes and in threads answers True, False
    or the Refused for each document, in order, and leaves the store's body bytes only on genuine ones."""
    from twisted.internet import reactor

    from shiftpeer.identity import verifiers
    from shiftpeer.store.codec import PLAIN_BODY

    r1, r2, r1b = _genuine_edit()
    batch = [r1, dict(r2, history=[r2["rev"], r1b["rev"]]), dict(r2, history=[r2["rev"]]), dict(r1, sig=bytes(64))]
    want = [True, BAD_REVISION, STEMMED_HISTORY, False]
    assert await verifiers.verify_many([dict(d) for d in batch], reactor=reactor) == want
    assert verifiers.verify_processes(reactor) is not None and not verifiers.verify_processes(reactor).broken
    for pool in (None, verifiers.verify_pool(reactor)):      # processes, then threads
        many = [dict(d) for d in batch * 20]                  # 80 documents: past INLINE_BELOW
        assert await verifiers.verify_many(many, pool, reactor=reactor) == want * 20
        assert [PLAIN_BODY in d for d in many] == [w is True for w in want] * 20


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

    def refused(self, peer: str, doc: dict) -> list[str]:
        """The warnings that a document was refused on its own, naming the peer and the document."""
        return [formatEvent(e) for e in self.events if e.get("log_format", "").startswith("refused {doc}")
                and e.get("peer") == peer and e.get("doc") == doc["id"] and e.get("rev") == doc["rev"]]

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


async def _refused_alone(nodes, direction, hostile_docs, held, bad, stored):
    """Sends, then checks that each document of `bad` (a genuine signature on a revision that does not check)
    is refused on its own: not stored, logged naming the peer and the document, counted
    (``bad_revision.sync``, and in the refused revisions), told to the sender with the code bad_revision
    (its push's Replication keeps it; a pull's keeps it here), and no violation: the documents of `stored`
    are stored and the replication reaches caught_up. Returns (honest node, hostile node, warnings)."""
    with Warnings() as w:
        honest, hostile, rep, _ = await _send(nodes, direction, hostile_docs, held)
        await rep.caught_up
        await until(lambda: len(rep.refused) == len(bad), what="the refusals to be told")
    dst = honest.store.database("inbox")
    for doc in stored:
        assert dst.get(doc["id"], doc["rev"]) is not None, doc["id"]
    for doc in bad:
        assert dst.get(doc["id"], doc["rev"]) is None, doc["id"]
        logs = w.refused(hostile.id, doc)
        assert len(logs) == 1 and "not held against the peer" in logs[0]
    assert [(r.docid, r.rev, r.code) for r in rep.refused] == [(d["id"], d["rev"], "bad_revision") for d in bad]
    counters = honest.factory.counters
    assert counters["bad_revision.sync"] == len(bad) and counters["revs_refused"] == len(bad)
    assert not any(k.startswith("violation.") for k in counters) and not w.closed(hostile.id, "forged")
    if direction == "push":
        assert hostile.factory.counters["revs_refused_by_peer"] == len(bad)
    assert honest.factory.connections and not rep.finished     # a live replication: still running
    return honest, hostile, w


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("others", [0, 100], ids=["inline", "in-processes"])
@pytest_twisted.ensureDeferred
async def test_a_genuine_revision_sent_under_another_parent_is_refused(tmp_path, direction, others):
    """(a) A relay attaches alice's genuine later edit to another parent (her conflicting first revision), so
    that the edit would show as a conflict on a node holding the first revision. The receiver refuses that
    document on its own (an older honest relay may hold it): not stored, logged naming the relay, counted,
    the relay told with the code bad_revision; the rest of the batch is stored and the replication goes on
    to caught_up. With 100 other documents the batch is checked in the verification processes."""
    r1, r2, r1b = _genuine_edit()
    regrafted = dict(r2, history=[r2["rev"], r1b["rev"]])
    assert verify_repl_doc(dict(r2)) and not verify_repl_doc(dict(regrafted))
    others = _bystanders(others or 3)
    async with Nodes(tmp_path) as nodes:
        honest, _, _ = await _refused_alone(nodes, direction, [r1b, regrafted, *others], [r1], bad=[regrafted],
                                            stored=others)
        dst = honest.store.database("inbox")
        assert dst.get("s1").rev == r1["rev"] and dst.get("s1", r1b["rev"]) is None   # r1b: a parent, not sent


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("variant", ["made-up-rev", "two-bodies-one-rev", "stemmed"])
@pytest_twisted.ensureDeferred
async def test_a_signed_revision_that_does_not_hash_its_body_is_refused(tmp_path, direction, variant):
    """(b) The author's own key signs a revision that is not the hash of the body (a made-up one, or her
    genuine revision's id over a second body, so that nodes would hold two bodies under one id for ever), or
    a relay strips her genuine edit's history to one entry (stemmed: no parent to check against). Each is
    refused on its own, the rest of the batch stored, the replication goes on."""
    r1, r2, _ = _genuine_edit()
    if variant == "made-up-rev":
        bogus = "2-" + "0" * 32
        bad = dict(r2, rev=bogus, history=[bogus, r1["rev"]], sig=sign_doc(ALICE, "s1", bogus, r2["body"], False))
    elif variant == "two-bodies-one-rev":
        twin = _body("a second body")
        bad = dict(r2, body=twin, sig=sign_doc(ALICE, "s1", r2["rev"], twin, False))
    else:
        bad = dict(r2, history=[r2["rev"]])
    others = _bystanders(3)
    async with Nodes(tmp_path) as nodes:
        honest, _, _ = await _refused_alone(nodes, direction, [bad, *others], [r1], bad=[bad], stored=others)
        assert honest.store.database("inbox").get("s1").rev == r1["rev"]


@pytest.mark.allow_logged_errors
@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest_twisted.ensureDeferred
async def test_a_bad_revision_under_a_bad_signature_is_still_forged(tmp_path, direction):
    """A revision that does not check is refused on its own only when its signature verifies: with a
    signature that does not, the batch is refused as forged, as before: nothing from it stored, the
    connection closed with `forged`, counted and logged naming the relay."""
    r1, r2, r1b = _genuine_edit()
    forged = dict(r2, history=[r2["rev"], r1b["rev"]], sig=bytes(64))
    async with Nodes(tmp_path) as nodes:
        with Warnings() as w:
            honest, hostile, rep, before = await _send(nodes, direction, [forged, *_bystanders(3)], [r1])
            await until(lambda: honest.factory.counters["violation.forged"] >= 1, what="the refusal")
            await until(lambda: rep.finished, what="the replication to end")
            assert w.closed(hostile.id, "forged"), "the refusal names the peer"
        dst = honest.store.database("inbox")
        assert snapshot(dst) == before and dst.get("ok0") is None
        assert honest.factory.counters["bad_revision.sync"] == 0


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
        assert honest.factory.counters["bad_revision.sync"] == 0


def test_the_rules_refuse_it_outside_a_sync_batch_too():
    """The hub's deliver RPC and other callers outside a sync batch go through roles.validation.refusal,
    which calls the same check: a regrafted or stemmed revision is refused as bad_revision (a truthy reason,
    as every other), a bad signature as bad_signature, the genuine one not at all."""
    from shiftpeer.roles.validation import refusal

    r1, r2, r1b = _genuine_edit()
    assert refusal(None, dict(r2)) is None
    for bad in (dict(r2, history=[r2["rev"], r1b["rev"]]), dict(r2, history=[r2["rev"]])):
        why = refusal(None, bad)
        assert why and why.code == "bad_revision" and "revision" in str(why)
    why = refusal(None, dict(r2, sig=bytes(64)))
    assert why and why.code == "bad_signature"


@pytest_twisted.ensureDeferred
async def test_a_regrafted_revision_riding_along_with_live_changes_is_refused(tmp_path, monkeypatch):
    """Live mode sends small batches' documents inline with their changes (no need/docs round trip): the
    same check refuses a regrafted revision there on its own; the genuine one in the same batch is stored,
    and live changes after it still arrive."""
    r1, r2, r1b = _genuine_edit()
    with Warnings() as w:
        async with Nodes(tmp_path) as nodes:
            honest, hostile, rep, _ = await _send(nodes, "pull", [r1, *_bystanders(3)], [])
            await rep.caught_up
            dst = honest.store.database("inbox")
            assert set(snapshot(dst)) == {"s1", "ok0", "ok1", "ok2"}
            from shiftpeer.sync.puller import Puller

            asked = []
            real_on_docs = Puller.on_docs
            monkeypatch.setattr(Puller, "on_docs", lambda self, msg: asked.append(msg) or real_on_docs(self, msg))
            regrafted = dict(r2, history=[r2["rev"], r1b["rev"]])
            beside = _bystanders(5)[3]
            hostile.store.database("relay").bulk_replicated([r1b, regrafted, beside])   # one change batch
            await until(lambda: honest.factory.counters["bad_revision.sync"] == 1, what="the refusal")
            await until(lambda: dst.get(beside["id"]) is not None, what="the genuine document beside it")
            assert dst.get("s1", r2["rev"]) is None and len(w.refused(hostile.id, regrafted)) == 1
            later = _bystanders(5)[4]
            hostile.store.database("relay").bulk_replicated([later])
            await until(lambda: dst.get(later["id"]) is not None, what="a later live change")
            assert asked == []     # the revisions came inline with their changes, not in a docs frame
            assert not any(k.startswith("violation.") for k in honest.factory.counters)
