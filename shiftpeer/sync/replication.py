"""Replication logic, one connection's worth: pullers (we receive) and feeders (we serve).

The protocol hands every replication message to ``ReplicationManager.handle``; the manager sends
through ``conn.send``. Nothing here touches a socket, a reactor or the clock directly, so the logic is
testable with an in-memory store and a fake connection.

Pull, from the puller's side (docs/protocol.md has the full message flow)::

    pull(since, epoch) -> accept(epoch, since)
    changes(seq, [[id, leaf revs]])  -- several in flight, up to the feeder's window
      need(seq, revs missing here)   -- revs_diff computed locally
      docs(seq, [ReplDoc])           -- only if something was missing
      (validate in a thread pool; store batches + checkpoint in one writer transaction)
      ack(seq)                       -- frees a window slot at the feeder
    caught_up(seq)                   -- then, if live, more changes as they commit

A push is the peer pulling from us: ``push`` asks it to send ``pull(..., push=rid)``.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from shiftpeer.sync.refusedrevs import KEEP_REFUSED, RefusedRev, frames, refused_revs

log = Logger()

#: Changes per ``changes`` message.
BATCH_CHANGES = 500
#: Unacknowledged ``changes`` batches a feeder lets out before it waits for acks.
WINDOW = 8
#: A feeder's first batch has at most this many changes; each next one doubles, up to BATCH_CHANGES. A small
#: pull (or the first batches of a big one) then reaches the puller sooner, and its first batch is being
#: stored while the next ones are still verified.
RAMP_FIRST = 100
#: A ``docs`` message is split when its encoded frame would pass this many bytes.
DOCS_FRAME_BYTES = 4 * 1024 * 1024
#: In live mode a changes batch of at most this many documents carries the documents themselves.
LIVE_INLINE = 16
#: Replications one peer may have us serve on one connection at once.
MAX_FEEDERS = 4096
#: At most this many documents go into one store transaction (group commit of ready batches).
MAX_COMMIT_DOCS = 5000
#: A batch this small is stored in the reactor thread when the store does not fsync (default_store_batch).
INLINE_STORE_DOCS = LIVE_INLINE
#: A pull that stored at least this many documents before it caught up says so in the log (a full peer
#: joining late, a node back after a long time offline): how many, how long, how fast.
CATCH_UP_LOG_DOCS = 100


class SyncError(Exception):
    """A replication ended with an error from the peer or from our side (``code``, ``db``)."""

    def __init__(self, code: str, message: str, db: Optional[str] = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (database {db!r})" if db else ""))
        self.code = code
        self.db = db


class _Observer:
    """A one-shot result that hands each interested party its own Deferred (no unhandled errors)."""

    def __init__(self) -> None:
        self._result: Any = None
        self._fired = False
        self._waiting: list[Deferred] = []

    def when(self) -> Deferred:
        d: Deferred = Deferred()
        if self._fired:
            d.callback(self._result) if not isinstance(self._result, Failure) else d.errback(self._result)
        else:
            self._waiting.append(d)
        return d

    @property
    def fired(self) -> bool:
        return self._fired

    def fire(self, result: Any) -> None:
        if self._fired:
            return
        self._fired, self._result = True, result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result) if not isinstance(result, Failure) else d.errback(result)


class Replication:
    """A handle on one replication on one connection: ``.caught_up``, ``.done``, ``.stop()``.

    ``caught_up`` fires (with the sequence reached) once everything the source had when we started
    is stored here (pull) or acknowledged by the peer (push); ``done`` fires when the replication
    ends (with None, or a SyncError failure). Each access returns a new Deferred.

    ``refused`` holds the latest revisions (at most KEEP_REFUSED ``RefusedRev``) the receiving side's
    rules left out: the peer's (push) or ours (pull); ``refused_count`` counts them all. Acknowledged is
    not stored: a push that reached ``caught_up`` may still have had some refused.
    """

    def __init__(self, direction: str, local_db: str, remote_db: str, live: bool, stopper: Callable[[], None]) -> None:
        self.direction = direction
        self.local_db = local_db
        self.remote_db = remote_db
        self.live = live
        self.docs = 0          # documents stored here (pull) / sent (push)
        self.seq = 0           # source sequence checkpointed (pull) / acknowledged (push)
        self.remote_seq = 0    # pull: the source's latest sequence known here (its head at accept, then each batch)
        self.is_caught_up = False
        self.refused: list[RefusedRev] = []
        self.refused_count = 0
        self._caught_up = _Observer()
        self._done = _Observer()
        self._stopper = stopper

    @property
    def caught_up(self) -> Deferred:
        return self._caught_up.when()

    @property
    def done(self) -> Deferred:
        return self._done.when()

    @property
    def finished(self) -> bool:
        return self._done.fired

    def stop(self) -> None:
        """End this replication (the connection stays up)."""
        if not self._done.fired:
            self._stopper()

    def _note_refused(self, revs: list[RefusedRev]) -> None:
        self.refused_count += len(revs)
        self.refused.extend(revs)
        del self.refused[:-KEEP_REFUSED]

    def _reach(self, seq: int) -> None:
        self.is_caught_up = True
        self._caught_up.fire(seq)

    def _end(self, error: Optional[SyncError] = None) -> None:
        if error is not None:
            self._caught_up.fire(Failure(error))
            self._done.fire(Failure(error))
        else:
            self._caught_up.fire(Failure(SyncError("stopped", "replication stopped before catching up")))
            self._done.fire(None)

    def __repr__(self) -> str:
        return f"<Replication {self.direction} {self.local_db!r}<->{self.remote_db!r} seq={self.seq}>"


class RateLimit:
    """A token bucket: ``rate`` documents a second, bursts of up to one second's worth."""

    def __init__(self, rate: float, clock: Any) -> None:
        self.rate = float(rate)
        self.clock = clock
        self.tokens = self.rate
        self.stamp = clock.seconds()

    def wait(self, n: int) -> float:
        """Seconds to wait before ``n`` documents may go (0: take them now)."""
        now = self.clock.seconds()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        need = min(n, self.rate)          # a batch bigger than a second's worth goes when the bucket is full
        if self.tokens + 1e-9 >= need:
            self.tokens -= n              # may go negative: the next batch waits for it
            return 0.0
        return (need - self.tokens) / self.rate


