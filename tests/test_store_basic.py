"""Store: databases, local edits, replicated writes, changes, revs_diff, checkpoints, validation."""

from __future__ import annotations

import cbor2
import pytest

from shiftpeer.store import (
    ConflictError,
    InvalidDocument,
    NotFound,
    SchemaVersionError,
    SCHEMA_VERSION,
    Store,
    StoreError,
)
from shiftpeer.store import codec
from shiftpeer.store.revs import compute_rev, parse_rev


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"), map_size=1 << 30)
    yield s
    s.close()


def repl(docid, history, body=None, deleted=False, sig=None):
    return {"id": docid, "rev": history[0], "deleted": deleted, "body": body or {"v": history[0]},
            "sig": sig, "history": history}


def chain(n, docid="d", parent=None, tag=""):
    """A linear history of n revisions as ReplDocs (newest last), made with compute_rev."""
    out, hist = [], [parent] if parent else []
    for i in range(n):
        body = {"i": i, "tag": tag}
        rev = compute_rev(hist[0] if hist else None, False, body)
        hist = [rev] + hist
        out.append({"id": docid, "rev": rev, "deleted": False, "body": body, "sig": None, "history": list(hist)})
    return out


def test_create_database_idempotent(store):
    """When a database is created twice, the same database (same epoch) comes back."""
    a = store.create_database("user/private")
    b = store.create_database("user/private")
    assert a.epoch == b.epoch and store.has_database("user/private")
    assert store.database("user/private").epoch == a.epoch


def test_database_notfound(store):
    """When a database that was never created is asked for, NotFound is raised."""
    with pytest.raises(NotFound):
        store.database("inbox/nobody")
    assert not store.has_database("inbox/nobody")


def test_list_databases_prefix(store):
    """When databases are listed with a prefix, only those names come back, sorted."""
    for n in ("inbox/bob", "inbox/alice", "group/climate", "user/feed"):
        store.create_database(n)
    assert store.list_databases("inbox/") == ["inbox/alice", "inbox/bob"]
    assert len(store.list_databases()) == 4


def test_database_count_and_sizes_without_opening_them(store):
    """The count of databases is O(1); database_sizes lists (name, live docs, seq) in name order, under a
    prefix, after a name, across read-transaction chunks, and follows deletes and tombstones."""
    for i in range(25):
        store.create_database(f"inbox/u{i:02d}")
    store.create_database("group/climate")
    a = store.database("inbox/u03")
    a.put("x", {"href": "http://a.org/"})
    rev = a.put("y", {"href": "http://a.org/"})
    a.put("y", {}, parent=rev, deleted=True)
    store.delete_database("inbox/u07")
    assert store.database_count() == 25
    assert store.database_count("inbox/") == 24 and store.database_count("group/") == 1
    assert store.database_count("inbox/u1") == 10 and store.database_count("x") == 0
    rows = list(store.database_sizes("inbox/", chunk=4))
    assert [r[0] for r in rows] == [f"inbox/u{i:02d}" for i in range(25) if i != 7]
    assert rows[3] == ("inbox/u03", 1, 3)
    assert all(r[1:] == (0, 0) for r in rows if r[0] != "inbox/u03")
    after = list(store.database_sizes("inbox/", after="inbox/u20", chunk=2))
    assert [r[0] for r in after] == ["inbox/u21", "inbox/u22", "inbox/u23", "inbox/u24"]
    assert [r[0] for r in store.database_sizes(after="inbox/u23")] == ["inbox/u24"]
    assert [r[0] for r in store.database_sizes("group/")] == ["group/climate"]
    assert list(store.database_sizes("nothing/")) == []


