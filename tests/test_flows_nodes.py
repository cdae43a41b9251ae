"""The flows through real Nodes and their local HTTP API: a hub with a CA-signed certificate and three
users dialling it over TLS on 127.0.0.1, each driven only through its API."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from shiftpeer.api.token import read_token
from shiftpeer.identity.makecerts import main as make_certs
from tests.helpers_node import ApiTestClient, eventually, eventually_async, listening_port, make_node

LISTEN = "tcp:0:interface=127.0.0.1"


async def _start(node) -> ApiTestClient:
    node.startService()
    url = await node.when_ready()
    return ApiTestClient(url, read_token(node.settings.directory))


@pytest.fixture
def nodes(tmp_path):
    started = []
    yield tmp_path, started
    pytest_twisted.blockon(gatherResults([n.stopService() for n in reversed(started)]))


async def _hub_and_users(nodes, users=("alice", "bob", "carol")) -> tuple:
    """A hub node with a CA-signed certificate and user nodes dialling it, each registered under its
    name: (hub node, hub API client, {user: API client})."""
    tmp_path, started = nodes
    assert make_certs([str(tmp_path / "certs"), "--host", "127.0.0.1", "--new-ca"]) == 0
    certs = tmp_path / "certs"
    hub = make_node(str(tmp_path / "hub"), listen=[LISTEN], hub=True, user="op",
                    tls_cert=str(certs / "127.0.0.1.pem"), tls_key=str(certs / "127.0.0.1.key"))
    assert [r.name for r in hub.roles] == ["user", "flows", "hub", "federation"]
    started.append(hub)
    hub_api = await _start(hub)
    listener = next(s for s in hub.getServiceNamed("sync") if s.name.startswith("listen"))
    port = (await listening_port(listener)).getHost().port
    api = {}
    for name in users:
        node = make_node(str(tmp_path / name), connect=f"127.0.0.1:{port}", ca=str(certs / "ca.pem"), user=name)
        started.append(node)
        api[name] = await _start(node)
        await eventually(lambda n=node: n.role("flows").flows.link.connected, timeout=10)
        code, body = await api[name].request("POST", "/v1/register", {})
        assert code == 200, body
        assert body["name"] == name
    return hub, hub_api, api


def _caller(api: dict):
    """call(user, method, path, body, want): one API request, asserting the status it answers with."""

    async def call(who, method, path, body=None, want=200):
        code, answer = await api[who].request(method, path, body)
        assert code == want, (who, method, path, answer)
        return answer

    return call


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_flows_through_the_api(nodes):
    """Register, publish public/group/direct, join, comment, notice and feed queries, all through the
    API of real nodes; each user sees exactly what they should."""
    hub, hub_api, api = await _hub_and_users(nodes)
    call = _caller(api)

    code, taken = await api["carol"].request("POST", "/v1/register", {"name": "alice"})
    assert code == 409 and "already" in taken["error"]
    href = "https://example.org/api"
    ids = {}
    for kind in ("public", "group", "direct"):
        ids[kind] = (await call("alice", "POST", "/v1/shifts", {"space": "Notes", "href": href,
                                                                 "summary": kind}, want=201))["id"]
    await call("alice", "POST", "/v1/groups", {"name": "club"})
    await call("alice", "POST", "/v1/groups/club/invite", {"user": "bob", "level": "read"})
    await call("bob", "POST", "/v1/groups/club/join", {})
    members = await call("bob", "GET", "/v1/groups/club/members")
    assert members["members"] == [{"user": "alice", "level": "owner"}, {"user": "bob", "level": "read"}]
    await call("alice", "POST", f"/v1/shifts/{ids['public']}/publish", {"public": True})
    published = await call("alice", "POST", f"/v1/shifts/{ids['group']}/publish", {"groups": ["club"]})
    assert published["targets"] == {"group:club": "ok"}
    refused = await call("alice", "POST", f"/v1/shifts/{ids['direct']}/publish", {"to": ["carol", "nobody"]},
                         want=404)
    assert refused["code"] == "no_user" and "user:nobody" in refused["error"]
    direct = await call("alice", "POST", f"/v1/shifts/{ids['direct']}/publish", {"to": ["carol"]})
    assert direct["targets"] == {"user:carol": "ok"}

    async def feed_ids(who):
        return {r["id"] for r in (await call(who, "GET", f"/v1/feed?href={href}"))["rows"]}

    await eventually(lambda: hub.store.has_database("shared") and hub.store.database("shared").doc_count() == 3,
                     timeout=10)
    assert await feed_ids("alice") == set(ids.values())
    assert await feed_ids("bob") == {ids["public"], ids["group"]}
    assert await feed_ids("carol") == {ids["public"], ids["direct"]}
    for bad in ("href=not-a-url", "type=bogus"):  # refused, not an empty page (the flows route checks too)
        code, answer = await api["bob"].request("GET", f"/v1/feed?{bad}")
        assert code == 400 and answer["code"] == "bad_request", (bad, answer)
    code, refused = await api["carol"].request("GET", "/v1/feed?group=club")
    assert code == 403 and "not a reader" in refused["error"]
    code, refused = await api["carol"].request("GET", "/v1/feed?group=nosuch")   # not "not a reader"
    assert code == 404 and refused["code"] == "no_group" and "no group 'nosuch'" in refused["error"]

    await call("bob", "POST", f"/v1/shifts/{ids['group']}/comments", {"text": "hello club"})
    code, _ = await hub_api.request("POST", "/v1/notices", {"text": "welcome"})
    assert code == 200

    async def alice_messages():
        return await call("alice", "GET", "/v1/messages")

    await eventually_async(lambda: alice_messages(), lambda m: m["unread"] == 2)
    texts = {m["text"] for m in (await alice_messages())["rows"]}
    assert texts == {"hello club", "welcome"}
    assert (await call("alice", "POST", "/v1/messages/read", {}))["unread"] == 0
    thread = await call("alice", "GET", f"/v1/shifts/{ids['group']}/comments")
    assert [r["text"] for r in thread["rows"]] == ["hello club"]



@pytest_twisted.ensureDeferred
async def test_comment_edit_and_delete_through_the_api(nodes):
    """Bob edits and deletes his comment on alice's public shift through his node's API: alice's API
    shows the new text, then no comment; her edit or delete of his comment answers 403, a stale rev
    409, bad text or an unknown field 400, an unknown comment 404, and none of them change it."""
    _, _, api = await _hub_and_users(nodes, ("alice", "bob"))
    call = _caller(api)
    sid = (await call("alice", "POST", "/v1/shifts", {"space": "Notes", "href": "https://example.org/c"},
                      want=201))["id"]
    await call("alice", "POST", f"/v1/shifts/{sid}/publish", {"public": True})
    made = await eventually_async(lambda: api["bob"].request("POST", f"/v1/shifts/{sid}/comments", {"text": "v1"}),
                                  lambda answer: answer[0] == 200)
    cid, rev1 = made[1]["id"], made[1]["rev"]

    async def alice_sees():
        return [r["text"] for r in (await call("alice", "GET", f"/v1/shifts/{sid}/comments"))["rows"]]

    await eventually_async(alice_sees, lambda texts: texts == ["v1"])
    edited = await call("bob", "PATCH", f"/v1/comments/{cid}", {"text": "v2", "rev": rev1})
    assert edited["id"] == cid and edited["rev"] != rev1
    await eventually_async(alice_sees, lambda texts: texts == ["v2"])
    replaced = await call("bob", "PUT", f"/v1/comments/{cid}", {"text": "v3"})
    await eventually_async(alice_sees, lambda texts: texts == ["v3"])

    refused = await call("alice", "PATCH", f"/v1/comments/{cid}", {"text": "mine now"}, want=403)
    assert refused["code"] == "not_author" and "author" in refused["error"]
    assert (await call("alice", "DELETE", f"/v1/comments/{cid}", want=403))["code"] == "not_author"
    stale = await call("bob", "PUT", f"/v1/comments/{cid}", {"text": "late", "rev": rev1}, want=409)
    assert replaced["rev"] in stale["error"]
    for bad in ({"text": ""}, {"text": "x" * 4001}, {"text": ["not", "a", "string"]}, {},
                {"text": "ok", "summary": "no such field"}):
        await call("bob", "PATCH", f"/v1/comments/{cid}", bad, want=400)
    await call("bob", "PATCH", "/v1/comments/cm-unknown", {"text": "x"}, want=404)
    await call("bob", "DELETE", "/v1/comments/cm-unknown", want=404)
    for method, body in (("PATCH", {"summary": "a comment is not a shift"}), ("DELETE", None)):
        wrong_route = await call("bob", method, f"/v1/shifts/{cid}", body, want=400)
        assert f"/v1/comments/{cid}" in wrong_route["error"]
    assert await alice_sees() == ["v3"]

    gone = await call("bob", "DELETE", f"/v1/comments/{cid}")
    assert gone["id"] == cid and gone["deleted"] is True
    await eventually_async(alice_sees, lambda texts: texts == [])
    assert (await call("bob", "GET", f"/v1/shifts/{sid}/comments"))["rows"] == []
    await call("bob", "DELETE", f"/v1/comments/{cid}", want=404)
