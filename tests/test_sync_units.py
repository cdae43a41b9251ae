"""Unit tests without a reactor: framing, the message schemas, feeder flow control."""

from __future__ import annotations

import collections
import struct

import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from shiftpeer.sync import messages
from shiftpeer.sync.framing import FrameDecoder, FrameTooLarge, encode_frame
from shiftpeer.sync.messages import ProtocolError
from shiftpeer.sync.manager import ReplicationManager
from shiftpeer.sync.testing import MemoryStore, RecordingConnection, accept_all


@given(st.lists(st.binary(max_size=300), max_size=20), st.data())
def test_frames_survive_any_split(payloads, data):
    """Frames fed in arbitrary chunks come out whole and in order."""
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec, out, prev = FrameDecoder(1000), [], 0
    for cut in cuts + [len(stream)]:
        out += dec.feed(stream[prev:cut])
        prev = cut
    assert out == payloads and dec.buffered == 0


def test_prefix_over_limit_raises_before_buffering():
    """A length prefix over the limit raises at once, with nothing of the body buffered."""
    dec = FrameDecoder(100)
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack(">I", 101))
    assert dec.buffered == 0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_decode_any_bytes_is_a_message_or_protocol_error(data):
    """Arbitrary bytes decode to a validated message or raise ProtocolError, never anything else."""
    try:
        msg = messages.decode(data)
    except ProtocolError:
        return
    assert msg["t"] in messages.SCHEMAS


json_like = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=5),
                         lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                         max_leaves=10)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(messages.SCHEMAS)), st.dictionaries(st.text(max_size=8), json_like, max_size=6))
def test_random_fields_are_validated(t, fields):
    """A message with random fields either validates or raises ProtocolError."""
    try:
        messages.validate({**fields, "t": t})
    except ProtocolError:
        pass


def test_every_message_type_round_trips():
    """encode() output decodes back to the same message for a valid example of each type."""
    doc = {"id": "a", "rev": "1-ab", "deleted": False, "body": {"x": 1}, "sig": b"s", "history": ["1-ab"]}
    examples = [("hello", dict(v=1, roles=["hub"], maxf=10)), ("error", dict(code="x", msg="y", db=None, rid=3)),
                ("call", dict(id=1, method="m", args={})), ("result", dict(id=1, ok=True, value=[1])),
                ("pull", dict(rid=1, db="d", since=0, epoch=None, live=True)), ("accept", dict(rid=1, epoch="e", since=0)),
                ("changes", dict(rid=1, seq=5, ch=[["a", ["1-ab"]]])), ("need", dict(rid=1, seq=5, want=[])),
                ("docs", dict(rid=1, seq=5, docs=[doc], more=False)), ("ack", dict(rid=1, seq=5)),
                ("refused", dict(rid=1, seq=5, revs=[["a", "1-ab", "audience", "the audience does not name x"]])),
                ("caught_up", dict(rid=1, seq=5)), ("push", dict(rid=1, src="a", db="b", live=False)),
                ("stop", dict(rid=1, role="pull"))]
    assert {t for t, _ in examples} == set(messages.SCHEMAS)
    for t, fields in examples:
        assert messages.decode(messages.encode(t, **fields)[4:]) == {**fields, "t": t}


def test_docs_with_mismatched_history_are_refused():
    """A document whose history does not start with its rev fails validation."""
    doc = {"id": "a", "rev": "2-ab", "deleted": False, "body": {}, "sig": None, "history": ["1-ab"]}
    with pytest.raises(ProtocolError):
        messages.validate({"t": "docs", "rid": 1, "seq": 1, "docs": [doc], "more": False})


def feeder_setup(window=2, batch=3, n=20):
    store = MemoryStore()
    db = store.create_database("src")
    for i in range(n):
        db.put(f"d{i}", {"i": i})
    conn = RecordingConnection()
    mgr = ReplicationManager(conn, store, __import__("shiftpeer.sync", fromlist=["AllowAll"]).AllowAll(),
                             accept_all, collections.Counter(), window=window, batch_changes=batch)
    return store, conn, mgr


def test_feeder_respects_window_and_transport_pause():
    """A feeder sends at most WINDOW unacked batches, nothing while paused, and more after acks/resume."""
    store, conn, mgr = feeder_setup()
    mgr.handle({"t": "pull", "rid": 7, "db": "src", "since": 0, "epoch": None, "live": True})
    changes = [m for m in conn.sent if m["t"] == "changes"]
    assert len(changes) == 2
    conn.paused = True
    mgr.handle({"t": "ack", "rid": 7, "seq": changes[0]["seq"]})
    assert len([m for m in conn.sent if m["t"] == "changes"]) == 2
    conn.paused = False
    mgr.resume()
    assert len([m for m in conn.sent if m["t"] == "changes"]) == 3


def test_puller_pauses_reading_when_the_store_is_behind():
    """When stored batches lag far behind received ones, the connection stops reading."""
    store, conn, mgr = feeder_setup()
    from twisted.internet.defer import Deferred
    pending = []
    mgr._store_batch = lambda *a: pending.append(Deferred()) or pending[-1]
    mgr._backlog_high = 3
    rep = mgr.pull("remote", "local", live=True)
    for seq in range(1, 6):
        mgr.handle({"t": "changes", "rid": 1, "seq": seq, "ch": []})
    assert conn.reading_paused
    while any(not d.called for d in pending):
        next(d for d in pending if not d.called).callback(None)
    assert not conn.reading_paused and rep.seq == 5


def test_need_for_a_batch_never_sent_is_a_violation():
    """A peer asking for docs of a batch we did not send (or twice) is refused, so it cannot make us buffer."""
    store, conn, mgr = feeder_setup()
    mgr.handle({"t": "pull", "rid": 7, "db": "src", "since": 0, "epoch": None, "live": True})
    seq = [m for m in conn.sent if m["t"] == "changes"][0]["seq"]
    mgr.handle({"t": "need", "rid": 7, "seq": seq, "want": [["d0", [store.database("src").get("d0").rev]]]})
    assert [m for m in conn.sent if m["t"] == "docs"]
    mgr.handle({"t": "need", "rid": 7, "seq": seq, "want": []})
    mgr.handle({"t": "need", "rid": 7, "seq": 999, "want": []})
    assert [m["code"] for m in conn.sent if m["t"] == "violation"] == ["unexpected", "unexpected"]


@pytest.mark.parametrize("t,field", [("changes", "ch"), ("need", "want")])
def test_changes_and_need_entries_are_checked(t, field):
    """changes/need entries must be [docid, [rev, ...]] with 1..MAX_REVS revisions and strings within bounds."""
    def check(entries):
        return messages.validate({"t": t, "rid": 1, "seq": 2, field: entries})

    assert check([["a", ["1-ab", "2-cd"]], ["b", ["1-ef"]]])
    assert check([])
    bad = [[["a", []]], [["a"]], [("a", ["1-ab"])], [["a", "1-ab"]], [["a", [1]]], [[1, ["1-ab"]]],
           [["a" * (messages.MAX_ID + 1), ["1-ab"]]], [["a", ["r" * (messages.MAX_REV + 1)]]],
           [["a", ["1-ab"] * (messages.MAX_REVS + 1)]], [["a", ["1-ab"]]] * (messages.MAX_BATCH + 1), "x"]
    for entries in bad:
        with pytest.raises(ProtocolError):
            check(entries)
