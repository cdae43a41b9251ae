"""The performance mechanisms of sync (docs/protocol.md section 14): no Nagle, one write per received
chunk, the feeder's batch ramp, small live batches stored in the reactor thread, the verification processes and
pool."""

from __future__ import annotations

import collections
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import FirstError
from twisted.internet.task import Clock, deferLater
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.defer import maybeDeferred
from twisted.internet.testing import StringTransport

from shiftpeer.identity import NodeKey
from shiftpeer.identity.verifiers import VERIFY_THREADS, VerifierGone, verify_many, verify_pool, verify_processes
from shiftpeer.identity.tls import client_creator, server_creator
from shiftpeer.store import Store
from shiftpeer.sync import AllowAll, SyncFactory, messages
from shiftpeer.sync.client import tls_client_endpoint, tls_server_endpoint
from shiftpeer.sync.protocol import HANDLE_SLICE
from shiftpeer.sync.manager import ReplicationManager
from shiftpeer.sync.replication import RAMP_FIRST, default_store_batch
from shiftpeer.sync.testing import MemoryStore, RecordingConnection, accept_all

from helpers_identity import signed_doc
from test_verifier import SMALL_ORDER_KEY, TRIVIAL_SIGNATURE


def test_feeder_ramps_its_batches_up():
    """The first batch has RAMP_FIRST changes, each next one twice as many, up to batch_changes."""
    store = MemoryStore()
    db = store.create_database("src")
    for i in range(1000):
        db.put(f"d{i:04d}", {"i": i})
    conn = RecordingConnection()
    mgr = ReplicationManager(conn, store, AllowAll(), accept_all, collections.Counter(), window=8, batch_changes=300)
    mgr.handle({"t": "pull", "rid": 1, "db": "src", "since": 0, "epoch": None, "live": False})
    sizes = [len(m["ch"]) for m in conn.sent if m["t"] == "changes"]
    assert RAMP_FIRST == 100
    assert sizes == [100, 200, 300, 300, 100]


class CountingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def write(self, data):
        self.calls += 1
        super().write(data)

    def writeSequence(self, seq):
        self.calls += 1
        super().write(b"".join(seq))


def test_frames_answering_one_read_go_out_in_one_write():
    """Everything sent while handling received bytes (accept, changes, caught_up) is one transport write.
    (A Clock, so no handling slice ends midway: on a loaded machine the real one's 2 ms could.)"""
    store = MemoryStore()
    db = store.create_database("src")
    for i in range(3):
        db.put(f"d{i}", {"i": i})
    factory = SyncFactory(store, None, AllowAll(), reactor=Clock(), validator=accept_all,
                          peer_id_of=lambda transport: "peer", handshake_timeout=None, frame_timeout=None)
    proto = factory.buildProtocol(None)
    transport = CountingTransport()
    proto.makeConnection(transport)
    assert transport.calls == 1                       # our hello
    data = (messages.encode("hello", v=1, roles=[], maxf=1 << 20)
            + messages.encode("pull", rid=1, db="src", since=0, epoch=None, live=False))
    proto.dataReceived(data)
    assert transport.calls == 2
    frames, rest = [], transport.value()
    while rest:
        n = int.from_bytes(rest[:4], "big")
        frames.append(messages.decode(rest[4:4 + n])["t"])
        rest = rest[4 + n:]
    assert frames == ["hello", "accept", "changes", "caught_up"]
    # an error frame queued while handling input still goes out before the connection closes
    proto.dataReceived(messages.encode("need", rid=1, seq=12345, want=[]))
    assert transport.disconnecting
    assert b"unexpected" in transport.value()