def test_delete_database_new_epoch(store):
    """When a database is deleted and created again, it is empty and has a new epoch."""
    db = store.create_database("group/x")
    db.put("a", {"href": "http://a.org/"})
    db.set_checkpoint("peer", "remote", {"seq": 3})
    epoch = db.epoch
    store.delete_database("group/x")
    with pytest.raises(NotFound):
        db.get("a")
    db2 = store.create_database("group/x")
    assert db2.epoch != epoch
    assert db2.get("a") is None and db2.changes() == [] and db2.update_seq() == 0
    assert db2.query("href", "http://a.org/")[0] == []
    assert db2.get_checkpoint("peer", "remote") is None


def test_many_databases_no_lmdb_handles(store):
    """When thousands of logical databases are created, no LMDB named database is opened for them."""
    with store.write_txn() as txn:
        for i in range(3000):
            store.create_database(f"inbox/u{i}", txn=txn)
    with store.env.begin() as t:
        names = [k for k, _ in t.cursor()]
    assert len(names) <= 8
    assert store.database("inbox/u2999").name == "inbox/u2999"


@pytest.mark.parametrize("name", ["", "/a", "a/", "a//b", "has space", "x" * 201, "é", None, "a\x00b"])
def test_bad_database_name(store, name):
    """When a database name is malformed, InvalidDocument is raised and nothing is created."""
    with pytest.raises(InvalidDocument):
        store.create_database(name)
    assert store.list_databases() == []


def test_put_get_and_revision(store):
    """When a document is created, its revision is 1-<hash of parent, deleted, body> and get returns it."""
    db = store.create_database("user/private")
    body = {"href": "http://x.org/", "summary": "hi"}
    rev = db.put("s1", body)
    assert rev == compute_rev(None, False, body)
    assert parse_rev(rev)[0] == 1
    d = db.get("s1")
    assert (d.id, d.rev, d.deleted, d.body, d.conflicts, d.seq) == ("s1", rev, False, body, [], 1)


@pytest.mark.parametrize("parent", [None, "1-" + "a" * 32, "12-" + "b" * 32])
@pytest.mark.parametrize("deleted", [False, True])
def test_rev_hash_is_canonical_array(store, parent, deleted):
    """When a revision is computed, it is blake2b-128 over canonical CBOR of [parent or "", deleted, body]
    (rev_from_bytes assembles that array's head from parts: each case of its head is pinned here)."""
    from hashlib import blake2b

    body = {"b": 1, "a": [1.5, "x", None]}
    want = blake2b(codec.encode_canonical([parent or "", deleted, body]), digest_size=16).hexdigest()
    depth = 1 if parent is None else int(parent.split("-")[0]) + 1
    assert compute_rev(parent, deleted, body) == f"{depth}-{want}"


def test_same_edit_same_rev(tmp_path):
    """When the same edit is made on two stores, both get the same revision."""
    s1, s2 = Store(str(tmp_path / "a"), map_size=1 << 28), Store(str(tmp_path / "b"), map_size=1 << 28)
    try:
        r1 = s1.create_database("x").put("d", {"k": 1})
        r2 = s2.create_database("x").put("d", {"k": 1})
        assert r1 == r2
        assert s1.database("x").put("d", {"k": 2}, parent=r1) == s2.database("x").put("d", {"k": 2}, parent=r2)
    finally:
        s1.close()
        s2.close()


def test_put_requires_current_rev(store):
    """When a local edit names no revision or a stale one, ConflictError is raised and nothing changes."""
    db = store.create_database("user/private")
    r1 = db.put("d", {"v": 1})
    r2 = db.put("d", {"v": 2}, parent=r1)
    with pytest.raises(ConflictError):
        db.put("d", {"v": 3})
    with pytest.raises(ConflictError):
        db.put("d", {"v": 3}, parent=r1)
    with pytest.raises(ConflictError):
        db.put("new", {"v": 3}, parent=r1)
    assert db.get("d").rev == r2 and db.update_seq() == 2
    assert isinstance(ConflictError("x"), StoreError)


