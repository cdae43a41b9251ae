"""Gossip of one database (``master``) over every sync connection with a firehose peer.

``Gossip`` is the part of the full-peer and federation roles that needs no Node: give it each
authenticated connection (``connected(conn)``) and it pulls the peer's ``master`` into ours with a
``GossipPuller`` (one per peer id, however many connections), while the peer pulls ours the same way.
Bodies are requested lazily through the shared ``InFlight`` registry, revisions a neighbour holds are
not announced back to it (``Seen``), and a neighbour that sends forged or malformed data is banned
(``PeerScores``). Documents received this way pass ``check(db, doc)`` before they are stored; a refusal
strikes the relay only when it is a ``Refusal`` of kind "rule" (see ``scores.strikes_relay``).

The node's own hub link (``connected(conn, "hub")``) is protected: never struck nor banned, since it also
carries the node's own flows (publishing, inbox, messages). A ban stops gossip with the peer; its
connection is closed only when ``close_banned`` (a full peer, whose other links carry gossip alone; a
hub's incoming links are its users' own hub connections and stay up without gossip).

Addresses announced for full peers to dial (``gossip.announce``) are listed once proven the announcer's
(``proofs``: the node dials them itself, global addresses only unless ``private`` says otherwise,
``dialable``), and proven again about every ``reprove_every`` seconds while the announcer stays connected:
one that no longer answers with its key is unlisted.
"""

from __future__ import annotations

import collections
import random
import weakref
from typing import Any, Callable, Optional

from twisted.logger import Logger

from shiftpeer.endpoints import split_host_port
from shiftpeer.gossip.dialable import PRIVATE_NONE, Resolve, checked_dial
from shiftpeer.gossip.inflight import LAZY_TIMEOUT, InFlight, Seen, start_gossip_pull
from shiftpeer.gossip.proofs import PROOF_TIMEOUT, AddressProofs, Dial
from shiftpeer.gossip.scores import PeerScores, strikes_relay
from shiftpeer.sync.replication import default_store_batch
from shiftpeer.sync.refusedrevs import sift, with_refused

log = Logger()

#: Roles whose nodes hold the firehose and gossip it.
FIREHOSE_ROLES = frozenset({"full-peer", "full_peer", "hub"})
#: At most this many addresses answer one ``gossip.peers`` call.
PEERS_PER_ANSWER = 32
#: Seconds between proofs of a listed address while its announcer stays connected (config.json
#: "gossip" "reprove_every"); each wait is drawn within REPROVE_JITTER of it, so proofs do not bunch up.
REPROVE_EVERY = 600.0
REPROVE_JITTER = 0.2

#: check(db, doc) -> why the document is refused, or None
Check = Callable[[Any, dict], "str | None"]


def _announce_all(conn: Any, dbname: str, ch: list) -> list:
    return ch


