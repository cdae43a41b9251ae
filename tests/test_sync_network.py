"""End-to-end sync over real sockets on 127.0.0.1: identity TLS, LMDB stores, signature checks."""

from __future__ import annotations

import functools
import struct
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred
from twisted.internet.task import deferLater

from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc
from shiftpeer.identity.tls import client_creator, server_creator
from shiftpeer.store import Store
from shiftpeer.sync import AllowAll, StaticPolicy, SyncError, SyncFactory
from shiftpeer.sync.client import SyncPeerService, tls_client_endpoint, tls_server_endpoint


async def until(cond, timeout=10.0, what="condition"):
    """Poll cond() every few milliseconds until true, failing after a bounded deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.002, lambda: None)


def bounded(awaitable, seconds: float = 30.0, what: str = "a result") -> Deferred:
    """``awaitable`` (a Deferred or a coroutine) as a Deferred that fails naming ``what`` after ``seconds``:
    a test fails saying what it waited for, never hangs."""
    d = awaitable if isinstance(awaitable, Deferred) else Deferred.fromCoroutine(awaitable)

    def timed_out(failure):
        failure.trap(TimeoutError)
        raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")

    return d.addTimeout(seconds, reactor).addErrback(timed_out)


class Node:
    def __init__(self, path, policy=None, **kw):
        self.key = NodeKey.generate()
        self.id = self.key.account_id
        self.store = Store(str(path), reactor=reactor, sync=False)
        self.factory = SyncFactory(self.store, self.key, policy or AllowAll(), reactor=reactor, roles=("user",), **kw)
        self.port = None
        self.services = []

    async def listen(self):
        ep = tls_server_endpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), server_creator(self.key))
        self.port = await ep.listen(self.factory)
        return self.port.getHost().port

    def connect(self, other, on_connected=None, key=None):
        ep = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", other.port.getHost().port),
                                 client_creator(key or self.key, expected_peer_id=other.id))
        svc = SyncPeerService(reactor, ep, self.factory, on_connected=on_connected,
                              retry_policy=lambda attempt: 0.02)
        svc.startService()
        self.services.append(svc)
        return svc

    def sign(self):
        return functools.partial(sign_doc, self.key)

    def fill(self, name, n, prefix="s", size=50):
        db = self.store.create_database(name)
        with self.store.write_txn() as txn:
            for i in range(n):
                db.put(f"{prefix}{i}", {"author": self.id, "n": i, "text": "x" * size}, sign=self.sign(), txn=txn)
        return db

    async def close(self):
        for svc in self.services:
            await bounded(svc.stopService(), what="a peer service to stop")
        if self.port is not None:
            await bounded(maybeDeferred(self.port.stopListening), what="the listener to stop")
        for conn in list(self.factory.connections):
            conn.close()
        await until(lambda: not self.factory.connections, what="connections to close")
        self.store.close()


def snapshot(db):
    out = {}
    for ch in db.changes(0):
        doc = db.get(ch.id)
        out[ch.id] = (doc.rev, doc.deleted, tuple(doc.conflicts))
    return out


class Nodes:
    """Makes nodes in tmp_path and closes them all at the end of an ``async with`` block."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.made = []

    def __call__(self, name, **kw):
        n = Node(self.tmp_path / name, **kw)
        self.made.append(n)
        return n

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        for n in self.made:
            await n.close()


@pytest_twisted.ensureDeferred
async def test_pull_push_and_live_over_real_tls(tmp_path):
    """Over real TLS, a pull and a push run at once on one connection, then live changes arrive quickly."""
    async with Nodes(tmp_path) as nodes:
        a, b = nodes("a"), nodes("b")
        await b.listen()
        a.fill("user/public", 300, "p")
        src = b.fill("master", 700, "m")
        reps = {}

        def start(conn):
            reps["pull"] = conn.pull("master", "user/feed")
            reps["push"] = conn.push("user/public", "master")

        svc = a.connect(b, on_connected=start)
        conn = await svc.when_authenticated()
        assert conn.peer_id == b.id
        await reps["pull"].caught_up
        await reps["push"].caught_up
        feed = a.store.database("user/feed")
        # every master doc is here; pushed docs may already be coming through master too (live)
        assert all(feed.get(f"m{i}") is not None for i in range(700))
        await until(lambda: b.store.database("master").doc_count() == 1000, what="push")
        t0 = time.monotonic()
        src.put("fresh", {"author": b.id, "n": -1}, sign=b.sign())
        await until(lambda: feed.get("fresh") is not None, what="live change")
        assert time.monotonic() - t0 < 1.0


