"""Store: the fast paths of the write and read hot loops give the same results as the general ones."""

from __future__ import annotations

import pytest

from shiftpeer.store import InvalidDocument, Store
from shiftpeer.store import codec, indexes
from shiftpeer.store.revs import compute_rev


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"), map_size=1 << 30)
    yield s
    s.close()


def new_doc(docid, body, history_len=1):
    hist: list[str] = []
    for i in range(history_len):
        b = body if i == history_len - 1 else {"i": i}
        hist = [compute_rev(hist[0] if hist else None, False, b)] + hist
    return {"id": docid, "rev": hist[0], "body": body, "sig": b"s" * 64, "history": hist}


def test_changes_and_docs_since_limits_and_database_bounds(store):
    a = store.create_database("a")
    b = store.create_database("b")
    for i in range(5):  # interleaved, so the two databases' log keys sit side by side
        a.bulk_replicated([new_doc(f"a{i}", {"i": i})])
        b.bulk_replicated([new_doc(f"b{i}", {"i": i})])
    assert [c.id for c in a.changes()] == [f"a{i}" for i in range(5)]
    assert [d.id for d in b.docs_since()] == [f"b{i}" for i in range(5)]
    assert a.changes(limit=0) == [] and a.docs_since(limit=-1) == []
    assert [c.seq for c in a.changes(since=2, limit=2)] == [3, 4]
    assert [d.seq for d in b.docs_since(since=4, limit=5)] == [5]
    assert a.changes(since=5) == []
    # the last database created has no neighbour above it
    c = store.create_database("c")
    c.bulk_replicated([new_doc("c0", {"x": 1})])
    assert [d.body for d in c.docs_since()] == [{"x": 1}]


def test_same_id_twice_in_one_batch(store):
    db = store.create_database("d")
    first = new_doc("x", {"v": 1})
    second = {"id": "x", "rev": compute_rev(first["rev"], False, {"v": 2}), "body": {"v": 2},
              "history": [compute_rev(first["rev"], False, {"v": 2}), first["rev"]]}
    assert db.bulk_replicated([first, second]) == ["x", "x"]
    doc = db.get("x")
    assert doc.rev == second["rev"] and doc.body == {"v": 2} and doc.conflicts == []
    assert db.doc_count() == 1 and db.update_seq() == 2
    assert [c.revs for c in db.changes()] == [[second["rev"]]]
    assert db.query("all")[0][0].rev == second["rev"]


def test_new_records_land_whether_or_not_the_log_takes_appends(store):
    """A batch appends its new records to the log in one putmulti per run of new documents, flushed before
    a document that takes the general path; below another database's records append is refused and they
    are put in place. Either way every record lands, in seq order, and the other database is untouched."""
    a = store.create_database("a")
    b = store.create_database("b")
    first = new_doc("x", {"v": 1})
    a.bulk_replicated([first])
    b.bulk_replicated([new_doc("b0", {"i": 0})])  # b's log keys now sit above every new one of a's
    child = compute_rev(first["rev"], False, {"v": 2})
    batch = ([new_doc(f"a{i}", {"i": i}) for i in range(3)]
             + [{"id": "x", "rev": child, "body": {"v": 2}, "history": [child, first["rev"]]}]
             + [new_doc(f"a{i}", {"i": i}) for i in range(3, 6)])
    assert a.bulk_replicated(batch) == ["a0", "a1", "a2", "x", "a3", "a4", "a5"]
    assert [(c.seq, c.id) for c in a.changes()] == [
        (2, "a0"), (3, "a1"), (4, "a2"), (5, "x"), (6, "a3"), (7, "a4"), (8, "a5")]
    assert [d.body for d in a.docs_since(1)] == [{"i": 0}, {"i": 1}, {"i": 2}, {"v": 2},
                                                 {"i": 3}, {"i": 4}, {"i": 5}]
    assert a.get("x").rev == child and a.doc_count() == 7
    assert [d.id for d in b.docs_since()] == ["b0"] and b.update_seq() == 1
    assert [d.id for d in a.query("all", limit=10)[0]] == ["a5", "a4", "a3", "x", "a2", "a1", "a0"]


def test_new_document_with_long_history(store):
    db = store.create_database("d")
    d = new_doc("x", {"v": 9}, history_len=4)
    db.bulk_replicated([d])
    assert db.get_repl_docs([("x", None)])[0]["history"] == d["history"]
    assert db.revs_diff({"x": d["history"] + ["9-" + "a" * 32]}) == {"x": ["9-" + "a" * 32]}


