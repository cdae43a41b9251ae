"""A live change goes to the kernel inside the commit that made it, not on the reactor's next turn
(shiftpeer.sync.sendnow); a gossip feed's announcements keep the reactor's pace."""

from __future__ import annotations

import collections
import select

import pytest_twisted

from shiftpeer.sync import AllowAll
from shiftpeer.sync.manager import ReplicationManager
from shiftpeer.sync.sendnow import send_now, socket_transport
from shiftpeer.sync.testing import MemoryStore, RecordingConnection, accept_all
from tests.test_sync_network import Nodes, until


def _live_feed(lazy: bool):
    store = MemoryStore()
    db = store.create_database("master")
    db.put("d0", {"i": 0})
    conn = RecordingConnection()
    mgr = ReplicationManager(conn, store, AllowAll(), accept_all, collections.Counter())
    if lazy:
        mgr.lazy_feeds["master"] = lambda conn, name, ch: ch
    mgr.handle({"t": "pull", "rid": 1, "db": "master", "since": 0, "epoch": None, "live": True})
    acks = [m for m in conn.sent if m["t"] == "changes"]
    for m in acks:
        mgr.handle({"t": "ack", "rid": 1, "seq": m["seq"]})
    return db, conn


def test_a_live_feeders_change_is_sent_at_once():
    db, conn = _live_feed(lazy=False)
    assert conn.sends_now == 0          # catching up keeps the reactor's pace
    db.put("d1", {"i": 1})
    assert [m["ch"] for m in conn.sent if m["t"] == "changes"][-1] == [["d1", [db.get("d1").rev]]]
    assert conn.sends_now == 1


def test_a_feeder_still_catching_up_keeps_the_reactors_pace():
    store = MemoryStore()
    db = store.create_database("master")
    for i in range(30):
        db.put(f"d{i}", {"i": i})
    conn = RecordingConnection()
    mgr = ReplicationManager(conn, store, AllowAll(), accept_all, collections.Counter(), window=1, batch_changes=5)
    mgr.handle({"t": "pull", "rid": 1, "db": "master", "since": 0, "epoch": None, "live": True})
    first = [m for m in conn.sent if m["t"] == "changes"]
    mgr.handle({"t": "ack", "rid": 1, "seq": first[-1]["seq"]})      # the next batch goes out, not caught up
    db.put("d30", {"i": 30})
    assert not any(m["t"] == "caught_up" for m in conn.sent)
    assert conn.sends_now == 0


def test_a_gossip_feeds_announcement_waits_for_the_reactor():
    db, conn = _live_feed(lazy=True)
    db.put("d1", {"i": 1})
    assert [m["ch"] for m in conn.sent if m["t"] == "changes"][-1] == [["d1", [db.get("d1").rev]]]
    assert conn.sends_now == 0


def test_send_now_leaves_anything_but_a_socket_alone():
    assert send_now(object()) is False
    assert socket_transport(None) is None


@pytest_twisted.ensureDeferred
async def test_a_live_change_reaches_the_peers_socket_before_the_reactor_turns(tmp_path):
    """Over real TLS on 127.0.0.1: right after the source's put returns, with no reactor turn between, the
    puller's socket is readable and the change arrives."""
    async with Nodes(tmp_path) as nodes:
        a, b = nodes("a"), nodes("b")
        await b.listen()
        src = b.fill("master", 5, "m")
        reps = {}
        svc = a.connect(b, on_connected=lambda conn: reps.setdefault("pull", conn.pull("master", "feed")))
        conn = await svc.when_authenticated()
        await until(lambda: "pull" in reps, what="the pull")
        await reps["pull"].caught_up
        sock = socket_transport(conn.transport).getHandle()
        feed = a.store.database("feed")
        # let the acks and anything else in flight be read first
        await until(lambda: not select.select([sock], [], [], 0)[0], what="a quiet socket")
        src.put("fresh", {"author": b.id, "n": -1}, sign=b.sign())
        readable = select.select([sock], [], [], 2.0)[0]   # bounded; the reactor does not run meanwhile
        assert readable == [sock]
        await until(lambda: feed.get("fresh") is not None, what="the live change")


def test_an_eager_pulls_first_batch_leaves_as_soon_as_written():
    """Catching up a puller that asked for documents with the changes: the batch sent while the puller holds
    none of ours asks for its frame (and whatever the received frames being handled wrote before it) to go
    to the kernel at once, instead of waiting for the whole window to be encoded; the batches behind it go
    together, and so does one sent after an ack while others are in flight. A pull by need hurries nothing."""
    for eager, hurried in ((True, True), (False, False)):
        store = MemoryStore()
        db = store.create_database("master")
        for i in range(80):
            db.put(f"d{i}", {"i": i})
        conn = RecordingConnection()
        mgr = ReplicationManager(conn, store, AllowAll(), accept_all, collections.Counter(), window=4,
                                 batch_changes=10)
        mgr.handle({"t": "pull", "rid": 1, "db": "master", "since": 0, "epoch": None, "live": False,
                    "eager": eager})
        batches = [m for m in conn.sent if m["t"] == "changes"]
        assert len(batches) == 4 and all(("docs" in m) is eager for m in batches)
        assert conn.sends_now_queued == (1 if hurried else 0)
        mgr.handle({"t": "ack", "rid": 1, "seq": batches[0]["seq"]})      # three still in flight
        assert len([m for m in conn.sent if m["t"] == "changes"]) == 5
        assert conn.sends_now_queued == (1 if hurried else 0)


def test_send_now_with_queued_writes_what_the_handled_frames_wrote_so_far(tmp_path):
    """SyncProtocol.send_now(queued=True) inside a handling slice: the frames queued so far go to the
    transport in order, and later ones queue again for the slice's end."""
    from shiftpeer.sync.protocol import SyncFactory, SyncProtocol
    from shiftpeer.identity import NodeKey

    written = []

    class Transport:
        def write(self, data):
            written.append(data)

        def writeSequence(self, seq):
            written.append(b"".join(seq))

    p = SyncProtocol(SyncFactory(MemoryStore(), NodeKey.generate(), AllowAll(), reactor=None))
    p.transport = Transport()
    p._out = []
    p._write(b"one")
    p._write(b"two")
    p.send_now()                     # not queued: the slice's replies still wait
    assert written == []
    p.send_now(queued=True)
    assert written == [b"onetwo"] and p._out == []
    p._write(b"three")
    assert written == [b"onetwo"] and p._out == [b"three"]
