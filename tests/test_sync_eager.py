"""Eager pulls: a puller that expects to lack nearly everything a source offers (its database is empty, or its
last pull from that source found so) asks for each catch-up batch's documents with its changes, and the
need/docs round trip goes. Over in-memory TLS (iosim) with a Clock, real protocol on both sides."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from shiftpeer.sync import AllowAll, SyncFactory, messages
from shiftpeer.sync.testing import MemoryStore, accept_all, connect_pair, peer_id_of


def make_factory(clock, store, **kw):
    return SyncFactory(store, None, AllowAll(), reactor=clock, roles=("user",), validator=accept_all,
                       peer_id_of=peer_id_of, **kw)


def fill(db, start, n, size=10):
    for i in range(start, start + n):
        db.put(f"d{i}", {"n": i, "author": "x", "text": "x" * size})


class Env:
    """A client node pulling from a server node; `sent` records what the client's side sent."""

    def __init__(self, server_features=messages.FEATURES, **kw):
        self.clock = Clock()
        self.cstore, self.sstore = MemoryStore(), MemoryStore()
        self.cf = make_factory(self.clock, self.cstore, **kw)
        self.sf = make_factory(self.clock, self.sstore, features=server_features, **kw)
        pair = connect_pair(self.cf, self.sf, self.clock)
        self.c, self.s, self.pump = pair.client, pair.server, pair.pump
        self.settle()
        self.sent: list[dict] = []
        send = self.c.send

        def recording(t, **fields):
            self.sent.append({"t": t, **fields})
            return send(t, **fields)

        self.c.send = recording

    def settle(self, n=500):
        for _ in range(n):
            if not self.pump.pump():
                break

    def pull(self, remote, local):
        """One one-shot pull to its end; the messages the client sent for it."""
        before = len(self.sent)
        rep = self.c.pull(remote, local, live=False)
        done = []
        rep.caught_up.addBoth(done.append)
        self.settle()
        assert done == [self.sstore.database(remote).update_seq()], done
        return self.sent[before:]

    def docs_sent_by_server(self):
        return self.s.replications.counters["docs_out"]


def kinds(sent):
    return [m["t"] for m in sent]


def test_a_pull_into_an_empty_database_takes_the_documents_with_the_changes():
    """No `need` goes out and every document arrives, with its checkpoint, which remembers to be eager."""
    env = Env(window=2, batch_changes=7)
    src = env.sstore.create_database("master")
    fill(src, 0, 120)
    src.put("d0", {"n": "edited", "author": "x"}, parent=src.get("d0").rev)
    sent = env.pull("master", "feed")
    assert sent[0]["t"] == "pull" and sent[0].get("eager") is True
    assert "need" not in kinds(sent)
    dst = env.cstore.database("feed")
    assert dst.snapshot() == src.snapshot()
    assert dst.get_checkpoint("server", "master") == {"seq": src.update_seq(), "epoch": src.epoch, "eager": True}
    assert env.docs_sent_by_server() == 120


def test_the_next_pull_from_a_source_whose_changes_were_all_new_is_eager_too():
    """The checkpoint's `eager` makes the next pull (into a database no longer empty) skip the round trip."""
    env = Env(window=2, batch_changes=50)
    src = env.sstore.create_database("master")
    fill(src, 0, 150)
    env.pull("master", "feed")
    fill(src, 150, 20)
    sent = env.pull("master", "feed")
    assert sent[0].get("eager") is True and "need" not in kinds(sent)
    assert env.cstore.database("feed").snapshot() == src.snapshot()


def test_a_source_whose_documents_are_already_here_is_asked_with_need():
    """A pull into a database that holds what the source offers (it came from elsewhere first) is not eager:
    the documents do not travel again, and the checkpoint does not ask for it next time."""
    env = Env(window=2, batch_changes=50)
    a, b = env.sstore.create_database("a"), env.sstore.create_database("b")
    fill(a, 0, 150)
    fill(b, 0, 150)   # the same edits: the same revisions
    env.pull("a", "feed")
    assert env.docs_sent_by_server() == 150
    sent = env.pull("b", "feed")
    assert "eager" not in sent[0] and "need" in kinds(sent)
    assert env.docs_sent_by_server() == 150      # none of b's 150 sent again
    assert "eager" not in env.cstore.database("feed").get_checkpoint("server", "b")


def test_a_pull_that_found_most_offered_documents_here_stops_being_eager():
    """The last pull's share decides: a source remembered as eager whose next changes were mostly held here
    (they arrived from another source first) loses its `eager` in the checkpoint."""
    env = Env(window=2, batch_changes=50)
    a, b = env.sstore.create_database("a"), env.sstore.create_database("b")
    fill(a, 0, 150)
    env.pull("a", "feed")
    assert env.cstore.database("feed").get_checkpoint("server", "a")["eager"] is True
    fill(b, 150, 150)
    fill(a, 150, 150)       # the same 150 new edits in both sources
    env.pull("b", "feed")   # they come from b first
    sent = env.pull("a", "feed")
    assert sent[0].get("eager") is True          # asked, as remembered
    assert "eager" not in env.cstore.database("feed").get_checkpoint("server", "a")
    sent = env.pull("a", "feed")
    assert "eager" not in sent[0]