@pytest_twisted.ensureDeferred
async def test_reconnect_resumes_from_checkpoint(tmp_path):
    """When the connection drops mid-pull, the service reconnects, resumes from its checkpoint and ends identical."""
    async with Nodes(tmp_path) as nodes:
        a, b = nodes("a", batch_changes=50, window=2), nodes("b", batch_changes=50, window=2)
        await b.listen()
        src = b.fill("master", 2000, "m")
        reps = []
        svc = a.connect(b, on_connected=lambda conn: reps.append(conn.pull("master", "feed")))
        first = await svc.when_authenticated()
        await until(lambda: reps and reps[0].seq > 0, what="a first checkpoint")
        first.transport.abortConnection()
        await until(lambda: len(reps) == 2, what="reconnection")
        assert reps[1].seq > 0 or reps[0].seq > 0
        await reps[1].caught_up
        feed = a.store.database("feed")
        assert snapshot(feed) == snapshot(src)
        assert feed.get_checkpoint(b.id, "master")["seq"] == src.update_seq()


@pytest_twisted.ensureDeferred
async def test_concurrent_edits_converge(tmp_path):
    """Two nodes editing the same shifts concurrently converge to identical winners and conflicts."""
    async with Nodes(tmp_path) as nodes:
        a, b = nodes("a"), nodes("b")
        await b.listen()
        da = a.fill("db", 50, "s")
        svc = a.connect(b)
        conn = await svc.when_authenticated()
        await conn.push("db", "db", live=False).caught_up
        db_ = b.store.database("db")
        for i in range(0, 50, 2):
            da.put(f"s{i}", {"author": a.id, "v": "a"}, parent=da.get(f"s{i}").rev, sign=a.sign())
            db_.put(f"s{i}", {"author": a.id, "v": "b"}, parent=db_.get(f"s{i}").rev, sign=a.sign())
        db_.put("s1", {"author": a.id}, parent=db_.get("s1").rev, deleted=True, sign=a.sign())
        da.put("s1", {"author": a.id, "v": "a"}, parent=da.get("s1").rev, sign=a.sign())
        pull, push = conn.pull("db", "db"), conn.push("db", "db")
        await pull.caught_up
        await push.caught_up
        await until(lambda: snapshot(da) == snapshot(db_), what="convergence")
        assert sum(1 for v in snapshot(da).values() if v[2]) == 25


@pytest.mark.allow_logged_errors
@pytest_twisted.ensureDeferred
async def test_forged_signature_is_refused_over_real_tls(tmp_path):
    """A shift whose signature does not verify is refused, the pushing peer dropped, nothing stored."""
    async with Nodes(tmp_path) as nodes:
        a, b = nodes("a", batch_changes=10), nodes("b")
        await b.listen()
        db = a.fill("mine", 30, "ok")
        mallory = NodeKey.generate()
        db.put("forged", {"author": b.id, "text": "not really b"}, sign=lambda *args: mallory.sign(b"x" * 10))
        svc = a.connect(b)
        conn = await svc.when_authenticated()
        rep = conn.push("mine", "inbox")
        await until(lambda: b.factory.counters["violation.forged"] == 1, what="refusal")
        inbox = b.store.database("inbox") if b.store.has_database("inbox") else None
        assert inbox is None or inbox.get("forged") is None
        await until(lambda: rep.finished, what="push to end")


@pytest.mark.allow_logged_errors
@pytest_twisted.ensureDeferred
async def test_refusals_leave_other_connections_working(tmp_path):
    """Unauthorised reads/writes are refused by name and a peer sending garbage is dropped; others carry on.
    Every wait is bounded: under load this test once hung in the end's stop of ``a``'s peer service, which was
    reconnecting after the garbage (tests/test_sync_peer_stop.py)."""
    async with Nodes(tmp_path) as nodes:
        policy = StaticPolicy({"*": {"read": ["master"], "write": []}})
        a, b, c = nodes("a"), nodes("b", policy=policy), nodes("c")
        await b.listen()
        src = b.fill("master", 20, "m")
        b.fill("secret", 5, "x")
        a.fill("mine", 3, "y")
        good = await bounded(c.connect(b).when_authenticated(), what="c to connect")
        live = good.pull("master", "feed")
        await bounded(live.caught_up, what="c's live pull to catch up")
        conn = await bounded(a.connect(b).when_authenticated(), what="a to connect")
        with pytest.raises(SyncError) as read:
            await bounded(conn.pull("secret", "stolen").done, what="the refused pull to end")
        assert read.value.code == "forbidden" and read.value.db == "secret"
        with pytest.raises(SyncError) as write:
            await bounded(conn.push("mine", "master").done, what="the refused push to end")
        assert write.value.code == "forbidden" and write.value.db == "master"
        assert b.factory.counters["refused"] == 2
        conn.transport.write(struct.pack(">I", 5) + b"\xff\xfe\xfd\xfc\xfb")
        await until(lambda: b.factory.counters["violation.bad_cbor"] == 1, what="bad frame refusal")
        src.put("after", {"author": b.id}, sign=b.sign())
        feed = c.store.database("feed")
        await until(lambda: feed.get("after") is not None, what="bystander live change")
        assert b.store.database("master").doc_count() == 21 and not b.store.has_database("stolen")
