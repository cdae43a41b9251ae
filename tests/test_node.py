"""The Node service: store lifecycle, the user role's local replication, housekeeping, shift rules."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from shiftpeer.shifts import FEED, PRIVATE, PUBLIC, InvalidShift, NotAuthor, ShiftNotFound
from shiftpeer.node import Node
from tests.helpers_node import eventually, listening_port, make_node, metrics_headers


@pytest_twisted.ensureDeferred
async def test_start_opens_store_and_user_databases_stop_closes(tmp_path):
    """Starting a node opens its store with the three user databases; stopping closes it and the API."""
    node = make_node(str(tmp_path / "n"))
    node.startService()
    try:
        await node.when_ready()
        assert {PRIVATE, PUBLIC, FEED} <= set(node.store.list_databases("user/"))
        assert os.path.exists(tmp_path / "n" / "api.url")
        assert oct(os.stat(tmp_path / "n" / "api.token").st_mode & 0o777) == "0o600"
    finally:
        await node.stopService()
    assert node.store is None
    assert not os.path.exists(tmp_path / "n" / "api.url")


@pytest_twisted.ensureDeferred
async def test_created_shift_is_signed_and_reaches_feed(tmp_path):
    """A created shift lands in user/private signed by the node key and is copied into user/feed."""
    from shiftpeer.identity.signing import verify_repl_doc

    node = make_node(str(tmp_path / "n"))
    node.startService()
    try:
        out = node.shifts.create({"space": "Notes", "href": "https://Example.org/a?b=1", "content": {"t": 1}})
        doc = node.store.database(PRIVATE).get(out["id"])
        assert doc.body["domain"] == "example.org" and doc.body["author"] == node.account_id
        repl = node.store.database(PRIVATE).get_repl_docs([(out["id"], [out["rev"]])])[0]
        assert verify_repl_doc(repl)
        await eventually(lambda: node.store.database(FEED).get(out["id"]))
        assert node.store.database(FEED).get(out["id"]).rev == out["rev"]
    finally:
        await node.stopService()


@pytest_twisted.ensureDeferred
async def test_feed_catches_up_at_start(tmp_path):
    """Shifts written while the role was not running reach user/feed when the node starts again."""
    directory = str(tmp_path / "n")
    node = make_node(directory)
    node.startService()
    ids = []
    try:
        await eventually(lambda: node.store is not None)
        for r in node.role("user").replications:
            r.stop()
        ids = [node.shifts.create({"space": "Notes", "href": f"http://e.org/{i}"})["id"] for i in range(3)]
        assert all(node.store.database(FEED).get(i) is None for i in ids)
    finally:
        await node.stopService()
    node2 = make_node(directory)
    node2.startService()
    try:
        await eventually(lambda: all(node2.store.database(FEED).get(i) for i in ids))
        assert node2.status()["replication_lag"] == {f"{PRIVATE} -> {FEED}": 0, f"{PUBLIC} -> {FEED}": 0}
    finally:
        await node2.stopService()


@pytest_twisted.ensureDeferred
async def test_edit_delete_show_and_rules(tmp_path):
    """Edit makes a new revision, delete a signed tombstone that reaches the feed; bad input is refused."""
    node = make_node(str(tmp_path / "n"))
    node.startService()
    try:
        s = node.shifts
        out = s.create({"space": "Notes", "href": "http://e.org/", "summary": "one"})
        edited = s.edit(out["id"], {"summary": "two", "content": {"x": [1]}})
        assert edited["rev"].startswith("2-")
        view = s.show(out["id"])
        assert view.body["summary"] == "two" and PRIVATE in view.databases
        await eventually(lambda: getattr(node.store.database(FEED).get(out["id"]), "rev", None) == edited["rev"])
        s.delete(out["id"])
        await eventually(lambda: getattr(node.store.database(FEED).get(out["id"]), "deleted", False))
        tomb = node.store.database(PRIVATE).get(out["id"])
        assert tomb.deleted and tomb.body["author"] == node.account_id and tomb.sig
        with pytest.raises(ShiftNotFound):
            s.show(out["id"])
        with pytest.raises(ShiftNotFound):
            s.edit("nope", {"summary": "x"})
        for bad in (
            {"space": "Notes", "href": "ftp://e.org/"},
            {"space": "Notes", "href": "not a url"},
            {"space": "", "href": "http://e.org/"},
            {"space": "Notes", "href": "http://e.org/", "content": [1]},
            {"space": "Notes", "href": "http://e.org/", "colour": "red"},
        ):
            with pytest.raises(InvalidShift):
                s.create(bad)
    finally:
        await node.stopService()


@pytest_twisted.ensureDeferred
async def test_only_author_may_edit(tmp_path):
    """A shift by someone else that reached the feed cannot be edited or deleted here."""
    from shiftpeer.identity import NodeKey
    from shiftpeer.shifts import Shifts, make_signer
    from shiftpeer.store import Store

    node = make_node(str(tmp_path / "n"))
    node.startService()
    elsewhere = Store(str(tmp_path / "theirs"))   # the other author's own node: the shift is made there
    elsewhere.create_database(PRIVATE)
    try:
        other = NodeKey.generate()
        theirs = Shifts(elsewhere, other.account_id, make_signer(other), node.clock)
        out = theirs.create({"space": "Notes", "href": "http://e.org/"})
        repl = elsewhere.database(PRIVATE).get_repl_docs([(out["id"], None)])
        node.store.database(FEED).bulk_replicated(repl)
        assert node.store.database(PRIVATE).get(out["id"]) is None   # only in this node's feed
        with pytest.raises(NotAuthor):
            node.shifts.edit(out["id"], {"summary": "mine now"})
        with pytest.raises(NotAuthor):
            node.shifts.delete(out["id"])
        assert node.store.database(FEED).get(out["id"]).rev == out["rev"]   # and it is unchanged
    finally:
        elsewhere.close()
        await node.stopService()


@pytest_twisted.ensureDeferred
async def test_feed_filters_and_paging(tmp_path):
    """Feed queries filter by href, domain, space and author, newest first, and page with a cursor."""
    clock = Clock()
    clock.advance(1000)
    node = make_node(str(tmp_path / "n"))
    node.clock = clock  # shifts take their times from the injected clock
    node.startService()
    try:
        ids = []
        for i in range(5):
            clock.advance(1)
            space = "Notes" if i % 2 == 0 else "Highlights"
            ids.append(node.shifts.create({"space": space, "href": f"http://a.org/{i % 2}"})["id"])
        clock.advance(1)
        node.shifts.create({"space": "Notes", "href": "http://b.org/"})
        # the local replication is scheduled on the injected clock
        await eventually(lambda: (clock.advance(0), node.store.database(FEED).doc_count() == 6)[1])
        s = node.shifts
        assert [r["id"] for r in s.feed({"href": "http://a.org/0"})["rows"]] == [ids[4], ids[2], ids[0]]
        assert len(s.feed({"domain": "A.ORG"})["rows"]) == 5
        assert [r["id"] for r in s.feed({"domain": "a.org", "space": "Highlights"})["rows"]] == [ids[3], ids[1]]
        assert len(s.feed({"author": node.account_id})["rows"]) == 6
        page1 = s.feed({"domain": "a.org", "space": "Notes"}, limit=2)
        assert [r["id"] for r in page1["rows"]] == [ids[4], ids[2]]
        page2 = s.feed({"domain": "a.org", "space": "Notes"}, limit=2, cursor=page1["next_cursor"])
        assert [r["id"] for r in page2["rows"]] == [ids[0]] and page2["next_cursor"] is None
        # the core route stores and asks in the page URL's normal form, and refuses a bad href or type
        assert [r["id"] for r in s.feed({"href": "HTTP://A.org:80/0#top"})["rows"]] == [ids[4], ids[2], ids[0]]
        assert s.show(ids[0]).body["href"] == "http://a.org/0"
        assert s.show(s.create({"space": "Notes", "href": "HTTP://C.org:80"})["id"]).body["href"] == "http://c.org/"
        with pytest.raises(InvalidShift, match="type must be one of"):
            s.feed({"type": "bogus"})
        with pytest.raises(InvalidShift, match="href filter"):
            s.feed({"href": "not-a-url"})
        with pytest.raises(InvalidShift):
            s.feed({"colour": "red"})
        with pytest.raises(InvalidShift):
            s.feed({}, limit=0)
    finally:
        await node.stopService()


@pytest.mark.allow_logged_errors
@pytest_twisted.ensureDeferred
async def test_housekeeping_errors_are_logged_and_timer_survives(tmp_path):
    """A role whose housekeeping raises is logged; the timer keeps calling the other roles."""
    from twisted.application.service import Service

    clock = Clock()
    node = make_node(str(tmp_path / "n"))
    node.clock = clock
    node.housekeeping.clock = clock
    calls = []

    class Broken(Service):
        name = "broken"

        def housekeeping(self):
            calls.append("broken")
            raise RuntimeError("boom")

    class Fine(Service):
        name = "fine"

        def housekeeping(self):
            calls.append("fine")

    node.add_role(Broken())
    node.add_role(Fine())
    node.startService()
    try:
        clock.advance(60)
        clock.advance(60)
        assert calls.count("fine") == 3 and calls.count("broken") == 3  # at start, then twice
        assert node.housekeeping.running
    finally:
        await node.stopService()


def test_from_directory_applies_overrides(tmp_path):
    """Node.from_directory reads the directory's config, and flags given to twistd override it."""
    from shiftpeer.nodedir import init_node_dir

    d = str(tmp_path / "n")
    cfg = init_node_dir(d, user="erin", listen=["tcp:7001"], peers=["a.example:7001"], hub=True)
    node = Node.from_directory(d, {"listen": ["tcp:7002"], "api": None, "peers": [], "full_peer": True})
    assert node.account_id == cfg.account_id
    assert node.settings.listen == ["tcp:7002"]  # overridden
    assert node.settings.peers == ["a.example:7001"]  # an empty flag list keeps the config
    assert node.settings.full_peer is True
    assert node.settings.store_path == os.path.join(cfg.path, "store")
    assert node.settings.user == "erin"


