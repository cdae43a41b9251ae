"""Lazy pulls: one body request per revision across all the pullers of a local database.

Every gossip neighbour announces the same revisions (``changes``: ids and revisions, cheap); only one
of them should be asked for the body. ``InFlight`` is the registry a node keeps per local database,
shared by every ``GossipPuller`` writing into it:

* the first puller whose ``changes`` name a missing revision *claims* it and asks its feeder for it
  (the eager link, as in an epidemic broadcast tree);
* a puller whose batch names a revision claimed by another puller does not send its ``need`` yet:
  it waits until the owner has the body *verified* (then it borrows the verified document and stores
  it with its own batch, so no puller's storage ever waits for another's), or the owner *released* it
  (its connection failed: the waiter claims and asks its own feeder), or the owner is *late*: its
  ``need`` went out ``patience`` ago (``timeout`` seconds, longer on a loaded node) and the body has
  not arrived. Then the batch asks its own feeder too, the late owner gets a strike. Patience runs
  from the owner's request, not from the waiting batch's arrival: a batch that waited for one owner
  must not give up on another that asked a moment ago (under load most "timeouts" were such fetches,
  answered a few hundred ms later). A batch still waits at most ``MAX_WAIT`` patiences from its
  arrival, so a neighbour that withholds a body costs a bounded delay;
* once stored, the claim is dropped (``revs_diff`` now says the revision is here).

Claims are taken only when a ``need`` is sent, and a waiting batch holds no claim, so no cycle of
waiting batches can form. ``Seen`` remembers, per neighbour, the revisions it announced or sent us,
so we do not announce them back (``announce_filter``).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterable, Optional

from twisted.logger import Logger

from shiftpeer.sync.puller import Puller, _Batch

log = Logger()

#: Seconds another puller's request may take (need sent -> body verified) before we ask our own feeder.
LAZY_TIMEOUT = 2.0
#: A waiting batch asks for everything still missing at the latest this many patiences after it arrived
#: (revisions claimed by others while it waited each get their own patience, up to this bound).
MAX_WAIT = 2.0
#: A timer may fire a rounding error before the deadline it was set for: it still counts as reached.
_SLACK = 1e-6
#: Revisions remembered per neighbour for announce suppression.
SEEN_PER_PEER = 20_000

Key = tuple  # (docid, rev)


class _Entry:
    __slots__ = ("owner", "asked", "doc", "waiters")

    def __init__(self, owner: Any, asked: float) -> None:
        self.owner = owner
        self.asked = asked          # when the owner's need went out (its patience runs from here)
        self.doc: Optional[dict] = None
        self.waiters: list[Callable[[], None]] = []


class InFlight:
    """Which revisions of one local database are being fetched, by which puller; see the module doc."""

    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}
        self.counters: collections.Counter = collections.Counter()
        self.latency = 0.0      # moving average of need -> verified, seconds

    def observe(self, seconds: float) -> None:
        """Record how long one body request took (need sent -> documents verified)."""
        self.latency = seconds if not self.latency else 0.9 * self.latency + 0.1 * seconds

    def patience(self, base: float) -> float:
        """How long a waiting batch waits: ``base``, or four times the usual latency when the node is
        loaded (so a busy machine does not turn every wait into a duplicate request), at most 60 s."""
        return min(60.0, max(base, 4 * self.latency))

    def __len__(self) -> int:
        return len(self._entries)

    def owner(self, key: Key) -> Any:
        entry = self._entries.get(key)
        return None if entry is None else entry.owner

    def state(self, key: Key) -> Optional[_Entry]:
        return self._entries.get(key)

    def claim(self, key: Key, owner: Any, at: float) -> bool:
        """Claim ``key`` for ``owner``, whose need goes out at ``at`` (the clock's seconds: waiters' patience
        runs from it); False when someone else holds it."""
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = _Entry(owner, at)
            return True
        return entry.owner is owner

    def wait(self, key: Key, waiter: Callable[[], None]) -> None:
        """Call ``waiter()`` once when ``key`` changes state (verified, released or stored)."""
        entry = self._entries.get(key)
        if entry is None:
            waiter()
        else:
            entry.waiters.append(waiter)

    def verified(self, owner: Any, docs: Iterable[dict]) -> None:
        """The owner holds these bodies, verified: waiters may borrow them."""
        for doc in docs:
            entry = self._entries.get((doc["id"], doc["rev"]))
            if entry is not None and entry.owner is owner and entry.doc is None:
                entry.doc = doc
                self._wake(entry)

    def done(self, owner: Any, keys: Iterable[Key]) -> None:
        """The owner stored these revisions (or found it does not need them): drop the claims."""
        self._drop(owner, keys)

    def release(self, owner: Any, keys: Iterable[Key]) -> None:
        """The owner cannot deliver (its connection failed): waiters ask their own feeders."""
        self.counters["released"] += self._drop(owner, keys)

    def _drop(self, owner: Any, keys: Iterable[Key]) -> int:
        n = 0
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry.owner is owner:
                del self._entries[key]
                self._wake(entry)
                n += 1
        return n

    @staticmethod
    def _wake(entry: _Entry) -> None:
        waiters, entry.waiters = entry.waiters, []
        for w in waiters:
            w()


class Seen:
    """Per neighbour, the revisions it is known to hold (it announced or sent them): not announced back.

    Only the most recent ``limit`` per neighbour are kept (announcements that matter are live ones),
    as 64-bit hashes of (docid, rev), so eight neighbours cost a few megabytes.
    """

    def __init__(self, limit: int = SEEN_PER_PEER) -> None:
        self._limit = limit
        self._by_peer: dict[str, collections.OrderedDict] = {}

    def note(self, peer_id: str, pairs: Iterable[tuple]) -> None:
        """``pairs``: (docid, [rev, ...]) the peer holds."""
        seen = self._by_peer.setdefault(peer_id, collections.OrderedDict())
        for docid, revs in pairs:
            for rev in revs:
                seen[hash((docid, rev))] = None
        while len(seen) > self._limit:
            seen.popitem(last=False)

    def has(self, peer_id: str, docid: str, revs: Iterable[str]) -> bool:
        seen = self._by_peer.get(peer_id)
        return seen is not None and all(hash((docid, rev)) in seen for rev in revs)

    def forget(self, peer_id: str) -> None:
        self._by_peer.pop(peer_id, None)

    def announce_filter(self, conn: Any, dbname: str, ch: list) -> list:
        """The feeder's hook: leave out changes whose leaf revisions the puller already holds."""
        peer = conn.peer_id
        if peer not in self._by_peer:
            return ch
        return [c for c in ch if not self.has(peer, c[0], c[1])]


