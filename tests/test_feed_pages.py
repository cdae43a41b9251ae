"""The user node's feed pages (shiftpeer/roles/feedpage.py), without a reactor: random hub pages (ties in
`created`, rows that fail verification, a last cursor that leads to an empty page) and random unpublished
shifts (some of them also on the hub, as a shift sent to a group is), paged with a random limit on each
page, give exactly the merged set, each row once, newest first, never more than `limit` rows a page; with no
unpublished shifts the hub is asked once a page for `limit` rows and never twice for the same page; shifts
deleted and published on the hub (and made or deleted on the node) between pages skip no row that stayed and
show none twice; a cursor the node did not hand out is bad_request, one it handed out before (`f2.`) pages on;
500 rows of one `created` page with a cursor that keeps one hub page of ids at most. The hub pages as its store does: its
cursor is the (created, seq) position of the last row it returned."""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftpeer.roles.feedpage import OLD_PREFIX, PREFIX, Position, drafts_needed, in_bucket, merge_page
from shiftpeer.roles.names import FlowError
from shiftpeer.shifts import BAD_CURSOR

ME, OTHER = "me", "other"
TIMES = st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.0, 7.25])   # few times: many ties


def _row(docid: str, created: float, author: str) -> dict:
    return {"id": docid, "body": {"created": created, "author": author}}


@dataclass
class World:
    """The hub's rows in its order (created newest first, ties in its seq order, newest seq first), which of
    them fail verification on the node, the node's `user/private` in its order, and whether the hub's
    cursor for its last full page leads to one more, empty, page (the store hands out such a cursor)."""

    hub: list[dict]
    bad: set[str]
    private: list[dict]
    empty_last: bool

    def __post_init__(self) -> None:
        self.seqs = {r["id"]: len(self.hub) - i for i, r in enumerate(self.hub)}

    def key(self, row: dict) -> tuple[float, int]:
        return row["body"]["created"], self.seqs[row["id"]]

    def hub_query(self, cursor: str | None, size: int) -> tuple[list[dict], str | None]:
        """Rows below the cursor's position, as the store's index scan gives them."""
        below = self.hub if cursor is None else [r for r in self.hub if self.key(r) < tuple(json.loads(cursor))]
        page = below[:size]
        more = size < len(below) or (self.empty_last and size == len(below) and bool(page))
        return page, json.dumps(self.key(page[-1])) if more else None

    def publish(self, row: dict) -> None:
        """A new row on the hub (the newest seq), in its place in the hub's order."""
        self.seqs[row["id"]] = max(self.seqs.values(), default=0) + 1
        self.hub = sorted(self.hub + [row], key=self.key, reverse=True)

    def delete(self, docid: str) -> None:
        """A shift deleted: gone from the hub and from user/private."""
        self.hub = [r for r in self.hub if r["id"] != docid]
        self.private = [r for r in self.private if r["id"] != docid]

    def draft(self, row: dict) -> None:
        self.private = sorted(self.private + [row], key=lambda r: r["body"]["created"], reverse=True)

    def expected(self) -> list[str]:
        good = [r["id"] for r in self.hub if r["id"] not in self.bad]
        return good + [r["id"] for r in self.private if r["id"] not in set(good)]


@st.composite
def worlds(draw, with_drafts: bool = True) -> World:
    hub = [_row(f"h{i}", draw(TIMES), draw(st.sampled_from([ME, OTHER]))) for i in range(draw(st.integers(0, 20)))]
    hub = _in_store_order(hub, draw(st.randoms(use_true_random=False)))
    bad = {r["id"] for r in hub if draw(st.integers(0, 9)) == 0}
    private = []
    if with_drafts:
        private = [_row(f"d{i}", draw(TIMES), ME) for i in range(draw(st.integers(0, 15)))]
        own_on_hub = [r for r in hub if r["body"]["author"] == ME]   # sent to a group: also in user/private
        private += [r for r in own_on_hub if draw(st.booleans())]
        private = _in_store_order(private, draw(st.randoms(use_true_random=False)))
    return World(hub, bad, private, draw(st.booleans()))


