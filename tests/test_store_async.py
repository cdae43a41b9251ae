"""Store threading: the writer thread, subscriptions fired in the reactor thread, group commit."""

from __future__ import annotations

import threading
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from shiftpeer.store import InvalidDocument, Store
from shiftpeer.store.revs import compute_rev


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"), map_size=1 << 30)
    yield s
    s.close()


def repl_docs(n, prefix="d"):
    out = []
    for i in range(n):
        body = {"href": f"http://a.org/{i % 10}", "created": i, "n": i}
        rev = compute_rev(None, False, body)
        out.append({"id": f"{prefix}{i}", "rev": rev, "deleted": False, "body": body, "sig": b"s" * 64,
                    "history": [rev]})
    return out


def test_subscribe_sync_put_after_commit(store):
    """When a document is put from the reactor thread, subscribers are called after commit with (db, seq)."""
    db = store.create_database("user/feed")
    calls = []

    def cb(name, seq):
        calls.append((name, seq, db.get("a") is not None))

    unsubscribe = store.subscribe(cb)
    db.put("a", {})
    assert calls == [("user/feed", 1, True)]
    unsubscribe()
    db.put("b", {})
    assert len(calls) == 1


def test_subscribe_once_per_database_per_commit(store):
    """When one transaction writes two databases, each subscriber hears each database once, at its last seq."""
    a, b = store.create_database("a"), store.create_database("b")
    calls = []
    store.subscribe(lambda n, s: calls.append((n, s)))
    with store.write_txn() as txn:
        a.put("x", {}, txn=txn)
        a.put("y", {}, txn=txn)
        b.put("z", {}, txn=txn)
    assert sorted(calls) == [("a", 2), ("b", 1)]


def test_no_notification_when_nothing_changed(store):
    """When a replicated batch changes nothing, subscribers are not called."""
    db = store.create_database("a")
    docs = repl_docs(3)
    db.bulk_replicated(docs)
    calls = []
    store.subscribe(lambda n, s: calls.append((n, s)))
    assert db.bulk_replicated(docs) == []
    assert calls == []


def test_group_commit_one_transaction(store):
    """When a batch of 1,000 replicated documents is written, it is one LMDB transaction (one fsync)."""
    db = store.create_database("shared")
    before = store.env.info()["last_txnid"]
    assert len(db.bulk_replicated(repl_docs(1000))) == 1000
    assert store.env.info()["last_txnid"] == before + 1
    assert db.doc_count() == 1000 and db.update_seq() == 1000


@pytest_twisted.ensureDeferred
async def test_bulk_async_in_writer_thread_notifies_in_reactor(store):
    """When a batch is written with bulk_replicated_async, it runs in the writer thread and subscribers
    are called in the reactor thread."""
    db = store.create_database("shared")
    heard = []
    store.subscribe(lambda n, s: heard.append((n, s, threading.get_ident())))
    writer_ident = await store.run_in_writer(threading.get_ident)
    assert writer_ident != threading.get_ident()
    ids = await db.bulk_replicated_async(repl_docs(500))
    assert len(ids) == 500
    # callFromThread delivers on the next reactor iteration; wait for it with a bounded deadline
    from twisted.internet import reactor, task

    for _ in range(200):
        if heard:
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    assert heard == [("shared", 500, threading.get_ident())]
    assert db.get("d499").sig == b"s" * 64


@pytest_twisted.ensureDeferred
async def test_bulk_async_bad_input_errback(store):
    """When an async batch holds a bad document, the Deferred fails with InvalidDocument and nothing is written."""
    db = store.create_database("shared")
    docs = repl_docs(10)
    docs[5]["body"] = {"bad": {1, 2}}
    with pytest.raises(InvalidDocument):
        await db.bulk_replicated_async(docs)
    assert db.changes() == []


@pytest_twisted.ensureDeferred
async def test_reads_while_writer_busy(store):
    """When the writer thread is committing batches, reads in the reactor thread still work."""
    db = store.create_database("shared")
    db.put("first", {"href": "h", "created": 0})
    ds = [db.bulk_replicated_async(repl_docs(300, prefix=f"b{k}-")) for k in range(5)]
    seen = db.get("first")
    assert seen is not None
    for d in ds:
        await d
    assert db.doc_count() == 1501


@pytest_twisted.ensureDeferred
async def test_queued_jobs_share_one_commit_and_a_failing_one_is_rolled_back_alone(store):
    """When several batches queue behind a busy writer, they are committed together (one transaction),
    and a batch that fails inside that group is rolled back alone while the others are stored."""
    db = store.create_database("shared")
    started, release = threading.Event(), threading.Event()

    def block():
        started.set()
        return release.wait(10)

    first = store.run_in_writer(block)
    assert started.wait(10)  # the writer is inside the first job: what follows queues behind it
    writer = store._writer
    # jobs without a preparation step (bulk_replicated_async prepares its batches first, in another thread,
    # and then they group by when they are ready: test_prepared_jobs_*)
    good1 = store.run_in_writer(db.bulk_replicated, repl_docs(200, prefix="g1-"))
    bad_docs = repl_docs(5, prefix="x-")

    def half_then_fail():
        db.bulk_replicated(bad_docs)  # written in this job's transaction...
        raise RuntimeError("job failed after writing")  # ...and rolled back with it

    bad = store.run_in_writer(half_then_fail)
    good2 = store.run_in_writer(db.bulk_replicated, repl_docs(300, prefix="g2-"))
    txn_before = store.env.info()["last_txnid"]
    release.set()
    assert await first is True
    assert len(await good1) == 200
    with pytest.raises(RuntimeError, match="job failed after writing"):
        await bad
    assert len(await good2) == 300
    # the three batches queued behind the blocking job were one transaction (the blocking job's own
    # commit wrote nothing, which LMDB does not count)
    assert store.env.info()["last_txnid"] == txn_before + 1
    assert writer.jobs == 4 and writer.commits == 2
    assert db.doc_count() == 500 and db.get("x-0") is None and db.get("g2-299") is not None
    assert db.update_seq() == 500  # the failed job's seqs were rolled back too