class _Batch:
    __slots__ = ("seq", "want", "docs", "state", "marker")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.want: Optional[set] = None     # {(docid, rev)} requested
        self.docs: list = []
        self.state = "wanting"              # wanting -> verifying -> ready -> storing
        self.marker = False                 # caught_up arrived right after this batch


class Puller:
    """Receives one source database into a local one; owned by a ReplicationManager."""

    def __init__(self, mgr: "ReplicationManager", rid: int, remote_db: str, local_db: str, live: bool,
                 push: Optional[int] = None, handle: Optional[Replication] = None) -> None:
        self.mgr = mgr
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

    def start(self) -> None:
        store = self.mgr.store
        self.db = store.create_database(self.local_db) if not store.has_database(self.local_db) \
            else store.database(self.local_db)
        cp = self.db.get_checkpoint(self.mgr.conn.peer_id, self.remote_db) or {}
        since, epoch = cp.get("seq", 0), cp.get("epoch")
        self.handle.seq = since
        self.handle.remote_seq = since
        self.started = self.mgr.clock.seconds() if self.mgr.clock is not None else None
        self.mgr.conn.send("pull", rid=self.rid, db=self.remote_db, since=since, epoch=epoch, live=self.live,
                           push=self.push)

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
        inline = msg.get("docs")
        if inline is not None:
            # live mode: the docs came with the changes; keep only the revisions missing here
            wanted = {(docid, rev) for docid, revs in want for rev in revs}
            batch.docs = [d for d in inline if (d["id"], d["rev"]) in wanted]
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

    def on_docs(self, msg: dict) -> None:
        batch = next((b for b in self.queue if b.seq == msg["seq"]), None)
        if batch is None or batch.state != "wanting":
            raise _Violation("unexpected", f"docs for a batch not requested (seq {msg['seq']})", self.remote_db)
        want = batch.want
        for doc in msg["docs"]:
            if (doc["id"], doc["rev"]) not in want:
                raise _Violation("unrequested", f"document {doc['id']!r} {doc['rev']} was not requested",
                                 self.remote_db)
        batch.docs.extend(msg["docs"])
        if msg["more"]:
            return
        batch.state = "verifying"
        d = maybeDeferred(self.mgr.validator, batch.docs)
        d.addCallbacks(self._verified, self._verify_failed, callbackArgs=(batch,))

    def _verified(self, oks: list, batch: _Batch) -> None:
        if self.stopped:
            return
        if len(oks) != len(batch.docs) or not all(oks):
            bad = [doc["id"] for doc, ok in zip(batch.docs, oks) if not ok][:5]
            self.mgr.conn.violation("forged", f"documents failed validation: {bad}", self.remote_db)
            return
        batch.state = "ready"
        self._advance()

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
        d = self.mgr.store_batch(self.db, docs, self.mgr.conn.peer_id, self.remote_db, cp)
        d.addCallbacks(self._stored, self._store_failed, callbackArgs=(take, len(docs)))

    def _resume_after_rate(self) -> None:
        self.delayed = None
        self._advance()

    def _stored(self, result: Any, take: list, ndocs: int) -> None:
        self.storing = False
        self.mgr.counters["docs_in"] += ndocs
        refused = refused_revs(result)   # what store_batch's rules left out, told to the feeder before the ack
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


