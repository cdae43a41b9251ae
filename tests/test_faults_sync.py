"""Network faults against the sync protocol, deterministically: a Clock, iosim TLS or a bounded fake socket.

Covered: a connection cut in the middle of a frame, a peer that stops reading (the sender's buffered
bytes stay bounded), a peer that sends one byte a second (a timeout closes it), and the per-peer limits
on frame size, batch size, open replications and documents per second.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from rel_fuzz import store_now
from shiftpeer.store import Store
from shiftpeer.sync import AllowAll, SyncFactory
from shiftpeer.sync.framing import FrameDecoder, encode_frame
from shiftpeer.sync.messages import decode
from shiftpeer.sync.protocol import SyncProtocol
from shiftpeer.sync.testing import MemoryStore, accept_all, connect_pair, peer_id_of

from test_sync_iosim import fill, settle


def frame(**msg: Any) -> bytes:
    return encode_frame(cbor2.dumps(msg))


HELLO = frame(t="hello", v=1, roles=["user"], maxf=1 << 24)


class SocketBuffer(StringTransport):
    """A fake socket whose send buffer pauses its producer past ``high`` bytes, as a real one does when the
    peer stops reading; ``producerState`` says whether the protocol asked it to stop reading."""

    def __init__(self, high: int = 256 * 1024) -> None:
        super().__init__()
        self.high = high
        self.peak = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        size = len(self.io.getvalue())
        self.peak = max(self.peak, size)
        if size > self.high and self.producer is not None and not getattr(self, "_paused_producer", False):
            self._paused_producer = True
            self.producer.pauseProducing()


def served(store: Any = None, clock: Any = None, **kw: Any) -> tuple[SyncProtocol, SocketBuffer, Clock]:
    """A server-side SyncProtocol past its handshake with a raw test peer, on a SocketBuffer."""
    clock = clock or Clock()
    factory = SyncFactory(store if store is not None else MemoryStore(), None, AllowAll(), reactor=clock,
                          roles=("hub",), validator=accept_all, peer_id_of=lambda t: "peer", **kw)
    proto = factory.buildProtocol(None)
    transport = SocketBuffer()
    proto.makeConnection(transport)
    proto.dataReceived(HELLO)
    assert proto.peer_id == "peer"
    return proto, transport, clock


def sent(transport: StringTransport) -> list[dict]:
    return [decode(f) for f in FrameDecoder(1 << 30).feed(transport.value())]


# ---------------------------------------------------------------- cut mid-frame

def test_cut_mid_frame_keeps_whole_batches_and_resumes(tmp_path):
    """When the connection drops in the middle of a large docs frame, the puller keeps only whole batches with
    their checkpoint, and a new connection resumes from there to identical databases on real LMDB."""
    clock = Clock()
    src = Store(str(tmp_path / "src"), sync=False)
    dst = Store(str(tmp_path / "dst"), sync=False)
    try:
        db = src.create_database("master")
        with src.write_txn() as txn:
            for i in range(120):
                db.put(f"d{i:03}", {"text": "x" * 20_000, "n": i}, txn=txn)

        def factory(store: Store) -> SyncFactory:
            return SyncFactory(store, None, AllowAll(), reactor=clock, validator=accept_all, peer_id_of=peer_id_of,
                               store_batch=store_now, window=2, batch_changes=10)

        cf, sf = factory(dst), factory(src)
        pair = connect_pair(cf, sf, clock)
        settle(pair.pump)
        pair.client.pull("master", "feed", live=False)
        cut = False
        for _ in range(400):   # move the server's bytes in 7 KiB pieces until a frame is half-way in
            clock.advance(0)
            cdata = pair.pump.clientIO.getOutBuffer()
            if cdata:
                pair.pump.serverIO.bufferReceived(cdata)
            sdata = pair.pump.serverIO.getOutBuffer() or b""
            for i in range(0, len(sdata), 7000):
                pair.pump.clientIO.bufferReceived(sdata[i:i + 7000])
                if pair.client._decoder.buffered > 30_000 and dst.has_database("feed") \
                        and dst.database("feed").doc_count() >= 20:
                    cut = True
                    break
            if cut:
                break
        assert cut, "never caught a frame half-way"
        pair.client_tls.connectionLost(Failure(ConnectionLost("cut")))
        pair.server_tls.connectionLost(Failure(ConnectionLost("cut")))
        feed = dst.database("feed")
        stored = feed.doc_count()
        cp = feed.get_checkpoint("server", "master")
        assert 0 < stored < 120 and stored % 10 == 0, stored
        assert cp["seq"] == db.changes(0)[stored - 1].seq
        pair = connect_pair(cf, sf, clock)
        settle(pair.pump)
        rep = pair.client.pull("master", "feed", live=False)
        settle(pair.pump, 2000)
        assert rep.is_caught_up
        assert {c.id: c.revs for c in feed.changes(0)} == {c.id: c.revs for c in db.changes(0)}
        assert feed.update_seq() == 120, "documents were stored twice"
    finally:
        src.close()
        dst.close()


# ---------------------------------------------------------------- a peer that stops reading

def big_store(n: int = 200, size: int = 10_000) -> MemoryStore:
    store = MemoryStore()
    db = store.create_database("master")
    for i in range(n):
        db.put(f"d{i}", {"text": "x" * size, "n": i})
    return store


def test_a_puller_that_stops_reading_gets_a_bounded_amount():
    """A peer that opens a pull and then neither reads nor acknowledges gets at most a window of changes: the
    sender's buffered bytes stay bounded."""
    proto, transport, _ = served(big_store(5000, 10), window=4, batch_changes=100)
    proto.dataReceived(frame(t="pull", rid=1, db="master", since=0, epoch=None, live=True))
    changes = [m for m in sent(transport) if m["t"] == "changes"]
    assert len(changes) == 4
    assert transport.peak < 64 * 1024