def _in_store_order(rows: list[dict], rnd) -> list[dict]:
    """Newest first; rows created at the same time in an arbitrary (store seq) order."""
    rnd.shuffle(rows)
    return sorted(rows, key=lambda r: r["body"]["created"], reverse=True)


def node_page(world: World, cursor: str | None, limit: int) -> tuple[list[dict], str | None, Position, int]:
    """What UserFlows._hub_page does, with the hub and user/private of `world`: (rows, next cursor, the
    position asked, the hub page size asked). The node reads only `drafts_needed` bucket rows."""
    pos = Position.decode(cursor)
    size = pos.hub_limit(limit)
    answer, nxt = world.hub_query(pos.hub, size)
    rows = [r for r in answer if r["id"] not in world.bad]
    keep = in_bucket(pos, rows, nxt)
    drafts = [r for r in world.private if keep(r)][: drafts_needed(limit)]
    page, after = merge_page(pos, limit, rows, nxt, drafts, ME)
    return page, None if after is None else after.encode(), pos, size


def page_through(world: World, limits) -> list[dict]:
    """Every page from the first to the one with no next cursor; each page at most its limit."""
    shown, cursor = [], None
    for _ in range(len(world.hub) + len(world.private) + 5):
        limit = limits()
        page, cursor, _, _ = node_page(world, cursor, limit)
        assert len(page) <= limit
        shown += page
        if cursor is None:
            return shown
    raise AssertionError("paging did not end")


FAST = settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@FAST
@given(worlds(), st.data())
def test_paging_with_random_limits_shows_the_merged_set_once_newest_first(world, data):
    shown = page_through(world, lambda: data.draw(st.integers(1, 6), label="limit"))
    ids = [r["id"] for r in shown]
    assert Counter(ids) == Counter(world.expected()) and len(set(ids)) == len(ids)
    times = [r["body"]["created"] for r in shown]
    assert times == sorted(times, reverse=True)


@FAST
@given(worlds(with_drafts=False), st.integers(1, 6))
def test_with_nothing_unpublished_each_page_is_one_hub_page_of_limit(world, limit):
    """The common case asks the hub what it asked before the cut: `limit` rows, each hub page once."""
    cursor, asked = None, []
    for _ in range(len(world.hub) + 3):
        page, cursor, pos, size = node_page(world, cursor, limit)
        assert pos.size is None and size == limit
        asked.append(pos.hub)
        if cursor is None:
            break
    assert cursor is None and len(set(asked)) == len(asked)


def test_drafts_beyond_a_full_hub_page_come_on_the_next_page_and_the_hub_page_is_asked_again():
    """A hub page of 2 and 2 unpublished shifts between its rows: pages of 2, 2, then the rest."""
    world = World(hub=[_row("h0", 9.0, OTHER), _row("h1", 5.0, OTHER), _row("h2", 1.0, OTHER)], bad=set(),
                  private=[_row("d0", 8.0, ME), _row("d1", 6.0, ME)], empty_last=False)
    page, cursor, _, _ = node_page(world, None, 2)
    assert [r["id"] for r in page] == ["h0", "d0"]
    page, cursor, pos, _ = node_page(world, cursor, 2)
    assert [r["id"] for r in page] == ["d1", "h1"] and pos.hub is None and pos.size == 2
    page, cursor, _, _ = node_page(world, cursor, 2)
    assert [r["id"] for r in page] == ["h2"] and cursor is None


def test_a_shift_on_the_hub_and_in_user_private_at_a_page_edge_shows_once():
    """Sent to a group, my shift is both on the hub and in user/private; when the hub's page ends at its
    time and the next hub page starts at the same time, it is still shown once."""
    mine = _row("m", 2.0, ME)
    world = World(hub=[_row("a", 2.0, OTHER), mine, _row("b", 2.0, OTHER)], bad=set(), private=[mine],
                  empty_last=False)
    assert [r["id"] for r in page_through(world, lambda: 2)] == ["a", "m", "b"]


