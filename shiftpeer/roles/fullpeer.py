"""The full-peer role and hub federation: ``master`` replicated with the hub and gossiped among peers.

``FullPeerRole`` (``--full-peer``): the node holds a replica of ``master``; it pulls ``master`` from its
hub and from every firehose neighbour (other full peers, hubs) and serves its own to them, so a shift
published anywhere reaches every connected full peer even when the hub is down. Its own public shifts
enter ``master`` locally (``user/public -> master``), and ``master`` feeds ``user/feed`` locally
(``master -> user/feed``): queries keep running over ``user/feed``, with the firehose in it.
Neighbours: the node's ``--peer`` addresses, plus full peers the hub lists (``gossip.peers``) after
this node opted in (``gossip.announce``, done when it listens), kept between 4 and 8 live.

``FederationRole`` (every hub): the same gossip of ``master`` with full peers and with other hubs
configured with ``--peer``; documents received that way pass the hub's own rules for ``master``
(signed, public audience, same author, an author registered on this hub unless the neighbour is a
configured relay), and the hub's merge puts them into ``shared``.

Both roles check a gossiped batch's authors before the gossip layer stores it (``intake``): a full peer
with a hub keeps only documents by authors its hub admits (``roles/intake.py``); refusals are logged
with the author, the shift and the neighbour, counted (``refused_unregistered``), and held against no one.
The batch's ``store_batch`` fires with every (document, why) pair intake and the gossip check left out,
so the neighbour is told (``refused`` frames, docs/protocol.md section 6).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.logger import Logger

from shiftpeer.gossip.core import Gossip
from shiftpeer.gossip.dialable import private_mode, resolver
from shiftpeer.gossip.inflight import LAZY_TIMEOUT
from shiftpeer.gossip.neighbours import DEAD_AFTER, HIGH, LOW, NeighbourSet
from shiftpeer.gossip.routes import install_gossip_routes
from shiftpeer.gossip.scores import PeerScores, Refusal
from shiftpeer.roles import audience
from shiftpeer.roles.intake import KnownAuthors, authors_of
from shiftpeer.roles.user import LocalReplication
from shiftpeer.roles.validation import HUB_WRITES, held_author, hub_writes, not_a_shift
from shiftpeer.selflink import hub_target
from shiftpeer.shifts import FEED, PUBLIC
from shiftpeer.sync.refusedrevs import Reason, sift, with_refused

log = Logger()

MASTER = "master"
BANS_FILE = "gossip-bans.json"
#: Seconds between neighbour-set steps (drop dead ones, dial more, ask the hub for peers).
TICK = 5.0
#: Why a full peer's intake leaves a document out (its hub has not vouched for the author).
NOT_KNOWN = Reason("unregistered", "its author is not known to be registered on our hub (it may still arrive "
                                   "from the hub)")


def firehose_check(db: Any, doc: dict) -> str | None:
    """Why a full peer refuses a gossiped document (its signature was verified by the sync layer). The
    codes are those the hub's rules give for the same refusals (``roles/validation.py``)."""
    body = doc["body"]
    before = held_author(db, doc["id"])
    if before is not None and before != body.get("author"):
        # depends on what this node holds (ours may be a squatted copy): not held against the relay
        return Refusal("only the shift's author may change it (the author differs from the revisions held)",
                       "conflict", code="other_author", held=before, offered=body.get("author"))
    if not doc["deleted"] and not audience.admits(audience.of(body), MASTER):
        return Refusal("the signed audience is not public", "rule", code="audience")   # any relay can check it
    if not doc["deleted"] and body.get("type") in HUB_WRITES:
        return hub_writes(body)   # a plain reason, no strike: relays of older versions did not check it
    if not doc["deleted"] and body.get("type") == "comment" and isinstance(body.get("shift"), str):
        # no strike either (relays of older versions did not check it); None when master lacks what it answers
        return not_a_shift(body["shift"], getattr(db.get(body["shift"]), "body", None))
    return None


def listen_port(node: Any) -> Deferred:
    """The TCP port of the node's first sync listener once bound (None when it does not listen)."""
    if not node.listeners:
        return succeed(None)
    return node.listeners[0].when_listening().addCallback(lambda port: port.getHost().port)