@pytest_twisted.ensureDeferred
async def test_metrics_endpoint_serves_database_counts(tmp_path):
    """--metrics serves Prometheus text with per-database document counts."""
    from tests.helpers_node import read_body
    from twisted.internet import reactor
    from twisted.web.client import Agent

    node = make_node(str(tmp_path / "n"), metrics="tcp:0:interface=127.0.0.1")
    node.startService()
    try:
        node.shifts.create({"space": "Notes", "href": "http://e.org/"})
        port = await listening_port(node.getServiceNamed("metrics"))
        url = f"http://127.0.0.1:{port.getHost().port}/metrics".encode()
        resp = await Agent(reactor).request(b"GET", url, metrics_headers(node.settings.directory))
        text = (await read_body(resp)).decode()
        assert 'shiftpeer_database_docs{db="user/private"} 1.0' in text
    finally:
        await node.stopService()


@pytest_twisted.ensureDeferred
async def test_two_nodes_connect_over_tls_and_roles_hear_of_it(tmp_path):
    """A node with --peer reaches another's --listen over mutual TLS; both sides' roles hear of it; both stop promptly."""
    from twisted.application.service import Service

    class Recorder(Service):
        name = "recorder"

        def __init__(self):
            self.seen = []

        def peer_connected(self, conn, kind):
            self.seen.append((kind, conn.peer_id))

    a = make_node(str(tmp_path / "a"), listen=["tcp:0:interface=127.0.0.1"])
    rec_a = Recorder()
    a.add_role(rec_a)
    a.startService()
    b = None
    try:
        listener = next(s for s in a.getServiceNamed("sync") if s.name.startswith("listen"))
        port = (await listening_port(listener)).getHost().port
        b = make_node(str(tmp_path / "b"), peers=[f"127.0.0.1:{port}"])
        rec_b = Recorder()
        b.add_role(rec_b)
        b.startService()
        await eventually(lambda: rec_a.seen and rec_b.seen, timeout=10)
        assert rec_b.seen == [("peer", a.account_id)]
        assert rec_a.seen == [("incoming", b.account_id)]
        st = b.status()["peers"]
        assert st[0]["address"] == f"127.0.0.1:{port}" and st[0]["connected"] is True
        assert a.status()["connections"]
    finally:
        if b is not None:
            await b.stopService()
        await a.stopService()
    assert a.sync_factory is None and b.sync_factory is None


@pytest.mark.allow_logged_errors
@pytest_twisted.ensureDeferred
async def test_local_replication_recovers_on_housekeeping(tmp_path, monkeypatch):
    """When a copy step fails it is logged; the next housekeeping tick resumes from the checkpoint."""
    clock = Clock()
    node = make_node(str(tmp_path / "n"))
    node.clock = clock
    node.housekeeping.clock = clock
    node.startService()
    try:
        feed = node.store.database(FEED)
        repl = node.role("user").replications[0]
        real = repl.pump_once
        monkeypatch.setattr(repl, "pump_once", lambda: (_ for _ in ()).throw(RuntimeError("disk hiccup")))
        sid = node.shifts.create({"space": "Notes", "href": "http://e.org/"})["id"]
        clock.advance(0)
        assert feed.get(sid) is None
        monkeypatch.setattr(repl, "pump_once", real)
        clock.advance(60)  # housekeeping tick
        clock.advance(0)
        assert feed.get(sid) is not None
    finally:
        await node.stopService()
