"""Store secondary indexes, visibility tokens and queries."""

from __future__ import annotations

import pytest

from shiftpeer.store import InvalidDocument, NotFound, Store, indexes


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"), map_size=1 << 30)
    yield s
    s.close()


def shift(href, created, **kw):
    body = {"href": href, "created": created, "space": "Notes", "author": "alice"}
    body.update(kw)
    return body


def ids(result):
    return [d.id for d in result[0]]


def test_href_newest_first(store):
    """When shifts share a page URL, a query by href returns them newest created first, others excluded."""
    db = store.create_database("shared")
    db.put("old", shift("http://a.org/p", 1))
    db.put("new", shift("http://a.org/p", 3))
    db.put("mid", shift("http://a.org/p", 2))
    db.put("other", shift("http://a.org/q", 5))
    assert ids(db.query("href", "http://a.org/p")) == ["new", "mid", "old"]


def test_domain_given_or_derived(store):
    """When a body has no domain, it is derived (lowercased) from href; an explicit domain wins."""
    db = store.create_database("shared")
    db.put("a", shift("http://WWW.Example.org/x", 1))
    db.put("b", shift("http://other.org/x", 2, domain="example.net"))
    assert ids(db.query("domain", "www.example.org")) == ["a"]
    assert ids(db.query("domain", "WWW.EXAMPLE.ORG")) == ["a"]
    assert ids(db.query("domain", "example.net")) == ["b"]
    assert ids(db.query("domain", "other.org")) == []


def test_derived_domain_is_the_same_for_every_shift_of_a_page(store):
    """The derived domain is cached by URL: a second shift of the same page, a port, and a URL that does
    not parse (no domain entry, and the write still succeeds) all index as the first lookup did."""
    db = store.create_database("shared")
    db.put("a", shift("https://Pages.Example.org:8443/x", 1))
    db.put("b", shift("https://Pages.Example.org:8443/x", 2))
    db.put("bad", shift("http://[::1/broken", 3))
    assert ids(db.query("domain", "pages.example.org")) == ["b", "a"]
    assert ids(db.query("href", "http://[::1/broken")) == ["bad"]
    assert db.query("domain", "[::1")[0] == []


def test_author_space_type_thread_all(store):
    """When documents have author, space, type and shift fields, each index finds them; type defaults to shift."""
    db = store.create_database("shared")
    db.put("s1", shift("http://a.org/", 1, author="bob", space="Highlights"))
    db.put("c1", {"type": "comment", "shift": "s1", "created": 2, "author": "carol", "text": "hi"})
    db.put("s2", shift("http://a.org/", 3))
    assert ids(db.query("author", "bob")) == ["s1"]
    assert ids(db.query("space", "Highlights")) == ["s1"]
    assert ids(db.query("type", "shift")) == ["s2", "s1"]
    assert ids(db.query("type", "comment")) == ["c1"]
    assert ids(db.query("thread", "s1")) == ["c1"]
    assert ids(db.query("all")) == ["s2", "c1", "s1"]


def test_values_list_union(store):
    """When a list of values is queried, the union comes back merged newest first, each doc once."""
    db = store.create_database("shared")
    db.put("a", shift("http://a.org/1", 1))
    db.put("b", shift("http://a.org/2", 4))
    db.put("c", shift("http://a.org/1", 3))
    db.put("d", shift("http://a.org/3", 2))
    assert ids(db.query("href", ["http://a.org/1", "http://a.org/2"])) == ["b", "c", "a"]
    assert ids(db.query("space", ["Notes", "Notes"])) == ["b", "c", "d", "a"]


def test_paging_with_cursor(store):
    """When results exceed the limit, the cursor returns the next page with no gaps or repeats."""
    db = store.create_database("shared")
    for i in range(23):
        db.put(f"d{i:02}", shift("http://a.org/", i % 7, n=i))  # equal created values too
    seen, cursor = [], None
    while True:
        docs, cursor = db.query("href", "http://a.org/", limit=5, cursor=cursor)
        seen.extend(d.id for d in docs)
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"d{i:02}" for i in range(23)) and len(seen) == 23
    created = [db.get(i).body["created"] for i in seen]
    assert created == sorted(created, reverse=True)
    docs, cursor = db.query("href", "http://a.org/", limit=23)
    assert len(docs) == 23 and cursor is None


def test_deleted_leave_indexes_updates_move(store):
    """When a doc is deleted it leaves every index; when edited, it is found under its new values only."""
    db = store.create_database("shared")
    r = db.put("a", shift("http://a.org/1", 1))
    db.put("b", shift("http://a.org/1", 2))
    db.put("b", shift("http://a.org/2", 2), parent=db.get("b").rev)
    db.put("a", {}, parent=r, deleted=True)
    assert ids(db.query("href", "http://a.org/1")) == []
    assert ids(db.query("href", "http://a.org/2")) == ["b"]
    assert ids(db.query("all")) == ["b"]
    with store.env.begin() as t:
        assert t.stat(store._idx_db)["entries"] == 6  # b only: all, href, domain, author, space, type under "*"


