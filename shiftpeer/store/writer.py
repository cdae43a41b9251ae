"""The store's writer thread, with group commit across queued jobs.

Each job (`Store.run_in_writer`) runs inside a write transaction in this thread. When several jobs are
queued, up to `max_group` of them share one LMDB transaction and so one commit and one fsync: each runs
in its own nested (child) transaction, so a job that raises is rolled back alone and the others still
commit. A job's Deferred fires only after the transaction holding it is committed (and fsynced when the
store syncs), so "fired" still means "durable". While a group commits (LMDB releases the GIL for the
page writes and the fsync), the preparing thread does the CPU half of the next jobs (`submit(prepare=)`):
that overlap, plus fewer fsyncs and fewer page copies when batches share pages, is what group commit buys
(docs/store.md).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

import lmdb
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

#: At most this many queued jobs share one transaction: a bound on how long a commit holds LMDB's
#: write lock (a synchronous write in the reactor thread waits for it).
MAX_GROUP = 4


class GroupWriter:
    """One thread running store write jobs in order, committing queued jobs together."""

    def __init__(self, store: Any, reactor: Any, max_group: int = MAX_GROUP) -> None:
        self._store = store
        self._reactor = reactor
        self.max_group = max_group
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="shiftpeer-store-writer", daemon=True)
        self._thread.start()
        # Jobs with a preparation step, in order, and the thread that runs those steps (started on first use)
        self._prep: collections.deque = collections.deque()
        self._prep_thread: threading.Thread | None = None
        #: the writer is running jobs (not committing, not waiting): preparation waits (see _pause)
        self._in_jobs = False
        #: transactions committed, jobs run, and seconds spent running jobs and committing (tests, benchmarks)
        self.commits = 0
        self.jobs = 0
        self.run_seconds = 0.0
        self.commit_seconds = 0.0

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict,
               prepare: Callable[[Callable[[], None]], Any] | None = None) -> Deferred:
        """Run `fn(*args, **kwargs)` in a write transaction. With `prepare`, `fn(prepare(pause), *args,
        **kwargs)`: `prepare` runs first in the preparing thread, without a transaction, while the writer
        commits the jobs before it or waits, and calls `pause()` every few milliseconds of work to step
        aside while the writer runs jobs (see _pause). Jobs run in the order submitted either way."""
        d: Deferred = Deferred()
        with self._cond:
            if self._stopping:
                raise RuntimeError("the store writer is stopped")
            if prepare is None and not self._prep:
                self._queue.append((fn, args, kwargs, d))
            else:                      # behind the jobs being prepared, to keep the order
                self._prep.append((fn, args, kwargs, d, prepare))
                if self._prep_thread is None:
                    self._prep_thread = threading.Thread(target=self._run_prep, name="shiftpeer-store-prepare",
                                                         daemon=True)
                    self._prep_thread.start()
            self._cond.notify_all()
        return d

    def stop(self) -> None:
        """Run what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if self._prep_thread is not None and threading.current_thread() is not self._prep_thread:
            self._prep_thread.join()

    # -- the thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        local = self._store._local
        local.in_writer = True
        while True:
            with self._cond:
                while not self._queue and not (self._stopping and not self._prep):
                    self._cond.wait()
                if not self._queue:
                    return
                jobs = [self._queue.popleft() for _ in range(min(self.max_group, len(self._queue)))]
            self._run_group(jobs)

    def _run_prep(self) -> None:
        """The preparing thread: each job's `prepare` in order, then the job goes to the writer's queue (a
        job without one just follows the ones before it). A failed preparation fails the job's Deferred."""
        while True:
            with self._cond:
                while not self._prep and not self._stopping:
                    self._cond.wait()
                if not self._prep:
                    return
                fn, args, kwargs, d, prepare = self._prep[0]
            if prepare is not None:
                try:
                    args = (prepare(self._pause), *args)
                except BaseException as e:  # noqa: B902 - the job's failure goes to its Deferred
                    with self._cond:
                        self._prep.popleft()
                        self._cond.notify_all()
                    self._deliver([(d, False, Failure(e))], {})
                    continue
            with self._cond:
                self._prep.popleft()
                self._queue.append((fn, args, kwargs, d))
                self._cond.notify_all()

    def _pause(self) -> None:
        """Wait while the writer runs jobs. py-lmdb releases the GIL around every LMDB call, and a thread
        that wants it back waits for the switch interval (5 ms) while another runs Python: beside a busy
        thread a put took ~2.6 ms instead of ~2 us. So preparation runs while the writer commits (LMDB
        writes pages and fsyncs without the GIL) or has nothing to do, and never beside its jobs."""
        with self._cond:
            while self._in_jobs and not self._stopping:
                self._cond.wait()

    def _set_in_jobs(self, value: bool) -> None:
        with self._cond:
            self._in_jobs = value
            if not value:
                self._cond.notify_all()

    def _run_group(self, jobs: list) -> None:
        from .store import WriteTxn  # the store module imports this one

        store = self._store
        local = store._local
        outcomes: list[tuple[bool, Any]] = []
        touched: dict[str, int] = {}
        try:
            parent = store.env.begin(write=True)
        except lmdb.Error as e:
            failure = Failure(store._write_failed(e))
            self._deliver([(d, False, failure) for *_, d in jobs], {})
            return
        single = len(jobs) == 1
        started = time.perf_counter()
        self._set_in_jobs(True)
        try:
            for fn, args, kwargs, _d in jobs:
                txn = parent if single else store.env.begin(write=True, parent=parent)
                w = WriteTxn(store, txn)
                local.txn = w
                try:
                    result = fn(*args, **kwargs)
                    for name, seq in w.flush().items():
                        touched[name] = seq
                    if not single:
                        txn.commit()
                    outcomes.append((True, result))
                except BaseException as e:  # noqa: B902 - the job's failure goes to its Deferred
                    if not single:
                        txn.abort()
                    if isinstance(e, lmdb.Error):
                        e = store._write_failed(e)
                    outcomes.append((False, Failure(e)))
                    if single:
                        parent.abort()
                        parent = None
                finally:
                    local.txn = None
        finally:
            self._set_in_jobs(False)
        committing = time.perf_counter()
        self.run_seconds += committing - started
        if parent is not None:
            try:
                parent.commit()
                self.commits += 1
                self.commit_seconds += time.perf_counter() - committing
            except lmdb.Error as e:
                failure = Failure(store._write_failed(e))
                outcomes = [(False, failure) if ok else (ok, r) for ok, r in outcomes]
                touched = {}
        self.jobs += len(jobs)
        self._deliver([(job[3], ok, r) for job, (ok, r) in zip(jobs, outcomes)], touched)

    def _deliver(self, results: list, touched: dict[str, int]) -> None:
        def fire() -> None:
            if touched:
                self._store._fire(touched)
            for d, ok, r in results:
                if ok:
                    d.callback(r)
                else:
                    d.errback(r)

        self._reactor.callFromThread(fire)
