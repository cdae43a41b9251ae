"""GET /v1/feed?since=..&until=.. over real HTTP on real nodes: the core route of a node with only the
user role, and the flows route of a user node that asks its hub; bad bounds answer 400."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest_twisted

from shiftpeer.api.token import read_token
from shiftpeer.shifts import FEED
from tests.helpers_node import ApiTestClient, eventually
from tests.test_api import node  # noqa: F401 (a node with only the user role: the core feed route)
from tests.test_flows_nodes import _hub_and_users, nodes  # noqa: F401 (the nodes fixture)

BAD = [
    ("since=yesterday", "since must be seconds since the epoch or ISO 8601"),
    ("since=2026-11-26", "has no time zone"),
    ("until=2026-11-26T10:00:00", "has no time zone"),
    ("since=-5", "since must be seconds"),
    ("until=nan", "until must be seconds"),
    ("since=99999999999999", "since must be seconds"),
    ("since=20&until=10", "is after until"),
    ("since=1&since=2", "since may be given once"),
]


def _iso(t: float, offset_hours: int = 0) -> str:
    """t as ISO 8601 with microseconds, in a zone offset_hours east of UTC."""
    zone = timezone(timedelta(hours=offset_hours))
    return quote(datetime.fromtimestamp(t, zone).isoformat().replace("+00:00", "Z"))


async def _feed(client, query: str) -> list[str]:
    code, body = await client.request("GET", "/v1/feed?" + query)
    assert code == 200, body
    return [r["id"] for r in body["rows"]]


@pytest_twisted.ensureDeferred
async def test_core_feed_time_range(node):
    """The core route keeps [since, until) as numbers or ISO 8601 (any zone), pages inside the range,
    and answers 400 with the reason for each bad bound."""
    c = ApiTestClient(await node.when_ready(), read_token(node.settings.directory))
    ids = []
    for i in range(4):
        code, made = await c.request("POST", "/v1/shifts", {"space": "Notes", "href": f"http://t.org/{i}"})
        assert code == 201
        ids.append(made["id"])
    await eventually(lambda: node.store.database(FEED).doc_count() == 4)
    t = {r["id"]: r["created"] for r in (await c.request("GET", "/v1/feed?domain=t.org"))[1]["rows"]}
    assert await _feed(c, f"domain=t.org&since={t[ids[1]]!r}&until={t[ids[3]]!r}") == [ids[2], ids[1]]
    mid = (t[ids[0]] + t[ids[1]]) / 2
    assert await _feed(c, f"since={_iso(mid)}") == [ids[3], ids[2], ids[1]]
    assert await _feed(c, f"until={_iso(mid, 1)}") == [ids[0]]
    code, page = await c.request("GET", f"/v1/feed?since={t[ids[1]]!r}&limit=2")
    assert [r["id"] for r in page["rows"]] == [ids[3], ids[2]] and page["next_cursor"]
    code, last = await c.request("GET", f"/v1/feed?since={t[ids[1]]!r}&limit=2&cursor={page['next_cursor']}")
    assert [r["id"] for r in last["rows"]] == [ids[1]] and last["next_cursor"] is None
    for query, message in BAD:
        code, body = await c.request("GET", "/v1/feed?" + query)
        assert code == 400 and message in body["error"], (query, body)


@pytest_twisted.ensureDeferred
async def test_flows_feed_time_range_through_the_hub(nodes):
    """bob's node forwards since/until to the hub's shared database and answers with the shifts alice
    published in that range; a bad bound is a 400 from bob's node."""
    hub, _, api = await _hub_and_users(nodes, ("alice", "bob"))
    ids = []
    for i in range(3):
        code, made = await api["alice"].request("POST", "/v1/shifts", {"space": "Notes", "href": f"https://r.org/{i}"})
        assert code == 201
        code, _ = await api["alice"].request("POST", f"/v1/shifts/{made['id']}/publish", {"public": True})
        assert code == 200
        ids.append(made["id"])
    await eventually(lambda: hub.store.has_database("shared") and hub.store.database("shared").doc_count() == 3,
                     timeout=10)
    code, body = await api["bob"].request("GET", "/v1/feed?domain=r.org")
    assert code == 200 and body["source"] == "shared"
    t = {r["id"]: r["created"] for r in body["rows"]}
    code, body = await api["bob"].request("GET", f"/v1/feed?domain=r.org&since={t[ids[1]]!r}&until={t[ids[2]]!r}")
    assert code == 200 and body["source"] == "shared" and [r["id"] for r in body["rows"]] == [ids[1]]
    for query, message in BAD:
        code, body = await api["bob"].request("GET", "/v1/feed?" + query)
        assert code == 400 and message in body["error"], (query, body)