def test_delete_and_recreate(store):
    """When a document is deleted, get shows a tombstone, doc_count drops, and put without parent re-creates it."""
    db = store.create_database("user/private")
    r1 = db.put("d", {"v": 1})
    assert db.doc_count() == 1
    r2 = db.put("d", {}, parent=r1, deleted=True)
    d = db.get("d")
    assert d.deleted and d.rev == r2 and db.doc_count() == 0
    assert db.changes()[-1].deleted
    r3 = db.put("d", {"v": 3})
    assert parse_rev(r3)[0] == 3 and not db.get("d").deleted and db.doc_count() == 1


def test_sign_callback_stored(store):
    """When put is given a sign callback, it is called with the computed rev and the body's canonical CBOR,
    and its bytes are stored as sig."""
    from shiftpeer.store.codec import encode_canonical

    db = store.create_database("user/public")
    seen = []

    def sign(docid, rev, body, deleted, body_cbor):
        seen.append((docid, rev, body, deleted, body_cbor))
        return b"sig:" + rev.encode()

    rev = db.put("d", {"v": 1}, sign=sign)
    assert seen == [("d", rev, {"v": 1}, False, encode_canonical({"v": 1}))]
    assert db.get("d").sig == b"sig:" + rev.encode()
    rd = db.get_repl_docs([("d", None)])[0]
    assert rd["sig"] == b"sig:" + rev.encode() and rd["history"] == [rev]


def test_winner_and_conflicts(store):
    """When two branches exist, the higher N wins (then higher hash), losers are listed as conflicts."""
    db = store.create_database("feed")
    base = chain(1)
    a = chain(2, parent=base[0]["rev"], tag="a")  # depth 3 leaf
    b = chain(1, parent=base[0]["rev"], tag="b")  # depth 2 leaf
    db.bulk_replicated(base + a + b)
    d = db.get("d")
    assert d.rev == a[-1]["rev"] and d.conflicts == [b[-1]["rev"]]
    ch = db.changes()
    assert len(ch) == 1 and ch[0].revs == [a[-1]["rev"], b[-1]["rev"]]
    # equal depth: higher hash wins
    c = chain(2, parent=base[0]["rev"], tag="c")
    db.bulk_replicated(c)
    d = db.get("d")
    assert d.rev == max(a[-1]["rev"], c[-1]["rev"])
    assert sorted(d.conflicts) == sorted({a[-1]["rev"], c[-1]["rev"], b[-1]["rev"]} - {d.rev})


def _plain(docs):
    return [{**d, "body": d["body"].data} for d in docs] if docs is not None else None


def test_changes_with_docs_is_changes_and_their_leaves_in_one_read(store):
    """What a live feeder sends: the changes and every leaf they list, as get_repl_docs gives them, for a new
    document, an edited one, a deleted one and one with conflicts; past `docs_up_to` changes, no documents."""
    db = store.create_database("feed")
    db.put("new", {"v": 1}, sign=lambda *a: b"s" * 64)
    edited = db.put("edited", {"v": 1})
    db.put("edited", {"v": 2}, parent=edited)
    gone = db.put("gone", {"v": 1})
    db.put("gone", {}, parent=gone, deleted=True)
    base = chain(1)
    db.bulk_replicated(base + chain(2, parent=base[0]["rev"], tag="a") + chain(1, parent=base[0]["rev"], tag="b"))
    for since in (3, 1, 0):
        chs, docs = db.changes_with_docs(since)
        assert chs == db.changes(since)
        assert _plain(docs) == _plain(db.get_repl_docs([(c.id, list(c.revs)) for c in chs], raw_bodies=True))
    assert [c.id for c in chs] == ["new", "edited", "gone", "d"] and len(docs) == 5   # "d" has two leaves
    assert [len(d["history"]) for d in docs] == [1, 2, 2, 3, 2] and docs[0]["sig"] == b"s" * 64
    chs, docs = db.changes_with_docs(0, limit=2)
    assert [c.id for c in chs] == ["new", "edited"] and [d["id"] for d in docs] == ["new", "edited"]
    assert db.changes_with_docs(0, docs_up_to=4)[1] is not None
    chs, docs = db.changes_with_docs(0, docs_up_to=3)
    assert len(chs) == 4 and docs is None


