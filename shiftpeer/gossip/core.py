"""Gossip of one database (``master``) over every sync connection with a firehose peer.

``Gossip`` is the part of the full-peer and federation roles that needs no Node: give it each
authenticated connection (``connected(conn)``) and it pulls the peer's ``master`` into ours with a
``GossipPuller`` (one per peer id, however many connections), while the peer pulls ours the same way.
Bodies are requested lazily through the shared ``InFlight`` registry, revisions a neighbour holds are
not announced back to it (``Seen``), and a neighbour that sends forged or malformed data is banned
(``PeerScores``). Documents received this way pass ``check(db, doc)`` before they are stored.
"""

from __future__ import annotations

import collections
import random
from typing import Any, Callable, Optional

from twisted.logger import Logger

from shiftpeer.gossip.inflight import LAZY_TIMEOUT, InFlight, Seen, start_gossip_pull
from shiftpeer.gossip.scores import PeerScores
from shiftpeer.sync.replication import default_store_batch

log = Logger()

#: Roles whose nodes hold the firehose and gossip it.
FIREHOSE_ROLES = frozenset({"full-peer", "full_peer", "hub"})
#: At most this many addresses answer one ``gossip.peers`` call.
PEERS_PER_ANSWER = 32

#: check(db, doc) -> why the document is refused, or None
Check = Callable[[Any, dict], "str | None"]


def _announce_all(conn: Any, dbname: str, ch: list) -> list:
    return ch


