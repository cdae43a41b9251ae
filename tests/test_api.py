"""The local API over real HTTP on 127.0.0.1 against a real node: auth, errors, shifts, feed, status."""

from __future__ import annotations

import pytest
import pytest_twisted

from shiftpeer.api.token import read_token
from shiftpeer.shifts import FEED
from tests.helpers_node import ApiTestClient, eventually, make_node


@pytest.fixture
def node(tmp_path):
    """A node with only the user role: these tests pin the core API layer (the flows have their own)."""
    from shiftpeer.roles.user import UserRole

    n = make_node(str(tmp_path / "n"), role_factories=[UserRole])
    n.startService()
    yield n
    pytest_twisted.blockon(n.stopService())


async def client_for(node) -> ApiTestClient:
    url = await node.when_ready()
    return ApiTestClient(url, read_token(node.settings.directory))


@pytest_twisted.ensureDeferred
async def test_requests_without_or_with_wrong_token_get_401(node):
    """Without a token, or with a wrong one, every route answers 401 with a JSON error."""
    c = await client_for(node)
    for token in (None, "wrong"):
        code, body = await c.request("GET", "/v1/status", token=token)
        assert code == 401 and "token" in body["error"]
    code, body = await c.request("POST", "/v1/shifts", {"space": "Notes", "href": "http://e.org/"}, token=None)
    assert code == 401
    assert node.store.database("user/private").doc_count() == 0


@pytest_twisted.ensureDeferred
async def test_status_reports_account_roles_and_databases(node):
    """GET /v1/status shows the account, the user role and per-database counts."""
    c = await client_for(node)
    code, body = await c.request("GET", "/v1/status")
    assert code == 200
    assert body["account"] == node.account_id and body["roles"] == ["user"]
    assert set(body["databases"]) >= {"user/private", "user/public", "user/feed"}


@pytest_twisted.ensureDeferred
async def test_bad_json_bad_fields_unknown_routes(node):
    """Bad JSON and bad fields get 400 with a message; unknown routes 404; wrong methods 405."""
    c = await client_for(node)
    code, body = await c.request("POST", "/v1/shifts", raw=b"{not json")
    assert code == 400 and "JSON" in body["error"]
    code, body = await c.request("POST", "/v1/shifts", {"space": "Notes", "href": "javascript:alert(1)"})
    assert code == 400 and "href" in body["error"]
    code, body = await c.request("POST", "/v1/shifts", {"space": "Notes", "href": "http://e.org/", "content": "x"})
    assert code == 400 and "content" in body["error"]
    code, body = await c.request("POST", "/v1/shifts", [1, 2])
    assert code == 400
    code, body = await c.request("GET", "/v1/nothing/here")
    assert code == 404 and "no such API route" in body["error"]
    code, body = await c.request("PUT", "/v1/status")
    assert code == 405
    code, body = await c.request("GET", "/v1/feed?limit=abc")
    assert code == 400 and "limit" in body["error"]
    code, body = await c.request("GET", "/v1/feed?colour=red")
    assert code == 400


@pytest_twisted.ensureDeferred
async def test_numbers_json_has_not_got_are_bad_input_not_a_crash(node):
    """NaN, Infinity and numbers too large for a float (1e999) in any JSON body answer 400 like other bad
    JSON, change nothing and log no failure (the autouse fixture fails the test on a logged error)."""
    c = await client_for(node)
    for number in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        body = b'{"space": "Notes", "href": "http://e.org/", "content": {"n": [' + number + b"]}}"
        code, answer = await c.request("POST", "/v1/shifts", raw=body)
        assert code == 400 and "not valid JSON" in answer["error"] and "finite" in answer["error"], answer
    assert node.store.database("user/private").doc_count() == 0
    code, made = await c.request("POST", "/v1/shifts", {"space": "Notes", "href": "http://e.org/", "content": {}})
    code, answer = await c.request("PATCH", f"/v1/shifts/{made['id']}", raw=b'{"content": {"n": NaN}}')
    assert code == 400 and "finite" in answer["error"]
    code, shown = await c.request("GET", f"/v1/shifts/{made['id']}")
    assert shown["rev"] == made["rev"] and shown["content"] == {}
    code, made = await c.request("POST", "/v1/shifts", raw=b'{"space": "Notes", "href": "http://e.org/", '
                                                          b'"content": {"small": 1e-999, "big": 1e300}}')
    assert code == 201, made