class _GossipRole(Service):
    """What both roles share: the Gossip object, its policy, store check and RPC on the node."""

    def __init__(self, node: Any, *, timeout: float = LAZY_TIMEOUT) -> None:
        self.node = node
        self.timeout = timeout
        self.gossip: Gossip | None = None
        self.replications: list[LocalReplication] = []

    def make_gossip(self, check: Any, **kw: Any) -> Gossip:
        settings = self.node.settings
        path = os.path.join(settings.directory, BANS_FILE)
        if getattr(settings, "reprove_every", None) is not None:
            kw.setdefault("reprove_every", settings.reprove_every)
        gossip = Gossip(self.node.store, self.node.clock, dbname=MASTER, check=check,
                        scores=PeerScores(path, now=self.node.clock.seconds), timeout=self.timeout,
                        dial=self.key_at, resolve=resolver(self.node.reactor),
                        private=private_mode(getattr(settings, "private_addresses", None), settings.listen), **kw)
        hub_id = getattr(self.node.settings, "hub_id", None)
        if hub_id:                    # the pinned hub is protected before it even connects
            gossip.scores.protect(hub_id)
        install_gossip_routes(self.node.api, self)
        return gossip

    def key_at(self, host: str, port: int) -> Deferred:
        """The peer id answering at HOST:PORT, dialled as this node dials a gossip neighbour (the proof of an
        announced address, ``gossip/proofs.py``)."""
        from shiftpeer.sync.client import peer_id_at

        return peer_id_at(self.node.client_endpoint(host, port, "peer"))

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return self.gossip is not None and self.gossip.may_read(peer_id, dbname, conn)

    def stopService(self) -> Any:
        super().stopService()
        if self.gossip is not None:
            self.gossip.stop()      # re-proof timers and proofs under way

    def install_sync(self, factory: Any) -> None:
        """Gossip RPCs (``gossip.announce``, ``gossip.peers``) and the checks on gossiped documents."""
        if self.gossip is not None:
            self.gossip.install(factory)
            factory.store_batch = self._intake_store_batch(factory.store_batch)

    def intake(self, peer_id: str, docs: list) -> Any:
        """Which gossiped documents ``peer_id`` may hand in: (accepted, [(document, why) refused]), or a
        Deferred firing with that."""
        return docs, []

    def sift(self, peer_id: str, docs: list, why_not: Callable[[dict], Any]) -> tuple[list, list]:
        """``refusedrevs.sift`` with each refusal logged and counted by ``refuse``."""
        return sift(docs, why_not, lambda doc, why: self.refuse(peer_id, doc, why))

    def refuse(self, peer_id: str, doc: dict, why: str) -> None:
        """Log and count a gossiped document left out; no strike: the neighbour may only relay it."""
        log.warn("refused {doc} {rev} by {author} from gossip neighbour {peer}: {why}", doc=doc["id"],
                 rev=doc["rev"], author=doc["body"].get("author"), peer=peer_id, why=why)
        self.gossip._count("refused_unregistered")   # status's gossip stats and the metrics

    def _intake_store_batch(self, inner: Any) -> Any:
        """Run ``intake`` on gossip batches of ``master``, then hand what is left to ``inner``; fire with
        every (document, why) pair left out, intake's first, then ``inner``'s."""
        gossip = self.gossip

        def store_batch(store: Any, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict,
                        **source: Any) -> Any:
            pull = gossip.pulls.get(peer_id)
            if db.name != MASTER or remote_db != MASTER or pull is None or pull.db is not db or not docs:
                return inner(store, db, docs, peer_id, remote_db, cp, **source)   # source: a pull's vis

            def store_accepted(sifted: tuple[list, list]) -> Any:
                accepted, refused = sifted
                d = maybeDeferred(inner, store, db, accepted, peer_id, remote_db, cp)
                return d.addCallback(with_refused, refused) if refused else d

            return maybeDeferred(self.intake, peer_id, docs).addCallback(store_accepted)

        return store_batch

    def peer_connected(self, conn: Any, kind: str) -> None:
        # a hub connected to its own listener (its operator's account) has nothing to gossip with itself
        if self.gossip is not None and getattr(conn, "peer_id", None) not in self.node.own_peer_ids:
            self.gossip.connected(conn, kind)


