"""Store queries bounded by created time: since <= created < until, on the index scan itself."""

from __future__ import annotations

import pytest

from shiftpeer.store import InvalidDocument, Store


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"), map_size=1 << 30)
    yield s
    s.close()


def _shift(created, href="http://a.org/p", **kw):
    body = {"href": href, "space": "Notes", "author": "alice", **kw}
    if created is not None:
        body["created"] = created
    return body


def _ids(result):
    return [d.id for d in result[0]]


def _times(store):
    """t10..t50 at 10-second steps (ints and floats mixed), one ISO-dated and one with no created."""
    db = store.create_database("shared")
    db.put("t10", _shift(10))
    db.put("t20", _shift(20.0))
    db.put("t30", _shift(30))
    db.put("t40", _shift(40.5))
    db.put("t50", _shift(50))
    db.put("iso", _shift("1970-01-01T00:00:35Z"))
    db.put("none", _shift(None))
    return db


def test_since_is_inclusive_and_until_exclusive(store):
    """A shift created exactly at since is in the range, one created exactly at until is not; ISO
    created times and missing ones (the oldest) sort by the time they mean."""
    db = _times(store)
    assert _ids(db.query("href", "http://a.org/p", since=20, until=40.5)) == ["iso", "t30", "t20"]
    assert _ids(db.query("href", "http://a.org/p", since=40.5)) == ["t50", "t40"]
    assert _ids(db.query("href", "http://a.org/p", until=20)) == ["t10", "none"]
    assert _ids(db.query("href", "http://a.org/p", since=0, until=10)) == ["none"]
    assert _ids(db.query("all", since=35.0, until=35.5)) == ["iso"]


def test_empty_and_reversed_ranges_return_nothing(store):
    """since == until (an empty half-open range) or since > until returns no rows and no cursor."""
    db = _times(store)
    assert db.query("href", "http://a.org/p", since=30, until=30) == ([], None)
    assert db.query("href", "http://a.org/p", since=40, until=20) == ([], None)
    assert db.query("href", "http://a.org/p", since=51) == ([], None)


def test_paging_inside_a_range(store):
    """Pages of two walk the range newest first, each shift once, and the last page has no cursor even
    though older shifts exist below the range (the scan stops at since, it does not filter after)."""
    db = _times(store)
    seen, cursor, pages = [], None, 0
    while True:
        docs, cursor = db.query("href", "http://a.org/p", since=20, until=50, limit=2, cursor=cursor)
        pages += 1
        seen += [d.id for d in docs]
        if cursor is None:
            break
    assert seen == ["t40", "iso", "t30", "t20"] and pages == 2
    docs, cursor = db.query("href", "http://a.org/p", since=40, limit=2)
    assert [d.id for d in docs] == ["t50", "t40"] and cursor is None


def test_a_cursor_from_outside_the_range(store):
    """A cursor above until starts at until; a cursor at or below since gives an empty page."""
    db = _times(store)
    _, top = db.query("href", "http://a.org/p", limit=1)  # just below t50
    assert _ids(db.query("href", "http://a.org/p", until=35, cursor=top)) == ["t30", "t20", "t10", "none"]
    _, low = db.query("href", "http://a.org/p", limit=6)  # just below t10
    assert db.query("href", "http://a.org/p", since=10, cursor=low) == ([], None)


def test_range_with_visibility_tokens_and_other_lists(store):
    """With several visibility lists merged, and neighbouring lists and databases holding other
    documents in the same time range, the range returns exactly the visible matching shifts."""
    db = store.create_database("shared")
    other = store.create_database("other")
    for i in range(1, 9):
        db.put(f"pub{i}", _shift(i * 10, href="http://b.org/"), vis=["public"])
        db.put(f"grp{i}", _shift(i * 10 + 5, href="http://b.org/"), vis=["group:club"])
        db.put(f"hid{i}", _shift(i * 10 + 1, href="http://b.org/"), vis=["group:secret"])
        db.put(f"x{i}", _shift(i * 10 + 2, href="http://c.org/"), vis=["public"])
        other.put(f"o{i}", _shift(i * 10 + 3, href="http://b.org/"), vis=["public"])
    got = _ids(db.query("href", "http://b.org/", vis=["public", "group:club"], since=30, until=60))
    assert got == ["grp5", "pub5", "grp4", "pub4", "grp3", "pub3"]
    everything = _ids(db.query("all", since=30, until=41, limit=100))
    assert everything == ["pub4", "grp3", "x3", "hid3", "pub3"] and _ids(other.query("all", since=80)) == ["o8"]


def test_range_with_other_filters_and_the_type_index(store):
    """since/until combine with any index (author, space, domain, type) and a list of values."""
    db = store.create_database("shared")
    db.put("a1", _shift(100, author="alice"))
    db.put("b1", _shift(110, author="bob"))
    db.put("a2", _shift(120, author="alice", space="Highlight"))
    db.put("c1", {"type": "comment", "shift": "a1", "author": "bob", "created": 115, "text": "hi"})
    assert _ids(db.query("author", ["alice", "bob"], since=105, until=121)) == ["a2", "c1", "b1"]
    assert _ids(db.query("space", "Notes", since=101)) == ["b1"]
    assert _ids(db.query("type", "comment", until=115)) == []
    assert _ids(db.query("thread", "a1", since=115, until=116)) == ["c1"]


@pytest.mark.parametrize("bad", ["10", True, float("nan"), float("inf"), [1], 10**400])
def test_bad_bounds_are_refused(store, bad):
    """A bound that is not a finite number is a clear InvalidDocument, for since and until alike."""
    db = _times(store)
    with pytest.raises(InvalidDocument, match="since must be a finite number"):
        db.query("all", since=bad)
    with pytest.raises(InvalidDocument, match="until must be a finite number"):
        db.query("all", until=bad)