class Feeder:
    """Serves one of our databases to a peer's puller, within a window of unacknowledged batches."""

    def __init__(self, mgr: "ReplicationManager", rid: int, db: Any, since: int, live: bool,
                 handle: Optional[Replication] = None) -> None:
        self.mgr = mgr
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
                else:
                    chs, docs = self.db.changes(since=self.sent, limit=self.limit), None
                if not chs:
                    if self.caught_up_seq is None:
                        self.caught_up_seq = self.sent
                        conn.send("caught_up", rid=self.rid, seq=self.sent)
                        self._check_push_caught_up()
                    break
                seq = chs[-1].seq
                ch = [[c.id, list(c.revs)] for c in chs]
                if lazy is not None:         # gossip: announce only what the peer may lack, never inline docs
                    ch = lazy(conn, self.name, ch)
                frame = None
                if docs is not None:
                    # live and small: the documents ride along, saving the need/docs round trip
                    frame = conn.encode("changes", rid=self.rid, seq=seq, ch=ch, docs=docs)
                    if len(frame) > DOCS_FRAME_BYTES:
                        frame = None
                    else:
                        # not marked answered: a puller that ignores inline docs may still send one need
                        self.mgr.counters["docs_out"] += len(docs)
                if frame is None:
                    frame = conn.encode("changes", rid=self.rid, seq=seq, ch=ch)
                conn.write_frame(frame)
                self.sent = seq
                self.unacked.append(seq)
                self.limit = min(self.limit * 2, self.mgr.batch_changes)
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
            raise _Violation("unexpected", f"need for a batch not outstanding (seq {seq})", self.name)
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
            raise _Violation("unexpected", f"refused for a batch not outstanding (seq {seq})", self.name)
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
        if self.handle is not None:
            for prid, (_, h) in list(self.mgr.pushes.items()):
                if h is self.handle:
                    del self.mgr.pushes[prid]
            self.handle._end(error)


class _Violation(Exception):
    def __init__(self, code: str, message: str, db: Optional[str] = None) -> None:
        super().__init__(message)
        self.code, self.message, self.db = code, message, db


def _store_fsyncs(store: Any) -> bool:
    """Does this store fsync each commit? (`Store.sync`; True for a store that does not say.)"""
    return bool(getattr(store, "sync", True))