def test_deleted_new_document_is_not_indexed_or_counted(store):
    db = store.create_database("d")
    d = new_doc("x", {"href": "http://a.example/"})
    d["deleted"] = True
    db.bulk_replicated([d])
    assert db.doc_count() == 0
    assert db.query("href", "http://a.example/")[0] == []
    assert db.get("x").deleted and db.changes()[0].deleted


def test_docs_since_conflicted_document(store):
    db = store.create_database("d")
    one, two = new_doc("x", {"v": 1}), new_doc("x", {"v": 2})
    db.bulk_replicated([one, two])
    win, lose = sorted([one, two], key=lambda d: d["rev"], reverse=True)
    [doc] = db.docs_since()
    assert doc.rev == win["rev"] and doc.conflicts == [lose["rev"]] and doc.body == win["body"]
    assert db.get("x", rev=lose["rev"]).body == lose["body"]
    assert db.get("x", rev="1-" + "0" * 32) is None


def test_index_keys_are_fixed_size_entries():
    body = {"href": "https://Example.org/x", "author": "a", "space": "Notes", "shift": "s1", "created": 1.5}
    entries = indexes.index_keys(b"\0\0\0\1", 7, body, ["public", "*"])
    # all, href, domain, author, space, type, thread; under "*" and "public"
    assert len(entries) == 14 and all(len(e) == 32 for e in entries)
    assert len({e[16:] for e in entries}) == 1
    assert indexes.index_keys(b"\0\0\0\1", 7, None, []) == []


def test_query_recheck_per_index(store):
    db = store.create_database("d")
    db.put("a", {"href": "http://x.example/a", "type": "comment", "shift": "s", "author": "u", "space": "N"})
    db.put("b", {"href": "http://Y.example/b", "created": 5})
    assert [d.id for d in db.query("type", "shift")[0]] == ["b"]
    assert [d.id for d in db.query("type", "comment")[0]] == ["a"]
    assert [d.id for d in db.query("domain", "y.EXAMPLE")[0]] == ["b"]
    assert [d.id for d in db.query("thread", "s")[0]] == ["a"]
    assert [d.id for d in db.query("all")[0]] == ["b", "a"]


@pytest.mark.parametrize("body", [{1: 2}, {"a": {(1,): 2}}, {"a": [float("nan")]}, {"a": float("-inf")},
                                  {"a": (1, 2)}, {"a": b"x"}, {"a": [[{"b": {1, 2}}]]}, []])
def test_check_json_refuses(body):
    with pytest.raises(InvalidDocument):
        codec.check_json(body)


def test_check_json_accepts_nested():
    codec.check_json({"a": [1, 2.5, -0.0, None, True, "x", {"b": [[], {}]}], "c": {"d": {"e": 1e300}}})


def _nested_maps_and_lists(pairs: int) -> tuple[dict, dict]:
    """A body of 1 + 2 * `pairs` levels (a list and a map each pair) and its innermost map."""
    body = inner = {}
    for _ in range(pairs):
        inner["a"] = [{}]
        inner = inner["a"][0]
    return body, inner


@pytest.mark.parametrize("bad", [{1: 2}, float("inf"), b"x", (1,)])
def test_check_json_follows_nesting_past_its_recursion_bound(bad):
    """Past its recursion bound (32 levels) the check walks on iteratively: 127 levels of maps and lists
    are accepted, and one bad value at the bottom is still refused."""
    body, inner = _nested_maps_and_lists(63)
    codec.check_json(body)
    inner["b"] = bad
    with pytest.raises(InvalidDocument):
        codec.check_json(body)


def test_check_json_refuses_nesting_deeper_than_the_stack_without_exhausting_it():
    """5,000 levels (deeper than Python's recursion limit) are refused for their depth (at most
    codec.MAX_DEPTH, 128), not by a RecursionError."""
    body, _ = _nested_maps_and_lists(2500)
    with pytest.raises(InvalidDocument, match="at most 128 levels"):
        codec.check_json(body)


def test_delete_database_in_the_transaction_that_wrote_it_leaves_no_index_entries(store):
    keep = store.create_database("keep")
    keep.put("k", {"href": "http://k.example/"})
    with store.write_txn() as txn:
        db = store.create_database("gone", txn=txn)
        db.put("x", {"href": "http://x.example/"}, txn=txn)
        db.bulk_replicated([new_doc("y", {"href": "http://y.example/"})], txn=txn)
        store.delete_database("gone", txn=txn)
    dbp = db._dbp
    with store.env.begin() as txn:
        for sub in (store._idx_db, store._log_db, store._docs_db):
            with txn.cursor(db=sub) as cur:
                assert not any(k[:4] == dbp for k in cur.iternext(values=False))
    assert [d.id for d in keep.query("href", "http://k.example/")[0]] == ["k"]
