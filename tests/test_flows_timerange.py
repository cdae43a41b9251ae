"""Queries by created time ([since, until)) through the flows: the hub's shared database with the
asker's own unpublished shifts merged in, paging, favorites, a full peer's feed, and the hub refusing
bad bounds on its own side."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError


async def _created(user, ids: list[str]) -> dict[str, float]:
    """created of each shift as the asker's query rows show it."""
    rows = (await user.flows.query({"filters": {"domain": "time.example"}, "limit": 500}))["rows"]
    found = {r["id"]: r["body"]["created"] for r in rows}
    assert set(ids) <= set(found)
    return found


async def _walk(user, limit: int, **q) -> list[str]:
    """Every page of a query, in order (bounded)."""
    seen, cursor = [], None
    for _ in range(20):
        page = await user.flows.query({**q, "limit": limit, "cursor": cursor})
        assert len(page["rows"]) <= limit + 1  # + an unpublished shift merged into its page
        seen += [r["id"] for r in page["rows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("paging did not end")


@pytest_twisted.ensureDeferred
async def test_time_range_through_the_hub_with_paging_and_drafts(mesh):
    """bob's since/until query reaches the hub and returns exactly the shifts created in [since, until),
    his own unpublished draft in that range included; paged one at a time it walks the same rows once,
    newest first, and other filters still apply."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    a1 = alice.new_shift("https://time.example/1")
    a2 = alice.new_shift("https://time.example/2", space="Highlight")
    draft = bob.new_shift("https://time.example/draft")
    a3 = alice.new_shift("https://time.example/3")
    a4 = alice.new_shift("https://time.example/4", space="Highlight")
    a5 = alice.new_shift("https://time.example/5")
    for sid in (a1, a2, a3, a4, a5):
        await alice.publish(sid, public=True)
    await eventually(lambda: {a1, a2, a3, a4, a5} <= mesh.hub.ids("shared"), "shared")
    t = await _created(bob, [a1, a2, a3, a4, a5, draft])
    window = {"filters": {"domain": "time.example"}, "since": t[a2], "until": t[a5]}
    answer = await bob.flows.query(window)
    assert answer["source"] == "shared" and [r["id"] for r in answer["rows"]] == [a4, a3, draft, a2]
    assert await _walk(bob, 1, **window) == [a4, a3, draft, a2]
    spaced = await bob.flows.query({**window, "filters": {"space": "Highlight"}})
    assert [r["id"] for r in spaced["rows"]] == [a4, a2]
    later = await bob.flows.query({"filters": {"domain": "time.example"}, "since": t[a4]})
    assert [r["id"] for r in later["rows"]] == [a5, a4]
    earlier = await bob.flows.query({"filters": {"domain": "time.example"}, "until": t[draft]})
    assert [r["id"] for r in earlier["rows"]] == [a2, a1]


@pytest_twisted.ensureDeferred
async def test_time_range_of_favorites_and_on_a_full_peer(mesh):
    """Favorites (answered from the hub's favorites list) and a full peer's local feed keep the range."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    peer = await mesh.add_user("fp", full_peer=True)
    made = [alice.new_shift(f"https://time.example/{i}") for i in range(4)]
    for sid in made:
        await alice.publish(sid, public=True)
    await eventually(lambda: set(made) <= mesh.hub.ids("shared"), "shared")
    await eventually(lambda: set(made) <= peer.feed_ids(), "the full peer's feed")
    t = await _created(bob, made)
    for sid in (made[0], made[2]):
        await bob.flows.favorite(sid)
    favs = await bob.flows.query({"favorites": True, "since": t[made[1]]})
    assert [r["id"] for r in favs["rows"]] == [made[2]]
    local = await peer.flows.query({"filters": {"domain": "time.example"}, "since": t[made[1]],
                                    "until": t[made[3]], "limit": 1})
    assert local["source"] == "feed" and [r["id"] for r in local["rows"]] == [made[2]]
    assert await _walk(peer, 1, filters={"domain": "time.example"}, since=t[made[1]],
                       until=t[made[3]]) == [made[2], made[1]]


BAD_BOUNDS = [
    ({"since": "yesterday"}, "since must be a number"),
    ({"until": True}, "until must be a number"),
    ({"since": -1}, "since must be a number"),
    ({"until": float("nan")}, "until must be a number"),
    ({"since": 1e20}, "since must be a number"),
    ({"since": 20, "until": 10}, "is after until"),
]


@pytest.mark.parametrize("bounds,message", BAD_BOUNDS)
@pytest_twisted.ensureDeferred
async def test_bad_bounds_are_refused_by_the_node_and_by_the_hub(mesh, bounds, message):
    """A node refuses a bad since/until before asking anyone, and the hub refuses it too when a peer
    sends it straight over RPC: bad_request with a sentence saying what is allowed."""
    await mesh.start(users=("bob",))
    bob = mesh["bob"]
    with pytest.raises(FlowError, match=message) as local:
        await bob.flows.query({"filters": {}, **bounds})
    with pytest.raises(FlowError, match=message) as remote:
        await bob.flows.link.call("query", {"filters": {}, **bounds})
    assert local.value.code == remote.value.code == "bad_request"
