"""The receiving half of a replication: a Puller takes one source database into a local one (changes ->
need -> docs -> verified -> stored with the checkpoint -> ack), several batches in flight."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from shiftpeer.sync.refusedrevs import Refused, frames, note_refused_alone, refused_revs
from shiftpeer.sync.replication import (CATCH_UP_LOG_DOCS, MAX_COMMIT_DOCS, Replication, ReplicationViolation,
                                        SyncError)

if TYPE_CHECKING:
    from shiftpeer.sync.manager import ReplicationManager

log = Logger()

#: A pull asks the next one to be ``eager`` when at least this share of the ids it was offered were missing
#: here, once it was offered at least EAGER_AFTER (Puller._note_offered).
EAGER_SHARE = 0.9
EAGER_AFTER = 100


class _Batch:
    __slots__ = ("seq", "want", "docs", "state", "marker", "refused")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.want: Optional[set] = None     # {(docid, rev)} requested
        self.docs: list = []
        self.state = "wanting"              # wanting -> verifying -> ready -> storing
        self.marker = False                 # caught_up arrived right after this batch
        self.refused: list = []             # (document, why) the validator refused on its own (left out of docs)


class Puller:
    """Receives one source database into a local one; owned by a ReplicationManager."""

    def __init__(self, mgr: "ReplicationManager", rid: int, remote_db: str, local_db: str, live: bool,
                 push: Optional[int] = None, handle: Optional[Replication] = None,
                 vis: Optional[list] = None) -> None:
        self.mgr = mgr
        #: visibility tokens that record where documents came from (a user's feed pulling ``group/<g>`` gives
        #: ``group:<g>``): added to every document stored, and to every document offered that is already
        #: here (``on_changes``), since the source holds it too; a pull we ask for, never a push
        self.vis = sorted(vis) if vis else None
        self.rid = rid
        self.remote_db = remote_db
        self.local_db = local_db
        self.live = live
        self.push = push
        self.handle = handle or Replication("pull", local_db, remote_db, live, self.stop)
        self.handle._stopper = self.stop
        self.queue: collections.deque[_Batch] = collections.deque()
        self.storing = False
        self.epoch: Optional[str] = None
        self.stopped = False
        self.db: Any = None
        self.delayed: Any = None       # a timer while the documents-per-second limit holds a batch back
        self.started: Optional[float] = None   # when start() asked for the pull (the manager's clock)
        #: ids the source offered and ids of them missing here, this pull: whether the next pull asks for the
        #: documents with the changes (``eager``, kept in the checkpoint)
        self.offered = self.missing = 0
        self.eager_next: Optional[bool] = None

    def start(self) -> None:
        store = self.mgr.store
        self.db = store.create_database(self.local_db) if not store.has_database(self.local_db) \
            else store.database(self.local_db)
        cp = self.db.get_checkpoint(self.mgr.conn.peer_id, self.remote_db) or {}
        since, epoch = cp.get("seq", 0), cp.get("epoch")
        if self.vis is not None and cp.get("vis") != self.vis:
            since, epoch = 0, None   # checkpointed without these tokens (before they were kept): compare all again
        self.handle.seq = since
        self.handle.remote_seq = since
        self.started = self.mgr.clock.seconds() if self.mgr.clock is not None else None
        self.eager_next = cp.get("eager")
        extra = {}
        if "eager" in self.mgr.conn.peer_features and (self.eager_next or self.db.update_seq() == 0):
            extra["eager"] = True
        self.mgr.conn.send("pull", rid=self.rid, db=self.remote_db, since=since, epoch=epoch, live=self.live,
                           push=self.push, **extra)

    # -- messages from the feeder
    def on_accept(self, msg: dict) -> None:
        if msg["since"] != self.handle.seq:
            log.info("{peer}: source {db} has a new epoch; comparing everything from the start",
                     peer=self.mgr.conn.peer_id, db=self.remote_db)
        self.epoch = msg["epoch"]
        self.handle.seq = msg["since"]

    def on_changes(self, msg: dict) -> None:
        batch = _Batch(msg["seq"])
        self.queue.append(batch)
        self.mgr.backlog(+1)
        ch = msg["ch"]
        missing = self.db.revs_diff({docid: revs for docid, revs in ch}) if ch else {}
        want = [[docid, revs] for docid, revs in missing.items() if revs]
        self._note_offered(len(ch), len(want))
        if self.vis is not None and len(want) < len(ch):
            self._tag_held([docid for docid, _revs in ch if not missing.get(docid)])
        inline = msg.get("docs")
        if inline is not None:
            # live or eager: the docs came with the changes; keep only the revisions missing here
            wanted = {(docid, rev) for docid, revs in want for rev in revs}
            batch.docs = [d for d in inline if (d["id"], d["rev"]) in wanted]
            # a missing revision that did not come along (a feeder that sends only some, or one twice in its
            # place): ask for those, so the checkpoint never passes them
            rest = wanted.difference([(d["id"], d["rev"]) for d in batch.docs])
            if rest:
                self._need(batch, rest)
                return
            if batch.docs:
                batch.state = "verifying"
                d = maybeDeferred(self.mgr.validator, batch.docs)
                d.addCallbacks(self._verified, self._verify_failed, callbackArgs=(batch,))
                return
        else:
            self.mgr.conn.send("need", rid=self.rid, seq=batch.seq, want=want)
            if want:
                batch.want = {(docid, rev) for docid, revs in want for rev in revs}
                return
        batch.state = "ready"
        self._advance()

    def _need(self, batch: _Batch, revs: set) -> None:
        """Ask for these (id, rev) of a batch that came with some of its documents (kept in ``batch.docs``)."""
        by_id: dict = {}
        for docid, rev in sorted(revs):
            by_id.setdefault(docid, []).append(rev)
        batch.want = set(revs)
        self.mgr.conn.send("need", rid=self.rid, seq=batch.seq, want=[[i, r] for i, r in by_id.items()])

    def _note_offered(self, offered: int, missing: int) -> None:
        """Count what a batch offered and what of it was missing here. The next pull asks for the documents
        with the changes (``eager``) when at least EAGER_SHARE of what this one was offered was missing: a
        source whose changes are nearly all new here (a hub's group or inbox feeding a user, a first sync);
        not one whose changes mostly came from elsewhere first, where the documents would travel for
        nothing. Decided once EAGER_AFTER ids were offered; before that the last pull's answer stands."""
        self.offered += offered
        self.missing += missing
        if self.offered >= EAGER_AFTER:
            self.eager_next = self.missing >= self.offered * EAGER_SHARE

    def on_docs(self, msg: dict) -> None:
        batch = next((b for b in self.queue if b.seq == msg["seq"]), None)
        if batch is None or batch.state != "wanting":
            raise ReplicationViolation("unexpected", f"docs for a batch not requested (seq {msg['seq']})", self.remote_db)
        want = batch.want
        for doc in msg["docs"]:
            if (doc["id"], doc["rev"]) not in want:
                raise ReplicationViolation("unrequested", f"document {doc['id']!r} {doc['rev']} was not requested",
                                 self.remote_db)
        batch.docs.extend(msg["docs"])
        if msg["more"]:
            return
        batch.state = "verifying"
        d = maybeDeferred(self.mgr.validator, batch.docs)
        d.addCallbacks(self._verified, self._verify_failed, callbackArgs=(batch,))

    def _tag_held(self, docids: list) -> None:
        """Give this pull's tokens to offered ids the database already holds whole (the source holds them
        too: a group shift that came first from the inbox). A job in the store's writer, queued before this
        batch's own (the writer runs jobs in order), so it commits no later than the batch's checkpoint and a
        crash tags them again; not in the reactor thread, which would wait for a commit under way. A failure
        is logged: the documents stay untagged, and a feed-answered group query leaves them out."""
        d = self.mgr.store.run_in_writer(self.db.add_vis_held, docids, self.vis)
        d.addErrback(lambda f: log.failure("{peer}: tagging {n} documents held in {db} with {vis} failed", f,
                                           peer=self.mgr.conn.peer_id, n=len(docids), db=self.local_db,
                                           vis=self.vis))

    def _verified(self, oks: list, batch: _Batch) -> None:
        if not self.stopped and self._genuine(oks, batch):
            batch.state = "ready"
            self._advance()

    def _genuine(self, oks: list, batch: _Batch) -> bool:
        """Is the batch fit to store, once the documents the validator refused on its own (a ``Refused``
        answer: a genuine signature on a revision that does not check) are left out of it? Each is logged
        naming the peer, counted, and told to the peer with the batch's ack (``_stored``): an honest relay
        may hold one, so it is not held against it, and the replication goes on. Any other failure
        (False: a forged signature) closes the connection with ``forged``, nothing from the batch stored."""
        docs = batch.docs
        if len(oks) == len(docs) and all(oks):
            return True
        if len(oks) != len(docs) or not all(ok or type(ok) is Refused for ok in oks):
            bad = [doc["id"] for doc, ok in zip(docs, oks) if not ok and type(ok) is not Refused][:5]
            self.mgr.conn.violation("forged", f"documents failed validation (a signature that does not verify, or "
                                              f"a malformed history): {bad}", self.remote_db)
            return False
        batch.docs = [doc for doc, ok in zip(docs, oks) if ok]
        for doc, why in zip(docs, oks):
            if not why:
                batch.refused.append((doc, why))
                note_refused_alone(self.mgr.counters, "sync", self.mgr.conn.peer_id, doc, why,
                                   f"{self.remote_db} into {self.local_db}")
        return True

    def _verify_failed(self, f: Failure) -> None:
        log.failure("{peer}: the validator failed", f, peer=self.mgr.conn.peer_id)
        self.mgr.conn.violation("internal", "validation failed", self.remote_db)

    def on_caught_up(self, msg: dict) -> None:
        if self.queue:
            self.queue[-1].marker = True
        else:
            self._caught_up()

    def _caught_up(self) -> None:
        if self.handle.docs >= CATCH_UP_LOG_DOCS and not self.handle.is_caught_up:
            took = self.mgr.clock.seconds() - self.started if self.started is not None else None
            log.info("caught up {local} from {remote} at {peer}: {docs} documents{how}", local=self.local_db,
                     remote=self.remote_db, peer=self.mgr.conn.peer_id, docs=f"{self.handle.docs:,}",
                     how=f" in {took:.1f} s ({self.handle.docs / took:,.0f}/s)" if took else "")
        self.handle._reach(self.handle.seq)
        if not self.live:
            self.stop()

    # -- storing, in order, several ready batches per transaction
    def _advance(self) -> None:
        if self.storing or self.stopped:
            return
        take: list[_Batch] = []
        ndocs = 0
        cap = MAX_COMMIT_DOCS if self.mgr.rate is None else min(MAX_COMMIT_DOCS, max(1, int(self.mgr.rate.rate)))
        for b in self.queue:
            if b.state != "ready" or (take and ndocs + len(b.docs) > cap):
                break
            take.append(b)
            ndocs += len(b.docs)
        if not take:
            return
        rate = self.mgr.rate
        if rate is not None and ndocs:
            wait = rate.wait(ndocs)
            if wait > 0:              # over the peer's documents-per-second: store (and ack) later
                if self.delayed is None:
                    self.delayed = self.mgr.clock.callLater(wait, self._resume_after_rate)
                return
        for b in take:
            b.state = "storing"
        self.storing = True
        docs = [doc for b in take for doc in b.docs] if len(take) > 1 else take[0].docs
        seq = take[-1].seq
        cp = {"seq": seq, "epoch": self.epoch}
        if self.vis is not None:
            cp["vis"] = self.vis
        if self.eager_next:
            cp["eager"] = True
        d = self.mgr.store_batch(self.db, docs, self.mgr.conn.peer_id, self.remote_db, cp, self.vis)
        d.addCallbacks(self._stored, self._store_failed, callbackArgs=(take, len(docs)))

    def _resume_after_rate(self) -> None:
        self.delayed = None
        self._advance()

    def _stored(self, result: Any, take: list, ndocs: int) -> None:
        self.storing = False
        self.mgr.counters["docs_in"] += ndocs
        refused = refused_revs(result)   # what store_batch's rules left out, told to the feeder before the ack
        if any(b.refused for b in take):  # and what the validator refused on its own (_genuine)
            refused = refused_revs([pair for b in take for pair in b.refused]) + refused
        if refused:
            self.mgr.counters["revs_refused"] += len(refused)
            self.handle._note_refused(refused)
        if self.stopped:        # the connection went away while storing: the checkpoint still holds
            self.handle.seq = take[-1].seq
            return
        for b in take:
            self.queue.popleft()
        self.mgr.backlog(-len(take))
        self.handle.seq = take[-1].seq
        self.handle.docs += ndocs
        if not self.stopped:
            if "refused" in self.mgr.conn.peer_features:   # a peer built before it would close on one
                for revs in frames(refused):
                    self.mgr.conn.send("refused", rid=self.rid, seq=take[-1].seq, revs=revs)
            self.mgr.conn.send("ack", rid=self.rid, seq=take[-1].seq)
        if any(b.marker for b in take):
            self._caught_up()
        self._advance()

    def _store_failed(self, f: Failure) -> None:
        self.storing = False
        if isinstance(f.value, ValueError):   # store.InvalidDocument: the peer sent a bad document
            log.warn("{peer}: refused invalid documents from {db}: {err}", peer=self.mgr.conn.peer_id,
                     db=self.remote_db, err=f.getErrorMessage())
            self.mgr.conn.violation("invalid", f"invalid document: {f.getErrorMessage()}"[:4000], self.remote_db)
            return
        log.failure("{peer}: storing a batch from {db} failed", f, peer=self.mgr.conn.peer_id, db=self.remote_db)
        self.mgr.conn.violation("store_failed", f"could not store documents: {f.getErrorMessage()}",
                                self.remote_db)

    def _cancel_delay(self) -> None:
        if self.delayed is not None and self.delayed.active():
            self.delayed.cancel()
        self.delayed = None

    def stop(self, notify: bool = True) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._cancel_delay()
        if notify:
            self.mgr.conn.send("stop", rid=self.rid, role="pull")
        self.mgr.backlog(-len(self.queue))
        self.queue.clear()
        self.mgr.pullers.pop(self.rid, None)
        self.handle._end()

    def fail(self, error: SyncError) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._cancel_delay()
        self.mgr.backlog(-len(self.queue))
        self.queue.clear()
        self.mgr.pullers.pop(self.rid, None)
        self.handle._end(error)
