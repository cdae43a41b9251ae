"""Property tests: replicated writes are idempotent and order-independent; revision helpers are sound."""

from __future__ import annotations

import itertools
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftpeer.store import Store
from shiftpeer.store.revs import ancestry, compute_rev, merge_history, parse_rev, stem, tree_leaves

_names = itertools.count()


@pytest.fixture(scope="module")
def stores():
    with tempfile.TemporaryDirectory() as tmp:
        a = Store(tmp + "/a", map_size=1 << 30, sync=False)
        b = Store(tmp + "/b", map_size=1 << 30, sync=False)
        yield a, b
        a.close()
        b.close()


@st.composite
def histories(draw):
    """ReplDocs for a few documents, each a random revision tree (branches, deletions, cut histories)."""
    docs = []
    for docid in draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)):
        revs: list[tuple[str, list[str]]] = []  # (rev, full history)
        for step in range(draw(st.integers(1, 8))):
            parent_i = draw(st.integers(-1, len(revs) - 1))
            hist = revs[parent_i][1] if parent_i >= 0 else []
            deleted = draw(st.booleans()) if hist else False
            body = {} if deleted else {"href": f"http://x.org/{docid}", "created": step,
                                       "v": draw(st.integers(0, 3))}
            rev = compute_rev(hist[0] if hist else None, deleted, body)
            full = [rev] + hist
            if any(r == rev for r, _ in revs):
                continue
            revs.append((rev, full))
            cut = draw(st.integers(1, len(full)))
            docs.append({"id": docid, "rev": rev, "deleted": deleted, "body": body,
                         "sig": draw(st.sampled_from([None, b"sig"])), "history": full[:cut]})
    return docs


def state(db):
    """Everything that must agree between two stores, ignoring sequence numbers."""
    out = {}
    for ch in db.changes():
        d = db.get(ch.id)
        out[ch.id] = (ch.revs, ch.deleted, d.rev, d.deleted, d.body, d.conflicts,
                      sorted((r["rev"], r["deleted"], tuple(r["history"])) for r in db.get_repl_docs([(ch.id, None)])))
    live = sorted(d.id for d in db.query("all")[0])
    return out, live, db.doc_count()


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=histories(), data=st.data())
def test_any_order_same_state(stores, docs, data):
    """When the same revisions are applied to two stores in different orders and batches, both end identical
    (winner, conflicts, leaves, changes feed, indexes), and applying them again changes nothing."""
    a, b = stores
    n = next(_names)
    da, db_ = a.create_database(f"p{n}"), b.create_database(f"p{n}")
    order = data.draw(st.permutations(docs))
    cut = data.draw(st.integers(0, len(docs)))
    da.bulk_replicated(docs)
    db_.bulk_replicated(order[:cut])
    db_.bulk_replicated(order[cut:])
    assert state(da) == state(db_)
    seq = da.update_seq()
    assert da.bulk_replicated(list(reversed(docs))) == []
    assert da.update_seq() == seq
    want = {}
    for d in docs:
        want.setdefault(d["id"], []).append(d["rev"])
    assert da.revs_diff(want) == {} and db_.revs_diff(want) == {}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=histories())
def test_repl_docs_round_trip(stores, docs):
    """When a database's leaves are sent with get_repl_docs to an empty database, it ends identical."""
    a, b = stores
    n = next(_names)
    src, dst = a.create_database(f"r{n}"), b.create_database(f"r{n}")
    src.bulk_replicated(docs)
    ids = [c.id for c in src.changes()]
    dst.bulk_replicated(src.get_repl_docs([(i, None) for i in ids]))
    assert state(src) == state(dst)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.integers(1, 6))
@settings(max_examples=75, deadline=None)
def test_stem_keeps_limit_per_leaf(parents, limit):
    """When a tree is stemmed, leaves stay, each keeps at least min(depth, limit) revisions, and every
    revision kept is within `limit` of some leaf."""
    tree: dict = {}
    revs: list[str] = []
    for i, p in enumerate(parents):
        parent = revs[p] if p < len(revs) else None
        rev = compute_rev(parent, False, {"i": i})
        if rev in tree:
            continue
        merge_history(tree, [rev] + ancestry(tree, parent, 10_000) if parent else [rev])
        revs.append(rev)
    leaves = sorted(tree_leaves(tree))
    depths = {leaf: len(ancestry(tree, leaf, 10_000)) for leaf in leaves}
    stem(tree, limit)
    assert sorted(tree_leaves(tree)) == leaves
    near = set()
    for leaf in leaves:
        assert len(ancestry(tree, leaf, 10_000)) >= min(depths[leaf], limit)
        near.update(ancestry(tree, leaf, limit))
        assert parse_rev(leaf)[0] >= 1
    assert set(tree) == near