def test_not_deleted_beats_deleted(store):
    """When the longer branch ends in a deletion, the live shorter branch wins."""
    db = store.create_database("feed")
    base = chain(1)
    live = chain(1, parent=base[0]["rev"], tag="live")
    tomb_rev = compute_rev(base[0]["rev"], False, {"x": 1})
    longer = [{"id": "d", "rev": tomb_rev, "body": {"x": 1}, "history": [tomb_rev, base[0]["rev"]]}]
    trev = compute_rev(tomb_rev, True, {})
    longer.append({"id": "d", "rev": trev, "deleted": True, "body": {}, "history": [trev, tomb_rev, base[0]["rev"]]})
    db.bulk_replicated(base + live + longer)
    d = db.get("d")
    assert d.rev == live[0]["rev"] and not d.deleted and d.conflicts == []


def test_resolve_conflict_by_deleting(store):
    """When a conflicting leaf is deleted with put(deleted=True, parent=leaf), the conflict disappears."""
    db = store.create_database("feed")
    base = chain(1)
    a = chain(2, parent=base[0]["rev"], tag="a")
    b = chain(1, parent=base[0]["rev"], tag="b")
    db.bulk_replicated(base + a + b)
    loser = db.get("d").conflicts[0]
    db.put("d", {}, parent=loser, deleted=True)
    d = db.get("d")
    assert d.conflicts == [] and d.rev == a[-1]["rev"] and db.doc_count() == 1


def test_only_leaves_keep_bodies(store):
    """When a revision gets a child, its body is dropped; only leaves can be fetched."""
    db = store.create_database("x")
    r1 = db.put("d", {"v": 1})
    r2 = db.put("d", {"v": 2}, parent=r1)
    assert db.get("d", rev=r1) is None
    assert db.get("d", rev=r2).body == {"v": 2}
    assert db.get_repl_docs([("d", [r1, r2])]) == [
        {"id": "d", "rev": r2, "deleted": False, "body": {"v": 2}, "sig": None, "history": [r2, r1]}
    ]
    with store.env.begin() as t:
        _seq, rec = db._load(t, "d")
    assert list(rec[3]) == [r2] and set(rec[2]) == {r1, r2}


def test_replicated_idempotent(store):
    """When the same replicated revisions are applied twice, the second time changes nothing (no new seq)."""
    db = store.create_database("x")
    docs = chain(3)
    assert db.bulk_replicated(docs) == ["d", "d", "d"]
    seq = db.update_seq()
    assert db.bulk_replicated(docs) == []
    assert db.update_seq() == seq and len(db.changes()) == 1


def test_replicated_out_of_order(store):
    """When a child arrives before its parent, the tree ends the same and the parent keeps no body."""
    db = store.create_database("x")
    docs = chain(3)
    db.bulk_replicated([docs[2]])
    db.bulk_replicated([docs[0], docs[1]])
    d = db.get("d")
    assert d.rev == docs[2]["rev"] and d.conflicts == []
    assert db.revs_diff({"d": [x["rev"] for x in docs]}) == {}


def test_replicated_short_history_then_full(store):
    """When a leaf arrives without history and later with it, the tree is joined into one branch."""
    db = store.create_database("x")
    docs = chain(2)
    db.bulk_replicated([dict(docs[1], history=[docs[1]["rev"]]), docs[0]])
    assert len(db.get("d").conflicts) == 1
    db.bulk_replicated([docs[1]])
    assert db.get("d").conflicts == [] and db.get("d").rev == docs[1]["rev"]


