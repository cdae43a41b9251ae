"""`GET /v1/feed?limit=N` and `shiftpeer feed --limit N` on a user node answered by its hub, with the user's
own unpublished shifts between the published ones: no page holds more than N rows, and paging with
next_cursor shows every shift once, newest first (published public, sent to a group, and unpublished)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest_twisted
from twisted.internet.threads import deferToThread

from flowmesh import eventually as eventually_mesh
from flowmesh import mesh  # noqa: F401 (the mesh fixture)
from tests.helpers_node import ApiTestClient, eventually, node_cli
from tests.test_flows_nodes import _hub_and_users, nodes  # noqa: F401 (the nodes fixture)

DOMAIN = "limit.example"


async def _mixed_shifts(hub, client: ApiTestClient) -> list[str]:
    """Eight shifts, oldest first: published public, sent to a group (then both on the hub and in
    user/private), and unpublished, interleaved in time so drafts fall inside the hub's pages."""
    code, body = await client.request("POST", "/v1/groups", {"name": "club"})
    assert code == 200, body
    made, kinds = [], ["draft", "public", "draft", "draft", "group", "public", "draft", "public"]
    for i, kind in enumerate(kinds):
        code, shift = await client.request("POST", "/v1/shifts", {"space": "Notes", "href": f"https://{DOMAIN}/{i}"})
        assert code == 201, shift
        made.append(shift["id"])
        target = {"public": {"public": True}, "group": {"groups": ["club"]}}.get(kind)
        if target is not None:
            code, done = await client.request("POST", f"/v1/shifts/{shift['id']}/publish", target)
            assert code == 200, done
    on_hub = {sid for sid, kind in zip(made, kinds) if kind != "draft"}
    await eventually(lambda: hub.store.has_database("shared") and on_hub <= {
        d.id for d in hub.store.database("shared").query("domain", DOMAIN, limit=50)[0]}, timeout=10)
    return made


@pytest_twisted.ensureDeferred
async def test_feed_limit_is_an_upper_bound_through_the_api(nodes):
    hub, _, api = await _hub_and_users(nodes, ("bob",))
    made = await _mixed_shifts(hub, api["bob"])
    for limit in (1, 2, 3):
        assert await _page_through(api["bob"], f"domain={DOMAIN}", limit) == list(reversed(made)), limit
    code, page = await api["bob"].request("GET", f"/v1/feed?domain={DOMAIN}")
    assert code == 200, page
    times = [r["created"] for r in reversed(page["rows"])]
    window = f"domain={DOMAIN}&since={times[1]!r}&until={times[6]!r}"   # since <= created < until
    assert await _page_through(api["bob"], window, 2) == list(reversed(made[1:6]))
    assert await _page_through(api["bob"], f"space=Notes&author=bob&{window}", 2) == list(reversed(made[1:6]))


async def _page_through(client: ApiTestClient, filters: str, limit: int) -> list[str]:
    """The ids of every page from the first to the last, each page checked to hold at most `limit`."""
    seen, cursor = [], None
    for _ in range(20):
        query = f"/v1/feed?{filters}&limit={limit}" + (f"&cursor={quote(cursor)}" if cursor else "")
        code, page = await client.request("GET", query)
        assert code == 200 and page["source"] == "shared", page
        assert len(page["rows"]) <= limit, (limit, page)
        seen += [r["id"] for r in page["rows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError(f"more than 20 pages for {filters}")


@pytest_twisted.ensureDeferred
async def test_feed_limit_2_from_the_command_line_pages_through_everything_once(nodes, capsys):
    hub, _, api = await _hub_and_users(nodes, ("bob",))
    made = await _mixed_shifts(hub, api["bob"])
    tmp_path, _ = nodes
    capsys.readouterr()
    cli = node_cli(capsys, str(tmp_path / "bob"))
    seen, cursor = [], None
    for _ in range(20):
        status, out = await deferToThread(cli, "feed", "--domain", DOMAIN, "--limit", "2", "--json",
                                          *(("--cursor", cursor) if cursor else ()))
        assert status == 0, out
        page = json.loads(out)
        assert len(page["rows"]) <= 2, page
        seen += [r["id"] for r in page["rows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    status, out = await deferToThread(cli, "feed", "--domain", DOMAIN, "--limit", "2")
    assert status == 0 and "more: --cursor " in out, out


@pytest_twisted.ensureDeferred
async def test_more_unpublished_shifts_than_a_page_all_come(mesh):
    """505 unpublished shifts older than the one on the hub, paged 500 at a time: every one comes (the node
    used to read only its newest 500, so older ones were never shown), none twice."""
    await mesh.start(users=("alice",))
    alice = mesh["alice"]
    drafts = [alice.new_shift("https://many.example/", summary=str(i)) for i in range(505)]
    public = alice.new_shift("https://many.example/")
    await alice.publish(public, public=True)
    await eventually_mesh(lambda: public in mesh.hub.ids("shared"), "shared")
    seen, cursor = [], None
    for _ in range(5):
        page = await alice.flows.query({"filters": {"domain": "many.example"}, "limit": 500, "cursor": cursor})
        assert page["source"] == "shared" and len(page["rows"]) <= 500
        seen += [r["id"] for r in page["rows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [public, *reversed(drafts)]
