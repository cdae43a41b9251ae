"""How many logical databases a node holds, and which few of them ``status`` and the metrics show.

A hub holds a database per user and per group (a million ``inbox/<user>``), so nothing the status route
or a metrics scrape does may read every database on the reactor thread. ``DatabaseCensus`` keeps:

- **totals** (number of databases, live documents in all of them) and the ``TOP`` largest databases
  (of those holding documents), counted by a scan in a thread of the reactor's pool:
  ``store.database_count()`` (O(1)), then ``store.database_sizes()``, which reads each database's counts
  in chunks of read transactions without opening it (no object kept per database). The scan runs when
  the node starts and then on housekeeping ticks, at most once per
  ``max(MIN_INTERVAL, SPACING * the last scan's duration)``, so it takes at most 1/SPACING of one core.
  Totals are therefore as of the last scan (``as_of``); on the first scan the count of databases is
  published at once.
- the ``RECENT`` databases most recently changed, from the store's commit notifications (O(1) a commit);
- the node's own databases (``own_databases``: user, master, shared, the hub's registries).

``page(prefix, limit, after)`` lists the databases under a prefix in name order, one page at a time,
also in a thread: it reads just that page, and counts the names under the prefix for ``total``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import time
from collections import OrderedDict
from typing import Any, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, gatherResults, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

log = Logger()

#: How many of the largest databases status shows (and the metrics label).
TOP = 20
#: How many of the most recently changed databases status shows.
RECENT = 20
#: Seconds between scans at least, and how many scan durations apart they are at least.
MIN_INTERVAL = 60.0
SPACING = 20


class Stopped(Exception):
    """The census was stopped while a scan ran (the store is about to close)."""


@functools.lru_cache(maxsize=1)
def own_databases() -> tuple[str, ...]:
    """The node-level databases the roles create (never one per user or group)."""
    from shiftpeer.roles.accounts import ACCOUNTS_DB
    from shiftpeer.roles.fullpeer import MASTER
    from shiftpeer.roles.groups import GROUPS_DB
    from shiftpeer.roles.merge import SHARED_DB
    from shiftpeer.roles.publishing import FEED, OUTBOX, PRIVATE, PUBLIC
    from shiftpeer.roles.social import MARKS_DB, NOTICES_DB, SOCIAL_DB

    return (PRIVATE, PUBLIC, FEED, OUTBOX, MARKS_DB, MASTER, SHARED_DB, NOTICES_DB, ACCOUNTS_DB, GROUPS_DB,
            SOCIAL_DB)


def counts(store: Any, name: str) -> dict | None:
    """``{"docs", "seq"}`` of one database (two O(1) reads), or None when it does not exist."""
    from shiftpeer.store import NotFound

    try:
        db = store.database(name)
        return {"docs": db.doc_count(), "seq": db.update_seq()}
    except NotFound:
        return None


class DatabaseCensus(Service):
    """Totals, the largest and the recently changed databases of a node's store; see the module doc."""

    name = "census"

    def __init__(self, node: Any, *, top: int = TOP, recent: int = RECENT,
                 min_interval: float = MIN_INTERVAL, spacing: float = SPACING) -> None:
        self._node = node
        self.top, self.recent_size = top, recent
        self.min_interval, self.spacing = min_interval, spacing
        self.count: int | None = None           # databases at the last scan (None before the first)
        self.docs: int | None = None            # live documents in all of them
        self.largest: list[str] = []            # the ``top`` largest at the last scan, largest first
        self.as_of: float | None = None         # node clock when the last scan finished
        self.seconds: float | None = None       # how long it took (CPU-bound, in its thread)
        self.scanned = 0                        # databases read by the scan running now
        self.recent: OrderedDict[str, int] = OrderedDict()   # name -> seq, most recent last
        self._scan: Deferred | None = None
        self._pages: set[Deferred] = set()
        self._page_lock = DeferredLock()        # one page listing at a time: each may take a second
        self._stopping = False
        self._unsubscribe: Any = None

    # -- service ---------------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._stopping = False
        # the first scan starts with housekeeping, once the roles have created their databases
        self._unsubscribe = self._node.store.subscribe(self._changed)

    def stopService(self) -> Deferred:
        """Fires once no thread reads the store any more (the store closes right after)."""
        super().stopService()
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        running = [d for d in [self._scan, *self._pages] if d is not None]
        return gatherResults(running, consumeErrors=True).addBoth(lambda _: None) if running else succeed(None)

    def _changed(self, name: str, seq: int) -> None:
        self.recent.pop(name, None)
        self.recent[name] = seq
        while len(self.recent) > self.recent_size:
            self.recent.popitem(last=False)

    # -- the scan --------------------------------------------------------------------------------
    @property
    def scanning(self) -> bool:
        return self._scan is not None

    def due(self) -> bool:
        """Whether a scan should start now: none running, and long enough since the last one."""
        if self._scan is not None or not self.running:
            return False
        if self.as_of is None:
            return True
        wait = max(self.min_interval, self.spacing * (self.seconds or 0.0))
        return self._node.clock.seconds() - self.as_of >= wait

    def refresh(self, force: bool = False) -> Deferred | None:
        """Start a scan when one is due (or ``force``); the Deferred fires when it is done."""
        if self._scan is not None:
            return self._scan if force else None
        if not (self.running and (force or self.due())):
            return None
        reactor = self._node.reactor
        d = deferToThreadPool(reactor, reactor.getThreadPool(), self._count, self._node.store)
        self._scan = d
        d.addCallbacks(self._counted, self._failed)
        return d

    def _count(self, store: Any) -> tuple[int, int, list[str], float]:
        """In the thread: (databases, live documents, the largest names, seconds)."""
        start = time.perf_counter()
        count = store.database_count()
        if self.count is None:      # the first count: publish it now, the documents take longer
            self.count = count
        total = 0

        def sizes() -> Iterable[tuple[int, str]]:
            nonlocal total
            for i, (name, docs, _seq) in enumerate(store.database_sizes()):
                if self._stopping:
                    raise Stopped()
                self.scanned = i
                total += docs
                yield docs, name

        largest = [name for docs, name in heapq.nlargest(self.top, sizes()) if docs > 0]
        return count, total, largest, time.perf_counter() - start

    def _counted(self, result: tuple[int, int, list[str], float]) -> None:
        self._scan = None
        self.count, self.docs, self.largest, self.seconds = result
        self.as_of = self._node.clock.seconds()
        self.scanned = 0
        log.debug("counted {count} databases, {docs} documents in {seconds:.1f}s", count=self.count,
                  docs=self.docs, seconds=self.seconds)

    def _failed(self, failure: Any) -> None:
        self._scan = None
        self.scanned = 0
        if failure.check(Stopped) or self._stopping:
            return None
        log.failure("counting the databases failed; the next housekeeping tick tries again", failure)

    # -- what status shows -----------------------------------------------------------------------
    def totals(self) -> dict:
        """The counts of the last scan and whether one is running; O(1)."""
        return {"count": self.count, "docs": self.docs, "as_of": self.as_of, "seconds": self.seconds,
                "scanning": self.scanning, "scanned": self.scanned if self.scanning else None}

    def shown(self) -> dict[str, str]:
        """Bounded: name -> why it is shown (``own``, ``largest``, ``recent``), the first reason wins."""
        out: dict[str, str] = {}
        for why, names in (("own", own_databases()), ("largest", self.largest),
                           ("recent", reversed(self.recent))):
            for name in names:
                out.setdefault(name, why)
        return out

    def page(self, prefix: str, limit: int, after: str | None = None) -> Deferred:
        """The databases under ``prefix`` after the name ``after``, at most ``limit``, in name order:
        ``{"prefix", "after", "total", "rows": [{"name", "docs", "seq"}], "next"}`` (``next``: the
        ``after`` of the following page, None on the last)."""
        if not self.running:
            raise RuntimeError("the node is not running")

        def listed() -> Deferred:
            if self._stopping:
                raise RuntimeError("the node is stopping")
            reactor = self._node.reactor
            return deferToThreadPool(reactor, reactor.getThreadPool(), _page, self._node.store, prefix,
                                     limit, after)

        d = self._page_lock.run(listed)
        self._pages.add(d)

        def done(result: Any) -> Any:
            self._pages.discard(d)
            return result

        return d.addBoth(done)


def _page(store: Any, prefix: str, limit: int, after: str | None) -> dict:
    found = list(itertools.islice(store.database_sizes(prefix, after), limit + 1))
    rows = [{"name": name, "docs": docs, "seq": seq} for name, docs, seq in found[:limit]]
    more = len(found) > limit
    return {"prefix": prefix, "after": after, "total": store.database_count(prefix), "rows": rows,
            "next": rows[-1]["name"] if more and rows else None}