def test_revs_diff(store):
    """When revs_diff is asked, it lists only the revisions the database lacks."""
    db = store.create_database("x")
    docs = chain(2)
    db.bulk_replicated(docs[:1])
    other = "1-" + "f" * 32
    assert db.revs_diff({"d": [docs[0]["rev"], docs[1]["rev"]], "e": [other]}) == {
        "d": [docs[1]["rev"]], "e": [other]}


def test_changes_feed(store):
    """When documents change, each is listed once at its latest seq; since and limit page the feed."""
    db = store.create_database("x")
    r = {}
    for i in range(5):
        r[i] = db.put(f"d{i}", {"i": i})
    db.put("d1", {"i": 10}, parent=r[1])
    ch = db.changes()
    assert [c.id for c in ch] == ["d0", "d2", "d3", "d4", "d1"]
    assert [c.seq for c in ch] == [1, 3, 4, 5, 6]
    assert [c.id for c in db.changes(since=3, limit=2)] == ["d3", "d4"]
    assert db.changes(since=6) == []
    assert db.update_seq() == 6
    assert [d.id for d in db.docs_since(4)] == ["d4", "d1"]


def test_changes_per_database(store):
    """When two databases are written, each has its own sequence numbers and feed."""
    a, b = store.create_database("a"), store.create_database("b")
    a.put("x", {})
    a.put("y", {})
    b.put("z", {})
    assert [c.id for c in a.changes()] == ["x", "y"] and [(c.seq, c.id) for c in b.changes()] == [(1, "z")]


def test_checkpoints(store):
    """When a checkpoint is set per (peer, remote db), it is read back for this local db only."""
    a, b = store.create_database("a"), store.create_database("b")
    assert a.get_checkpoint("peer1", "master") is None
    a.set_checkpoint("peer1", "master", {"seq": 10, "epoch": "ab"})
    a.set_checkpoint("peer1", "shared", {"seq": 2})
    assert a.get_checkpoint("peer1", "master") == {"seq": 10, "epoch": "ab"}
    assert a.get_checkpoint("peer2", "master") is None and b.get_checkpoint("peer1", "master") is None
    a.set_checkpoint("peer1", "master", {"seq": 11})
    assert a.get_checkpoint("peer1", "master") == {"seq": 11}


def test_write_txn_atomic(store):
    """When an error happens inside write_txn, nothing of that transaction is written."""
    a, b = store.create_database("a"), store.create_database("b")
    with pytest.raises(RuntimeError):
        with store.write_txn() as txn:
            a.put("x", {}, txn=txn)
            b.put("y", {}, txn=txn)
            raise RuntimeError("boom")
    assert a.get("x") is None and b.get("y") is None
    with store.write_txn() as txn:
        a.put("x", {}, txn=txn)
        b.put("y", {}, txn=txn)
        a.put("z", {})  # nested call joins the outer transaction
    assert [c.id for c in a.changes()] == ["x", "z"] and b.get("y") is not None


@pytest.mark.parametrize(
    "body",
    [[], "str", None, {"a": {1, 2}}, {"a": (1,)}, {1: "x"}, {"a": b"bytes"}, {"a": float("nan")},
     {"a": [{"b": object()}]}],
)
def test_invalid_body_refused(store, body):
    """When a body is not a JSON-compatible dict, InvalidDocument is raised and nothing is written."""
    db = store.create_database("x")
    with pytest.raises(InvalidDocument):
        db.put("d", body)
    with pytest.raises(ValueError):
        db.bulk_replicated([{"id": "ok", "rev": "1-" + "a" * 32, "body": {}},
                            {"id": "d", "rev": "1-" + "b" * 32, "body": body}])
    assert db.changes() == [] and db.get("ok") is None


@pytest.mark.parametrize("docid", ["", "x" * 257, "é" * 129, None, 5])
def test_bad_id_refused(store, docid):
    """When a document id is empty, not a string, or over 256 bytes UTF-8, InvalidDocument is raised."""
    db = store.create_database("x")
    with pytest.raises(InvalidDocument):
        db.put(docid, {})
    assert db.changes() == []