def test_frames_past_the_handling_slice_wait_for_the_next_reactor_turn():
    """Frames from one read are handled for HANDLE_SLICE; the rest wait for the next reactor turn with reading
    paused, so what the first ones wrote reaches the transport before the rest are handled."""
    clock = Clock()
    factory = SyncFactory(MemoryStore(), None, AllowAll(), reactor=clock, validator=accept_all,
                          peer_id_of=lambda transport: "peer", handshake_timeout=None, frame_timeout=None)
    seen = []

    def slow(conn, args):                # each call takes longer than a slice
        seen.append((args["n"], [m["id"] for m in _frames(transport.value())], transport.producerState))
        clock.advance(HANDLE_SLICE)
        return args["n"]

    factory.rpc_handlers["slow"] = slow
    proto = factory.buildProtocol(None)
    transport = CountingTransport()
    proto.makeConnection(transport)
    proto.dataReceived(messages.encode("hello", v=1, roles=[], maxf=1 << 20))
    transport.clear()
    proto.dataReceived(b"".join(messages.encode("call", id=n, method="slow", args={"n": n}) for n in (1, 2, 3)))
    assert [n for n, _, _ in seen] == [1] and transport.producerState == "paused"
    clock.advance(0)                     # the next reactor turns (a Clock runs them all at once)
    assert seen == [(1, [], "producing"), (2, [1], "paused"), (3, [1, 2], "paused")]
    assert [m["id"] for m in _frames(transport.value())] == [1, 2, 3]
    assert transport.producerState == "producing" and not clock.getDelayedCalls()


def _frames(data):
    out = []
    while data:
        n = int.from_bytes(data[:4], "big")
        out.append(messages.decode(data[4:4 + n]))
        data = data[4 + n:]
    return out


def _signed_docs(n, key=None):
    key = key or NodeKey.generate()
    out = []
    for i in range(n):
        out.append(signed_doc(key, f"d{i}", {"author": key.account_id, "n": i}))
    return out


@pytest_twisted.ensureDeferred
async def test_small_batches_are_stored_inline_unless_the_store_fsyncs(tmp_path):
    """A live-sized batch goes straight into a store without fsync; a syncing store's goes to its writer."""
    for sync in (False, True):
        store = Store(str(tmp_path / f"s{sync}"), reactor=reactor, sync=sync)
        db = store.create_database("feed")
        seen = []
        store.subscribe(lambda name, seq: seen.append(threading.current_thread() is threading.main_thread()))
        d = default_store_batch(store, db, _signed_docs(3), "peer", "remote", {"seq": 3, "epoch": "e"})
        assert d.called is (not sync)
        await d
        assert db.doc_count() == 3 and db.get_checkpoint("peer", "remote") == {"seq": 3, "epoch": "e"}
        # big batches always go to the writer thread
        big = _signed_docs(40)
        d = default_store_batch(store, db, big, "peer", "remote", {"seq": 40, "epoch": "e"})
        assert not d.called
        await d
        assert db.doc_count() == 40
        assert seen and all(seen)      # notifications always arrive in the reactor thread
        store.close()


@pytest_twisted.ensureDeferred
async def test_verification_pool_is_shared_bounded_and_in_order():
    """Given the thread pool, verify_many uses one pool per reactor of VERIFY_THREADS threads; results stay
    in input order."""
    pool = verify_pool(reactor)
    assert verify_pool(reactor) is pool and pool.max == VERIFY_THREADS
    docs = _signed_docs(200)
    docs[150]["body"]["n"] = -1
    results = await verify_many(docs, pool)
    assert [i for i, ok in enumerate(results) if not ok] == [150]


@pytest_twisted.ensureDeferred
async def test_large_batches_are_verified_in_the_reactors_processes():
    """By default a large batch is checked in the reactor's verification processes (one set per reactor, one
    process per core): forged, unsigned and foreign-signed documents are False at their places, documents
    whose canonical payload differs from the plain one (floats) are checked again with it."""
    procs = verify_processes(reactor)
    assert verify_processes(reactor) is procs and len(procs.procs) == VERIFY_THREADS
    other = NodeKey.generate()
    docs = _signed_docs(300)
    for i, d in enumerate(docs[:100]):         # a float: the plain payload differs from the canonical one
        docs[i] = signed_doc(other, d["id"], {**d["body"], "x": 1.5, "author": other.account_id})
    docs[7]["body"]["x"] = 2.5                 # altered after signing
    docs[150]["body"]["n"] = -1
    docs[151]["sig"] = None
    docs[152]["sig"] = docs[153]["sig"]        # someone else's signature
    results = await verify_many(docs)
    assert [i for i, ok in enumerate(results) if not ok] == [7, 150, 151, 152]
    assert all(p is not None and not p.gone for p in procs.procs)