@pytest.mark.allow_logged_errors
def test_a_peer_that_stops_reading_but_floods_requests_stays_bounded():
    """A peer that stops reading but keeps sending `need` for every document cannot make the sender buffer
    without bound: the sender stops serving it (or stops reading from it) near the socket's limit."""
    proto, transport, _ = served(big_store(), window=4, batch_changes=100)
    proto.dataReceived(frame(t="pull", rid=1, db="master", since=0, epoch=None, live=True))
    first = next(m for m in sent(transport) if m["t"] == "changes")
    need = frame(t="need", rid=1, seq=first["seq"], want=first["ch"])
    proto.dataReceived(need * 300)   # 300 requests for ~1 MB each, in one read
    assert transport.peak < transport.high + 4 * 1024 * 1024, f"buffered {transport.peak} bytes"
    assert transport.disconnecting and proto.close_reason["code"] == "unexpected"


# ---------------------------------------------------------------- a peer that sends one byte a second

def trickle(proto: SyncProtocol, transport: StringTransport, clock: Clock, data: bytes, limit: int = 600) -> int:
    """Send ``data`` one byte a second until the connection closes; returns the seconds it took (bounded)."""
    for second, byte in enumerate(data[:limit]):
        if transport.disconnecting:
            return second
        proto.dataReceived(bytes([byte]))
        clock.advance(1)
    return limit if not transport.disconnecting else len(data[:limit])


@pytest.mark.allow_logged_errors
def test_one_byte_a_second_before_the_handshake_is_closed():
    """A peer that dribbles its hello one byte a second is disconnected by the handshake timeout."""
    clock = Clock()
    factory = SyncFactory(MemoryStore(), None, AllowAll(), reactor=clock, validator=accept_all,
                          peer_id_of=lambda t: "peer", handshake_timeout=30.0, frame_timeout=30.0)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    took = trickle(proto, transport, clock, HELLO + b"\0" * 600)
    assert transport.disconnecting and took <= 31


@pytest.mark.allow_logged_errors
def test_one_byte_a_second_inside_a_frame_is_closed_but_idle_is_not():
    """After the handshake, a frame that takes longer than the frame timeout to arrive closes the connection,
    while a connection that is merely quiet between frames stays open."""
    proto, transport, clock = served(handshake_timeout=30.0, frame_timeout=30.0)
    clock.advance(3600)
    assert not transport.disconnecting, "an idle connection was closed"
    proto.dataReceived(frame(t="ack", rid=9, seq=1))
    clock.advance(3600)
    assert not transport.disconnecting
    took = trickle(proto, transport, clock, frame(t="call", id=1, method="x" * 300, args={}))
    assert transport.disconnecting and took <= 31
    assert proto.close_reason["code"] == "timeout"


# ---------------------------------------------------------------- per-peer limits