class FullPeerRole(_GossipRole):
    """A replica of ``master``, gossiped with the hub and 4-8 other full peers (docs/fullpeer.md)."""

    name = "full-peer"

    def __init__(self, node: Any, *, low: int = LOW, high: int = HIGH, dead_after: float = DEAD_AFTER,
                 tick: float = TICK, timeout: float = LAZY_TIMEOUT) -> None:
        super().__init__(node, timeout=timeout)
        self.low, self.high, self.dead_after, self.tick_interval = low, high, dead_after, tick
        self.neighbours: NeighbourSet | None = None
        self.hub_conn: Any = None
        self._tick_call: Any = None
        self.known: KnownAuthors | None = None
        #: the hub connection whose gossip.announce was refused (not registered yet): announced again
        self.unlisted: Any = None

    def startService(self) -> None:
        super().startService()
        node = self.node
        store = node.store
        store.create_database(MASTER)
        self.gossip = self.make_gossip(firehose_check)
        flows = node.role("flows")
        if hub_target(node.settings) and flows is not None and getattr(flows, "flows", None) is not None:
            self.known = KnownAuthors(flows.flows.authors, own=[node.account_id], held=self._master_holds)
        self.replications = [LocalReplication(store, PUBLIC, MASTER, node.clock),
                             LocalReplication(store, MASTER, FEED, node.clock)]
        for r in self.replications:
            r.start()
        if flows is not None and getattr(flows, "flows", None) is not None:
            # the hub's master arrives in our master (gossip), then locally in user/feed: not twice
            flows.flows.link.full_peer = False
        self.neighbours = NeighbourSet(node.clock, self._dial, self._stop_peer, self.gossip.live,
                                       self.gossip.scores, low=self.low, high=self.high,
                                       dead_after=self.dead_after, own=node.settings.peers)
        self._tick_call = node.clock.callLater(self.tick_interval, self._tick)
        log.info("full peer: gossiping master (neighbours {low}-{high})", low=self.low, high=self.high)

    def _master_holds(self, author: str) -> bool:
        """Whether ``master`` holds a live document by ``author`` (it came from the hub, or passed intake)."""
        return bool(self.node.store.database(MASTER).query("author", author, limit=1)[0])

    def stopService(self) -> Deferred:
        super().stopService()
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        if self.neighbours is not None:
            self.neighbours.stop()
        for r in self.replications:
            r.stop()
        self.replications = []
        return succeed(None)

    def housekeeping(self) -> None:
        for r in self.replications:
            r.nudge()

    @inlineCallbacks
    def intake(self, peer_id: str, docs: list):
        """Documents from the hub pass (its master took them) and teach us their authors; from anyone
        else, only documents by authors the hub admits, asked before the batch is checked. A node with
        no hub (a mesh of full peers alone) has no registry to check against and keeps them all."""
        known = self.known
        hub = self.hub_conn
        if known is None:
            return docs, []
        if hub is not None and peer_id == hub.peer_id:
            known.learn(authors_of(docs))
            return docs, []
        yield known.prefetch(authors_of(docs))
        return self.sift(peer_id, docs, lambda doc: None if doc["body"].get("author") in known else NOT_KNOWN)

    # -- neighbours --------------------------------------------------------------------------------
    def add_peers(self, addresses: list[str]) -> None:
        """Learn more candidate neighbours (HOST:PORT); dialled as needed at the next step."""
        self.neighbours.add(addresses)
        self.neighbours.tick()

    def _tick(self) -> None:
        self._tick_call = self.node.clock.callLater(self.tick_interval, self._tick)
        try:
            self.neighbours.tick()
            if self.gossip.live() < self.low:
                if self.unlisted is not None and self.unlisted is self.hub_conn:
                    self._announce(self.hub_conn)
                else:
                    self.discover()
        except Exception:
            log.failure("full peer: neighbour step failed")

    def _dial(self, address: str) -> Any:
        from shiftpeer.endpoints import split_host_port
        from shiftpeer.syncwiring import make_peer_service

        node = self.node
        host, port = split_host_port(address)
        svc = make_peer_service(node, node.client_endpoint(host, port, "peer"), "peer", address)
        node.peer_clients[address] = svc
        svc.setServiceParent(node.getServiceNamed("sync"))
        return svc

    def _stop_peer(self, svc: Any) -> None:
        for address, s in list(self.node.peer_clients.items()):
            if s is svc:
                del self.node.peer_clients[address]
        if svc.parent is not None:
            d = svc.disownServiceParent()
            if isinstance(d, Deferred):
                d.addErrback(lambda f: log.failure("stopping a gossip neighbour failed", f))

    def peer_connected(self, conn: Any, kind: str) -> None:
        super().peer_connected(conn, kind)
        if kind == "hub":
            self.hub_conn = conn
            self._announce(conn)

    # -- discovery through the hub ---------------------------------------------------------------
    def _announce(self, conn: Any) -> None:
        def announce(port: Any) -> Any:
            if port is None:
                return None
            return conn.call("gossip.announce", {"port": port}).addCallback(told)

        def told(answer: Any) -> None:
            self.unlisted = None
            if isinstance(answer, dict) and answer.get("listed") is False:   # the hub dials us back first
                log.info("the hub lists us at {address} for full peers to dial once it has reached us there",
                         address=answer.get("address"))

        def refused(f: Any) -> None:
            # the hub lists only its registered users, and a node connects before it registers: the
            # neighbour steps try again while short of neighbours (logged once per connection)
            if self.unlisted is not conn:
                log.info("the hub did not take our gossip announcement: {why}", why=f.getErrorMessage())
            self.unlisted = conn

        d = listen_port(self.node).addCallback(announce)
        d.addErrback(refused)
        d.addCallback(lambda _: self.discover())

    def discover(self) -> None:
        """Ask the hub for full peers that opted in, and dial as many as the neighbour set wants."""
        conn = self.hub_conn
        if conn is None or conn not in conn.factory.connections:
            return
        d = conn.call("gossip.peers", {})
        d.addCallback(lambda answer: self.add_peers([a for a in answer.get("peers", []) if isinstance(a, str)]))
        d.addErrback(lambda f: log.info("the hub has no gossip peer list: {why}", why=f.getErrorMessage()))

    def stats(self) -> dict:
        return self.gossip.stats() if self.gossip is not None else {}