def _cursor(fields, prefix: str = PREFIX) -> str:
    return prefix + base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()


def _old_cursor(fields) -> str:
    """A cursor of the kind this node handed out before, ``f1.`` (it counted the rows shown)."""
    return _cursor(fields, "f1.")


@pytest.mark.parametrize("cursor", [
    "garbage", "1.5|garbage", "1.5|", "", "x" * 2000, PREFIX, PREFIX + "!!!", PREFIX + "e30",
    _cursor(["nan", [], None, None, []]), _cursor(["1.0", [], None, 501, []]), _cursor(["1.0", [], None, 0, []]),
    _cursor(["1.0", [], None, True, []]), _cursor(["1.0", [], None, 2.0, []]), _cursor(["1.0", "ab", None, None, []]),
    _cursor(["1.0", [3], None, None, []]), _cursor(["1.0", [], 7, None, []]), _cursor(["x", [], None, None, []]),
    _cursor(["1.0", [], None, None, "ab"]), _cursor(["1.0", [], None, None, [3]]), _cursor(["1.0", [], None, None]),
    _cursor([1.0, []]), _cursor(["1.0", 0, [], None, None]), _cursor({"at": 1}), _cursor("[" * 5000),
    _cursor({"1.0": 0, "a": 0, "b": 0, "c": 0, "d": 0}),
    _cursor(["1.0", [], None, None], OLD_PREFIX + "x"), _cursor(["1.0", [], None, 501], OLD_PREFIX),
    _cursor(["1.0", [3], None, None], OLD_PREFIX), _cursor(["1.0", [], None, None, []], OLD_PREFIX),
    _old_cursor(["1.0", 2, [], None, 5]), _old_cursor(["inf", 0, [], None, None]),
])
def test_a_cursor_the_node_did_not_hand_out_is_bad_request(cursor):
    with pytest.raises(FlowError) as e:
        Position.decode(cursor)
    assert e.value.code == "bad_request" and str(e.value) == BAD_CURSOR


@settings(max_examples=500, deadline=None, database=None)
@given(st.one_of(st.text(max_size=300), st.text(max_size=300).map(lambda t: PREFIX + t),
                 st.binary(max_size=200).map(lambda b: PREFIX + base64.urlsafe_b64encode(b).decode())))
def test_any_string_is_a_position_or_bad_request(cursor):
    try:
        Position.decode(cursor)
    except FlowError as e:
        assert e.code == "bad_request"


@settings(max_examples=500, deadline=None, database=None)
@given(st.builds(Position, st.floats(allow_nan=False), st.lists(st.text(max_size=40), max_size=5).map(tuple),
                 st.none() | st.text(max_size=60), st.none() | st.integers(1, 500),
                 st.lists(st.text(max_size=40), max_size=5).map(tuple)))
def test_a_position_survives_its_cursor(pos):
    assert Position.decode(pos.encode()) == pos


TIME = st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.0, 7.25, 9.0])


@st.composite
def changes(draw, world: World, n: int) -> list:
    """What happens on the hub and the node between two pages: shifts published on the hub (by someone else),
    deleted (hub rows and unpublished ones alike), or made on the node."""
    out = []
    for i in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["publish", "delete", "draft"]))
        if kind == "delete":
            ids = [r["id"] for r in world.hub + world.private]
            if ids:
                out.append(("delete", draw(st.sampled_from(sorted(ids)))))
        else:
            out.append((kind, _row(f"{kind[0]}{n}-{i}", draw(TIME), OTHER if kind == "publish" else ME)))
    return out