class GossipPuller(Puller):
    """A Puller that asks for a body only when no other puller of the same database is fetching it.

    ``on_strike(peer_id, why)`` hears of a neighbour that was too slow ("slow") or that delivered what
    it was asked for ("delivered"); ``on_bad_revision(n)`` of ``n`` genuinely signed documents of a batch
    refused on their own for their revision (the gossip's status counts them); the rest of the state machine
    (window, in-order group commit, checkpoints, validation) is the ordinary Puller's.
    """

    def __init__(self, mgr: Any, rid: int, remote_db: str, local_db: str, live: bool, *,
                 inflight: InFlight, seen: Optional[Seen] = None, clock: Any,
                 timeout: float = LAZY_TIMEOUT, on_strike: Optional[Callable[[str, str], None]] = None,
                 lazy: bool = True, flood: bool = False,
                 on_bad_revision: Optional[Callable[[int], None]] = None) -> None:
        super().__init__(mgr, rid, remote_db, local_db, live)
        self.on_bad_revision = on_bad_revision
        self.inflight = inflight
        self.seen = seen
        self.clock = clock
        self.timeout = timeout
        self.on_strike = on_strike
        self.lazy = lazy
        self.flood = flood           # benchmark only: ask for every announced revision (naive flooding)
        self.owned: set[Key] = set()
        self._timers: dict[int, Any] = {}
        self._pending: dict[int, list] = {}     # batch seq -> its changes, while its need waits
        self._asked: dict[int, float] = {}      # batch seq -> when its need was sent
        self._wakes: dict[int, list] = {}       # batch seq -> its live wake-up's "fired" flag

    @property
    def peer_id(self) -> str:
        return self.mgr.conn.peer_id

    # -- changes: decide what to ask for now, what to borrow, what to wait for
    def on_changes(self, msg: dict) -> None:
        if msg.get("docs") is not None:
            # the feeder pushed the bodies along (a live batch from a feeder not told to be lazy): use them
            if self.seen is not None:
                self.seen.note(self.peer_id, msg["ch"])
            super().on_changes(msg)
            return
        batch = _Batch(msg["seq"])
        batch.state = "deferred"
        self.queue.append(batch)
        self.mgr.backlog(+1)
        ch = msg["ch"]
        if self.seen is not None and ch:
            self.seen.note(self.peer_id, ch)
        self._pending[batch.seq] = ch
        self._try(batch, self.clock.seconds())

    def _try(self, batch: _Batch, started: float) -> None:
        """Send the batch's need, or wait while another puller's request for one of its revisions is
        younger than our patience (and the batch younger than MAX_WAIT patiences)."""
        if self.stopped or batch.state != "deferred":
            return
        ch = self._pending[batch.seq]
        if self.flood:
            missing = {docid: list(revs) for docid, revs in ch}
        else:
            missing = self.db.revs_diff({docid: revs for docid, revs in ch}) if ch else {}
        now = self.clock.seconds() + _SLACK
        patience = self.inflight.patience(self.timeout)
        give_up = started + MAX_WAIT * patience
        want: list[Key] = []
        borrowed: list[dict] = []
        late: list[_Entry] = []
        blockers: list[Key] = []
        deadline = now
        for docid, revs in missing.items():
            for rev in revs:
                key = (docid, rev)
                entry = self.inflight.state(key)
                if entry is None or not self.lazy or self.flood:
                    want.append(key)
                elif entry.owner is self:
                    continue          # an earlier batch of ours asked for it; it is stored first
                elif entry.doc is not None:
                    borrowed.append(entry.doc)
                elif now >= min(entry.asked + patience, give_up):
                    want.append(key)
                    late.append(entry)
                else:
                    blockers.append(key)
                    deadline = max(deadline, min(entry.asked + patience, give_up))
        if blockers:
            self._wait(batch, started, blockers, deadline)
            return
        for entry in late:
            self.inflight.counters["timeouts"] += 1
            if self.on_strike is not None and getattr(entry.owner, "mgr", None) is not None:
                self.on_strike(entry.owner.peer_id, "slow")
        self._send_need(batch, want, borrowed)

    def _wait(self, batch: _Batch, started: float, blockers: list, deadline: float) -> None:
        """Try again when a blocker changes state, or at ``deadline`` (when the last of them is late)."""
        stale = self._wakes.get(batch.seq)
        if stale is not None:
            stale[0] = True           # one live wake-up per batch; older ones left on entries do nothing
        fired = [False]
        self._wakes[batch.seq] = fired

        def wake() -> None:
            if not fired[0]:
                fired[0] = True
                self.clock.callLater(0, self._try, batch, started)

        for key in blockers:
            self.inflight.wait(key, wake)
        delay = max(0.0, deadline - self.clock.seconds())
        timer = self._timers.get(batch.seq)
        if timer is not None and timer.active():
            timer.reset(delay)
        else:
            self._timers[batch.seq] = self.clock.callLater(delay, self._timed_out, batch, started)
        self.inflight.counters["deferred"] += 1

    def _timed_out(self, batch: _Batch, started: float) -> None:
        self._timers.pop(batch.seq, None)
        self._try(batch, started)

    def _send_need(self, batch: _Batch, want: list, borrowed: list) -> None:
        timer = self._timers.pop(batch.seq, None)
        if timer is not None and timer.active():
            timer.cancel()
        del self._pending[batch.seq]
        self._wakes.pop(batch.seq, None)
        now = self.clock.seconds()
        for key in want:
            if self.inflight.claim(key, self, now):
                self.owned.add(key)
        byid: dict[str, list] = {}
        for docid, rev in want:
            byid.setdefault(docid, []).append(rev)
        self.mgr.conn.send("need", rid=self.rid, seq=batch.seq, want=[[d, r] for d, r in byid.items()])
        batch.docs = list(borrowed)
        self.inflight.counters["borrowed"] += len(borrowed)
        if want:
            batch.want = set(want)
            batch.state = "wanting"
            self._asked[batch.seq] = now
        else:
            batch.state = "ready"
            self._advance()

    # -- docs: the base Puller checks them (a deferred batch is not "wanting": docs for it are refused)
    def _genuine(self, oks: list, batch: _Batch) -> bool:
        genuine = super()._genuine(oks, batch)
        bad = len(oks) - len(batch.docs) if genuine else 0     # the base left out each Refused one
        if bad and self.on_bad_revision is not None:
            self.on_bad_revision(bad)
        return genuine

    def _verified(self, oks: list, batch: _Batch) -> None:
        asked = self._asked.pop(batch.seq, None)
        if self.stopped or not self._genuine(oks, batch):
            return
        if asked is not None:
            self.inflight.observe(self.clock.seconds() - asked)
        self.inflight.verified(self, batch.docs)   # a document refused on its own is not lent: _genuine left it out
        batch.state = "ready"
        self._advance()

    def _stored(self, result: Any, take: list, ndocs: int) -> None:
        keys = [(d["id"], d["rev"]) for b in take for d in b.docs]
        keys += [k for b in take if b.want for k in b.want]
        super()._stored(result, take, ndocs)
        mine = [k for k in keys if k in self.owned]
        self.owned.difference_update(mine)
        self.inflight.done(self, mine)
        if mine and self.on_strike is not None:
            self.on_strike(self.peer_id, "delivered")

    # -- the end: give back every claim, stop every timer
    def _give_back(self) -> None:
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self._pending.clear()
        self._asked.clear()
        self._wakes.clear()
        owned, self.owned = self.owned, set()
        self.inflight.release(self, owned)

    def stop(self, notify: bool = True) -> None:
        super().stop(notify)
        self._give_back()

    def fail(self, error: Any) -> None:
        super().fail(error)
        self._give_back()


def start_gossip_pull(conn: Any, remote_db: str, local_db: str, **kw: Any) -> Any:
    """Start a live GossipPuller on ``conn`` (like ``conn.pull``); returns the puller (``.handle``)."""
    mgr = conn.replications
    p = GossipPuller(mgr, mgr._rid(), remote_db, local_db, True, **kw)
    mgr.pullers[p.rid] = p
    p.start()
    return p