def test_id_of_256_bytes_accepted(store):
    """When a document id is exactly 256 bytes UTF-8, it is accepted."""
    db = store.create_database("x")
    db.put("é" * 128, {})
    assert db.get("é" * 128) is not None


@pytest.mark.parametrize("rev", ["1-abc", "0-" + "a" * 32, "x-" + "a" * 32, "1-" + "A" * 32, 7, "1" + "a" * 33])
def test_bad_rev_refused(store, rev):
    """When a replicated document's revision cannot be parsed, InvalidDocument is raised, nothing written."""
    db = store.create_database("x")
    with pytest.raises(InvalidDocument):
        db.bulk_replicated([{"id": "d", "rev": rev, "body": {}}])
    with pytest.raises(InvalidDocument):
        db.put("d", {}, parent=rev)
    assert db.changes() == []


def test_bad_history_refused(store):
    """When a history does not start with the rev or is not contiguous, InvalidDocument is raised."""
    db = store.create_database("x")
    r2, r1 = "2-" + "a" * 32, "1-" + "b" * 32
    for hist in ([r1], [r2, r2], [r2, "x"], "nope"):
        with pytest.raises(InvalidDocument):
            db.bulk_replicated([{"id": "d", "rev": r2, "body": {}, "history": hist}])
    assert db.changes() == []


def test_size_limit(tmp_path):
    """When an encoded document exceeds max_doc_bytes, InvalidDocument is raised."""
    s = Store(str(tmp_path / "s"), map_size=1 << 28, max_doc_bytes=1000)
    try:
        db = s.create_database("x")
        db.put("ok", {"a": "x" * 900})
        with pytest.raises(InvalidDocument):
            db.put("big", {"a": "x" * 1000})
        assert db.get("big") is None
    finally:
        s.close()


def test_default_size_limit_1mib(store):
    """When a document is over 1 MiB by default, it is refused."""
    db = store.create_database("x")
    with pytest.raises(InvalidDocument):
        db.put("big", {"a": "x" * (1 << 20)})


def test_rev_limit_prunes_ancestry(tmp_path):
    """When a document has more revisions than rev_limit, only the newest rev_limit are kept and sent."""
    s = Store(str(tmp_path / "s"), map_size=1 << 28, rev_limit=5)
    try:
        db = s.create_database("x")
        rev = None
        all_revs = []
        for i in range(12):
            rev = db.put("d", {"i": i}, parent=rev)
            all_revs.append(rev)
        rd = db.get_repl_docs([("d", None)])[0]
        assert rd["history"] == list(reversed(all_revs))[:5]
        assert db.revs_diff({"d": all_revs}) == {"d": all_revs[:7]}
    finally:
        s.close()


def test_default_rev_limit(store):
    """When no limit is given, the revision limit is 1000."""
    assert store.rev_limit == 1000


def test_schema_version_recorded_and_checked(tmp_path):
    """When the environment records an unknown schema version, opening fails with SchemaVersionError."""
    path = str(tmp_path / "s")
    s = Store(path, map_size=1 << 28)
    assert s.schema_version() == SCHEMA_VERSION
    with s.env.begin(write=True) as t:
        t.put(b"schema", b"99", db=s._meta_db)
    s.close()
    with pytest.raises(SchemaVersionError, match="schema version '99'"):
        Store(path, map_size=1 << 28)


def test_reopen_keeps_data(tmp_path):
    """When a store is closed and opened again, databases, docs and seqs are still there."""
    path = str(tmp_path / "s")
    s = Store(path, map_size=1 << 28)
    db = s.create_database("a")
    rev = db.put("d", {"v": 1})
    epoch = db.epoch
    s.close()
    s = Store(path, map_size=1 << 28)
    try:
        db = s.database("a")
        assert db.epoch == epoch and db.get("d").rev == rev and db.update_seq() == 1
        assert s.create_database("b").put("x", {}) and s.database("b").epoch != epoch
    finally:
        s.close()


