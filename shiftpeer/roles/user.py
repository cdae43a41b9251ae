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

from shiftpeer.roles.following import CommitFollower, checkpoint_since, save_checkpoint
from shiftpeer.shifts import FEED, PRIVATE, PUBLIC

#: The peer id local replications record their checkpoints under.
LOCAL_PEER = "local"
#: How many changes one pump step copies before yielding to the reactor.
BATCH = 500


class LocalReplication(CommitFollower):
    """Copies one local database into another, from a checkpoint kept in the target, whenever it changes."""

    def __init__(self, store: Any, source: str, target: str, clock: Any, batch: int = BATCH):
        super().__init__(store, clock)
        self.source = source
        self.target = target
        self._batch = batch

    def __repr__(self) -> str:
        return f"<LocalReplication {self.source} -> {self.target}>"

    def watches(self, dbname: str) -> bool:
        return dbname == self.source

    def sources(self) -> list[str]:
        return [self.source]

    def copy_once(self, source: str) -> bool:
        return self.pump_once()

    def progress(self) -> tuple[int, int]:
        """(source sequence copied, source head) for status and metrics."""
        src = self._store.database(self.source)
        return checkpoint_since(self._store.database(self.target), LOCAL_PEER, src), src.update_seq()

    def pump_once(self) -> bool:
        """Copy one batch of changes; True when more are waiting."""
        src = self._store.database(self.source)
        dst = self._store.database(self.target)
        changes = src.changes(since=checkpoint_since(dst, LOCAL_PEER, src), limit=self._batch)
        if not changes:
            return False
        wanted = dst.revs_diff({c.id: list(c.revs) for c in changes})
        missing = [(docid, revs) for docid, revs in wanted.items() if revs]
        with self._store.write_txn() as txn:
            if missing:
                dst.bulk_replicated(src.get_repl_docs(missing), txn=txn)
            save_checkpoint(dst, LOCAL_PEER, src, changes[-1].seq, txn)
        self.log.debug(
            "copied {count} docs {source} -> {target} up to seq {seq}",
            count=len(missing), source=self.source, target=self.target, seq=changes[-1].seq,
        )
        return len(changes) >= self._batch


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