def test_vis_tokens_merge_and_dedupe(store):
    """When docs carry visibility tokens, a query for tokens returns only docs with one of them, once each."""
    db = store.create_database("shared")
    db.put("pub", shift("http://a.org/", 1), vis=["public"])
    db.put("grp", shift("http://a.org/", 2), vis=["group:climate"])
    db.put("dm", shift("http://a.org/", 3), vis=["user:bob"])
    db.put("both", shift("http://a.org/", 4), vis=["public", "group:climate"])
    q = lambda toks: ids(db.query("href", "http://a.org/", vis=toks))  # noqa: E731
    assert q(["public", "user:alice"]) == ["both", "pub"]
    assert q(["public", "group:climate", "user:bob"]) == ["both", "dm", "grp", "pub"]
    assert q(["user:carol"]) == []
    assert ids(db.query("href", "http://a.org/")) == ["both", "dm", "grp", "pub"]  # vis None: everything
    assert db.get("both").vis == ["group:climate", "public"]


def test_add_vis(store):
    """When add_vis gives a document a token, queries for that token find it, and its seq does not change."""
    db = store.create_database("shared")
    db.put("a", shift("http://a.org/", 1), vis=["user:bob"])
    seq = db.update_seq()
    db.add_vis("a", ["group:g"])
    db.add_vis("a", ["group:g"])  # idempotent
    assert ids(db.query("href", "http://a.org/", vis=["group:g"])) == ["a"]
    assert ids(db.query("href", "http://a.org/", vis=["user:bob"])) == ["a"]
    assert db.get("a").vis == ["group:g", "user:bob"] and db.update_seq() == seq
    with pytest.raises(NotFound):
        db.add_vis("missing", ["x"])


def index_entries(store) -> int:
    """How many index entries the store holds (every list of every database)."""
    with store.env.begin() as txn:
        return txn.stat(store._idx_db)["entries"]


def test_remove_vis_takes_tokens_and_their_index_entries_off(store):
    """remove_vis takes tokens off a document: queries for them no longer find it, the other tokens and the
    unfiltered lists still do, exactly its entries under those tokens leave the index, its seq stays, and a
    token it lacks (or a second call) changes nothing."""
    db = store.create_database("shared")
    db.put("a", shift("http://a.org/", 1), vis=["public", "group:g", "user:bob"])
    db.put("b", shift("http://a.org/", 2), vis=["public"])
    seq, entries = db.update_seq(), index_entries(store)
    per_token = len(indexes.value_hashes(db.get("a").body))
    assert db.remove_vis("a", ["public", "group:other"]) is True
    assert db.get("a").vis == ["group:g", "user:bob"] and db.update_seq() == seq
    assert ids(db.query("href", "http://a.org/", vis=["public"])) == ["b"]
    assert ids(db.query("all", vis=["public"])) == ["b"]
    assert ids(db.query("href", "http://a.org/", vis=["group:g"])) == ["a"]
    assert ids(db.query("href", "http://a.org/")) == ["b", "a"]
    assert index_entries(store) == entries - per_token
    assert db.remove_vis("a", ["public"]) is False and db.remove_vis("a", []) is False
    assert index_entries(store) == entries - per_token


def test_remove_vis_is_part_of_its_transaction(store):
    """A removal in a write transaction that fails is rolled back with it (tokens and index entries both);
    one in a transaction that also added the token leaves no entry behind; a deleted document has no
    entries, and losing a token writes none."""
    db = store.create_database("shared")
    db.put("a", shift("http://a.org/", 1), vis=["public"])
    entries = index_entries(store)
    with pytest.raises(RuntimeError):
        with store.write_txn() as txn:
            db.remove_vis("a", ["public"], txn=txn)
            assert db.get("a").vis == []   # read your own writes
            raise RuntimeError("interrupted")
    assert db.get("a").vis == ["public"] and index_entries(store) == entries
    assert ids(db.query("href", "http://a.org/", vis=["public"])) == ["a"]
    with store.write_txn() as txn:
        db.add_vis("a", ["group:g"], txn=txn)
        db.remove_vis("a", ["group:g"], txn=txn)
    assert db.get("a").vis == ["public"] and index_entries(store) == entries
    assert ids(db.query("href", "http://a.org/", vis=["group:g"])) == []
    rev = db.get("a").rev
    db.put("a", {}, parent=rev, deleted=True)
    assert db.remove_vis("a", ["public"]) is True and db.get("a").vis == []


