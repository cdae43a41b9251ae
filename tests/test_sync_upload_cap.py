"""The node-wide upload cap (``max_upload_bytes_per_second``, shiftpeer.sync.uploadcap), deterministically:
a simulated clock, fake connections and transports. What is sent per simulated second stays within the cap
plus one burst, the senders are paused instead of buffered and resumed when tokens return, peers share it
fairly (however many connections each holds), and small frames do not wait behind bulk. The protocol's own use of it runs over in-memory TLS with
the same clock; the real-TLS pull between two nodes is in tests/test_sync_upload_cap_network.py."""

from __future__ import annotations

from twisted.internet.task import Clock

from shiftpeer.sync.framing import FrameDecoder, encode_frame
from shiftpeer.sync.testing import MemoryStore, connect_pair
from shiftpeer.sync.uploadcap import INTERVAL, MIN_UPLOAD_BYTES_PER_SECOND, UploadCap
from test_sync_iosim import Env, fill, make_factory, result_of, settle

RATE = 100_000            # bytes a second
BURST = 2 * RATE * INTERVAL   # what the bucket holds


class Wire:
    """A transport that records when each byte was written."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.data = bytearray()
        self.writes: list[tuple[float, int]] = []

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes.append((self.clock.seconds(), len(data)))

    def writeSequence(self, seq) -> None:
        for chunk in seq:
            self.write(chunk)

    def sent_between(self, start: float, end: float) -> int:
        return sum(n for t, n in self.writes if start <= t < end)

    def frames(self) -> list[bytes]:
        return FrameDecoder().feed(bytes(self.data))


class Sender:
    """Stands in for a SyncProtocol: writes ``frame`` after ``frame`` while not paused (its feeders), up to
    ``total`` bytes, like ``Feeder.pump`` on ``resumeProducing``."""

    def __init__(self, cap: UploadCap, clock: Clock, frame_size: int = 10_000, total: int = 0, lane=1,
                 peer_id=None) -> None:
        self.transport = Wire(clock)
        self.peer_id = peer_id     # None: no hello yet, a share of its own
        self.out = cap.output(self)
        self.paused = False
        self.resumes = 0
        self.frame_size, self.left, self.lane = frame_size, total, lane
        self.most_queued = 0

    def pump(self) -> None:
        while not self.paused and self.left > 0:
            n = min(self.frame_size, self.left)
            self.left -= n
            self.out.put(encode_frame(b"b" * (n - 4)), self.lane)
            self.most_queued = max(self.most_queued, self.out.pending)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumes += 1
        self.pump()

    def stopProducing(self) -> None:
        self.paused = True


def run(clock: Clock, seconds: float, step: float = 0.01, until=lambda: False) -> None:
    for _ in range(int(seconds / step)):
        if until():
            return
        clock.advance(step)


def test_bytes_per_simulated_second_stay_within_the_cap_plus_one_burst():
    """One connection with 1 MB to send at 100 kB/s: no second-long window of the run carries more than the
    cap plus one burst, all of it arrives in order, and it takes about 10 s, not less."""
    clock = Clock()
    cap = UploadCap(RATE, clock)
    s = Sender(cap, clock, total=1_000_000)
    s.pump()
    run(clock, 15, until=lambda: not s.left and not s.out.pending)
    assert len(s.transport.data) == 1_000_000
    assert s.transport.frames() == [b"b" * 9_996] * 100
    for start in [i * 0.1 for i in range(100)]:
        assert s.transport.sent_between(start, start + 1.0) <= RATE + BURST
    assert 9.4 <= clock.seconds() <= 10.1


def test_the_sender_is_paused_not_buffered_and_resumed_when_tokens_return():
    """A sender with far more to send than the cap allows is paused once about one interval's worth waits,
    so what is queued stays bounded; it is resumed each time the bucket drains it, and finishes."""
    clock = Clock()
    cap = UploadCap(RATE, clock)
    s = Sender(cap, clock, total=3_000_000)
    s.pump()
    assert s.paused and s.left > 2_900_000      # stopped producing at once, not 3 MB in memory
    run(clock, 1)
    assert s.resumes >= 3 and s.left < 3_000_000 - 80_000
    run(clock, 40, until=lambda: not s.left and not s.out.pending)
    assert len(s.transport.data) == 3_000_000
    assert s.most_queued <= s.out.high + s.frame_size
    assert cap.queued == 0 and not s.paused


def test_two_busy_connections_share_the_cap_fairly():
    """Two connections that both have plenty to send get equal shares (to within a frame), and together no
    more than the cap; a third that writes one small frame while they are busy is not starved."""
    clock = Clock()
    cap = UploadCap(RATE, clock)
    a, b = Sender(cap, clock, total=10_000_000), Sender(cap, clock, frame_size=40_000, total=10_000_000)
    a.pump()
    b.pump()
    run(clock, 5)
    sa, sb = len(a.transport.data), len(b.transport.data)
    assert abs(sa - sb) <= 40_000, (sa, sb)
    assert sa + sb <= 5 * RATE + BURST
    assert sa + sb >= 4.5 * RATE
    c = Sender(cap, clock)
    start = clock.seconds()
    c.out.put(encode_frame(b"reply"))
    run(clock, 1, step=0.005, until=lambda: c.transport.data)
    assert c.transport.frames() == [b"reply"] and clock.seconds() - start <= INTERVAL + 0.005


def sent(*senders: Sender, start: float = 0, end: float = 1e9) -> int:
    return sum(s.transport.sent_between(start, end) for s in senders)


def four_connections_and_one_busy_for_ten_seconds() -> tuple[list[Sender], Sender]:
    """Peer "greedy" with four connections and peer "other" with one, all with plenty to send, after 10
    simulated seconds under the cap."""
    clock = Clock()
    cap = UploadCap(RATE, clock)
    greedy = [Sender(cap, clock, total=10_000_000, peer_id="greedy") for _ in range(4)]
    other = Sender(cap, clock, total=10_000_000, peer_id="other")
    for s in [*greedy, other]:
        s.pump()
    run(clock, 10)
    return greedy, other


def test_a_peer_with_four_busy_connections_gets_the_same_share_as_a_peer_with_one():
    """The cap is shared per peer, not per connection: over 10 simulated seconds a neighbour holding four
    busy connections gets about half of it, like the neighbour with one (not four fifths), and together they
    get the whole cap."""
    greedy, other = four_connections_and_one_busy_for_ten_seconds()
    total = 10 * RATE
    assert abs(sent(*greedy) - total / 2) <= 0.03 * total, (sent(*greedy), sent(other))
    assert abs(sent(other) - total / 2) <= 0.03 * total, (sent(*greedy), sent(other))
    assert 0.97 * total <= sent(*greedy, other) <= total + BURST


def test_a_share_one_peer_does_not_need_goes_to_the_other_peers_in_equal_parts():
    """A peer that needs a tenth of the cap (a trickle of live changes) gets all of it, each 5 kB change out
    at a third of the cap (its share while three peers send) plus an interval; the rest goes to the two busy
    peers in equal parts per peer, however many connections each holds, and none of the cap is left unused."""
    clock = Clock()
    cap = UploadCap(RATE, clock)
    greedy = [Sender(cap, clock, total=10_000_000, peer_id="greedy") for _ in range(4)]
    busy = Sender(cap, clock, total=10_000_000, peer_id="busy")
    trickle = Sender(cap, clock, peer_id="trickle")
    for s in [*greedy, busy]:
        s.pump()
    waits = []
    for i in range(20):                        # 5 kB every half second: a tenth of the cap
        start = clock.seconds()
        trickle.out.put(encode_frame(b"%02d" % i + b"c" * 4_994), lane=i)
        run(clock, 0.5, step=0.005, until=lambda: len(trickle.transport.frames()) > i)
        waits.append(clock.seconds() - start)
        run(clock, start + 0.5 - clock.seconds(), step=0.005)
    assert len(trickle.transport.frames()) == 20 and max(waits) <= 5_000 / (RATE / 3) + INTERVAL + 0.01, waits
    total, rest = 10 * RATE, 10 * RATE - sent(trickle)
    assert abs(sent(*greedy) - rest / 2) <= 0.03 * total, (sent(*greedy), sent(busy), sent(trickle))
    assert abs(sent(busy) - rest / 2) <= 0.03 * total, (sent(*greedy), sent(busy), sent(trickle))
    assert sent(*greedy, busy, trickle) >= 0.97 * total


def test_the_connections_of_one_peer_take_turns_within_its_share():
    """Within a peer's share its busy connections take turns: over 10 s each of four gets about an eighth of
    the cap (half of it shared four ways), and each sends something in every half second: none of them waits
    for the others to finish."""
    mine, _ = four_connections_and_one_busy_for_ten_seconds()
    total = 10 * RATE
    for s in mine:
        assert abs(sent(s) - total / 8) <= 0.02 * total, [sent(m) for m in mine]
        for start in [i * 0.5 for i in range(20)]:
            assert sent(s, start=start, end=start + 0.5) > 0.5 * RATE / 16, (start, [sent(m) for m in mine])


def test_a_reply_on_one_connection_of_a_busy_peer_is_not_starved_by_its_other_connections():
    """At the lowest cap, with a peer keeping seven connections busy and another peer one, an RPC reply on
    an eighth connection of the first peer goes out within two refills (its peer's turn comes every other
    refill, and a connection with only a small frame waiting goes before its peer's busy ones), wherever in
    the rotation it arrives."""
    clock = Clock()
    cap = UploadCap(MIN_UPLOAD_BYTES_PER_SECOND, clock)
    busy = [Sender(cap, clock, total=10_000_000, peer_id="greedy") for _ in range(7)]
    busy.append(Sender(cap, clock, total=10_000_000, peer_id="other"))
    for s in busy:
        s.pump()
    run(clock, 1)
    waits = []
    for i in range(40):
        reply = Sender(cap, clock, peer_id="greedy")
        start = clock.seconds()
        reply.out.put(encode_frame(b"result %d" % i))
        run(clock, 5, step=0.005, until=lambda: reply.transport.data)
        waits.append(clock.seconds() - start)
        reply.out.close(flush=False)
        run(clock, 0.013 * (i % 7 + 1), step=0.001)     # arrive at another point of the rotation
    assert max(waits) <= 2 * INTERVAL + 0.005, waits


def test_small_frames_do_not_wait_behind_bulk_on_their_connection():
    """On a connection sending a bulk catch-up, an RPC reply (no lane) and a live change of another
    replication (its own lane) go out after at most the frame already on its way, not after the queue; each
    lane's frames keep their order."""
    clock = Clock()
    cap = UploadCap(RATE, clock)
    s = Sender(cap, clock, frame_size=cap.frame_bytes)
    for i in range(20):           # 20 intervals' worth of one replication's docs, queued at once
        s.out.put(encode_frame(b"%d" % i + b"d" * (cap.frame_bytes - 8)), 7)
    run(clock, 0.3)
    s.out.put(encode_frame(b"result"))
    s.out.put(encode_frame(b"live"), 9)
    start = clock.seconds()
    run(clock, 5, step=0.005, until=lambda: b"live" in s.transport.frames())
    waited = clock.seconds() - start
    assert waited <= cap.frame_bytes / RATE + 2 * INTERVAL, waited
    frames = s.transport.frames()
    assert frames.index(b"result") < frames.index(b"live")
    run(clock, 10)
    bulk = [int(f.rstrip(b"d")) for f in s.transport.frames() if f not in (b"result", b"live")]
    assert bulk == list(range(20))


def test_an_idle_node_sends_a_small_frame_at_once():
    """With nothing waiting and tokens in the bucket, a frame goes out without waiting for a refill."""
    clock = Clock()
    s = Sender(UploadCap(RATE, clock), clock)
    s.out.put(encode_frame(b"hello"))
    assert s.transport.frames() == [b"hello"]


def test_a_full_transport_is_skipped_and_its_share_goes_to_the_others():
    """A connection whose transport is full (its peer does not read) gets no tokens; the others get the whole
    cap; once the transport resumes, its frames go on."""
    clock = Clock()
    cap = UploadCap(RATE, clock)
    a, b = Sender(cap, clock, total=1_000_000), Sender(cap, clock, total=1_000_000)
    a.out.pauseProducing()        # what TLS does when its buffer is full
    a.pump()
    b.pump()
    run(clock, 2)
    assert not a.transport.data and len(b.transport.data) >= 1.8 * RATE
    assert a.paused
    a.out.resumeProducing()
    run(clock, 1)
    assert len(a.transport.data) >= 0.4 * RATE


def test_closing_sends_the_frame_on_its_way_and_the_urgent_ones_only():
    """A closing connection finishes the frame half sent and sends its error frame (the peer learns why), and
    drops the served replication's queued frames; what went out is whole frames."""
    clock = Clock()
    cap = UploadCap(RATE, clock)
    s = Sender(cap, clock)
    for i in range(5):
        s.out.put(encode_frame(b"x" * 30_000), 3)
    s.out.put(encode_frame(b"error"))
    assert 0 < len(s.transport.data) < 35_000          # the first burst: part of a docs frame
    s.out.close(flush=True)
    assert s.transport.frames() == [b"error", b"x" * 30_000] or \
        s.transport.frames() == [b"x" * 30_000, b"error"]
    assert s.out.pending == 0 and cap.queued == 0
    s.out.put(encode_frame(b"late"))
    run(clock, 1)
    assert b"late" not in s.transport.frames()


def test_the_paused_seconds_count_the_time_the_cap_held_bytes_back():
    """``upload_paused_seconds`` grows while bytes wait for the cap and stops once they are out."""
    clock = Clock()
    cap = UploadCap(RATE, clock)
    s = Sender(cap, clock, total=300_000)
    s.pump()
    run(clock, 1)
    assert 0.9 <= cap.paused_seconds() <= 1.01
    run(clock, 5, until=lambda: not s.left and not s.out.pending)
    run(clock, 2)
    assert 2.8 <= cap.paused_seconds() <= 3.1
    assert cap.counters["upload_paused_seconds"] == cap.paused_seconds()


def test_a_pull_from_a_capped_node_over_tls_is_paced_and_complete():
    """Over in-memory TLS with a simulated clock, a node capped at 100 kB/s serves a ~600 kB pull: every
    document arrives, the pull takes about as long as the cap says, and no simulated second carries more
    than the cap plus one burst (above TLS)."""
    env = Env(max_upload_bytes_per_second=RATE)
    src = env.sstore.create_database("master")
    for i in range(300):
        src.put(f"d{i}", {"n": i, "author": "x", "text": "t" * 2_000})
    rep = env.c.pull("master", "feed", live=True)
    caught = result_of(rep.caught_up)
    sent: list[tuple[float, int]] = []
    for _ in range(3_000):
        before = env.s.bytes_out - env.sf.upload_cap.queued
        settle(env.pump)
        sent.append((env.clock.seconds(), env.s.bytes_out - env.sf.upload_cap.queued - before))
        if caught:
            break
        env.clock.advance(0.01)
    assert caught == [src.update_seq()]
    assert env.cstore.database("feed").snapshot() == src.snapshot()
    total = env.s.bytes_out
    assert total > 600_000 and env.clock.seconds() >= 0.9 * total / RATE - 1
    for start in [t for t, _ in sent]:
        assert sum(n for t, n in sent if start <= t < start + 1.0) <= RATE + BURST
    # a live change now goes out at once: the cap is idle again
    src.put("fresh", {"n": -1, "author": "x"})
    settle(env.pump)
    assert env.cstore.database("feed").get("fresh") is not None


def test_a_capped_node_shares_its_cap_per_authenticated_peer_over_tls():
    """Over in-memory TLS, a capped node serves three pulls: two on connections from the same peer (one
    certificate), one from another peer. Each connection counts as its peer once the hello is in, so the two
    peers get about the same bytes, the two connections of the first about half each of its part."""
    clock = Clock()
    server = make_factory(clock, MemoryStore(), max_upload_bytes_per_second=RATE)
    src = server.store.create_database("master")
    for i in range(300):
        src.put(f"d{i}", {"n": i, "author": "x", "text": "t" * 2_000})
    pairs = [connect_pair(make_factory(clock), server, clock, client_name=name)
             for name in ("greedy", "greedy", "other")]
    for pair in pairs:
        settle(pair.pump)
        pair.client.pull("master", "feed", live=False)
    assert [p.server.peer_id for p in pairs] == ["greedy", "greedy", "other"]
    assert pairs[0].server._paced.sharer() == pairs[1].server._paced.sharer() == "greedy"
    for _ in range(300):                   # 3 simulated seconds: none of the pulls is done
        for pair in pairs:
            settle(pair.pump)
        clock.advance(0.01)
    out = [p.server.bytes_out - p.server._paced.pending for p in pairs]
    assert abs(out[0] + out[1] - out[2]) <= 0.05 * sum(out), out
    assert abs(out[0] - out[1]) <= 0.05 * sum(out), out
    assert 2.8 * RATE <= sum(out) <= 3 * RATE + BURST, out


def test_without_a_cap_nothing_is_paced():
    """The default (no cap) builds no UploadCap and writes straight to the transport."""
    env = Env()
    assert env.sf.upload_cap is None and env.s._paced is None
    fill(env.sstore, "master", 20)
    caught = result_of(env.c.pull("master", "feed", live=False).caught_up)
    settle(env.pump)
    assert caught == [20]


def test_status_and_metrics_show_the_cap_holding_output_back():
    """While a pull is held back by the cap, ``status`` (and its text) and the metrics show the cap, the
    seconds it held output back and the bytes waiting; a node without a cap shows none and exports zeros."""
    from types import SimpleNamespace

    from shiftpeer.api.metrics import NodeCollector
    from shiftpeer.api.status import upload
    from shiftpeer.cli.output import upload_line

    env = Env(max_upload_bytes_per_second=RATE)
    src = env.sstore.create_database("master")
    for i in range(100):
        src.put(f"d{i}", {"n": i, "author": "x", "text": "t" * 2_000})
    env.c.pull("master", "feed", live=False)
    for _ in range(100):
        settle(env.pump)
        env.clock.advance(0.01)
    node = SimpleNamespace(store=None, sync_factory=env.sf, api=SimpleNamespace(refused={}))
    st = upload(node)
    assert st["max_bytes_per_second"] == RATE and 0.9 <= st["paused_seconds"] <= 1.01 and st["queued_bytes"] > 0
    assert upload_line(st).startswith("upload cap: 100,000 bytes/s; held sync output back 1.0 s since start; ")
    metrics = {m.name: m.samples[0].value for m in NodeCollector(node).collect()
               if m.name.startswith("shiftpeer_sync_upload")}
    assert metrics == {"shiftpeer_sync_upload_paused_seconds": env.sf.upload_cap.paused_seconds(),
                       "shiftpeer_sync_upload_queued_bytes": st["queued_bytes"]}
    plain = SimpleNamespace(store=None, sync_factory=Env().sf, api=SimpleNamespace(refused={}))
    assert upload(plain) is None
    assert {m.name: m.samples[0].value for m in NodeCollector(plain).collect()
            if m.name.startswith("shiftpeer_sync_upload")} == {"shiftpeer_sync_upload_paused_seconds": 0,
                                                               "shiftpeer_sync_upload_queued_bytes": 0}


def test_a_replication_that_ends_sends_nothing_more_of_what_waited():
    """When the peer stops a pull the capped node serves (or its access is revoked), the frames of that
    replication still waiting for the cap are dropped, not sent over the next seconds."""
    env = Env(max_upload_bytes_per_second=RATE)
    src = env.sstore.create_database("master")
    for i in range(300):
        src.put(f"d{i}", {"n": i, "author": "x", "text": "t" * 2_000})
    rep = env.c.pull("master", "feed", live=True)
    for _ in range(50):
        settle(env.pump)
        env.clock.advance(0.01)
    cap = env.sf.upload_cap
    assert cap.queued > 2 * cap.frame_bytes
    rep.stop()
    settle(env.pump)
    assert cap.queued <= cap.frame_bytes and not env.s.replications.feeders
    on_the_wire = env.s.bytes_out - cap.queued
    for _ in range(100):
        settle(env.pump)
        env.clock.advance(0.01)
    assert env.s.bytes_out - on_the_wire <= cap.frame_bytes and cap.queued == 0   # the frame on its way
    assert env.cstore.database("feed").doc_count() < 300
