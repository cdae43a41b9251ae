"""The hub's rebuild of the visibility tokens in ``shared`` from the rules its merge applies today.

A record's tokens only grow: every merge adds the tokens of what it merged, and nothing took one off. So the
tokens an earlier version gave and the merge no longer would stay on the record: a comment's edit took every
token of its shift's record (docs/security.md, *Bugs this work found*: "An edit of a comment showed it
beyond its signed audience"), and a revision under another author's old id gave its writer's tokens to that
id's record ("The hub's `shared` merged a revision into an id's record whoever wrote it"), and a comment took the
places of its shift's record that its signed audience named, a group that refused its author among them
(*Known gaps* before version 3: a comment reaches only the places that take it). What decides no
longer reads them as they are (roles/tokenjudge.py: a comment goes only where the document it answers went,
``HubQueries.places_of``; an ``author:`` token counts for the record's author, ``queries.served``), but they
stay in the index every query pages, and a comment's place tokens were served as they stood.

The pass takes off every token the merge would not give a document today (``Judge``), never adding
one: a place's token (``public``, ``group:<g>``, ``user:<u>``) stays where that place's database holds the
document by the record's author (on a comment as on a shift); an ``author:`` token stays for the record's author
and, on a comment, its shift's authors.
A comment answering a comment (taken before what it answers arrived, or by an older version) keeps its author's
token alone.
It runs once per store, when a hub first opens a store an older version wrote (a checkpoint in ``shared``
records how far it got and that it finished: ``VERSION``), in the store's writer thread, a chunk of
documents a transaction, so the hub serves meanwhile and a restart resumes where the last chunk committed.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from shiftpeer.roles.merge import SHARED_DB
from shiftpeer.roles.tokenjudge import Judge

#: The checkpoint (peer, remote database) in ``shared`` that records the pass.
PASS = ("tokens", "rebuild")
#: The rules the pass applied; a store whose record names another version is rebuilt again (2: a comment
#: answering a comment has no place, ``Judge.justified``; 3: a comment keeps no place of its shift's that did not take it).
VERSION = 3
#: Documents a transaction: ~20 ms of the writer (~100 us a document), no longer than the writer's group
#: commits of replicated batches, so the reactor's own writes wait little behind it.
CHUNK = 200
#: Seconds between progress lines in the log.
LOG_SECONDS = 10.0

log = Logger()


def progress(shared: Any) -> dict:
    """How far the pass has got in ``shared``: ``seq`` (documents up to it are checked), ``checked``,
    ``narrowed``, ``done``; empty when it never ran under this ``VERSION``."""
    cp = shared.get_checkpoint(*PASS) or {}
    return cp if cp.get("version") == VERSION else {}


def rebuild_chunk(store: Any, limit: int = CHUNK, *, restart: bool = False) -> dict:
    """Check the next ``limit`` documents of ``shared`` (changes order, from the recorded seq) and take off
    their unjustified tokens, recording the progress in the same transaction (a chunk that fails writes
    nothing); returns the progress. Done when a chunk finds fewer than ``limit``: in this transaction nothing
    else writes, and a document the merge changes since moves past the recorded seq, so none is missed.
    ``restart``: from the first document again, done or not (the operator's command)."""
    shared = store.database(SHARED_DB)
    with store.write_txn() as txn:
        cp = {} if restart else progress(shared)
        if cp.get("done"):
            return cp
        since = cp.get("seq", 0)
        docs = shared.docs_since(since, limit)
        judge = Judge(store, shared)
        narrowed = 0
        for doc in docs:
            drop = judge.unjustified(doc)
            if drop:
                shared.remove_vis(doc.id, drop, txn=txn)
                narrowed += 1
        cp = {"version": VERSION, "seq": docs[-1].seq if docs else since, "checked": cp.get("checked", 0) + len(docs),
              "narrowed": cp.get("narrowed", 0) + narrowed, "done": len(docs) < limit,
              "of": shared.update_seq()}
        shared.set_checkpoint(*PASS, cp, txn=txn)
    return cp


class TokenRebuild:
    """Runs the pass in the store's writer, a chunk at a time, until ``shared`` records it done."""

    def __init__(self, store: Any, *, chunk: int = CHUNK) -> None:
        self._store = store
        self._chunk = chunk
        self._running = False
        self._stopped = True
        self._waiters: list[Deferred] = []
        self._logged = 0.0

    def start(self) -> Deferred:
        """Run the pass unless ``shared`` records it done under this ``VERSION`` (a store an older version
        wrote has no record); fires with the progress when it is done (or stopped)."""
        return self._run(restart=False)

    def rebuild(self) -> Deferred:
        """Run the pass again from the first document (on demand: ``shiftpeer rebuild-tokens``); joins a
        pass already running. Fires with the progress when it is done."""
        return self._run(restart=True)

    def stop(self) -> None:
        """Start no more chunks (one running commits or not as a whole); the next start resumes."""
        self._stopped = True

    def _run(self, *, restart: bool) -> Deferred:
        self._stopped = False
        if not self._running:
            cp = progress(self._store.database(SHARED_DB))
            if cp.get("done") and not restart:
                return succeed(cp)
            self._running = True
            self._logged = time.monotonic()
            log.info("rebuilding the visibility tokens of shared from seq {seq} of {of}",
                     seq=0 if restart else cp.get("seq", 0), of=self._store.database(SHARED_DB).update_seq())
            self._next(restart)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def _next(self, restart: bool = False) -> None:
        d = self._store.run_in_writer(rebuild_chunk, self._store, self._chunk, restart=restart)
        d.addCallbacks(self._chunk_done, self._failed)

    def _chunk_done(self, cp: dict) -> None:
        if cp.get("done") or self._stopped:
            if cp.get("done"):
                log.info("rebuilt the visibility tokens of shared: {checked} documents checked, {narrowed} narrowed",
                         checked=cp.get("checked", 0), narrowed=cp.get("narrowed", 0))
            self._finish(cp)
            return
        if time.monotonic() - self._logged >= LOG_SECONDS:
            self._logged = time.monotonic()
            log.info("rebuilding the visibility tokens of shared: {checked} documents checked, {narrowed} narrowed, "
                     "at seq {seq} of {of}", checked=cp["checked"], narrowed=cp["narrowed"], seq=cp["seq"], of=cp["of"])
        self._next()

    def _failed(self, failure: Any) -> None:
        log.failure("rebuilding the visibility tokens of shared failed; the next start resumes it", failure)
        self._settle(lambda d: d.errback(failure))

    def _finish(self, cp: dict) -> None:
        self._settle(lambda d: d.callback(cp))

    def _settle(self, fire: Callable[[Deferred], Any]) -> None:
        """The pass is over: fire every waiter with its outcome."""
        self._running = False
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            fire(d)