@pytest.mark.allow_logged_errors
def test_frame_size_limit_is_per_factory():
    """A frame over the configured maximum closes the connection before it is buffered."""
    proto, transport, _ = served(max_frame=1000)
    proto.dataReceived(b"\x00\x00\x07\xd0" + b"x" * 10)
    assert transport.disconnecting and proto.close_reason["code"] == "frame_too_large"
    assert proto._decoder.buffered == 0


@pytest.mark.allow_logged_errors
def test_batch_size_limit():
    """A changes, need or docs message with more entries than the configured batch limit is refused."""
    proto, transport, _ = served(max_batch=10)
    proto.dataReceived(frame(t="need", rid=1, seq=1, want=[[f"d{i}", ["1-" + "0" * 32]] for i in range(11)]))
    assert transport.disconnecting and proto.close_reason["code"] == "limit"


@pytest.mark.allow_logged_errors
def test_open_replications_limit():
    """Past the configured number of open replications on one connection, a new pull is refused with an error
    for that replication only; the connection and the others go on."""
    store = big_store(5, 10)
    proto, transport, _ = served(store, max_replications=3)
    for rid in range(1, 5):
        proto.dataReceived(frame(t="pull", rid=rid, db="master", since=0, epoch=None, live=True))
    errors = [m for m in sent(transport) if m["t"] == "error"]
    assert [(e["rid"], e["code"]) for e in errors] == [(4, "limit")]
    assert not transport.disconnecting and len(proto.replications.feeders) == 3


def test_documents_per_second_limit():
    """A puller stores at most the configured documents per second from one peer: past the budget it holds
    batches back (and so its acknowledgements, which stops the sender) until the clock refills it."""
    clock = Clock()
    store = MemoryStore()
    fill(store, "master", 1000)
    cf = SyncFactory(MemoryStore(), None, AllowAll(), reactor=clock, validator=accept_all, peer_id_of=peer_id_of,
                     docs_per_second=100, batch_changes=50)
    sf = SyncFactory(store, None, AllowAll(), reactor=clock, validator=accept_all, peer_id_of=peer_id_of,
                     batch_changes=50)
    pair = connect_pair(cf, sf, clock)
    settle(pair.pump)
    rep = pair.client.pull("master", "feed", live=False)
    settle(pair.pump)
    feed = cf.store.database("feed")
    counts = [feed.doc_count()]
    for _ in range(15):   # fifteen simulated seconds, bounded
        clock.advance(1)
        settle(pair.pump)
        counts.append(feed.doc_count())
    assert counts[0] <= 100
    assert all(n <= 100 + 100 * t for t, n in enumerate(counts)), counts
    assert counts[-1] == 1000 and rep.is_caught_up


def test_documents_per_second_are_one_budget_for_all_connections_of_a_peer():
    """Two connections of one peer pushing at once share its documents-per-second budget (more connections
    buy no faster storing); another peer has a budget of its own."""
    clock = Clock()
    hub_store = MemoryStore()
    sf = SyncFactory(hub_store, None, AllowAll(), reactor=clock, validator=accept_all, peer_id_of=peer_id_of,
                     docs_per_second=100, batch_changes=50)
    pushes = []
    for name, db in (("alice", "a1"), ("alice", "a2"), ("bob", "b1")):
        store = MemoryStore()
        fill(store, db, 300)
        cf = SyncFactory(store, None, AllowAll(), reactor=clock, validator=accept_all, peer_id_of=peer_id_of,
                         batch_changes=50)
        pair = connect_pair(cf, sf, clock, client_name=name)
        settle(pair.pump)
        pushes.append((pair, pair.client.push(db, db, live=False)))

    def stored(*dbs):
        return sum(hub_store.database(d).doc_count() for d in dbs if hub_store.has_database(d))

    alice, bob = [], []
    for _ in range(12):   # twelve simulated seconds, bounded
        for pair, _ in pushes:
            settle(pair.pump)
        alice.append(stored("a1", "a2"))
        bob.append(stored("b1"))
        clock.advance(1)
    assert all(n <= 100 + 100 * t for t, n in enumerate(alice)), alice      # one budget for both connections
    assert alice[-1] == 600 and alice[2] <= 300, alice                      # (alone each would have 600 by then)
    assert all(b >= min(300, 100 * (t + 1)) for t, b in enumerate(bob)), bob   # bob's own budget, not alice's
    for pair, _ in pushes:
        settle(pair.pump)
    clock.advance(10)
    for _ in range(3):
        for pair, _ in pushes:
            settle(pair.pump)
        clock.advance(1)
    assert stored("a1", "a2") == 600 and stored("b1") == 300