class Gossip:
    """Replicates ``dbname`` both ways with every firehose neighbour; see the module doc."""

    def __init__(self, store: Any, clock: Any, *, dbname: str = "master", check: Optional[Check] = None,
                 scores: Optional[PeerScores] = None, timeout: float = LAZY_TIMEOUT, max_pulls: int = 64,
                 lazy: bool = True, flood: bool = False, suppress: bool = True,
                 strike_refused: bool = True, close_banned: bool = True, dial: Optional[Dial] = None,
                 proof_timeout: float = PROOF_TIMEOUT, resolve: Optional[Resolve] = None,
                 private: str = PRIVATE_NONE, reprove_every: float = REPROVE_EVERY) -> None:
        self.store = store
        self.clock = clock
        self.dbname = dbname
        self.check = check
        self.scores = scores or PeerScores()
        self.timeout = timeout
        self.max_pulls = max_pulls
        self.lazy, self.flood, self.suppress = lazy, flood, suppress
        self.strike_refused = strike_refused     # a refused document counts against the neighbour
        self.close_banned = close_banned         # a ban closes the neighbour's connection (not only gossip)
        self._told_banned: set[str] = set()      # banned peers whose reconnects were logged once
        self.sync_counters: Any = None           # the SyncFactory's counters (metrics), once installed
        self.inflight = InFlight()
        self.seen = Seen()
        self.pulls: dict[str, Any] = {}          # peer id -> GossipPuller
        self.announced: dict[str, str] = {}      # peer id -> "host:port" it opted in with, proven its own
        #: announced addresses are listed only once the node has dialled them and met the announcer's key
        #: (``dial`` None: this node cannot dial, and lists nobody); only addresses ``private`` allows
        #: are dialled, a host name resolved by ``resolve`` and the address checked dialled
        self.proofs = AddressProofs(clock, checked_dial(dial, resolve, private), proven=self._proven,
                                    unproven=self._unproven, timeout=proof_timeout) if dial is not None else None
        self.reprove_every = reprove_every
        self._reproofs: dict[str, Any] = {}      # peer id -> the timer of its listed address's next proof
        self.counters: collections.Counter = collections.Counter()
        #: connections whose unregistered announcement was logged at warning level (``rpc_announce``)
        self._refused_announcers: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.on_change: list[Callable[[], None]] = []
        #: may_announce(peer id): may this peer be listed for others to dial? (a hub: its registered users
        #: and relays; without it any key announcing the role filled the list with addresses of its choice)
        self.may_announce: Callable[[str], bool] = lambda peer_id: True
        #: how a checked gossip batch is stored (a hub: under its quota, roles/quota.py); it may fire with more
        #: (document, why) pairs it left out
        self.write_batch: Callable[..., Any] = default_store_batch
        if not store.has_database(dbname):
            store.create_database(dbname)

    # -- connections ---------------------------------------------------------------------------
    @staticmethod
    def is_firehose(conn: Any) -> bool:
        return bool(set(getattr(conn, "peer_roles", ()) or ()) & FIREHOSE_ROLES)

    def live(self) -> int:
        """How many neighbours we are pulling from now."""
        return len(self.pulls)

    def connected(self, conn: Any, kind: Optional[str] = None) -> bool:
        """Start gossip on a new authenticated connection; False when it is not a gossip neighbour.
        ``kind`` "hub" marks the node's own hub, which is never struck or banned (a ban it has is lifted)."""
        peer = conn.peer_id
        if not self.is_firehose(conn):
            return False
        if kind == "hub" and peer:
            if self.scores.protect(peer):
                self._changed()
        if self.scores.banned(peer):
            if peer not in self._told_banned:      # a --peer reconnects every few seconds: say it once
                self._told_banned.add(peer)
                log.info("no gossip with banned neighbour {peer} ({why}; 'shiftpeer gossip unban' lifts it)",
                         peer=peer, why=self.scores.bans.get(peer))
            if self.close_banned:
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
                              lazy=self.lazy, flood=self.flood,
                              on_bad_revision=lambda n: self._count("bad_revision", n))
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
        if self.announced.get(peer) and not self._still_connected(conn):
            self._unlist(peer)
            if self.proofs is not None:
                self.proofs.cancel(peer)         # a re-proof under way: nobody to list any more
        if self.scores.closed(conn):
            self.seen.forget(peer)
            self._count("banned")
        self._changed()

    def _count(self, event: str, n: int = 1) -> None:
        """Count a gossip event here (status) and in the sync counters (``shiftpeer_gossip_events``)."""
        self.counters[event] += n
        if self.sync_counters is not None:
            self.sync_counters["gossip." + event] += n

    def _changed(self) -> None:
        for fn in list(self.on_change):
            fn()

    def strike(self, peer_id: str, why: str) -> None:
        """A neighbour was slow, delivered, or sent what our rules refuse; a ban ends gossip with it."""
        if self.scores.strike(peer_id, why) == "ban":
            self._count("banned")
            p = self.pulls.get(peer_id)
            if p is not None:
                log.info("dropping banned gossip neighbour {peer} ({why})", peer=peer_id, why=why)
                if self.close_banned:
                    p.mgr.conn.close()
                else:
                    self.pulls.pop(peer_id, None)
                    p.stop()
            self._changed()

    def unban(self, peer_ids: Optional[list[str]] = None) -> list[str]:
        """Lift bans (None: all); the peers are dialled and accepted again. Returns the ids lifted."""
        lifted = self.scores.unban(peer_ids)
        self._told_banned.difference_update(lifted)
        if lifted:
            self._changed()
        return lifted

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        """Serve ``dbname`` to firehose peers that are not banned."""
        return dbname == self.dbname and self.is_firehose(conn) and not self.scores.banned(peer_id)

    # -- storing what neighbours send ------------------------------------------------------------
    def wrap_store_batch(self, inner: Optional[Callable[..., Any]]) -> Callable[..., Any]:
        """A SyncFactory ``store_batch`` that checks gossip batches with ``check`` and leaves the rest
        to ``inner`` (the roles' own checks). A gossip batch fires with the (document, why) pairs
        ``check`` left out, so the puller tells the neighbour that sent them (``refused`` frames)."""
        inner = inner or default_store_batch

        def store_batch(store: Any, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict,
                        **source: Any) -> Any:
            p = self.pulls.get(peer_id)
            if db.name != self.dbname or remote_db != self.dbname or p is None or p.db is not db:
                return inner(store, db, docs, peer_id, remote_db, cp, **source)   # source: a pull's vis
            accepted, refused = docs, []
            if self.check is not None:
                with store.read_txn():   # the checks' lookups share it
                    accepted, refused = sift(docs, lambda doc: self.check(db, doc),
                                             lambda doc, why: self.refused(peer_id, doc, why))
            d = self.write_batch(store, db, accepted, peer_id, remote_db, cp)
            return d.addCallback(with_refused, refused) if refused else d

        return store_batch

    def refused(self, peer_id: str, doc: dict, why: str) -> None:
        """Log a refused gossiped document; strike the relay only for what an honest relay never sends."""
        self._count("refused")
        kind = getattr(why, "kind", None)
        if kind == "conflict":
            self._count("author_conflict")
            details = getattr(why, "details", {})
            log.warn("author conflict on {doc} {rev} from gossip neighbour {peer}: held author {held}, "
                     "offered author {offered} (not held against the neighbour: our copy may be the squatted "
                     "one)", doc=doc["id"], rev=doc["rev"], peer=peer_id, held=details.get("held"),
                     offered=details.get("offered", doc["body"].get("author")))
            return
        log.warn("refused {doc} {rev} from gossip neighbour {peer}: {why}", doc=doc["id"],
                 rev=doc["rev"], peer=peer_id, why=why)
        if self.strike_refused and strikes_relay(why):
            self.clock.callLater(0, self.strike, peer_id, "refused")

    # -- discovery -------------------------------------------------------------------------------
    def rpc_announce(self, conn: Any, args: dict) -> dict:
        """``gossip.announce {port, host?}``: list the caller as a full peer others may dial, once this node
        has dialled the address and met the caller's key there (``proofs``). Answers at once: ``listed``
        false while the proof runs (or after one failed: the log says why, the caller is not told)."""
        if not self.is_firehose(conn) or self.scores.banned(conn.peer_id):
            raise ValueError("only full peers and hubs may announce themselves")
        if not self.may_announce(conn.peer_id):
            # an unregistered full peer announces again at every neighbour step (5 s) while it is short of
            # neighbours: said once per connection, then only at debug level
            first = conn not in self._refused_announcers
            self._refused_announcers.add(conn)
            (log.warn if first else log.debug)("refused the gossip announcement of {peer}: not registered here"
                                               "{again}", peer=conn.peer_id,
                                               again="" if first else " (again on this connection)")
            raise ValueError("only full peers registered on this hub may announce themselves: register first")
        if self.proofs is None:
            raise ValueError("this node lists no full peers")
        port = args.get("port")
        host = args.get("host")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError("port must be a number from 1 to 65535")
        if host is None:
            host = conn.transport.getPeer().host
        if not isinstance(host, str) or not host or len(host) > 255 or "/" in host:
            raise ValueError("host must be a host name or address")
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        peer = conn.peer_id
        if self.announced.get(peer) != address:
            started = self.proofs.start(peer, host, port, address)
            if started == "running":
                address = self.proofs.running_address(peer) or address   # the proof under way decides
            elif started == "proving" and peer in self.proofs.running:
                conn.when_closed().addBoth(lambda _: self._announcer_closed(conn))
        return {"address": address, "listed": self.announced.get(peer) == address}

    @staticmethod
    def _still_connected(conn: Any) -> bool:
        """Has ``conn``'s peer another connection here (``conn`` is closed)?"""
        return any(c.peer_id == conn.peer_id for c in conn.factory.connections)

    def _announcer_closed(self, conn: Any) -> None:
        if not self._still_connected(conn):
            self.proofs.cancel(conn.peer_id)     # gone before its proof ended: not listed

    def _proven(self, peer_id: str, address: str) -> None:
        again = self.announced.get(peer_id) == address
        self.announced[peer_id] = address
        self._reprove_later(peer_id)
        if not again:
            log.info("listing {peer} at {address} for full peers to dial (its key answered there)",
                     peer=peer_id, address=address)
            self._changed()

    def _unproven(self, peer_id: str, address: str, why: str, refused: bool) -> None:
        self._count("announce_undialable" if refused else "announce_unproven")
        if self.announced.get(peer_id) == address:     # the listed address, proven again, failed
            self._unlist(peer_id)
            self._count("announce_unlisted")
            log.warn("no longer listing {address}, announced by {peer}, for full peers to dial: {why} (proven "
                     "again while it stays connected; none of its announcements is dialled for {rest:g} "
                     "seconds)", address=address, peer=peer_id, why=why, rest=self.proofs.retry_after)
            self._changed()
            return
        log.warn("not listing {address}, announced by {peer}, for full peers to dial: {why} (an address is "
                 "listed once the node answering there has the announcer's key; none of its announcements is "
                 "dialled for {rest:g} seconds)", address=address, peer=peer_id, why=why,
                 rest=self.proofs.retry_after)

    def _unlist(self, peer_id: str) -> None:
        self.announced.pop(peer_id, None)
        self._no_reproof(peer_id)

    def _no_reproof(self, peer_id: str) -> None:
        timer = self._reproofs.pop(peer_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _reprove_later(self, peer_id: str, after: Optional[float] = None) -> None:
        """Prove ``peer_id``'s listed address again in about ``reprove_every`` seconds (or ``after``)."""
        self._no_reproof(peer_id)
        if after is None:
            after = self.reprove_every * random.uniform(1 - REPROVE_JITTER, 1 + REPROVE_JITTER)
        self._reproofs[peer_id] = self.clock.callLater(after, self._reprove, peer_id)

    def _reprove(self, peer_id: str) -> None:
        """Dial the listed address again (no rest: the node chose it, having proven it before); a failure
        unlists it (``_unproven``), a success keeps it and schedules the next proof (``_proven``)."""
        self._reproofs.pop(peer_id, None)
        address = self.announced.get(peer_id)
        if address is None:
            return
        host, port = split_host_port(address)
        if self.proofs.start(peer_id, host, port, address, rest=False) == "running":
            self._reprove_later(peer_id, self.proofs.timeout)   # a new announcement's proof first

    def stop(self) -> None:
        """Cancel the timers and proofs (the node stops)."""
        for peer_id in list(self._reproofs):
            self._no_reproof(peer_id)
        if self.proofs is not None:
            for peer_id in list(self.proofs.running):
                self.proofs.cancel(peer_id)

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
        self.sync_counters = getattr(factory, "counters", None)

    def stats(self) -> dict:
        return {"neighbours": sorted(self.pulls), "banned": dict(self.scores.bans),
                "refused": 0, "author_conflict": 0, "bad_revision": 0, "announce_unproven": 0,
                "announce_undialable": 0, "announce_unlisted": 0,
                "inflight": len(self.inflight), **dict(self.inflight.counters), **dict(self.counters)}
