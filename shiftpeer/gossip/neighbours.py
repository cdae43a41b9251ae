"""The bounded set of gossip neighbours a node dials: static ``--peer`` addresses plus discovered ones.

``NeighbourSet`` keeps between ``low`` and ``high`` live gossip neighbours (default 4 to 8). Every
``tick()`` (the full-peer role runs one every few seconds) it drops dialled candidates that have been
down longer than ``dead_after`` or whose peer is banned, and dials more candidates, best score first,
while fewer than ``low`` neighbours are live. Static addresses are never dropped (their services keep
retrying with backoff) but a dead one does not count, so a replacement is dialled meanwhile.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Optional

from twisted.logger import Logger

log = Logger()

LOW, HIGH = 4, 8
#: Seconds a dialled (non-static) neighbour may stay disconnected before another replaces it.
DEAD_AFTER = 30.0


class _Candidate:
    __slots__ = ("address", "static", "service", "down_since", "failures", "peer_id")

    def __init__(self, address: str, static: bool) -> None:
        self.address = address
        self.static = static
        self.service: Any = None
        self.down_since: Optional[float] = None
        self.failures = 0
        self.peer_id: Optional[str] = None


class NeighbourSet:
    """Dials candidates to keep ``low``..``high`` live neighbours; see the module doc.

    ``dial(address) -> service`` starts a reconnecting peer service (its ``.connection`` is the live
    connection or None); ``stop(service)`` stops one; ``live()`` returns how many gossip neighbours
    are connected now (incoming ones included); ``scores`` has ``banned(peer_id)`` and ``score``.
    """

    def __init__(self, clock: Any, dial: Callable[[str], Any], stop: Callable[[Any], Any],
                 live: Callable[[], int], scores: Any, *, low: int = LOW, high: int = HIGH,
                 dead_after: float = DEAD_AFTER, own: Iterable[str] = (), rng: Any = None) -> None:
        self.clock = clock
        self._dial = dial
        self._stop = stop
        self._live = live
        self.scores = scores
        self.low, self.high = low, high
        self.dead_after = dead_after
        self.own = set(own)          # our own advertised addresses, never dialled
        self.candidates: dict[str, _Candidate] = {}
        self._rng = rng or random.Random()

    def add(self, addresses: Iterable[str], *, static: bool = False) -> None:
        """Learn candidate addresses (static ones are dialled at the next tick whatever the count)."""
        for address in addresses:
            if not isinstance(address, str) or address in self.own:
                continue
            c = self.candidates.get(address)
            if c is None:
                self.candidates[address] = _Candidate(address, static)
            elif static:
                c.static = True

    def dialled(self) -> list[_Candidate]:
        return [c for c in self.candidates.values() if c.service is not None]

    def tick(self) -> None:
        """Drop dead or banned neighbours, then dial until ``low`` are live."""
        now = self.clock.seconds()
        for c in list(self.candidates.values()):
            conn = getattr(c.service, "connection", None) if c.service is not None else None
            if conn is not None:
                c.peer_id = conn.peer_id
                c.down_since = None
            elif c.service is not None and c.down_since is None:
                c.down_since = now
            if c.peer_id is not None and self.scores.banned(c.peer_id):
                self._drop(c, forget=True)
                continue
            if (c.service is not None and not c.static and c.down_since is not None
                    and now - c.down_since >= self.dead_after):
                log.info("gossip neighbour {address} is dead; replacing it", address=c.address)
                c.failures += 1
                self._drop(c)
        for c in self.candidates.values():
            if c.static and c.service is None:
                self._start(c, now)
        live = self._live()
        pending = sum(1 for c in self.dialled() if getattr(c.service, "connection", None) is None)
        want = self.low - live - pending
        if want <= 0:
            return
        idle = [c for c in self.candidates.values() if c.service is None]
        self._rng.shuffle(idle)
        idle.sort(key=lambda c: (c.failures, self.scores.score(c.peer_id) if c.peer_id else 0))
        for c in idle[:want]:
            if len(self.dialled()) >= self.high:
                break
            self._start(c, now)

    def _start(self, c: _Candidate, now: float) -> None:
        c.service = self._dial(c.address)
        c.down_since = now

    def _drop(self, c: _Candidate, forget: bool = False) -> None:
        if c.service is not None:
            self._stop(c.service)
            c.service = None
        c.down_since = None
        if forget:
            self.candidates.pop(c.address, None)

    def stop(self) -> None:
        for c in self.candidates.values():
            self._drop(c)
