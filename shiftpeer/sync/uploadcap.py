"""The node-wide upload cap (``max_upload_bytes_per_second``): what all sync connections together send, paced
by one token bucket, shared fairly between their peers, with backpressure on the feeders instead of a growing buffer.

Each connection writes its frames into a ``PacedOutput`` that sits between ``SyncProtocol`` and its TLS
transport (so the cap counts the bytes above TLS: frames with their length prefix; TLS records and TCP/IP
headers add a few percent, docs/operators.md). The output is the producer registered with the transport and
pauses the protocol (``pauseProducing``: its feeders stop sending new batches) while the transport is full
*or* more than about one interval's worth waits for the cap, and resumes it when that drains. What can still
queue is what the protocol answers regardless: the docs of batches already announced (the feeder's ``window``
bounds them, as it bounds the transport's buffer without a cap) and small replies.

``UploadCap`` refills every ``interval`` (50 ms) and shares the tokens between the *peers* that have bytes
waiting, equal shares, and each peer's share between its connections, equal parts taken in turns; the rest of
a share that one did not need goes to the others (of the same peer first), so none starves and a busy one
cannot take the whole uplink; at each refill a peer, and within a peer a connection, with only a small amount
waiting (about a kilobyte: a reply, a live change) goes before the busy ones. A peer is the authenticated id
of a connection (``conn.peer_id``), so a peer holding several connections (``max_connections_per_peer`` on a
listener, more if we dial it too) gets one share, not one per connection. A connection whose hello has not
arrived yet has no peer id and takes a share of its own: all it can carry is our hello and an error frame, and
``max_connections_per_address`` and the handshake timeout bound how many there are. Within a connection,
frames that are not a served replication's bulk (hello, RPC calls and results, acks, needs, errors) go first,
and the replications it serves take turns frame by frame, one with nothing queued (a live change) first: a
small frame waits at most for the frame already on its way, which the cap keeps to about one interval's worth
of bytes (``frame_bytes``: docs frames are split that small; one document is never split), so about one
interval while the connection has the cap to itself and a few when it shares it. With nothing waiting, a frame
goes out at once if the bucket holds enough: an idle node adds no delay.

Twisted's ``ThrottlingFactory`` (twisted.protocols.policies) was the first candidate and does not fit: it
counts writes after they went through, once a second, then pauses every producer for the excess, so it lets
a second's worth (or a 4 MiB frame) out in one burst, holds a live change behind it for up to a second, is
not fair between connections, and its resume overrides the transport's own pause.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from shiftpeer.sync.replication import DOCS_FRAME_BYTES

#: Seconds between refills of the bucket: the longest a frame waits for its share when the cap is busy.
INTERVAL = 0.05
#: The lowest cap accepted: a frame of one 1 MiB document then takes about a minute, half a peer's default
#: ``frame_timeout`` (120 s), when it has the uplink to itself.
MIN_UPLOAD_BYTES_PER_SECOND = 16 * 1024
#: Docs frames under a cap are split at about one interval's worth, but never below this (fewer, larger
#: frames cost the peer less) nor above the usual ``DOCS_FRAME_BYTES``.
MIN_FRAME_BYTES = 32 * 1024
#: The least one connection is given in one round of a refill, so a thousand connections sharing a small
#: cap do not cut the bytes into records of a few bytes each (the rotation keeps it fair over refills).
MIN_QUANTUM = 1024


class UploadCap:
    """A token bucket of ``rate`` bytes a second, holding at most two ``interval``s' worth (the burst), shared
    by every ``PacedOutput`` of a SyncFactory. ``counters["upload_paused_seconds"]`` sums the time during which
    the cap held bytes back (some connection could send and had to wait)."""

    def __init__(self, rate: float, clock: Any, counters: Optional[collections.Counter] = None,
                 interval: float = INTERVAL, max_frame_bytes: int = DOCS_FRAME_BYTES) -> None:
        self.rate = float(rate)
        self.clock = clock
        self.interval = interval
        # two intervals' worth: a refill that comes late (the reactor was busy) loses nothing
        self.burst = max(1.0, 2 * self.rate * interval)
        self.tokens = self.burst
        self.stamp = clock.seconds()
        self.counters = counters if counters is not None else collections.Counter()
        #: the size docs frames are split at under this cap (``ReplicationManager.docs_frame_bytes``)
        self.frame_bytes = int(min(max_frame_bytes, max(MIN_FRAME_BYTES, self.rate * interval)))
        #: bytes waiting in all outputs
        self.queued = 0
        self._waiting: dict[PacedOutput, None] = {}   # outputs with bytes queued, in arrival order
        self._turn = 0                                 # rotates which peer is served first at a refill
        self._turns: dict[Any, int] = {}               # per peer: rotates which of its connections goes first
        self._tick: Any = None
        self._serving = False
        self._held_since: Optional[float] = None

    def output(self, conn: Any) -> "PacedOutput":
        """The paced output of one connection (``conn``: its producer, paused and resumed by it)."""
        return PacedOutput(self, conn)

    def paused_seconds(self) -> float:
        """Seconds the cap has held bytes back since the node started (the metric)."""
        held = self.counters["upload_paused_seconds"]
        if self._held_since is not None:
            held += self.clock.seconds() - self._held_since
        return held

    def wake(self, out: "PacedOutput") -> None:
        """``out`` has bytes to send: at once if nobody waits for tokens, else at the next refill."""
        self._waiting[out] = None
        if self._tick is None and not self._serving:
            self._serve()

    def forget(self, out: "PacedOutput") -> None:
        self._waiting.pop(out, None)

    def charge(self, n: int) -> None:
        """Bytes sent past the bucket (a closing connection's last frames): the next refills pay for them."""
        self._refill()
        self.tokens -= n

    def _refill(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def _serve(self) -> None:
        self._tick = None
        self._serving = True
        try:
            for _ in range(3):     # again only when a connection resumed by this round wrote more
                self._refill()
                ready = [o for o in self._waiting if _wants(o)]
                if not ready or self.tokens < 1:
                    break
                self._share(ready)
        finally:
            self._serving = False
        for out in [o for o in self._waiting if not o.pending]:
            del self._waiting[out]
        held = any(not o.transport_paused for o in self._waiting)
        now = self.clock.seconds()
        if held and self._held_since is None:
            self._held_since = now
        elif not held and self._held_since is not None:
            self.counters["upload_paused_seconds"] += now - self._held_since
            self._held_since = None
        if held:
            self._tick = self.clock.callLater(self.interval, self._serve)

    def _share(self, ready: list["PacedOutput"]) -> None:
        """Spend the tokens on the peers of ``ready`` in equal shares, and each peer's share on its
        connections in equal parts, starting with a different peer and connection each time; what one did not
        need goes round again to the others (of the same peer first, then to the other peers)."""
        peers: dict[Any, list[PacedOutput]] = {}
        for out in ready:
            peers.setdefault(out.sharer(), []).append(out)
        # each peer rotates its own connections: one count for all would, with few tokens and two peers taking
        # turns, start a peer's round at every other connection only and starve the rest
        self._turns = {peer: self._turns.get(peer, 0) for peer in {o.sharer() for o in self._waiting}}

        def give(peer: Any, n: int) -> int:
            self._turns[peer] += 1
            return _spread(peers[peer], self._turns[peer], n, PacedOutput.send, _wants,
                           lambda out: out.pending <= MIN_QUANTUM)

        spent = _spread(list(peers), self._turn, int(self.tokens), give,
                        lambda peer: any(map(_wants, peers[peer])),
                        lambda peer: sum(out.pending for out in peers[peer]) <= MIN_QUANTUM)
        self._turn += 1
        self.tokens -= spent


def _spread(members: list, turn: int, budget: int, give: Callable[[Any, int], int],
            wants: Callable[[Any], bool], small: Callable[[Any], bool]) -> int:
    """Give ``budget`` to ``members`` in equal parts (``give(member, n)`` spends up to ``n``, returns how much
    it did), starting at the ``turn``-th, but those with only a ``small`` amount waiting (a reply, a live
    change) before the busy ones, as fq_codel favours sparse flows; what some did not take goes round again
    to those that still ``want``. Returns what was spent."""
    start = turn % len(members)
    order = members[start:] + members[:start]
    order.sort(key=lambda member: not small(member))
    spent = 0
    for _ in range(len(members) + 1):
        share = max((budget - spent) // len(order), MIN_QUANTUM)
        left = []
        for member in order:
            if spent >= budget:
                break
            spent += give(member, min(share, budget - spent))
            if wants(member):
                left.append(member)
        if spent >= budget or not left or len(left) == len(order):
            break
        order = left
    return spent


def _wants(out: "PacedOutput") -> bool:
    """``out`` could send more now."""
    return bool(out.pending) and not out.transport_paused


@implementer(IPushProducer)
class PacedOutput:
    """One connection's frames on their way to the transport through the cap. Frames with a ``lane`` (the
    rid of a replication this side serves) keep their order within it; frames without one go first; lanes
    take turns a frame at a time, a lane that had nothing queued first (as fq_codel favours sparse flows). Registered as the transport's producer, it pauses the connection while the
    transport is full or more than ``high`` bytes wait, and resumes it once under ``low``."""

    def __init__(self, cap: UploadCap, conn: Any) -> None:
        self.cap = cap
        self.conn = conn
        self.high = cap.frame_bytes
        self.low = cap.frame_bytes // 2
        self.pending = 0
        self.transport_paused = False
        self._urgent: collections.deque[bytes] = collections.deque()
        self._lanes: collections.OrderedDict[Any, collections.deque[bytes]] = collections.OrderedDict()
        self._current: Optional[bytes] = None     # the frame on its way, from ``_offset``
        self._offset = 0
        self._over = False                        # more than ``high`` waited, not yet under ``low``
        self._conn_paused = False                 # we paused the connection
        self._closed = False

    def put(self, frame: bytes, lane: Any = None, send: bool = True) -> None:
        """Queue one frame; ``send``: try to send now (False while the protocol gathers a slice's frames)."""
        if self._closed:
            return
        if lane is None:
            self._urgent.append(frame)
        else:
            frames = self._lanes.get(lane)
            if frames is None:    # a replication with nothing queued (a live change) has the next turn
                frames = self._lanes[lane] = collections.deque()
                self._lanes.move_to_end(lane, last=False)
            frames.append(frame)
        self.pending += len(frame)
        self.cap.queued += len(frame)
        if self.pending > self.high:
            self._over = True
            self._update()
        if send:
            self.cap.wake(self)

    def offer(self) -> None:
        """Send what the cap allows of the frames queued with ``send=False``."""
        if self.pending and not self._closed:
            self.cap.wake(self)

    def sharer(self) -> Any:
        """Who this connection shares the cap as: its peer's authenticated id, so all the connections of one
        peer take one share; before the hello it has none and takes a share of its own (it can carry only
        the hello and an error frame)."""
        return getattr(self.conn, "peer_id", None) or self

    def send(self, budget: int) -> int:
        """Write up to ``budget`` bytes to the transport; how many were written."""
        chunks: list[bytes] = []
        sent = 0
        while sent < budget:
            if self._current is None:
                frame = self._next_frame()
                if frame is None:
                    break
                self._current, self._offset = frame, 0
            frame, at = self._current, self._offset
            n = min(len(frame) - at, budget - sent)
            if at + n == len(frame):
                chunks.append(frame if at == 0 else frame[at:])
                self._current = None
            else:
                chunks.append(frame[at:at + n])
                self._offset = at + n
            sent += n
        self.pending -= sent
        self.cap.queued -= sent
        if chunks:
            transport = self.conn.transport
            if transport is not None:
                transport.writeSequence(chunks) if len(chunks) > 1 else transport.write(chunks[0])
        if self._over and self.pending <= self.low:
            self._over = False
            self._update()
        return sent

    def _next_frame(self) -> Optional[bytes]:
        if self._urgent:
            return self._urgent.popleft()
        if not self._lanes:
            return None
        lane, frames = next(iter(self._lanes.items()))
        frame = frames.popleft()
        if frames:
            self._lanes.move_to_end(lane)
        else:
            del self._lanes[lane]
        return frame

    def drop(self, lane: Any) -> None:
        """A served replication ended (stopped, access revoked): its frames still queued are not sent."""
        frames = self._lanes.pop(lane, None)
        if frames:
            n = sum(map(len, frames))
            self.pending -= n
            self.cap.queued -= n
            if self._over and self.pending <= self.low:
                self._over = False
                self._update()

    def close(self, flush: bool) -> None:
        """The connection closes: with ``flush``, the frame on its way and the urgent ones (an error frame
        saying why) go out now, charged to the cap; a served replication's frames are dropped (its puller
        resumes from its checkpoint). Nothing is sent after this."""
        if self._closed:
            return
        if flush:
            chunks = []
            if self._current is not None:
                chunks.append(self._current[self._offset:])
            chunks.extend(self._urgent)
            transport = self.conn.transport
            if chunks and transport is not None:
                transport.writeSequence(chunks)
                self.cap.charge(sum(map(len, chunks)))
        self._closed = True
        self.cap.queued -= self.pending
        self.pending = 0
        self._current = None
        self._urgent.clear()
        self._lanes.clear()
        self.cap.forget(self)

    def _update(self) -> None:
        """Pause or resume the connection's producing to match the transport and the queue."""
        want = self.transport_paused or self._over
        if want == self._conn_paused or self._closed:
            return
        self._conn_paused = want
        if want:
            self.conn.pauseProducing()
        else:
            self.conn.resumeProducing()

    # IPushProducer, for the transport
    def pauseProducing(self) -> None:
        self.transport_paused = True
        self._update()

    def resumeProducing(self) -> None:
        self.transport_paused = False
        self._update()
        self.offer()

    def stopProducing(self) -> None:
        self.transport_paused = True
        self.conn.stopProducing()


__all__ = ["INTERVAL", "MIN_FRAME_BYTES", "MIN_QUANTUM", "MIN_UPLOAD_BYTES_PER_SECOND", "PacedOutput", "UploadCap"]
