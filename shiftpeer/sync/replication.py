"""Replication's parts, one connection's worth: the handle an application holds (``Replication``), the
rate limit, the limits and batch sizes, and how a received batch is stored (``default_store_batch``).
The Puller (we receive) is in ``puller``, the Feeder (we serve) in ``feeder``, the ReplicationManager that
runs both on one connection in ``manager``. Nothing here touches a socket, a reactor or the clock
directly, so the logic is testable with an in-memory store and a fake connection.

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

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from shiftpeer.sync.refusedrevs import KEEP_REFUSED, RefusedRev

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


class ReplicationViolation(Exception):
    """A peer broke the replication protocol (an unknown rid, a batch it was not asked for...): the manager
    reports it on the connection (``conn.violation``) with its code and, where known, the database."""

    def __init__(self, code: str, message: str, db: Optional[str] = None) -> None:
        super().__init__(message)
        self.code, self.message, self.db = code, message, db


def _store_fsyncs(store: Any) -> bool:
    """Does this store fsync each commit? (`Store.sync`; True for a store that does not say.)"""
    return bool(getattr(store, "sync", True))


def default_store_batch(store: Any, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict, *,
                        vis: Optional[list] = None, also: Optional[Callable[[Any], None]] = None) -> Deferred:
    """Store the docs and the checkpoint in one transaction, in the store's writer thread; ``vis``: the
    visibility tokens of a pull that records its source (``Puller.vis``), added to every document stored;
    ``also(txn)``: one more write that must commit with the batch or not at all (a hub's quota count).

    A small batch (a live change) for a store that does not fsync is written right here in the reactor
    thread, like a local edit: the write takes well under a millisecond, the two thread hops it saves
    (to the writer and back) cost more, and on a busy machine each hop is a scheduling delay."""

    def write() -> None:
        with store.write_txn() as txn:
            if docs:
                db.bulk_replicated(docs, vis=vis, txn=txn)
            db.set_checkpoint(peer_id, remote_db, cp, txn=txn)
            if also is not None:
                also(txn)

    if len(docs) <= INLINE_STORE_DOCS and not _store_fsyncs(store):
        return maybeDeferred(write)
    return store.run_in_writer(write)
