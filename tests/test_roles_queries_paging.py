"""The query engine's paging when filters other than the index drop rows: no row is skipped or repeated."""

from __future__ import annotations

import pytest

from shiftpeer.roles import queries
from shiftpeer.store import Store


@pytest.fixture
def db(tmp_path):
    s = Store(str(tmp_path / "store"), map_size=1 << 30)
    yield s.create_database("user/feed")
    s.close()


def test_filtered_pages_walk_every_match_once(db):
    """Filtering by domain while the space index drives the scan, pages of two return every a.org
    shift exactly once, newest first, never more than the limit."""
    domains = ["a.org", "b.org", "a.org", "a.org", "b.org", "a.org", "a.org", "b.org", "a.org"]
    for i, domain in enumerate(domains):
        db.put(f"s{i}", {"space": "Notes", "href": f"https://{domain}/{i}", "domain": domain, "created": 100 + i})
    wanted = [f"s{i}" for i in reversed(range(len(domains))) if domains[i] == "a.org"]
    seen, cursor = [], None
    for _ in range(20):
        docs, cursor = queries.run(db, {"space": ["Notes"], "domain": ["a.org"]}, vis=None, limit=2, cursor=cursor)
        assert len(docs) <= 2
        seen += [d.id for d in docs]
        if cursor is None:
            break
    assert seen == wanted
