"""Page-URL queries meet the shifts made on that page whatever form the URL takes (the browser's
location.href, a typed URL), on every route: the hub's shared, a full peer's feed, the author's own
unpublished shifts; and a bad href or type is refused on every route (audit finding 9)."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError
from shiftpeer.shifts import make_signer, new_shift_id

OTHER_FORMS = ("https://other.net", "https://other.net/", "https://other.net/#top", "HTTPS://Other.NET:443/#")
PORT_FORMS = ("http://example.org:8080/b", "http://Example.ORG:8080/b", "http://example.org:8080/b#x")


async def _ids(user, href) -> list[str]:
    return [r["id"] for r in (await user.flows.query({"filters": {"href": href}}))["rows"]]


@pytest_twisted.ensureDeferred
async def test_page_url_forms_meet_on_every_route(mesh):
    """A shift made on https://Other.NET is stored as https://other.net/ and found by every form of that
    page, through the hub (bob), on a full peer (from its own feed), and among the author's unpublished
    shifts; a fragment that is a single-page-app route names a different page."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    peer = await mesh.add_user("fp", full_peer=True)
    other = alice.new_shift("https://Other.NET")
    ported = alice.new_shift("http://Example.ORG:8080/b")
    routed = alice.new_shift("https://Other.NET/#/inbox")
    draft = alice.new_shift("https://other.net/#section-2")
    assert alice.shifts.show(other).body["href"] == "https://other.net/"
    assert alice.shifts.show(routed).body["href"] == "https://other.net/#/inbox"
    assert alice.shifts.show(draft).body["href"] == "https://other.net/"
    for sid in (other, ported, routed):
        await alice.publish(sid, public=True)
    await eventually(lambda: {other, ported, routed} <= mesh.hub.ids("shared") and
                     {other, ported, routed} <= peer.feed_ids(), "shared and the full peer's feed")
    for href in OTHER_FORMS:
        assert await _ids(bob, href) == [other], href
        assert await _ids(peer, href) == [other], href
        assert await _ids(alice, href) == [draft, other], href
    for href in PORT_FORMS:
        assert await _ids(bob, href) == [ported], href
        assert await _ids(peer, href) == [ported], href
    assert await _ids(bob, "https://other.net/#/inbox") == [routed]
    # the hub normalizes on its own, for nodes that send the URL as typed
    answer = await bob.flows.link.call("query", {"filters": {"href": "https://OTHER.net"}})
    assert [r["id"] for r in answer["rows"]] == [other]


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_bad_href_or_type_is_refused_on_every_route(mesh):
    """Not a page URL, or an unknown type, is a bad request through the hub, on a full peer, offline,
    and at the hub's own query RPC, never an empty page."""
    await mesh.start(users=("alice",))
    alice = mesh["alice"]
    peer = await mesh.add_user("fp", full_peer=True)
    bad = ({"href": "not-a-url"}, {"href": "ftp://example.org/"}, {"type": "bogus"})
    for filters in bad:
        for user in (alice, peer):
            with pytest.raises(FlowError) as e:
                await user.flows.query({"filters": filters})
            assert e.value.code == "bad_request", filters
        with pytest.raises(FlowError) as e:  # the hub checks on its own too
            await alice.flows.link.call("query", {"filters": filters})
        assert e.value.code == "bad_request", filters
    alice.disconnect()
    await eventually(lambda: not alice.flows.link.connected, "alice offline")
    for filters in bad:
        with pytest.raises(FlowError, match="href|type"):
            await alice.flows.query({"filters": filters})


@pytest_twisted.ensureDeferred
async def test_shifts_stored_before_normalization(mesh):
    """A shift stored with its URL as typed (made before normalization) is still found by that exact
    string, and by every form of its page once its author edits it (the edit stores the normal form)."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = new_shift_id(alice.account)
    now = 1795000000.0
    body = {"type": "shift", "space": "Notes", "href": "https://Legacy.example", "domain": "legacy.example",
            "summary": "old", "content": {}, "author": alice.account, "created": now, "modified": now}
    alice.store.database("user/private").put(sid, body, sign=make_signer(alice.key))
    await alice.publish(sid, public=True)
    await eventually(lambda: sid in mesh.hub.ids("shared"), "shared")
    assert await _ids(bob, "https://Legacy.example") == [sid]
    assert await _ids(bob, "https://legacy.example/") == []
    alice.shifts.edit(sid, {"summary": "edited"})
    await eventually(lambda: mesh.hub.db("shared").get(sid).body["summary"] == "edited", "edit in shared")
    assert mesh.hub.db("shared").get(sid).body["href"] == "https://legacy.example/"
    for href in ("https://legacy.example/", "https://LEGACY.example/#top", "https://Legacy.example"):
        assert await _ids(bob, href) == [sid], href
