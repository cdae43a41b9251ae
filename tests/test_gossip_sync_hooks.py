"""The two sync-layer seams gossip uses, over in-memory TLS: lazy feeds and per-type byte counters."""

from __future__ import annotations

from twisted.internet.task import Clock

from shiftpeer.sync import AllowAll, SyncFactory
from shiftpeer.sync.testing import MemoryStore, accept_all, connect_pair, peer_id_of


def _pair():
    clock = Clock()
    src, dst = MemoryStore(), MemoryStore()
    src.create_database("master")
    make = lambda store: SyncFactory(store, None, AllowAll(), reactor=clock, roles=("full-peer",),  # noqa: E731
                                     validator=accept_all, peer_id_of=peer_id_of)
    pair = connect_pair(make(dst), make(src), clock)
    pair.pump.flush()
    return pair, src, dst


def test_a_lazy_feed_announces_filtered_changes_and_never_inlines_documents():
    """With a lazy-feed filter on the serving side, live changes carry no documents and leave out
    what the filter drops; the puller fetches the rest with need/docs."""
    pair, src, dst = _pair()
    pair.server.replications.lazy_feeds["master"] = lambda conn, db, ch: [c for c in ch if c[0] != "hidden"]
    rep = pair.client.pull("master", "master", live=True)
    pair.pump.flush()
    assert rep.is_caught_up
    src.database("master").put("shown", {"author": "a", "n": 1})
    src.database("master").put("hidden", {"author": "a", "n": 2})
    pair.pump.flush()
    held = {c.id for c in dst.database("master").changes()}
    assert held == {"shown"}
    by_type = pair.client.bytes_in_by_type
    assert by_type["docs"] > 0 and by_type["changes_docs"] == 0 and by_type["changes"] > 0
    assert rep.seq == src.database("master").update_seq()


def test_frames_are_counted_by_type_and_inline_documents_apart():
    """Every received frame's bytes are counted under its message type, live changes that carry
    documents under changes_docs, and the counts add up to bytes_in."""
    pair, src, dst = _pair()
    rep = pair.client.pull("master", "master", live=True)
    pair.pump.flush()
    src.database("master").put("live", {"author": "a", "n": 1})
    pair.pump.flush()
    assert dst.database("master").get("live") is not None and rep.is_caught_up
    by_type = pair.client.bytes_in_by_type
    assert by_type["changes_docs"] > 0 and by_type["hello"] > 0
    assert sum(by_type.values()) == pair.client.bytes_in
