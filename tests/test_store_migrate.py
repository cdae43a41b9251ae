"""Opening a store written by schema 1 (dupsort index lists, general-form records) upgrades it in place."""

from __future__ import annotations

from shiftpeer.store import SCHEMA_VERSION, Store
from shiftpeer.store import codec


def _queries(store):
    shared, private = store.database("shared"), store.database("user/private")
    return {
        "href": [d.id for d in shared.query("href", "http://a.org/1")[0]],
        "author": [d.id for d in shared.query("author", "alice")[0]],
        "public": [d.id for d in shared.query("all", None, vis=["public"])[0]],
        "all": [d.id for d in shared.query("all", None)[0]],
        "private": [(d.id, d.body) for d in private.docs_since(0)],
    }


def _make_schema_1(path):
    """A store with the data a schema-1 node would hold, rewritten into schema 1's layout."""
    store = Store(path, map_size=1 << 28)
    shared = store.create_database("shared")
    private = store.create_database("user/private")
    for i in range(30):
        shared.put(f"s{i}", {"href": f"http://a.org/{i % 3}", "author": "alice" if i % 2 else "bob",
                             "created": i}, vis=["public"] if i % 3 == 0 else None)
    rev = shared.get("s4").rev
    shared.put("s4", {}, parent=rev, deleted=True)  # deleted documents have no index entries
    rev = shared.get("s5").rev
    shared.put("s5", {"href": "http://a.org/1", "author": "alice", "created": 99}, parent=rev)
    private.put("note", {"text": "mine only"})
    expected = _queries(store)
    env = store.env
    with env.begin(write=True) as txn:
        entries = [k for k, _ in txn.cursor(db=store._idx_db)]
        txn.drop(store._idx_db, delete=True)
        old_idx = env.open_db(b"idx", txn=txn, dupsort=True)
        for e in entries:
            txn.put(e[:16], e[16:], dupdata=True, db=old_idx)
        for k, v in list(txn.cursor(db=store._log_db)):  # schema 1 had only general-form records
            txn.put(k, codec._dumps(codec.decode_record(v)), db=store._log_db)
        txn.put(b"schema", b"1", db=store._meta_db)
    store.close()
    return expected, len(entries)


def test_schema_1_store_is_upgraded_in_place_and_loses_nothing(tmp_path):
    """When a schema-1 store is opened, its index is rebuilt in the new layout, its version becomes the
    current one, and every query, private data included, answers as before; new writes work."""
    path = str(tmp_path / "s")
    expected, n_entries = _make_schema_1(path)
    store = Store(path, map_size=1 << 28)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 2
        assert _queries(store) == expected
        with store.env.begin() as txn:
            assert txn.stat(store._idx_db)["entries"] == n_entries
        shared = store.database("shared")
        shared.put("new", {"href": "http://a.org/1", "author": "alice", "created": 100})
        assert [d.id for d in shared.query("href", "http://a.org/1")[0]][0] == "new"
    finally:
        store.close()
    reopened = Store(path, map_size=1 << 28)  # upgraded once: a second open is a plain open
    try:
        assert reopened.schema_version() == 2 and reopened.database("shared").get("new") is not None
    finally:
        reopened.close()
