"""All replications on one connection, both directions: the ReplicationManager the protocol hands every
replication message to, which starts, routes and stops its Pullers and Feeders."""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from shiftpeer.sync.feeder import Feeder
from shiftpeer.sync.messages import MAX_BATCH
from shiftpeer.sync.puller import Puller
from shiftpeer.sync.replication import (BATCH_CHANGES, DOCS_FRAME_BYTES, MAX_FEEDERS, WINDOW, RateLimit, Replication,
                                        ReplicationViolation, SyncError, default_store_batch)

log = Logger()


class ReplicationManager:
    """All replications on one connection, both directions; the protocol's replication half."""

    def __init__(self, conn: Any, store: Any, policy: Any, validator: Callable[[list], Any],
                 counters: collections.Counter, *, window: int = WINDOW, batch_changes: int = BATCH_CHANGES,
                 store_batch: Optional[Callable[..., Deferred]] = None, backlog_high: Optional[int] = None,
                 max_batch: int = 10000, max_replications: int = MAX_FEEDERS, clock: Any = None,
                 rate: Optional[RateLimit] = None, expect: Optional[Callable[[int], Any]] = None,
                 docs_frame_bytes: int = DOCS_FRAME_BYTES) -> None:
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
        #: docs frames are split past this size (smaller under the upload cap, so a frame on its way holds
        #: back a live change or an RPC reply on this connection for about one of the cap's intervals at most)
        self.docs_frame_bytes = docs_frame_bytes
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

    def store_batch(self, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict,
                    vis: Optional[list] = None) -> Deferred:
        """The factory's ``store_batch``; ``vis`` (a pull that records its source) is passed only when set."""
        if vis:
            return maybeDeferred(self._store_batch, self.store, db, docs, peer_id, remote_db, cp, vis=vis)
        return maybeDeferred(self._store_batch, self.store, db, docs, peer_id, remote_db, cp)

    def _rid(self) -> int:
        rid, self._next_rid = self._next_rid, self._next_rid + 1
        return rid

    # -- starting replications (our side asks)
    def pull(self, remote_db: str, local_db: str, live: bool = True, vis: Optional[list] = None) -> Replication:
        p = Puller(self, self._rid(), remote_db, local_db, live, vis=vis)
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
            frame = None if len(chunk) > MAX_BATCH else self.conn.encode("docs", rid=rid, seq=seq, docs=chunk, more=more)
            if (frame is None or len(frame) > self.docs_frame_bytes) and len(chunk) > 1:
                half = len(chunk) // 2
                pending[0:0] = [chunk[:half], chunk[half:]]
                continue
            frames.append(frame)
        for frame in frames:
            self.conn.write_frame(frame, rid)

    # -- live changes
    def _ensure_subscribed(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.store.subscribe(self._on_commit)

    def _on_commit(self, dbname: str, seq: int) -> None:
        caught_up = False
        for f in list(self.feeders.values()):
            if f.name == dbname and f.live and seq > f.sent:
                caught_up = caught_up or f.caught_up_seq is not None
                f.pump()
        # A caught-up feeder's change goes to the kernel at once (sendnow): one send, and with TCP_NODELAY
        # one segment, per commit. Not while catching up (its batches follow each other anyway), nor a
        # gossip feed's announcements: at the reactor's pace a mesh sent fewer bytes and duplicate bodies.
        if caught_up and dbname not in self.lazy_feeds:
            self.conn.send_now()

    # -- incoming messages
    def handle(self, msg: dict) -> None:
        entries = msg.get("ch", msg.get("want", msg.get("docs")))
        if entries is not None and len(entries) > self.max_batch:
            self.conn.violation("limit", f"{msg['t']} with {len(entries)} entries; the limit is {self.max_batch}")
            return
        try:
            getattr(self, "_on_" + msg["t"])(msg)
        except ReplicationViolation as v:
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
            raise ReplicationViolation("duplicate", f"replication id {rid} is already in use", name)
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
        f = Feeder(self, rid, db, since, msg["live"], handle, eager=msg.get("eager", False))
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