@pytest_twisted.ensureDeferred
async def test_an_oversized_or_empty_body_changes_nothing(node):
    """A body over the API's limit (2 MiB) is 413 whatever it holds; an empty one counts as {} and gets the
    handler's own answer (here: what a shift needs); an edit that changes nothing is 400. None writes."""
    from shiftpeer.api.resource import MAX_BODY

    c = await client_for(node)
    code, made = await c.request("POST", "/v1/shifts", {"space": "Notes", "href": "https://e.org/b"})
    assert code == 201
    big = {"space": "Notes", "href": "https://e.org/b", "content": {"text": "x" * MAX_BODY}}
    code, answer = await c.request("POST", "/v1/shifts", big)
    assert code == 413 and answer == {"error": f"request body larger than {MAX_BODY} bytes"}
    code, answer = await c.request("PATCH", f"/v1/shifts/{made['id']}", raw=b" " * (MAX_BODY + 1))
    assert code == 413
    code, answer = await c.request("POST", "/v1/shifts", raw=b"  ")
    assert code == 400 and "href is required" in answer["error"]
    code, answer = await c.request("PATCH", f"/v1/shifts/{made['id']}", raw=b"")
    assert code == 400 and answer["error"] == "nothing to change: give summary and/or content"
    private = node.store.database("user/private")
    assert private.doc_count() == 1 and private.get(made["id"]).rev == made["rev"]


@pytest_twisted.ensureDeferred
async def test_a_bad_shift_field_is_400_naming_it_and_writes_nothing(node):
    """Each field of a new shift, and the summary of an edit, is checked: 400 with what is wrong, nothing
    written (no new shift, no new revision)."""
    c = await client_for(node)
    code, made = await c.request("POST", "/v1/shifts", {"space": "Notes", "href": "https://e.org/f"})
    for fields, words in [
        ({"summary": 5}, "summary must be a string"),
        ({"summary": "s" * 2001}, "summary is longer than 2000 characters"),
        ({"space": "My Notes"}, "space must be 1-100 letters, digits, '_', '.' or '-', got 'My Notes'"),
        ({"space": "N" * 101}, "space must be 1-100 letters"),
        ({"href": "https://e.org/" + "p" * 4096}, "href is longer than 4096 characters"),
        ({"href": None}, "href is required: the URL of the page the shift modifies"),
    ]:
        code, answer = await c.request("POST", "/v1/shifts", {"space": "Notes", "href": "https://e.org/f", **fields})
        assert code == 400 and words in answer["error"], (fields, answer)
        if "summary" in fields:
            code, answer = await c.request("PATCH", f"/v1/shifts/{made['id']}", fields)
            assert code == 400 and words in answer["error"], (fields, answer)
    private = node.store.database("user/private")
    assert private.doc_count() == 1 and private.get(made["id"]).rev == made["rev"]


@pytest_twisted.ensureDeferred
async def test_path_segments_reach_handlers_decoded(node):
    """A percent-encoded id reaches the handler (and its error message) as the client meant it."""
    c = await client_for(node)
    code, body = await c.request("GET", "/v1/shifts/a%20b")
    assert code in (400, 404) and "a b" in body["error"] and "%20" not in body["error"]