class FederationRole(_GossipRole):
    """On a hub: gossip ``master`` with full peers and with hubs configured as peers (``--peer``)."""

    name = "federation"
    rules: Any = None   # the hub's HubRules, once started

    def startService(self) -> None:
        super().startService()
        hub_role = self.node.role("hub")
        hub = getattr(hub_role, "hub", None)
        self.rules = hub.rules if hub is not None else None
        if hub is not None:
            check = lambda db, doc: hub.rules.check(db, MASTER, None, doc)  # noqa: E731
        else:
            check = firehose_check
        # an honest hub may refuse a document another holds (a comment whose shift has not arrived yet,
        # a group it does not know, an author registered elsewhere): refusals are logged, not held
        # against the peer; its incoming links are also its users' own hub connections: a ban ends
        # gossip, not the link
        self.gossip = self.make_gossip(check, strike_refused=False, close_banned=False)
        if hub is not None:   # its users' shifts a full peer hands in count against their quota like their own push
            self.gossip.write_batch = hub.quota.store_batch
        if hub is not None:   # the list full peers dial from: this hub's users and relays only
            self.gossip.may_announce = lambda peer: hub.accounts.name_of(peer) is not None or peer in hub.rules.relays

    def intake(self, peer_id: str, docs: list) -> tuple[list, list]:
        """Only documents by authors registered on this hub, unless ``peer_id`` is a configured relay."""
        if self.rules is None:
            return docs, []
        return self.sift(peer_id, docs, lambda doc: self.rules.unregistered(peer_id, doc))

    def stopService(self) -> Deferred:
        super().stopService()
        return succeed(None)
