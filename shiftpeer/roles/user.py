"""The user role's local part: the three user databases and their continuous local replication.

``user/private`` and ``user/public`` replicate into ``user/feed`` inside the process: the role listens to
store commits and copies changed documents (with their revision history and signatures) from a checkpoint,
so the feed catches up at start and then follows live.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from shiftpeer.shifts import FEED, PRIVATE, PUBLIC

#: The peer id local replications record their checkpoints under.
LOCAL_PEER = "local"
#: How many changes one pump step copies before yielding to the reactor.
BATCH = 500


class LocalReplication:
    """Copies one local database into another, from a checkpoint kept in the target, whenever it changes."""

    log = Logger()

    def __init__(self, store: Any, source: str, target: str, clock: Any, batch: int = BATCH):
        self._store = store
        self.source = source
        self.target = target
        self._clock = clock
        self._batch = batch
        self._scheduled = None
        self._unsubscribe = None
        self._running = False
        self._idle_waiters: list[Deferred] = []

    def start(self) -> None:
        """Subscribe to commits and catch up with what changed while the node was down."""
        self._running = True
        self._unsubscribe = self._store.subscribe(self._on_commit)
        self._schedule()

    def stop(self) -> None:
        """Stop following commits; a scheduled step is cancelled."""
        self._running = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        self._fire_idle()

    def nudge(self) -> None:
        """Schedule a copy step now (it does nothing when already caught up)."""
        self._schedule()

    def _on_commit(self, dbname: str, seq: int) -> None:
        if dbname == self.source:
            self._schedule()

    def _schedule(self) -> None:
        # Coalesce: many commits in one reactor turn cause one step, run outside the commit callback.
        if self._running and self._scheduled is None:
            self._scheduled = self._clock.callLater(0, self._step)

    def _checkpoint_seq(self, src: Any, dst: Any) -> int:
        cp = dst.get_checkpoint(LOCAL_PEER, self.source)
        if not cp or cp.get("epoch") != src.epoch:
            return 0  # the source was recreated: start over (copies are idempotent)
        return int(cp.get("seq", 0))

    def _step(self) -> None:
        self._scheduled = None
        if not self._running:
            return
        try:
            more = self.pump_once()
        except Exception:
            self.log.failure("local replication {source} -> {target} failed", source=self.source, target=self.target)
            return
        if more:
            self._schedule()
        else:
            self._fire_idle()

    def pump_once(self) -> bool:
        """Copy one batch of changes; True when more are waiting."""
        src = self._store.database(self.source)
        dst = self._store.database(self.target)
        since = self._checkpoint_seq(src, dst)
        changes = src.changes(since=since, limit=self._batch)
        if not changes:
            return False
        wanted = dst.revs_diff({c.id: list(c.revs) for c in changes})
        missing = [(docid, revs) for docid, revs in wanted.items() if revs]
        last = changes[-1].seq
        with self._store.write_txn() as txn:
            if missing:
                dst.bulk_replicated(src.get_repl_docs(missing), txn=txn)
            dst.set_checkpoint(LOCAL_PEER, self.source, {"seq": last, "epoch": src.epoch}, txn=txn)
        self.log.debug(
            "copied {count} docs {source} -> {target} up to seq {seq}",
            count=len(missing), source=self.source, target=self.target, seq=last,
        )
        return len(changes) >= self._batch

    def _fire_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    def when_idle(self) -> Deferred:
        """A Deferred that fires once no copy is pending (for tests and orderly shutdown)."""
        if self._scheduled is None:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle_waiters.append(d)
        return d


class UserRole(Service):
    """Holds user/private, user/public, user/feed and keeps the feed fed from the other two."""

    name = "user"
    log = Logger()
    databases = (PRIVATE, PUBLIC, FEED)
    local_flows = ((PRIVATE, FEED), (PUBLIC, FEED))

    def __init__(self, node: Any):
        self.node = node
        self.replications: list[LocalReplication] = []

    def startService(self) -> None:
        super().startService()
        store = self.node.store
        for name in self.databases:
            store.create_database(name)
        self.replications = [
            LocalReplication(store, source, target, self.node.clock) for source, target in self.local_flows
        ]
        for r in self.replications:
            r.start()
        self.log.info("user role started for {account}", account=self.node.account_id)

    def housekeeping(self) -> None:
        """Nudge every local replication, so one that stopped on an error resumes from its checkpoint."""
        for r in self.replications:
            r.nudge()

    def stopService(self) -> Deferred:
        super().stopService()
        for r in self.replications:
            r.stop()
        self.replications = []
        return succeed(None)
