"""The hub's merge of ``master``, ``group/<g>`` and ``inbox/<u>`` into ``shared``, with visibility tokens.

Each source database gives its documents one token (``public``, ``group:<g>``, ``user:<u>``) and every
document also gets ``author:<account id>``, so ``shared`` answers "what may this user see" with an
index merge, never a scan. A comment also gets the tokens of the shift it comments on: it goes to
that shift's audience. A checkpoint per source (in ``shared``) makes the merge resume after a
restart; the merge follows commits live and runs outside the commit callback.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from shiftpeer.roles import audience

SHARED_DB = "shared"
MERGE_PEER = "merge"
BATCH = 500

log = Logger()

#: Called with (shared database, new documents) after a batch with never-seen comments was merged.
NewDocsHook = Callable[[list[dict]], None]


def is_source(dbname: str) -> bool:
    """Does this hub database feed ``shared``?"""
    return audience.vis_token(dbname) is not None


class SharedMerger:
    """Copies every source database's changes into ``shared`` from per-source checkpoints."""

    def __init__(self, store: Any, clock: Any, *, on_new: NewDocsHook | None = None, batch: int = BATCH) -> None:
        self._store = store
        self._clock = clock
        self._on_new = on_new
        self._batch = batch
        self._pending: set[str] = set()
        self._call = None
        self._unsubscribe = None
        self._idle: list[Deferred] = []
        self.shared = store.create_database(SHARED_DB)

    def start(self) -> None:
        """Follow commits, and catch up every source that changed while the hub was down."""
        self._unsubscribe = self._store.subscribe(self._on_commit)
        for name in self._store.list_databases():
            if is_source(name):
                self._pending.add(name)
        self._schedule()

    def stop(self) -> None:
        """Stop following commits; a scheduled step is cancelled."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._fire_idle()

    def when_idle(self) -> Deferred:
        """Fires once nothing waits to be merged (tests, orderly shutdown)."""
        if self._call is None:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle.append(d)
        return d

    def _on_commit(self, dbname: str, seq: int) -> None:
        if is_source(dbname):
            self._pending.add(dbname)
            self._schedule()

    def _schedule(self) -> None:
        if self._call is None and self._pending and self._unsubscribe is not None:
            self._call = self._clock.callLater(0, self._step)

    def _step(self) -> None:
        self._call = None
        for name in sorted(self._pending):
            self._pending.discard(name)
            try:
                if self.merge_once(name):
                    self._pending.add(name)
            except Exception:
                log.failure("merging {source} into shared failed", source=name)
        if self._pending:
            self._schedule()
        else:
            self._fire_idle()

    def merge_once(self, name: str) -> bool:
        """Merge one batch of ``name``'s changes into ``shared``; True when more are waiting."""
        if not self._store.has_database(name):
            return False
        src = self._store.database(name)
        cp = self.shared.get_checkpoint(MERGE_PEER, name) or {}
        since = cp.get("seq", 0) if cp.get("epoch") == src.epoch else 0
        changes = src.changes(since=since, limit=self._batch)
        if not changes:
            return False
        docs = src.get_repl_docs([(c.id, list(c.revs)) for c in changes])
        token = audience.vis_token(name)
        fresh = [d for d in docs if not d["deleted"] and d["body"].get("type") == "comment"
                 and self.shared.get(d["id"]) is None]
        by_tokens: dict[tuple, list[dict]] = defaultdict(list)
        for d in docs:
            by_tokens[tuple(self._tokens(token, d))].append(d)
        with self._store.write_txn() as txn:
            for tokens, group in by_tokens.items():
                self.shared.bulk_replicated(group, vis=list(tokens), txn=txn)
            self.shared.set_checkpoint(MERGE_PEER, name, {"seq": changes[-1].seq, "epoch": src.epoch}, txn=txn)
        log.debug("merged {count} docs of {source} into shared", count=len(docs), source=name)
        if fresh and self._on_new is not None:
            self._on_new(fresh)
        return len(changes) >= self._batch

    def _tokens(self, token: str, doc: dict) -> list[str]:
        body = doc["body"]
        tokens = {token}
        if isinstance(body.get("author"), str):
            tokens.add(audience.author_token(body["author"]))
        if body.get("type") == "comment" and isinstance(body.get("shift"), str):
            shift = self.shared.get(body["shift"])
            if shift is not None:
                tokens.update(shift.vis)
        return sorted(tokens)

    def _fire_idle(self) -> None:
        waiters, self._idle = self._idle, []
        for d in waiters:
            d.callback(None)