@pytest_twisted.ensureDeferred
async def test_prepared_jobs_are_prepared_outside_the_writer_and_keep_their_order(store):
    """prepare_and_write runs the preparation in a thread of its own, without a transaction, and the job
    with its result in the writer; prepared and plain jobs run in the order they were submitted."""
    ran: list = []
    writer_ident = await store.run_in_writer(threading.get_ident)

    def prepare(name):
        def step(pause):
            pause()
            ran.append(("prepare", name, threading.get_ident() != writer_ident, store._local.__dict__.get("txn")))
            return name
        return step

    def job(value):
        ran.append(("job", value))
        return value

    ds = [store.prepare_and_write(prepare("a"), job), store.run_in_writer(job, "plain"),
          store.prepare_and_write(prepare("b"), job)]
    assert [await d for d in ds] == ["a", "plain", "b"]
    assert [r for r in ran if r[0] == "job"] == [("job", "a"), ("job", "plain"), ("job", "b")]
    assert [r for r in ran if r[0] == "prepare"] == [("prepare", "a", True, None), ("prepare", "b", True, None)]


@pytest_twisted.ensureDeferred
async def test_prepared_jobs_prepare_while_the_writer_commits_or_waits_never_beside_a_job(store):
    """Preparation steps aside while the writer runs a job (py-lmdb gives up the GIL on every call, and
    would wait milliseconds to win it back from a thread running Python): a preparation that begins while
    a job runs goes on only once the job is done."""
    started, release = threading.Event(), threading.Event()
    order: list = []

    def block():
        started.set()
        release.wait(10)
        order.append("job done")

    def prepare(pause):
        order.append("prepare called")
        pause()
        order.append("prepared")

    first = store.run_in_writer(block)
    assert started.wait(10)
    second = store.prepare_and_write(prepare, lambda _: None)
    deadline = time.monotonic() + 10
    while "prepare called" not in order and time.monotonic() < deadline:
        await deferLater(reactor, 0.005, lambda: None)
    assert order == ["prepare called"]               # paused: the writer is inside a job
    release.set()
    await first
    await second
    assert order == ["prepare called", "job done", "prepared"]


@pytest_twisted.ensureDeferred
async def test_a_failed_preparation_fails_its_job_alone(store):
    """A batch whose preparation refuses a document fails with InvalidDocument and writes nothing; the
    jobs around it are written."""
    db = store.create_database("shared")
    bad = repl_docs(3, prefix="x-")
    bad[1]["rev"] = "not-a-rev"
    ds = [db.bulk_replicated_async(repl_docs(150, prefix="a-")), db.bulk_replicated_async(bad),
          db.bulk_replicated_async(repl_docs(250, prefix="b-"))]
    assert len(await ds[0]) == 150
    with pytest.raises(InvalidDocument):
        await ds[1]
    assert len(await ds[2]) == 250
    assert db.doc_count() == 400 and db.get("x-0") is None


@pytest_twisted.ensureDeferred
async def test_closing_the_store_runs_the_jobs_still_being_prepared(tmp_path):
    """Close with batches still queued for preparation: each is prepared and written before close returns."""
    s = Store(str(tmp_path / "store"), map_size=1 << 30)
    db = s.create_database("shared")
    ds = [db.bulk_replicated_async(repl_docs(300, prefix=f"c{k}-")) for k in range(4)]
    s.close()
    for d in ds:
        assert len(await d) == 300
    s = Store(str(tmp_path / "store"), map_size=1 << 30)
    assert s.database("shared").doc_count() == 1200
    s.close()


@pytest_twisted.ensureDeferred
async def test_writer_result_fires_after_commit(store):
    """When a writer job's Deferred fires, its documents are readable from a new read transaction."""
    db = store.create_database("shared")
    ids = await db.bulk_replicated_async(repl_docs(50))
    with store.env.begin() as txn:  # a fresh reader sees only committed data
        assert txn.stat(store._log_db)["entries"] == 50
    assert len(ids) == 50


def test_prepared_batch_is_written_only_to_its_database(store):
    """When a batch prepared for one database is handed to another, it is refused and nothing is written;
    written to its own database it stores the documents, indexed under its visibility tokens."""
    a, b = store.create_database("a"), store.create_database("b")
    batch = a.prepare_replicated(repl_docs(3), vis=["public"])
    with pytest.raises(InvalidDocument, match="database that prepared it"):
        b.bulk_replicated(batch)
    assert b.update_seq() == 0
    assert a.bulk_replicated(batch) == ["d0", "d1", "d2"]
    docs, _ = a.query("href", "http://a.org/1", vis=["public"])
    assert [d.id for d in docs] == ["d1"]
    assert a.query("href", "http://a.org/1", vis=["group/x"])[0] == []


def test_prepare_refuses_bad_input_without_touching_the_store(store):
    """When a batch holds a bad document, prepare_replicated raises and the store is unchanged."""
    db = store.create_database("a")
    docs = repl_docs(3)
    docs[1]["rev"] = "not-a-rev"
    before = store.env.info()["last_txnid"]
    with pytest.raises(InvalidDocument):
        db.prepare_replicated(docs)
    assert store.env.info()["last_txnid"] == before and db.update_seq() == 0