@FAST
@given(worlds(), st.data())
def test_rows_changing_between_pages_skip_nothing_that_stayed_and_show_nothing_twice(world, data):
    """A page asked again after the hub's rows changed skips what was shown, not a count: every row there
    from the first page to the last is shown once (a row deleted meanwhile may or may not have been), no row
    twice, newest first; a row that came meanwhile is shown only if it is older than where the client stood."""
    stayed = set(world.expected())
    shown, cursor = [], None
    for n in range(60):
        limit = data.draw(st.integers(1, 4), label="limit")
        page, cursor, _, _ = node_page(world, cursor, limit)
        assert len(page) <= limit
        shown += page
        if cursor is None:
            break
        for kind, what in data.draw(changes(world, n), label="changes"):
            if kind == "delete":
                stayed.discard(what)
                world.delete(what)
            else:
                getattr(world, kind)(what)
    else:
        raise AssertionError("paging did not end")
    ids = [r["id"] for r in shown]
    assert len(set(ids)) == len(ids), ids
    assert stayed <= set(ids), stayed - set(ids)
    times = [r["body"]["created"] for r in shown]
    assert times == sorted(times, reverse=True)


def _as_f2(cursor: str | None, shown: list[dict]) -> str | None:
    """The ``f2.`` cursor the node handed out before for the same place: the ids of every row shown created
    at ``at`` (of any author, from any page), the hub cursor and the hub page's size."""
    if cursor is None:
        return None
    pos = Position.decode(cursor)
    at_ids = [r["id"] for r in shown if r["body"]["created"] == pos.at]
    return _cursor([repr(pos.at), at_ids, pos.hub, pos.size], OLD_PREFIX)


@FAST
@given(worlds(), st.data())
def test_an_f2_cursor_handed_out_before_still_pages_on(world, data):
    """A client holding a cursor of the form before this one (``f2.``) goes on from where it stood: every
    row once, newest first."""
    switch = data.draw(st.integers(0, 8), label="page whose cursor is the old kind")
    shown, cursor = [], None
    for n in range(len(world.hub) + len(world.private) + 5):
        page, cursor, _, _ = node_page(world, cursor, data.draw(st.integers(1, 6), label="limit"))
        shown += page
        if n == switch:
            cursor = _as_f2(cursor, shown)
        if cursor is None:
            break
    ids = [r["id"] for r in shown]
    assert Counter(ids) == Counter(world.expected()) and len(set(ids)) == len(ids)
    times = [r["body"]["created"] for r in shown]
    assert times == sorted(times, reverse=True)


def test_500_rows_of_one_created_page_once_each_and_the_cursor_keeps_a_page_of_ids_at_most():
    """500 hub rows created at one time (40 of them mine, 20 of those also in user/private, sent to a group)
    and 10 unpublished ones of that time, paged 50 at a time: each of the 510 once, and the cursor holds
    at most one hub page of the others' ids plus my 50 rows of that time, never every id shown at it
    (which an ``f2.`` cursor did: its length grew with every page)."""
    hub = [_row(f"{'mine' if i % 12 == 0 else 'hub'}-{i:03d}-{'x' * 40}", 1.0, ME if i % 12 == 0 else OTHER)
           for i in range(500)]
    copies = [r for r in hub if r["body"]["author"] == ME][::2]
    drafts = [_row(f"draft-{i}-{'x' * 40}", 1.0, ME) for i in range(10)]
    world = World(hub=hub, bad=set(), private=copies + drafts, empty_last=False)
    shown, cursor, positions = [], None, []
    for _ in range(30):
        page, cursor, _, _ = node_page(world, cursor, 50)
        shown += page
        if cursor is None:
            break
        positions.append(Position.decode(cursor))
    ids = [r["id"] for r in shown]
    assert cursor is None and len(ids) == len(set(ids)) == 510 and set(ids) == set(world.expected())
    assert len(positions) >= 10 and all(len(p.seen) <= 50 and len(p.mine) <= 50 for p in positions)
    longest = max(len(p.encode()) for p in positions)
    assert longest < len(_as_f2(positions[-1].encode(), shown[:-1])) / 2