def test_remove_vis_refuses_bad_input_and_changes_nothing(store):
    """An unknown document is NotFound; a bad token is InvalidDocument, and the document keeps its tokens."""
    db = store.create_database("shared")
    db.put("a", shift("http://a.org/", 1), vis=["public"])
    with pytest.raises(NotFound):
        db.remove_vis("missing", ["public"])
    with pytest.raises(InvalidDocument):
        db.remove_vis("a", ["public", ""])
    with pytest.raises(InvalidDocument):
        db.remove_vis("a", "public")
    assert db.get("a").vis == ["public"]
    assert ids(db.query("href", "http://a.org/", vis=["public"])) == ["a"]


def test_add_vis_held_tags_only_the_held_documents_that_lack_the_tokens(store):
    """A pull's source tokens for offered ids: each held document without them gets them (queries for the
    token find it); one that has them, an id not held and a bad id are left alone, and none is an error."""
    db = store.create_database("user/feed")
    db.put("a", shift("http://a.org/", 1), vis=["user:bob"])
    db.put("b", shift("http://a.org/", 2), vis=["group:g"])
    db.put("c", shift("http://a.org/", 3))
    assert db.add_vis_held(["a", "b", "missing", "", 7, "a"], ["group:g"]) == ["a"]
    assert db.get("a").vis == ["group:g", "user:bob"] and db.get("b").vis == ["group:g"] and db.get("c").vis == []
    assert ids(db.query("href", "http://a.org/", vis=["group:g"])) == ["b", "a"]
    assert db.add_vis_held(["a", "b"], ["group:g"]) == []
    with pytest.raises(InvalidDocument):
        db.add_vis_held(["c"], [""])
    assert db.get("c").vis == []


def test_replicated_vis_added(store):
    """When a replicated batch is written with vis, its docs are indexed under those tokens."""
    src = store.create_database("group/climate")
    src.put("a", shift("http://a.org/", 1))
    shared = store.create_database("shared")
    shared.bulk_replicated(src.get_repl_docs([("a", None)]), vis=["group:climate"])
    assert ids(shared.query("href", "http://a.org/", vis=["group:climate"])) == ["a"]
    assert ids(shared.query("href", "http://a.org/", vis=["public"])) == []


def test_iso_created_and_missing_created(store):
    """When created is an ISO 8601 string or missing, ordering still works (missing sorts oldest)."""
    db = store.create_database("shared")
    db.put("iso", {"href": "h", "created": "2024-05-01T10:00:00Z"})
    db.put("num", {"href": "h", "created": 1_800_000_000})
    db.put("none", {"href": "h"})
    assert ids(db.query("href", "h")) == ["num", "iso", "none"]


def test_long_and_odd_values(store):
    """When index values are long URLs or contain NUL bytes, exact lookups still work."""
    db = store.create_database("shared")
    long_url = "http://a.org/" + "x" * 5000
    db.put("long", {"href": long_url, "created": 1})
    db.put("nul", {"href": "http://a.org/\x00z", "created": 1})
    assert ids(db.query("href", long_url)) == ["long"]
    assert ids(db.query("href", "http://a.org/\x00z")) == ["nul"]
    assert ids(db.query("href", "http://a.org/")) == []


def test_query_bad_input(store):
    """When a query names an unknown index, omits a value, or passes a bad cursor, InvalidDocument is raised."""
    db = store.create_database("shared")
    with pytest.raises(InvalidDocument):
        db.query("colour", "red")
    with pytest.raises(InvalidDocument):
        db.query("href")
    with pytest.raises(InvalidDocument):
        db.query("href", "h", cursor="!!")
    with pytest.raises(InvalidDocument):
        db.query("href", "h", limit=0)


def test_indexes_in_same_transaction(store):
    """When a write transaction fails, neither the document nor its index entries are written."""
    db = store.create_database("shared")
    with pytest.raises(RuntimeError):
        with store.write_txn() as txn:
            db.put("a", shift("http://a.org/", 1), txn=txn)
            raise RuntimeError("abort")
    assert ids(db.query("href", "http://a.org/")) == []
    with store.env.begin() as t:
        assert t.stat(store._idx_db)["entries"] == 0


def test_conflict_winner_indexed(store):
    """When a replicated conflict changes the winner, the index follows the winning body only."""
    from shiftpeer.store.revs import compute_rev

    db = store.create_database("shared")
    r1 = db.put("d", shift("http://a.org/old", 1))
    b2 = shift("http://a.org/new", 1)
    r2 = compute_rev(r1, False, b2)
    b3 = shift("http://a.org/newer", 1)
    r3 = compute_rev(r2, False, b3)
    db.bulk_replicated([{"id": "d", "rev": r3, "body": b3, "history": [r3, r2, r1]}])
    assert ids(db.query("href", "http://a.org/newer")) == ["d"]
    assert ids(db.query("href", "http://a.org/old")) == []
    side = shift("http://a.org/side", 1)
    rs = compute_rev(r1, False, side)
    db.bulk_replicated([{"id": "d", "rev": rs, "body": side, "history": [rs, r1]}])  # loses: depth 2 < 3
    assert ids(db.query("href", "http://a.org/side")) == []
    assert db.get("d").conflicts == [rs]