@pytest_twisted.ensureDeferred
async def test_create_edit_show_delete_through_http(node):
    """A shift created over HTTP reaches the feed; edit, show and delete work; then it is gone (404)."""
    c = await client_for(node)
    code, made = await c.request(
        "POST", "/v1/shifts", {"space": "Notes", "href": "https://e.org/p", "summary": "s", "content": {"a": 1}}
    )
    assert code == 201 and made["rev"].startswith("1-")
    sid = made["id"]
    await eventually(lambda: node.store.database(FEED).get(sid) is not None)
    code, shown = await c.request("GET", f"/v1/shifts/{sid}")
    assert code == 200 and shown["content"] == {"a": 1} and shown["domain"] == "e.org"
    assert set(shown["databases"]) == {"user/private", "user/feed"}
    code, edited = await c.request("PATCH", f"/v1/shifts/{sid}", {"summary": "t", "rev": made["rev"]})
    assert code == 200 and edited["rev"].startswith("2-")
    code, body = await c.request("PATCH", f"/v1/shifts/{sid}", {"summary": "u", "rev": made["rev"]})
    assert code == 409
    code, body = await c.request("PATCH", f"/v1/shifts/{sid}", {"author": "me"})
    assert code == 400
    code, gone = await c.request("DELETE", f"/v1/shifts/{sid}")
    assert code == 200 and gone["deleted"] is True
    code, body = await c.request("GET", f"/v1/shifts/{sid}")
    assert code == 404 and sid in body["error"]
    code, body = await c.request("DELETE", "/v1/shifts/unknown-id")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_feed_query_over_http(node):
    """GET /v1/feed filters by href, domain and space, honours limit and returns a cursor."""
    c = await client_for(node)
    for i in range(3):
        await c.request("POST", "/v1/shifts", {"space": "Notes", "href": f"http://x.org/{i}"})
    await c.request("POST", "/v1/shifts", {"space": "Highlights", "href": "http://y.org/"})
    await eventually(lambda: node.store.database(FEED).doc_count() == 4)
    code, body = await c.request("GET", "/v1/feed?domain=x.org&limit=2")
    assert code == 200 and len(body["rows"]) == 2 and body["next_cursor"]
    code, more = await c.request("GET", f"/v1/feed?domain=x.org&limit=2&cursor={body['next_cursor']}")
    assert len(more["rows"]) == 1 and more["next_cursor"] is None
    code, body = await c.request("GET", "/v1/feed?space=Highlights")
    assert [r["href"] for r in body["rows"]] == ["http://y.org/"]
    code, body = await c.request("GET", "/v1/feed?href=http%3A%2F%2Fx.org%2F1")
    assert [r["href"] for r in body["rows"]] == ["http://x.org/1"]


@pytest_twisted.ensureDeferred
async def test_unimplemented_routes_answer_501_and_routes_can_be_added(node):
    """Placeholder routes answer 501 with a message; a role can replace one with add_route."""
    c = await client_for(node)
    code, body = await c.request("POST", "/v1/register", {})
    assert code == 501 and "not implemented" in body["error"]
    node.api.add_route("POST", "/v1/register", lambda req: (201, {"registered": req.node.account_id}))
    code, body = await c.request("POST", "/v1/register", {})
    assert code == 201 and body == {"registered": node.account_id}


@pytest.mark.allow_logged_errors
@pytest_twisted.ensureDeferred
async def test_handler_crash_is_500_and_logged(node):
    """A handler that raises unexpectedly answers 500 with JSON and the failure is logged."""
    c = await client_for(node)

    def broken(req):
        raise RuntimeError("kaput")

    node.api.add_route("GET", "/v1/broken", broken)
    code, body = await c.request("GET", "/v1/broken")
    assert code == 500 and "kaput" in body["error"]


@pytest_twisted.ensureDeferred
async def test_stop_closes_keep_alive_connections(tmp_path):
    """Stopping the node also closes idle keep-alive API connections, not just the listening port."""
    from twisted.internet import reactor
    from twisted.web.client import Agent, HTTPConnectionPool
    from twisted.web.http_headers import Headers

    from shiftpeer.roles.user import UserRole
    from tests.helpers_node import read_body

    n = make_node(str(tmp_path / "n"), role_factories=[UserRole])
    n.startService()
    url = await n.when_ready()
    pool = HTTPConnectionPool(reactor, persistent=True)
    headers = Headers({b"authorization": [b"Bearer " + read_token(n.settings.directory).encode()]})
    resp = await Agent(reactor, pool=pool).request(b"GET", (url + "/v1/status").encode(), headers)
    await read_body(resp)
    live = n.api_service._connections.protocols
    assert len(live) == 1
    await n.stopService()
    await eventually(lambda: not live)
    await pool.closeCachedConnections()
