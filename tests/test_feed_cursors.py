"""A cursor the node never handed out (`shiftpeer feed --cursor X` mistyped, or made up) is the caller's
mistake: GET /v1/feed and /v1/messages answer 400 saying to use next_cursor, on every path a feed query
takes (the hub's shared database, the node's own feed while the hub is away, a node with only the user
role), never a 500 or "the hub failed"; and a real next_cursor still pages on."""

from __future__ import annotations

import pytest
import pytest_twisted

from shiftpeer.api.token import read_token
from tests.helpers_node import ApiTestClient, eventually, make_node
from tests.test_flows_nodes import _hub_and_users, nodes  # noqa: F401 (the nodes fixture)

BAD_CURSORS = ["garbage", "1.5|garbage", "1.5|", "x" * 2000]
ADVICE = "cursor is not one this node handed out; use next_cursor from"


async def _refuses_made_up_cursors(client: ApiTestClient, route: str) -> None:
    for cursor in BAD_CURSORS:
        code, body = await client.request("GET", f"{route}?cursor={cursor}")
        assert code == 400 and ADVICE in body["error"], (route, cursor, body)
        assert "hub failed" not in body["error"] and "internal" not in body["error"]


async def _two_pages(client: ApiTestClient, hub=None) -> None:
    """Three shifts (published, when a hub answers the feed) page as 2 + 1 with the next_cursor given."""
    for i in range(3):
        code, made = await client.request("POST", "/v1/shifts", {"space": "Notes", "href": f"https://c.org/{i}"})
        assert code == 201, made
        if hub is not None:
            code, done = await client.request("POST", f"/v1/shifts/{made['id']}/publish", {"public": True})
            assert code == 200, done
    if hub is not None:
        await eventually(lambda: hub.store.has_database("shared") and hub.store.database("shared").doc_count() == 3,
                         timeout=10)
    code, page = await client.request("GET", "/v1/feed?domain=c.org&limit=2")
    assert code == 200 and len(page["rows"]) == 2 and page["next_cursor"], page
    code, rest = await client.request("GET", f"/v1/feed?domain=c.org&limit=2&cursor={page['next_cursor']}")
    assert code == 200 and len(rest["rows"]) == 1, rest


@pytest_twisted.ensureDeferred
async def test_a_made_up_cursor_is_400_through_the_hub(nodes):
    hub, _, api = await _hub_and_users(nodes, ("bob",))
    await _two_pages(api["bob"], hub)
    await _refuses_made_up_cursors(api["bob"], "/v1/feed")
    await _refuses_made_up_cursors(api["bob"], "/v1/messages")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("roles", ["default", "user only"])
async def test_a_made_up_cursor_is_400_on_a_node_answering_from_its_feed(tmp_path, roles):
    """A user node with no hub (offline: it answers from its own feed), and a node with only the user role
    (the core feed route)."""
    from shiftpeer.roles.user import UserRole

    node = make_node(str(tmp_path / "n"), role_factories=None if roles == "default" else [UserRole])
    node.startService()
    try:
        client = ApiTestClient(await node.when_ready(), read_token(node.settings.directory))
        await _two_pages(client)
        await _refuses_made_up_cursors(client, "/v1/feed")
    finally:
        await node.stopService()