class Gossip:
    """Replicates ``dbname`` both ways with every firehose neighbour; see the module doc."""

    def __init__(self, store: Any, clock: Any, *, dbname: str = "master", check: Optional[Check] = None,
                 scores: Optional[PeerScores] = None, timeout: float = LAZY_TIMEOUT, max_pulls: int = 64,
                 lazy: bool = True, flood: bool = False, suppress: bool = True,
                 strike_refused: bool = True) -> None:
        self.store = store
        self.clock = clock
        self.dbname = dbname
        self.check = check
        self.scores = scores or PeerScores()
        self.timeout = timeout
        self.max_pulls = max_pulls
        self.lazy, self.flood, self.suppress = lazy, flood, suppress
        self.strike_refused = strike_refused     # a refused document counts against the neighbour
        self.inflight = InFlight()
        self.seen = Seen()
        self.pulls: dict[str, Any] = {}          # peer id -> GossipPuller
        self.announced: dict[str, str] = {}      # peer id -> "host:port" it opted in with
        self.counters: collections.Counter = collections.Counter()
        self.on_change: list[Callable[[], None]] = []
        if not store.has_database(dbname):
            store.create_database(dbname)

    # -- connections ---------------------------------------------------------------------------
    @staticmethod
    def is_firehose(conn: Any) -> bool:
        return bool(set(getattr(conn, "peer_roles", ()) or ()) & FIREHOSE_ROLES)

    def live(self) -> int:
        """How many neighbours we are pulling from now."""
        return len(self.pulls)

    def connected(self, conn: Any) -> bool:
        """Start gossip on a new authenticated connection; False when it is not a gossip neighbour."""
        peer = conn.peer_id
        if not self.is_firehose(conn):
            return False
        if self.scores.banned(peer):
            log.info("refusing banned gossip neighbour {peer}", peer=peer)
            conn.close()
            return False
        feeds = getattr(conn.replications, "lazy_feeds", None)
        if feeds is not None:       # our feeder of dbname: no inline bodies, no echo of what the peer holds
            feeds[self.dbname] = self.seen.announce_filter if self.suppress else _announce_all
        conn.when_closed().addBoth(lambda _: self._closed(conn))
        current = self.pulls.get(peer)
        if current is not None and not current.stopped:
            return False                  # already pulling from this peer on another connection
        if len(self.pulls) >= self.max_pulls:
            return False
        p = start_gossip_pull(conn, self.dbname, self.dbname, inflight=self.inflight, seen=self.seen,
                              clock=self.clock, timeout=self.timeout, on_strike=self.strike,
                              lazy=self.lazy, flood=self.flood)
        self.pulls[peer] = p
        p.handle.done.addErrback(lambda f: log.info("gossip pull from {peer} ended: {why}", peer=peer,
                                                    why=f.getErrorMessage()))
        self._changed()
        return True

    def _closed(self, conn: Any) -> None:
        peer = conn.peer_id
        p = self.pulls.get(peer)
        if p is not None and p.mgr.conn is conn:
            del self.pulls[peer]
        if self.announced.get(peer) and not any(c.peer_id == peer for c in conn.factory.connections):
            self.announced.pop(peer, None)
        if self.scores.closed(conn):
            self.seen.forget(peer)
            self.counters["banned"] += 1
        self._changed()

    def _changed(self) -> None:
        for fn in list(self.on_change):
            fn()

    def strike(self, peer_id: str, why: str) -> None:
        """A neighbour was slow, delivered, or sent what our rules refuse; a ban closes its connection."""
        if self.scores.strike(peer_id, why) == "ban":
            p = self.pulls.get(peer_id)
            if p is not None:
                log.info("dropping banned gossip neighbour {peer} ({why})", peer=peer_id, why=why)
                p.mgr.conn.close()

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        """Serve ``dbname`` to firehose peers that are not banned."""
        return dbname == self.dbname and self.is_firehose(conn) and not self.scores.banned(peer_id)

    # -- storing what neighbours send ------------------------------------------------------------
    def wrap_store_batch(self, inner: Optional[Callable[..., Any]]) -> Callable[..., Any]:
        """A SyncFactory ``store_batch`` that checks gossip batches with ``check`` and leaves the rest
        to ``inner`` (the roles' own checks)."""
        inner = inner or (lambda store, db, docs, peer_id, remote_db, cp:
                          default_store_batch(store, db, docs, peer_id, remote_db, cp))

        def store_batch(store: Any, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict) -> Any:
            p = self.pulls.get(peer_id)
            if db.name != self.dbname or remote_db != self.dbname or p is None or p.db is not db:
                return inner(store, db, docs, peer_id, remote_db, cp)
            accepted = docs
            if self.check is not None:
                accepted = []
                for doc in docs:
                    why = self.check(db, doc)
                    if why is None:
                        accepted.append(doc)
                    else:
                        log.warn("refused {doc} {rev} from gossip neighbour {peer}: {why}", doc=doc["id"],
                                 rev=doc["rev"], peer=peer_id, why=why)
                        if self.strike_refused:
                            self.clock.callLater(0, self.strike, peer_id, "refused")
            return default_store_batch(store, db, accepted, peer_id, remote_db, cp)

        return store_batch

    # -- discovery -------------------------------------------------------------------------------
    def rpc_announce(self, conn: Any, args: dict) -> dict:
        """``gossip.announce {port, host?}``: list the caller as a full peer others may dial."""
        if not self.is_firehose(conn) or self.scores.banned(conn.peer_id):
            raise ValueError("only full peers and hubs may announce themselves")
        port = args.get("port")
        host = args.get("host")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError("port must be a number from 1 to 65535")
        if host is None:
            host = conn.transport.getPeer().host
        if not isinstance(host, str) or not host or len(host) > 255 or "/" in host:
            raise ValueError("host must be a host name or address")
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.announced[conn.peer_id] = address
        return {"address": address}

    def rpc_peers(self, conn: Any, args: dict) -> dict:
        """``gossip.peers``: up to 32 addresses of full peers that opted in (not the caller's own)."""
        mine = self.announced.get(conn.peer_id)
        addresses = sorted({a for p, a in self.announced.items()
                            if a != mine and not self.scores.banned(p)})
        random.shuffle(addresses)
        return {"peers": addresses[:PEERS_PER_ANSWER]}

    def install(self, factory: Any) -> None:
        """RPC handlers and the store check on a SyncFactory."""
        factory.rpc_handlers["gossip.announce"] = self.rpc_announce
        factory.rpc_handlers["gossip.peers"] = self.rpc_peers
        factory.store_batch = self.wrap_store_batch(factory.store_batch)

    def stats(self) -> dict:
        return {"neighbours": sorted(self.pulls), "banned": dict(self.scores.bans),
                "inflight": len(self.inflight), **dict(self.inflight.counters), **dict(self.counters)}