def test_a_peer_built_before_eager_pulls_are_not_asked_for_one():
    """A feeder that did not name the feature in its hello would take the field as a protocol violation: it is
    not sent, and the pull goes the need/docs way."""
    env = Env(server_features=("refused", "row_parents"), window=2, batch_changes=7)
    src = env.sstore.create_database("master")
    fill(src, 0, 30)
    sent = env.pull("master", "feed")
    assert "eager" not in sent[0] and "need" in kinds(sent)
    assert env.cstore.database("feed").snapshot() == src.snapshot()


def test_a_batch_too_large_for_one_frame_goes_by_need_and_split_docs(monkeypatch):
    """An eager batch whose frame would pass the docs frame size (the upload cap's slices, or documents near
    the size limit) is sent as changes alone, and the documents follow the need in split frames."""
    import shiftpeer.sync.protocol as protocol

    monkeypatch.setattr(protocol, "DOCS_FRAME_BYTES", 4000)
    env = Env(window=2, batch_changes=10)
    src = env.sstore.create_database("master")
    fill(src, 0, 20, size=1000)
    sent = env.pull("master", "feed")
    assert sent[0].get("eager") is True and "need" in kinds(sent)
    assert env.cstore.database("feed").snapshot() == src.snapshot()


@pytest.mark.parametrize("value", [1, "yes", None])
def test_a_pull_whose_eager_is_not_a_bool_is_refused(value):
    """The field is checked like every other: a malformed pull is a protocol error, not a guess."""
    with pytest.raises(messages.ProtocolError):
        messages.validate({"t": "pull", "rid": 1, "db": "master", "since": 0, "epoch": None, "live": False,
                           "eager": value})


def recording_manager():
    import collections

    from shiftpeer.sync.manager import ReplicationManager
    from shiftpeer.sync.testing import RecordingConnection

    store, conn = MemoryStore(), RecordingConnection(features=messages.FEATURES)
    mgr = ReplicationManager(conn, store, AllowAll(), accept_all, collections.Counter(), window=2, batch_changes=10)
    return store, conn, mgr


def test_a_missing_revision_that_did_not_come_along_is_asked_for_and_stored_before_the_checkpoint():
    """A changes batch whose documents came along only in part (a feeder that sends some) gets a `need` for
    the rest, and its checkpoint is written only once they are stored: nothing the batch listed is skipped."""
    source = MemoryStore().create_database("master")
    fill(source, 0, 3)
    docs = source.get_repl_docs([(f"d{i}", [source.get(f"d{i}").rev]) for i in range(3)])
    store, conn, mgr = recording_manager()
    rep = mgr.pull("master", "feed", live=False)
    assert conn.sent[-1]["t"] == "pull" and conn.sent[-1]["eager"] is True
    mgr.handle({"t": "accept", "rid": 1, "epoch": source.epoch, "since": 0, "head": 3})
    ch = [[d["id"], [d["rev"]]] for d in docs]
    mgr.handle({"t": "changes", "rid": 1, "seq": 3, "ch": ch, "docs": docs[:2] + docs[:1]})   # d0 twice, no d2
    need = [m for m in conn.sent if m["t"] == "need"]
    assert need == [{"t": "need", "rid": 1, "seq": 3, "want": [["d2", [docs[2]["rev"]]]]}]
    feed = store.database("feed")
    assert feed.get_checkpoint("peer", "master") is None and not [m for m in conn.sent if m["t"] == "ack"]
    mgr.handle({"t": "docs", "rid": 1, "seq": 3, "docs": docs[2:], "more": False})
    assert [feed.get(f"d{i}").rev for i in range(3)] == [d["rev"] for d in docs]
    assert feed.get_checkpoint("peer", "master")["seq"] == 3 and rep.seq == 3


def test_docs_for_one_batch_are_split_below_the_entries_a_message_may_hold():
    """A batch's documents (many leaves of many ids) are sent in frames of at most MAX_BATCH entries each, which
    the receiving side's schema refuses past: never one frame it would close the connection on."""
    store, conn, mgr = recording_manager()
    docs = [{"id": f"x{i}", "rev": "1-a", "deleted": False, "body": {}, "sig": None, "history": ["1-a"]}
            for i in range(messages.MAX_BATCH + 5)]
    mgr.send_docs(7, 1, docs)
    frames = [m for m in conn.sent if m["t"] == "docs"]
    assert len(frames) == 2 and all(len(f["docs"]) <= messages.MAX_BATCH for f in frames)
    assert [d["id"] for f in frames for d in f["docs"]] == [d["id"] for d in docs]
    assert [f["more"] for f in frames] == [True, False]
