"""The serving half of a replication: a Feeder sends one local database's changes to a peer's puller,
a window of batches at a time, then (live) each commit as it happens."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Optional

from twisted.logger import Logger

from shiftpeer.sync.messages import MAX_BATCH
from shiftpeer.sync.refusedrevs import RefusedRev
from shiftpeer.sync.replication import LIVE_INLINE, RAMP_FIRST, Replication, ReplicationViolation, SyncError

if TYPE_CHECKING:
    from shiftpeer.sync.manager import ReplicationManager

log = Logger()


class Feeder:
    """Serves one of our databases to a peer's puller, within a window of unacknowledged batches."""

    def __init__(self, mgr: "ReplicationManager", rid: int, db: Any, since: int, live: bool,
                 handle: Optional[Replication] = None, eager: bool = False) -> None:
        self.mgr = mgr
        #: the puller asked for each catch-up batch's documents with its changes (it expects to lack nearly all
        #: of them: its database is empty, or the last pull found so): one scan of the log reads both, and the
        #: need/docs round trip goes (docs/protocol.md section 5)
        self.eager = eager
        self.rid = rid
        self.db = db
        self.name = db.name
        self.sent = since
        self.live = live
        self.unacked: collections.deque[int] = collections.deque()
        self.answered: set[int] = set()
        self.caught_up_seq: Optional[int] = None
        self.stopped = False
        self.pumping = False
        self.handle = handle    # set for a push we asked for
        if handle is not None:  # a resumed push: the peer's checkpoint says it already holds everything to `since`
            handle.seq = max(handle.seq, since)
        self.limit = min(RAMP_FIRST, mgr.batch_changes)   # changes in the next batch (ramps up)

    def pump(self) -> None:
        """Send changes while the window and the transport allow."""
        if self.pumping or self.stopped:
            return
        self.pumping = True
        try:
            conn = self.mgr.conn
            lazy = self.mgr.lazy_feeds.get(self.name)
            while not self.stopped and not conn.paused and len(self.unacked) < self.mgr.window:
                if lazy is None and self.caught_up_seq is not None:
                    # live: a small batch's documents ride along, read in the same scan as its changes
                    chs, docs = self.db.changes_with_docs(since=self.sent, limit=self.limit,
                                                          docs_up_to=LIVE_INLINE)
                elif lazy is None and self.eager:
                    # catching up a puller that asked for them: every batch's documents ride along
                    chs, docs = self.db.changes_with_docs(since=self.sent, limit=self.limit)
                else:
                    chs, docs = self.db.changes(since=self.sent, limit=self.limit), None
                if not chs:
                    if self.caught_up_seq is None:
                        self.caught_up_seq = self.sent
                        conn.write_frame(conn.encode("caught_up", rid=self.rid, seq=self.sent), self.rid)
                        self._check_push_caught_up()
                    break
                seq = chs[-1].seq
                ch = [[c.id, list(c.revs)] for c in chs]
                if lazy is not None:         # gossip: announce only what the peer may lack, never inline docs
                    ch = lazy(conn, self.name, ch)
                frame = None
                if docs is not None and len(docs) <= MAX_BATCH:
                    # live and small, or eager: the documents ride along, saving the need/docs round trip
                    frame = conn.encode("changes", rid=self.rid, seq=seq, ch=ch, docs=docs)
                    if len(frame) > self.mgr.docs_frame_bytes:
                        frame = None   # too large for one frame (or the upload cap's slices): need, then docs
                    else:
                        # not marked answered: a puller that ignores inline docs may still send one need
                        self.mgr.counters["docs_out"] += len(docs)
                        if self.handle is not None:
                            self.handle.docs += len(docs)
                # a catch-up batch with its documents, sent while the puller has nothing of ours in hand
                # (a pull's first, or one after the window drained), leaves now, not behind the rest of
                # the window (~10 ms in a traced 1,000-document increment); with batches in flight the
                # puller is busy anyway, and sending each at once cost the source ~15% more CPU a document
                hurry = frame is not None and self.caught_up_seq is None and not self.unacked
                if frame is None:
                    frame = conn.encode("changes", rid=self.rid, seq=seq, ch=ch)
                conn.write_frame(frame, self.rid)
                self.sent = seq
                self.unacked.append(seq)
                self.limit = min(self.limit * 2, self.mgr.batch_changes)
                if hurry:
                    conn.send_now(queued=True)
        except Exception:
            log.failure("feeding {db} to {peer} failed", db=self.name, peer=self.mgr.conn.peer_id)
            self.mgr.conn.send("error", code="internal", msg="the source failed", db=self.name, rid=self.rid)
            self.end(SyncError("internal", "the source failed", self.name))
        finally:
            self.pumping = False

    def on_need(self, msg: dict) -> None:
        # only batches we sent and have not answered: a peer cannot make us read or buffer more
        seq = msg["seq"]
        if seq not in self.unacked or seq in self.answered:
            raise ReplicationViolation("unexpected", f"need for a batch not outstanding (seq {seq})", self.name)
        self.answered.add(seq)
        want = msg["want"]
        if not want:
            return
        docs = self.db.get_repl_docs([(docid, revs) for docid, revs in want], raw_bodies=True)
        self.mgr.counters["docs_out"] += len(docs)
        if self.handle is not None:
            self.handle.docs += len(docs)
        self.mgr.send_docs(self.rid, msg["seq"], docs)

    def on_ack(self, msg: dict) -> None:
        seq = msg["seq"]
        while self.unacked and self.unacked[0] <= seq:
            self.answered.discard(self.unacked.popleft())
        if self.handle is not None:
            self.handle.seq = max(self.handle.seq, seq)
            self._check_push_caught_up()
        self.pump()

    def on_refused(self, msg: dict) -> None:
        """The peer's rules left these revisions of batches up to ``seq`` out (its ack follows): log each,
        count them, keep them on our push's handle."""
        seq = msg["seq"]
        if seq not in self.unacked:
            raise ReplicationViolation("unexpected", f"refused for a batch not outstanding (seq {seq})", self.name)
        revs = [RefusedRev(*e) for e in msg["revs"]]
        self.mgr.counters["revs_refused_by_peer"] += len(revs)
        peer, handle = self.mgr.conn.peer_id, self.handle
        where = f"pushed from {self.name} into its {handle.remote_db}" if handle is not None \
            else f"it pulled from {self.name}"
        for r in revs:
            log.warn("{peer} refused {doc} {rev} {where}: {code}: {reason}", peer=peer, doc=r.docid, rev=r.rev,
                     where=where, code=r.code, reason=r.reason)
        if handle is not None:
            handle._note_refused(revs)

    def _check_push_caught_up(self) -> None:
        if (self.handle is not None and self.caught_up_seq is not None and not self.unacked):
            self.handle.seq = max(self.handle.seq, self.caught_up_seq)
            self.handle._reach(self.caught_up_seq)

    def end(self, error: Optional[SyncError] = None) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.mgr.feeders.pop(self.rid, None)
        self.mgr.conn.drop_lane(self.rid)
        if self.handle is not None:
            for prid, (_, h) in list(self.mgr.pushes.items()):
                if h is self.handle:
                    del self.mgr.pushes[prid]
            self.handle._end(error)