def default_store_batch(store: Any, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict) -> Deferred:
    """Store the docs and the checkpoint in one transaction, in the store's writer thread.

    A small batch (a live change) for a store that does not fsync is written right here in the reactor
    thread, like a local edit: the write takes well under a millisecond, the two thread hops it saves
    (to the writer and back) cost more, and on a busy machine each hop is a scheduling delay."""

    def write() -> None:
        with store.write_txn() as txn:
            if docs:
                db.bulk_replicated(docs, txn=txn)
            db.set_checkpoint(peer_id, remote_db, cp, txn=txn)

    if len(docs) <= INLINE_STORE_DOCS and not _store_fsyncs(store):
        return maybeDeferred(write)
    return store.run_in_writer(write)


class ReplicationManager:
    """All replications on one connection, both directions; the protocol's replication half."""

    def __init__(self, conn: Any, store: Any, policy: Any, validator: Callable[[list], Any],
                 counters: collections.Counter, *, window: int = WINDOW, batch_changes: int = BATCH_CHANGES,
                 store_batch: Optional[Callable[..., Deferred]] = None, backlog_high: Optional[int] = None,
                 max_batch: int = 10000, max_replications: int = MAX_FEEDERS, clock: Any = None,
                 rate: Optional[RateLimit] = None, expect: Optional[Callable[[int], Any]] = None) -> None:
        self.conn = conn
        self.store = store
        self.policy = policy
        self.validator = validator
        self.counters = counters
        self.window = window
        self.batch_changes = batch_changes
        self._store_batch = store_batch or default_store_batch
        self.max_batch = max_batch                 # entries per changes/need/docs message from this peer
        self.max_replications = max_replications   # replications this peer may open here (pull or push)
        self.clock = clock
        self.rate = rate                           # documents per second stored from this peer
        self.expect = expect                       # expect(n): a pull is about to bring ~n changes (the
                                                   # validator may get ready: SyncFactory starts its processes)
        self.pullers: dict[int, Puller] = {}
        self.feeders: dict[int, Feeder] = {}
        self.pushes: dict[int, tuple[str, Replication]] = {}   # our push rid -> (local db, handle)
        self._next_rid = 1
        self._backlog = 0
        self._backlog_high = backlog_high if backlog_high is not None else 4 * window
        self._reading_paused = False
        self._unsubscribe: Optional[Callable[[], None]] = None
        #: per served database, filter(conn, dbname, ch) -> ch: its feeders announce the filtered changes and
        #: never carry documents inline (set by roles on a connection, e.g. gossip of ``master``)
        self.lazy_feeds: dict[str, Callable[[Any, str, list], list]] = {}

    def store_batch(self, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict) -> Deferred:
        return maybeDeferred(self._store_batch, self.store, db, docs, peer_id, remote_db, cp)

    def _rid(self) -> int:
        rid, self._next_rid = self._next_rid, self._next_rid + 1
        return rid

    # -- starting replications (our side asks)
    def pull(self, remote_db: str, local_db: str, live: bool = True) -> Replication:
        p = Puller(self, self._rid(), remote_db, local_db, live)
        self.pullers[p.rid] = p
        p.start()
        return p.handle

    def push(self, local_db: str, remote_db: str, live: bool = True) -> Replication:
        rid = self._rid()
        handle = Replication("push", local_db, remote_db, live, lambda: self._stop_push(rid))
        if not self.store.has_database(local_db):
            handle._end(SyncError("not_found", "no such local database", local_db))
            return handle
        self.pushes[rid] = (local_db, handle)
        self.conn.send("push", rid=rid, src=local_db, db=remote_db, live=live)
        return handle

    def _stop_push(self, rid: int) -> None:
        entry = self.pushes.pop(rid, None)
        if entry is None:
            return
        for f in list(self.feeders.values()):
            if f.handle is entry[1]:
                self.conn.send("stop", rid=f.rid, role="feed")
                f.end()
        entry[1]._end()

    # -- flow control
    def backlog(self, delta: int) -> None:
        """Track batches waiting to be stored; pause reading from the peer while the store is behind."""
        self._backlog += delta
        if not self._reading_paused and self._backlog > self._backlog_high:
            self._reading_paused = True
            self.conn.pause_reading()
        elif self._reading_paused and self._backlog <= self._backlog_high // 2:
            self._reading_paused = False
            self.conn.resume_reading()

    def resume(self) -> None:
        """The transport wants more: let every feeder send."""
        for f in list(self.feeders.values()):
            f.pump()

    def send_docs(self, rid: int, seq: int, docs: list) -> None:
        """Send the docs for one batch, split into several frames when they are large."""
        pending = [docs]
        frames: list[bytes] = []
        while pending:
            chunk = pending.pop(0)
            more = bool(pending)
            frame = self.conn.encode("docs", rid=rid, seq=seq, docs=chunk, more=more)
            if len(frame) > DOCS_FRAME_BYTES and len(chunk) > 1:
                half = len(chunk) // 2
                pending[0:0] = [chunk[:half], chunk[half:]]
                continue
            frames.append(frame)
        for frame in frames:
            self.conn.write_frame(frame)

    # -- live changes
    def _ensure_subscribed(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.store.subscribe(self._on_commit)

    def _on_commit(self, dbname: str, seq: int) -> None:
        for f in list(self.feeders.values()):
            if f.name == dbname and f.live and seq > f.sent:
                f.pump()

    # -- incoming messages
    def handle(self, msg: dict) -> None:
        entries = msg.get("ch", msg.get("want", msg.get("docs")))
        if entries is not None and len(entries) > self.max_batch:
            self.conn.violation("limit", f"{msg['t']} with {len(entries)} entries; the limit is {self.max_batch}")
            return
        try:
            getattr(self, "_on_" + msg["t"])(msg)
        except _Violation as v:
            self.conn.violation(v.code, v.message, v.db)

    def _puller(self, msg: dict) -> Optional[Puller]:
        return self.pullers.get(msg["rid"])   # None: a replication we already stopped; ignore

    def _feeder(self, msg: dict) -> Optional[Feeder]:
        return self.feeders.get(msg["rid"])

    def _on_accept(self, msg: dict) -> None:
        p = self._puller(msg)
        if p:
            # progress for status: the source's head (a feeder that does not send it: its `since`)
            p.handle.remote_seq = max(msg["since"], msg.get("head", 0))
            p.on_accept(msg)
            if self.expect is not None and p.handle.remote_seq > msg["since"]:
                self.expect(p.handle.remote_seq - msg["since"])

    def _on_changes(self, msg: dict) -> None:
        p = self._puller(msg)
        if p:
            p.handle.remote_seq = max(p.handle.remote_seq, msg["seq"])
            p.on_changes(msg)

    def _on_docs(self, msg: dict) -> None:
        p = self._puller(msg)
        if p:
            p.on_docs(msg)

    def _on_caught_up(self, msg: dict) -> None:
        p = self._puller(msg)
        if p:
            p.on_caught_up(msg)

    def _on_need(self, msg: dict) -> None:
        f = self._feeder(msg)
        if f:
            f.on_need(msg)

    def _on_ack(self, msg: dict) -> None:
        f = self._feeder(msg)
        if f:
            f.on_ack(msg)

    def _on_refused(self, msg: dict) -> None:
        f = self._feeder(msg)
        if f:
            f.on_refused(msg)

    def _on_stop(self, msg: dict) -> None:
        if msg["role"] == "pull":        # the peer's puller stopped: end our feeder
            f = self._feeder(msg)
            if f:
                f.end()
        else:                             # the peer's feeder (serving our puller) stopped
            p = self._puller(msg)
            if p:
                p.stop(notify=False)

    def on_error(self, msg: dict) -> None:
        """An error frame that names one of our replications ends just that replication."""
        rid = msg.get("rid")
        err = SyncError(msg["code"], msg["msg"], msg.get("db"))
        if rid in self.pullers:
            self.pullers[rid].fail(err)
        elif rid in self.pushes:
            self.pushes.pop(rid)[1]._end(err)

    def _refuse(self, rid: int, code: str, db: str, why: str) -> None:
        self.counters["refused"] += 1
        log.warn("refused {peer}: {why} {db}", peer=self.conn.peer_id, why=why, db=db)
        self.conn.send("error", code=code, msg=f"{why} {db!r}", db=db, rid=rid)

    def _on_pull(self, msg: dict) -> None:
        rid, name = msg["rid"], msg["db"]
        if rid in self.feeders:
            raise _Violation("duplicate", f"replication id {rid} is already in use", name)
        if self._peer_opened() >= self.max_replications:
            return self._refuse(rid, "limit", name, f"more than {self.max_replications} replications; refused")
        handle = None
        if msg.get("push") is not None:
            entry = self.pushes.get(msg["push"])
            if entry is None or entry[0] != name:
                return self._refuse(rid, "forbidden", name, "not pushing")
            handle = entry[1]
        elif not self.policy.may_read(self.conn.peer_id, name, self.conn):
            return self._refuse(rid, "forbidden", name, "may not read")
        if not self.store.has_database(name):
            if handle is not None:
                handle._end(SyncError("not_found", "no such database", name))
            return self._refuse(rid, "not_found", name, "no such database")
        db = self.store.database(name)
        since = msg["since"] if msg["epoch"] == db.epoch else 0
        f = Feeder(self, rid, db, since, msg["live"], handle)
        self.feeders[rid] = f
        self.conn.send("accept", rid=rid, epoch=db.epoch, since=since, head=db.update_seq())
        if msg["live"]:
            self._ensure_subscribed()
        f.pump()

    def _peer_opened(self) -> int:
        """Replications the peer opened here: the ones we serve and the pushes we pull for it."""
        return len(self.feeders) + sum(1 for p in self.pullers.values() if p.push is not None)

    def _on_push(self, msg: dict) -> None:
        rid, name = msg["rid"], msg["db"]
        if self._peer_opened() >= self.max_replications:
            return self._refuse(rid, "limit", name, f"more than {self.max_replications} replications; refused")
        if not self.policy.may_write(self.conn.peer_id, name, self.conn):
            return self._refuse(rid, "forbidden", name, "may not write")
        p = Puller(self, self._rid(), msg["src"], name, msg["live"], push=rid)
        self.pullers[p.rid] = p
        p.start()
        self.conn.pushed(p.handle)

    def recheck(self, policy: Any = None, dbname: Optional[str] = None) -> int:
        """Ask the policy again for what the peer opened here (on ``dbname``, or all); end what it refuses.

        The policy is asked when a replication starts; a live one would otherwise go on serving a group
        to someone who left it. A feeder (the peer pulls from us) ends with a forbidden error frame, a
        push the peer made into us stops. Our own pushes are our decision and are left alone.
        """
        policy = policy or self.policy
        peer_id, ended = self.conn.peer_id, 0
        for rid, feeder in list(self.feeders.items()):
            if feeder.handle is not None or (dbname is not None and feeder.name != dbname):
                continue
            if not policy.may_read(peer_id, feeder.name, self.conn):
                self.conn.send("error", code="forbidden", msg=f"access to {feeder.name!r} was revoked",
                               db=feeder.name, rid=rid)
                feeder.end()
                ended += 1
        for puller in list(self.pullers.values()):
            if puller.push is None or (dbname is not None and puller.local_db != dbname):
                continue
            if not policy.may_write(peer_id, puller.local_db, self.conn):
                puller.stop()
                ended += 1
        return ended

    def connection_lost(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        err = SyncError("disconnected", "the connection was lost")
        for p in list(self.pullers.values()):
            p.fail(err)
        for f in list(self.feeders.values()):
            f.end(err)
        for _, handle in self.pushes.values():
            handle._end(err)
        self.pushes.clear()

