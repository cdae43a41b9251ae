"""A user node's feed pages (shiftpeer/roles/feedpage.py) while the hub's rows change between two pages, over
real TLS to a real hub: when the node's merged page holds more than ``limit`` (unpublished shifts between the
hub's rows) its next cursor asks the hub for the same page again. That page skipped a count of rows, so a
shift deleted on the hub in between made it skip a row the user never saw, and a shift published in between
made it show one twice. The node now skips what it showed (keyed by the last row it showed), as the hub's own
cursor does. Many rows of one ``created`` page with a cursor that does not grow with the pages read."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import task

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.shifts import Shifts, make_signer

HREF = "https://example.org/changing-pages"


async def page(user, cursor: str | None, limit: int = 2) -> tuple[list[str], str | None]:
    answer = await user.flows.query({"filters": {"href": HREF}, "limit": limit, "cursor": cursor})
    assert len(answer["rows"]) <= limit and answer["source"] == "shared"
    return [r["id"] for r in answer["rows"]], answer["next_cursor"]


async def rest(user, cursor: str | None) -> list[str]:
    """Every row from ``cursor`` to the last page."""
    shown: list[str] = []
    for _ in range(20):
        if cursor is None:
            return shown
        ids, cursor = await page(user, cursor)
        shown += ids
    raise AssertionError("paging did not end")


async def interleaved(mesh) -> dict[str, str]:
    """bob's public shifts p3, p2, p1 and alice's unpublished d2, d1 between them, made oldest first:
    the newest-first order is p1 d1 d2 p2 p3, and the hub's first page of two (p1, p2) has d1, d2 in its range."""
    alice, bob = mesh["alice"], mesh["bob"]
    made = {}
    for name in ("p3", "p2", "d2", "d1", "p1"):
        user = bob if name.startswith("p") else alice
        made[name] = user.new_shift(HREF, summary=name)
        if user is bob:
            await bob.publish(made[name], public=True)
    published = {made["p1"], made["p2"], made["p3"]}
    await eventually(lambda: published <= mesh.hub.ids("shared"), "bob's shifts in shared")
    return made


async def first_page(mesh) -> tuple[dict[str, str], dict[str, str], str]:
    """Start the mesh, make the shifts, and have alice read her first page of two (p1, d1): (the shifts by
    name, the names by id, the cursor of her next page, which asks the hub's first page again)."""
    await mesh.start(users=("alice", "bob"))
    made = await interleaved(mesh)
    name = {v: k for k, v in made.items()}
    first, cursor = await page(mesh["alice"], None)
    assert [name[i] for i in first] == ["p1", "d1"] and cursor is not None
    return made, name, cursor


@pytest_twisted.ensureDeferred
async def test_a_shift_deleted_between_two_pages_skips_no_other(mesh):
    made, name, cursor = await first_page(mesh)
    alice, bob = mesh["alice"], mesh["bob"]
    bob.shifts.delete(made["p1"])   # shown already; the hub's page of two is now p2, p3
    await eventually(lambda: made["p1"] not in mesh.hub.ids("shared"), "the delete in shared")
    later = await rest(alice, cursor)
    assert [name[i] for i in later] == ["d2", "p2", "p3"]


@pytest_twisted.ensureDeferred
async def test_a_shift_published_between_two_pages_shows_nothing_twice(mesh):
    made, name, cursor = await first_page(mesh)
    alice, bob = mesh["alice"], mesh["bob"]
    new = bob.new_shift(HREF, summary="p0")   # newer than every row shown: the hub's first page is now p0, p1
    await bob.publish(new, public=True)
    await eventually(lambda: new in mesh.hub.ids("shared"), "the new shift in shared")
    later = await rest(alice, cursor)
    assert [name.get(i, "p0") for i in later] == ["d2", "p2", "p3"]
    again, _ = await page(alice, None)   # a fresh first page shows it
    assert again == [new, made["p1"]]


#: The longest next_cursor paging 500 rows of one ``created`` may give: a hub page's ids at most, never all
#: the ids shown at that time (an ``f2.`` cursor grew by 50 ids a page, to 24,000 characters on the last).
CURSOR_BOUND = 6000


@pytest_twisted.ensureDeferred
async def test_500_rows_of_one_created_page_once_each_with_a_bounded_cursor(mesh):
    """bob publishes 500 shifts all created at one instant (a stopped clock), alice has 10 unpublished ones
    from that same instant: paged 50 at a time every one of the 510 comes exactly once, and no next_cursor
    grows with the pages read."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    clock = task.Clock()
    clock.advance(1_790_000_000.0)
    for user in (alice, bob):
        user.shifts = Shifts(user.store, user.account, make_signer(user.key), clock)
    published = [bob.new_shift(HREF) for _ in range(500)]
    for sid in published:
        await bob.publish(sid, public=True)
    drafts = {alice.new_shift(HREF) for _ in range(10)}
    await eventually(lambda: set(published) <= mesh.hub.ids("shared"), "bob's 500 shifts in shared")
    shown, cursor, sizes = [], None, []
    for _ in range(20):
        answer = await alice.flows.query({"filters": {"href": HREF}, "limit": 50, "cursor": cursor})
        assert len(answer["rows"]) <= 50 and answer["source"] == "shared"
        shown += [r["id"] for r in answer["rows"]]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
        sizes.append(len(cursor))
    assert cursor is None and sorted(shown) == sorted(set(published) | drafts)
    assert max(sizes) <= CURSOR_BOUND, sizes