@pytest_twisted.ensureDeferred
async def test_a_verification_process_that_dies_fails_its_batch_and_is_replaced():
    """When a verification process dies, the batches it owed fail (VerifierGone: the puller closes that
    connection as an internal error) and the next batch starts a new process."""
    procs = verify_processes(reactor)
    docs = _signed_docs(200)
    assert all(await verify_many(docs))
    d = verify_many(docs)
    victim = procs.procs[0]
    victim.transport.signalProcess("KILL")     # before the reactor has written it the request
    with pytest.raises(FirstError) as caught:
        await d
    assert caught.value.subFailure.check(VerifierGone)
    for _ in range(500):                       # bounded polling: at most 5 s
        if victim.gone:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert victim.gone
    assert all(await verify_many(docs))
    assert procs.procs[0] is not victim and not procs.procs[0].gone


@pytest_twisted.ensureDeferred
async def test_tcp_nodelay_on_both_ends(tmp_path):
    """Both ends of a real TLS connection turn Nagle off (a small frame is sent at once)."""
    a_key, b_key = NodeKey.generate(), NodeKey.generate()
    stores = [Store(str(tmp_path / n), reactor=reactor, sync=False) for n in "ab"]
    fa = SyncFactory(stores[0], a_key, AllowAll(), reactor=reactor)
    fb = SyncFactory(stores[1], b_key, AllowAll(), reactor=reactor)
    port = await tls_server_endpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                     server_creator(b_key)).listen(fb)
    try:
        ep = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                                 client_creator(a_key, expected_peer_id=b_key.account_id))
        conn = await ep.connect(fa)
        await conn.when_ready()
        server = next(iter(fb.connections))
        assert conn.transport.getTcpNoDelay() and server.transport.getTcpNoDelay()
        conn.close()
        await conn.when_closed()
    finally:
        await maybeDeferred(port.stopListening)
        for s in stores:
            s.close()


@pytest_twisted.ensureDeferred
async def test_verification_falls_back_to_threads_when_its_processes_cannot_start():
    """A verification process that ends before its first answer (it cannot run here) fails the batches it
    owed and marks the processes broken; verify_many then checks in threads, with the same results."""
    from shiftpeer.identity.verifiers import VerifyProcesses, _check_in_processes

    procs = VerifyProcesses(reactor)
    procs.program = "import sys; sys.exit(3)"
    docs = _signed_docs(100)
    with pytest.raises(FirstError) as caught:
        await _check_in_processes(docs, procs)
    assert caught.value.subFailure.check(VerifierGone) and procs.broken
    procs.stop()
    shared = verify_processes(reactor)
    shared.broken = True
    try:
        docs[3]["body"]["n"] = -1
        results = await verify_many(docs)
        assert [i for i, ok in enumerate(results) if not ok] == [3]
    finally:
        shared.broken = False


def _worker_request(records):
    """A verification process request from (public key, signature, message) records."""
    body = b"".join(len(msg).to_bytes(4, "big") + pk + sig + msg for pk, sig, msg in records)
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize("backend", ["ed25519-zebra", "libsodium"])
def test_the_verification_program_checks_each_record_in_place(backend):
    """The verification processes' program, run as they run it, with either signature library: one answer
    byte per record (1 valid, 0 forged, signed by another key, or "signed" by a small-order key), requests
    answered in order; a record that runs past the end of its request is answered 0 and ends that answer
    early, without reading outside the request."""
    import subprocess
    import sys

    from shiftpeer.identity.verifiers import _WORKER_SOURCE

    a, b = NodeKey.generate(), NodeKey.generate()
    good = (a.public_key, a.sign(b"m1"), b"m1")
    forged = (a.public_key, a.sign(b"m2"), b"m3")
    foreign = (b.public_key, a.sign(b"m4"), b"m4")
    small_order = (SMALL_ORDER_KEY, TRIVIAL_SIGNATURE, b"anything")   # zebra alone would accept this one
    big = (b.public_key, b.sign(b"x" * 200_000), b"x" * 200_000)    # grows the program's output buffer
    truncated = _worker_request([good, good])
    truncated = (len(truncated) - 4 - 1).to_bytes(4, "big") + truncated[4:-1]   # the last record lacks a byte
    requests = (_worker_request([good, forged, foreign, small_order]) + _worker_request([big, good])
                + truncated)
    # the libsodium run hides ed25519_zebra from the program, as on a machine without its wheel
    program = _WORKER_SOURCE if backend == "ed25519-zebra" else (
        "import sys; sys.modules['ed25519_zebra'] = None\n" + _WORKER_SOURCE)
    done = subprocess.run([sys.executable, "-c", program], input=requests, capture_output=True,
                          timeout=60, check=True)
    assert done.stdout == b"\0\0\0\4\1\0\0\0" + b"\0\0\0\2\1\1" + b"\0\0\0\2\1\0"


