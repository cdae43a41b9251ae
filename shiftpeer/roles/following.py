"""Copying between databases of one node: the machinery shared by every in-process replication.

``user/private -> user/feed``, ``master -> shared`` on a hub, ``master -> user/feed`` on a full peer: each
follows store commits, runs its copy step outside the commit callback (many commits in one reactor turn
cause one step), resumes from a checkpoint kept in the target, and starts over when the source was
recreated (a new epoch). Subclasses say which databases they watch and how one batch is copied.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger


def checkpoint_since(target: Any, peer: str, source: Any) -> int:
    """The source sequence already copied into ``target`` (0 when none, or the source was recreated)."""
    cp = target.get_checkpoint(peer, source.name) or {}
    return int(cp.get("seq", 0)) if cp.get("epoch") == source.epoch else 0


def save_checkpoint(target: Any, peer: str, source: Any, seq: int, txn: Any) -> None:
    """Record that ``source`` is copied into ``target`` up to ``seq`` (in the copy's own transaction)."""
    target.set_checkpoint(peer, source.name, {"seq": seq, "epoch": source.epoch}, txn=txn)


#: A copy step runs for at most this long (seconds of CPU on the reactor thread) before it yields: a hub
#: catching up with a million inboxes at start must not stall everything else.
STEP_SECONDS = 0.005
#: Sources listed per read transaction while catching up (a few milliseconds each).
LIST_CHUNK = 1000
_DONE = object()


class CommitFollower:
    """Runs ``copy_once(source)`` for every watched source that committed, until each is caught up.

    Sources wait in insertion order (committed ones first, then the start-up catch-up, which is listed
    lazily); each reactor turn copies for at most ``STEP_SECONDS`` and then yields."""

    log = Logger()

    def __init__(self, store: Any, clock: Any) -> None:
        self._store = store
        self._clock = clock
        self._pending: dict[str, None] = {}       # an ordered set
        self._catchup: Iterator[str | None] = iter(())
        self._call = None
        self._unsubscribe = None
        self._idle: list[Deferred] = []

    # What a subclass provides.
    def watches(self, dbname: str) -> bool:
        """Does a commit to ``dbname`` call for a copy step?"""
        raise NotImplementedError

    def sources(self) -> Iterable[str | None]:
        """The sources to catch up with at start (changes made while the node was down): every watched
        database that ever changed, listed without opening the others (a hub has a million inboxes).
        A None stands for a database passed over, so a step can yield in the middle of a long listing."""
        watches = self.watches
        return (name if seq and watches(name) else None
                for name, _docs, seq in self._store.database_sizes(chunk=LIST_CHUNK))

    def copy_once(self, source: str) -> bool:
        """Copy one batch from ``source``; True when more are waiting."""
        raise NotImplementedError

    # The machinery.
    def start(self) -> None:
        """Follow commits, and catch up with every source."""
        self._unsubscribe = self._store.subscribe(self._on_commit)
        self.nudge()

    def stop(self) -> None:
        """Stop following commits; a scheduled step is cancelled."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._catchup = iter(())
        self._fire_idle()

    def nudge(self) -> None:
        """Schedule a step for every source now (one that stopped on an error resumes from its checkpoint)."""
        self._catchup = iter(self.sources())
        self._call_soon()

    def when_idle(self) -> Deferred:
        """Fires once nothing waits to be copied (tests, orderly shutdown)."""
        if self._call is None:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle.append(d)
        return d

    def _on_commit(self, dbname: str, seq: int) -> None:
        if self.watches(dbname):
            self._pending[dbname] = None
            self._schedule()

    def _schedule(self) -> None:
        if self._call is None and self._pending and self._unsubscribe is not None:
            self._call_soon()

    def _call_soon(self) -> None:
        if self._call is None and self._unsubscribe is not None:
            self._call = self._clock.callLater(0, self._step)

    def _step(self) -> None:
        self._call = None
        deadline = time.process_time() + STEP_SECONDS
        more: list[str] = []
        while True:                 # at least one source a step, then until the time is up
            if self._pending:       # committed sources first, then the catch-up listing
                name = next(iter(self._pending))
                del self._pending[name]
            else:
                name = next(self._catchup, _DONE)
                if name is _DONE:
                    break
            if name is not None:
                try:
                    if self.copy_once(name):
                        more.append(name)
                except Exception:
                    self.log.failure("copying {source} in {follower} failed", source=name, follower=self)
            if time.process_time() >= deadline:
                self._call_soon()   # out of time: more in the next turn
                break
        for name in more:
            self._pending[name] = None
        if self._pending:
            self._call_soon()
        elif self._call is None:
            self._fire_idle()

    def _fire_idle(self) -> None:
        waiters, self._idle = self._idle, []
        for d in waiters:
            d.callback(None)