def test_reads_inside_write_txn_see_own_writes(store):
    """When reads run inside write_txn in the same thread, they see that transaction's writes."""
    db = store.create_database("a")
    with store.write_txn() as txn:
        rev = db.put("x", {"href": "h", "created": 1}, txn=txn)
        assert db.get("x").rev == rev
        assert db.update_seq() == 1 and db.doc_count() == 1
        assert [d.id for d in db.query("href", "h")[0]] == ["x"]
        db.put("x", {"href": "h", "created": 2}, parent=rev, txn=txn)
    assert db.update_seq() == 2 and [c.id for c in db.changes()] == ["x"]


def test_foreign_environment_refused(tmp_path):
    """When the directory holds an LMDB environment that is not a shiftpeer store, opening it fails clearly."""
    import lmdb

    path = str(tmp_path / "other")
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as t:
        t.put(b"some", b"data")
    env.close()
    with pytest.raises(SchemaVersionError, match="no shiftpeer schema version"):
        Store(path, map_size=1 << 24)


@pytest.mark.parametrize("vis", [[], ["public"], ["group/a", "x" * 30]])
@pytest.mark.parametrize("deleted", [False, True])
@pytest.mark.parametrize("sig", [None, b"s" * 64])
@pytest.mark.parametrize("body_len", [0, 10, 23, 24, 255, 256, 70000])
def test_new_record_fast_encoding_matches_general(vis, deleted, sig, body_len):
    """The hand-assembled record of a one-revision document is byte for byte the general encoding."""
    body = b"b" * body_len
    rev = "1-" + "a" * 32
    docid = "doc-" + "é" * 30
    fast = codec.encode_new_record(docid, vis, rev, deleted, body, sig)
    assert fast == cbor2.dumps([docid, vis, rev, deleted, body, sig])  # the compact form, as cbor2 encodes it
    assert codec.encode_record([docid, vis, {rev: None}, {rev: [deleted, body, sig]}]) == fast
    assert codec.decode_record(fast) == [docid, vis, {rev: None}, {rev: [deleted, body, sig]}]
    # a record with history or conflicts keeps the general form
    full = [docid, vis, {rev: "1-" + "b" * 32, "1-" + "b" * 32: None}, {rev: [deleted, body, sig]}]
    assert codec.decode_record(codec.encode_record(full)) == full


def test_raw_bodies_splice_into_frames_as_the_same_maps(tmp_path):
    """When a sender asks for raw bodies, each is the stored CBOR, and a frame built from them decodes to
    exactly what a frame built from decoded bodies does; an unknown type is still refused."""
    from shiftpeer.sync import messages

    s = Store(str(tmp_path / "s"), map_size=1 << 28)
    try:
        db = s.create_database("shared")
        body = {"href": "http://a.org/é", "n": 1.5, "list": [1, None, True, {"x": "y"}], "created": 3}
        rev = db.put("d1", body)
        db.put("d2", {}, deleted=False)
        wanted = [("d1", [rev]), ("d2", None)]
        raw, plain = db.get_repl_docs(wanted, raw_bodies=True), db.get_repl_docs(wanted)
        assert all(type(d["body"]) is codec.RawCBOR for d in raw)
        assert codec.decode_body(raw[0]["body"].data) == body
        a = messages.encode("docs", rid=1, seq=1, docs=raw, more=False)
        b = messages.encode("docs", rid=1, seq=1, docs=plain, more=False)
        assert cbor2.loads(a[4:]) == cbor2.loads(b[4:])
        assert cbor2.loads(a[4:])["docs"][0]["body"] == body
        with pytest.raises(cbor2.CBOREncodeError):
            messages.encode("docs", rid=1, seq=1, docs=[{"body": object()}], more=False)
    finally:
        s.close()