@pytest_twisted.ensureDeferred
async def test_the_verification_processes_request_pipes_are_widened():
    """Each verification process's request pipe holds PIPE_BYTES where Linux allows it (a request goes in one
    write), and a batch larger than the pipe still verifies."""
    import fcntl
    import sys

    from shiftpeer.identity.verifiers import PIPE_BYTES

    if not sys.platform.startswith("linux"):
        pytest.fail("this test runs on Linux (F_GETPIPE_SZ)")
    with open("/proc/sys/fs/pipe-max-size") as f:
        allowed = int(f.read())
    procs = verify_processes(reactor)
    key = NodeKey.generate()
    docs = _signed_docs(300, key)
    for i, d in enumerate(docs):                  # ~1.5 MB in all, over one pipe's capacity
        docs[i] = signed_doc(key, d["id"], {**d["body"], "pad": "p" * 5000})
    docs[5]["body"]["pad"] = "q"
    results = await verify_many(docs)
    assert [i for i, ok in enumerate(results) if not ok] == [5]
    for proc in procs.procs:
        size = fcntl.fcntl(proc.transport.pipes[0].fileno(), fcntl.F_GETPIPE_SZ)
        assert size == (PIPE_BYTES if allowed >= PIPE_BYTES else 65536)


def test_a_pull_tells_the_validator_how_many_changes_are_coming():
    """When the feeder accepts a pull, the puller's manager calls `expect` with the changes between the
    checkpoint and the source's head (nothing when there are none), before any document arrives."""
    store = MemoryStore()
    conn = RecordingConnection()
    expected = []
    mgr = ReplicationManager(conn, store, AllowAll(), accept_all, collections.Counter(), expect=expected.append)
    rep = mgr.pull("src", "dst", live=False)
    rid = conn.sent[-1]["rid"]
    mgr.handle({"t": "accept", "rid": rid, "epoch": "e", "since": 0, "head": 500})
    assert expected == [500]
    mgr.handle({"t": "caught_up", "rid": rid, "seq": 0})
    assert rep.finished
    mgr.pull("src", "dst", live=False)
    mgr.handle({"t": "accept", "rid": conn.sent[-1]["rid"], "epoch": "e", "since": 7, "head": 7})
    assert expected == [500]


@pytest_twisted.ensureDeferred
async def test_expected_large_pulls_start_the_verification_processes(monkeypatch):
    """warm_verifiers starts the processes when the expected documents would go to them (INLINE_BELOW or
    more) and leaves them alone for fewer; a SyncFactory with the default validator warms them for a pull."""
    from shiftpeer.identity import verifiers

    procs = verifiers.VerifyProcesses(reactor)
    monkeypatch.setattr(verifiers, "verify_processes", lambda r: procs)
    try:
        verifiers.warm_verifiers(reactor, verifiers.INLINE_BELOW - 1)
        assert procs.procs == [None] * VERIFY_THREADS
        verifiers.warm_verifiers(reactor, verifiers.INLINE_BELOW)
        assert all(p is not None and not p.gone for p in procs.procs)
        started = list(procs.procs)
        verifiers.warm_verifiers(reactor, 10_000)          # already running: the same processes
        assert procs.procs == started
        assert all(await verify_many(_signed_docs(100)))
    finally:
        procs.stop()
    own = SyncFactory(MemoryStore(), NodeKey.generate(), AllowAll(), reactor=reactor)
    assert own.expect_docs is not None
    given = SyncFactory(MemoryStore(), NodeKey.generate(), AllowAll(), reactor=reactor, validator=accept_all)
    assert given.expect_docs is None
