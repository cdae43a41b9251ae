"""Node: a MultiService composing the store, roles, local API, sync listener, outgoing peers, housekeeping.

Children start in this order and stop in the reverse order, each one awaited, so the store opens first
and closes last, after nothing can use it any more:

    store -> census -> roles -> api -> sync (listeners + outgoing peers) -> housekeeping -> metrics
"""

from __future__ import annotations

import weakref
from functools import cached_property
from typing import Any, Callable

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.logger import Logger

from shiftpeer.api.app import ApiApp
from shiftpeer.api import token as tokens
from shiftpeer.api.service import ApiService
from shiftpeer.census import DatabaseCensus, counts
from shiftpeer.endpoints import split_host_port
from shiftpeer.nodesettings import DEFAULT_API, NodeSettings, default_roles, load_key, settings_from_config
from shiftpeer.selflink import (SELF, RecordingServerEndpoint, SelfEndpoint, hub_target,
                                self_link_creator)
from shiftpeer.shifts import Shifts, make_signer
from shiftpeer import startup
from shiftpeer.startup import ListeningService, StartupError
from shiftpeer.storeservice import StoreService
from shiftpeer.syncwiring import (HookedFactory, RolesPolicy, build_sync_factory, make_peer_service,
                                  tls_client_endpoint, tls_material, wrap_tls_server)

HOUSEKEEPING_INTERVAL = 60.0
#: Seconds sync connections get to close cleanly when the node stops, before they are aborted.
STOP_GRACE = 3.0


class SequentialMultiService(MultiService):
    """A MultiService whose stopService stops children one at a time, last started first."""

    @inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        for child in reversed(list(self)):
            if child.running:
                yield maybeDeferred(child.stopService)


class SyncService(SequentialMultiService):
    """Builds the sync factory once the store is open, then the listeners and outgoing connections.

    The seam for the sync protocol: ``node.make_sync_factory()`` returns the factory (None when the sync
    package is not available), ``node.listener_services()`` and ``node.peer_services()`` build the
    children from it.
    """

    name = "sync"
    log = Logger()

    def __init__(self, node: "Node"):
        super().__init__()
        self._node = node

    def startService(self) -> None:
        node = self._node
        if node.sync_factory is None:
            node.sync_factory = node.make_sync_factory()
        if node.sync_factory is None:
            if node.settings.listen or node.settings.connect or node.settings.peers:
                self.log.warn("sync protocol not available: not listening, not connecting to peers")
        else:
            for svc in [*node.listener_services(), *node.peer_services()]:
                svc.setServiceParent(self)
        super().startService()

    @inlineCallbacks
    def stopService(self):
        """Close every sync connection (TLS close_notify), stop listeners and peers, abort stragglers.

        A connection that has not closed after STOP_GRACE seconds is aborted, so a stuck peer never
        holds up the node's shutdown.
        """
        Service.stopService(self)
        node = self._node
        connections = list(getattr(node.sync_factory, "connections", ()))
        for conn in connections:
            close = getattr(conn, "close", None)
            close() if close is not None else conn.transport.loseConnection()
        abort = node.clock.callLater(STOP_GRACE, lambda: self._abort([*connections, *node.accepted]))
        stops = [maybeDeferred(child.stopService) for child in reversed(list(self)) if child.running]
        closed = [c.when_closed() for c in connections if hasattr(c, "when_closed")]
        yield DeferredList([*stops, *closed], consumeErrors=True)
        # connections accepted while the listeners were stopping (or still in their handshake) too
        late = [c for c in {*node.accepted, *getattr(node.sync_factory, "connections", ())}
                if c not in connections and hasattr(c, "when_closed")]
        for conn in late:
            conn.close()
        if late:
            yield DeferredList([c.when_closed() for c in late], consumeErrors=True)
        if abort.active():
            abort.cancel()
        for child in list(self):
            yield maybeDeferred(child.disownServiceParent)
        node.sync_factory = None
        node.peer_clients = {}
        node.listeners = []

    def _abort(self, connections: list) -> None:
        for conn in connections:
            transport = getattr(conn, "transport", None)
            if transport is not None and hasattr(transport, "abortConnection"):
                self.log.warn("sync connection with {peer} did not close in time: aborting",
                              peer=getattr(conn, "peer_id", "?"))
                transport.abortConnection()


class Node(SequentialMultiService):
    """One shiftpeer node: a store, its roles, the local API, sync listeners and peers."""

    log = Logger()

    def __init__(
        self,
        settings: NodeSettings,
        key: Any,
        *,
        reactor: Any = None,
        clock: Any = None,
        store_factory: Callable[..., Any] | None = None,
        housekeeping_interval: float = HOUSEKEEPING_INTERVAL,
        role_factories: list[Callable[["Node"], IService]] | None = None,
    ):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.settings = settings
        self.key = key
        self.account_id: str = key.account_id
        self.store: Any = None  # set by the store service while running
        self.sync_factory: Any = None  # set by the sync service while running (or injected by tests)
        self.peer_clients: dict[str, Any] = {}
        self.listeners: list[RecordingServerEndpoint] = []   # the --listen endpoints (while sync runs)
        self.self_link: SelfEndpoint | None = None   # a hub without --connect dials itself (shiftpeer.selflink)
        self.accepted: weakref.WeakSet = weakref.WeakSet()   # every incoming sync protocol built
        self.roles: list[IService] = []
        self.api = ApiApp(self)
        if store_factory is None:
            from shiftpeer.store import Store

            store_factory = Store
        self._sign = make_signer(key)

        StoreService(self, settings.store_path, store_factory).setServiceParent(self)
        self.census = DatabaseCensus(self)
        self.census.setServiceParent(self)
        self._roles_parent = SequentialMultiService()
        self._roles_parent.setName("roles")
        self._roles_parent.setServiceParent(self)
        self.api_service = ApiService(self, settings.api, settings.directory)
        self.api_service.setServiceParent(self)
        SyncService(self).setServiceParent(self)
        self.housekeeping = TimerService(housekeeping_interval, self.housekeeping_step)
        self.housekeeping.clock = self.clock
        self.housekeeping.setName("housekeeping")
        self.housekeeping.setServiceParent(self)
        self.metrics_service: Any = None
        if settings.metrics:
            from shiftpeer.api.metrics import MetricsService

            self.metrics_service = MetricsService(
                self, settings.metrics, tokens.ensure_token(settings.directory, tokens.METRICS_TOKEN_FILE))
            self.metrics_service.setServiceParent(self)

        for make_role in (role_factories if role_factories is not None else default_roles(settings)):
            self.add_role(make_role(self))

    @classmethod
    def from_directory(
        cls, path: str, overrides: dict | None = None, *, reactor: Any = None, clock: Any = None, **kw: Any
    ) -> "Node":
        """Build a node from a directory made by ``shiftpeer init``, with command-line overrides."""
        from shiftpeer.nodedir import load_node_dir

        config = load_node_dir(path)
        settings = settings_from_config(path, config).with_overrides(overrides or {})
        return cls(settings, load_key(path, config), reactor=reactor, clock=clock, **kw)

    def privilegedStartService(self) -> None:
        self._starting(super().privilegedStartService)

    def startService(self) -> None:
        try:
            self._starting(super().startService)
            startup.started()
            self._note_tls_peer_id()
        except StartupError:
            # undo what did start (ports, the store and the directory's lock); api.url at once, as the rest
            # may need the reactor to finish and under twistd the process exits next
            self.api_service.forget_url()
            self.stopService().addErrback(lambda f: self.log.failure("stopping the node that could not start", f))
            raise

    def _note_tls_peer_id(self) -> None:
        """Once started (the directory locked), keep config.json's tls_peer_id true and say when the id peers
        see changed, since users who pinned the old one with --hub-id are refused (shiftpeer.nodedir)."""
        from shiftpeer.nodedir import NodeConfig, note_tls_peer_id

        if isinstance(self.settings.config, NodeConfig):
            note_tls_peer_id(self.settings.config, self.tls_peer_id, key=self.key)

    def _starting(self, start: Callable[[], None]) -> None:
        """Log why the node cannot start (the log may be a file nobody watches), then raise it."""
        try:
            start()
        except StartupError as e:
            self.log.critical("the node cannot start: {why}", why=str(e))
            startup.report_to_terminal(e)    # a daemon's terminal gets the whole line, not twistd's 100 bytes
            raise

    # -- roles seam ------------------------------------------------------------------------------

    def add_role(self, role: IService) -> None:
        """Add a role; it starts after the store and before the API, sync and housekeeping."""
        self.roles.append(role)
        role.setServiceParent(self._roles_parent)

    def role(self, name: str) -> Any:
        """The role with that name, or None."""
        return next((r for r in self.roles if getattr(r, "name", None) == name), None)

    # -- shifts ----------------------------------------------------------------------------------

    @property
    def shifts(self) -> Shifts:
        """The local shift operations on the open store (only while the node runs)."""
        if self.store is None:
            raise RuntimeError("the node is not running: its store is closed")
        return Shifts(self.store, self.account_id, self._sign, self.clock)

    # -- sync seam -------------------------------------------------------------------------------

    def make_sync_factory(self) -> Any:
        """Build the sync protocol factory for this node, or None when the sync package is missing."""
        try:
            from shiftpeer.sync import SyncFactory  # noqa: F401
            from shiftpeer.sync.client import SyncPeerService  # noqa: F401
        except ImportError:
            return None
        return build_sync_factory(self)

    def listener_services(self) -> list[IService]:
        """One TLS listening service per --listen endpoint; accepted connections reach the roles as "incoming"."""
        from twisted.internet.endpoints import serverFromString

        factory = HookedFactory(self.sync_factory, lambda conn: self.peer_connected(conn, "incoming"),
                                 self.accepted)
        services = []
        self.listeners = []
        for description in self.settings.listen:
            endpoint = RecordingServerEndpoint(serverFromString(self.reactor, description), description)
            self.listeners.append(endpoint)
            svc = ListeningService(endpoint, self.wrap_server_factory(factory), "--listen", description)
            svc.setName(f"listen {description}")
            services.append(svc)
        return services

    def peer_services(self) -> list[IService]:
        """One reconnecting peer service per --connect hub ("hub") and --peer ("peer"), sync over TLS; on a
        hub without --connect, the "hub" one dials the node's own first listener (``shiftpeer.selflink``)."""
        services = []
        target = hub_target(self.settings)
        if target == SELF and self.listeners:
            self.self_link = SelfEndpoint(self.reactor, self.listeners[0],
                                          self_link_creator(self, tls_material(self)))
            svc = make_peer_service(self, self.self_link, "hub", SELF)
            self.peer_clients[SELF] = svc
            services.append(svc)
        targets = [("hub", target)] if target not in (None, SELF) else []
        targets.extend(("peer", p) for p in self.settings.peers)
        for kind, address in targets:
            host, port = split_host_port(address)
            svc = make_peer_service(self, self.client_endpoint(host, port, kind), kind, address)
            self.peer_clients[address] = svc
            services.append(svc)
        return services

    @cached_property
    def tls_peer_id(self) -> str:
        """The peer id others see for this node in TLS (what ``--hub-id`` pins); read once, as the TLS files
        are (a new certificate takes a restart)."""
        from shiftpeer.nodedir import presented_peer_id

        return presented_peer_id(tls_material(self))

    @cached_property
    def own_peer_ids(self) -> frozenset[str]:
        """The peer ids of the node's own connections (the self link's two ends)."""
        return frozenset({self.account_id, self.tls_peer_id})

    def hub_status(self) -> dict | None:
        """Where the node's user side finds its hub, for status: its address, whether it is this node itself
        (and then the listener address it dials), None when it has none."""
        target = hub_target(self.settings)
        if target is None:
            return None
        if target != SELF:
            return {"address": target, "self": False}
        link = self.self_link
        return {"address": SELF, "self": True, "listen": self.settings.listen[0],
                "dials": link.dialled if link is not None else None}

    def wrap_server_factory(self, factory: Any) -> Any:
        """Wrap the sync factory in server-side mutual TLS (identity provides the context)."""
        return wrap_tls_server(self, factory)

    def client_endpoint(self, host: str, port: int, kind: str) -> Any:
        """A TLS client endpoint to a hub or peer (hub names are checked against the CA)."""
        return tls_client_endpoint(self, host, port, kind)

    def peer_connected(self, conn: Any, kind: str) -> None:
        """Tell every role that a sync connection is authenticated; ``kind`` is "hub", "peer" or "incoming".

        Roles implement ``peer_connected(conn, kind)`` to start their replications and RPCs.
        """
        self.log.info("sync connection ({kind}) with {peer}", kind=kind, peer=getattr(conn, "peer_id", "?"))
        for role in list(self.roles):
            hook = getattr(role, "peer_connected", None)
            if hook is None:
                continue
            try:
                d = hook(conn, kind)
            except Exception:
                self.log.failure("role {role} failed on a new connection", role=getattr(role, "name", role))
                continue
            if isinstance(d, Deferred):
                d.addErrback(lambda f, r=role: self.log.failure(
                    "role {role} failed on a new connection", f, role=getattr(r, "name", r)))

    # -- housekeeping ----------------------------------------------------------------------------

    def housekeeping_step(self) -> None:
        """Run every role's ``housekeeping()`` and start a database count when one is due; an error is
        logged and the timer keeps running."""
        try:
            self.census.refresh()
        except Exception:
            self.log.failure("starting the database count failed")
        for role in list(self.roles):
            step = getattr(role, "housekeeping", None)
            if step is None:
                continue
            try:
                result = step()
            except Exception:
                self.log.failure("housekeeping of role {role} failed", role=getattr(role, "name", role))
                continue
            if isinstance(result, Deferred):
                result.addErrback(
                    lambda f, r=role: self.log.failure(
                        "housekeeping of role {role} failed", f, role=getattr(r, "name", r)
                    )
                )

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict:
        """What ``shiftpeer status`` shows: roles, peers and their connection state, database totals and
        the counts of a bounded set of databases (``shiftpeer.census``), gossip neighbours, and every
        replication with its progress (``shiftpeer.api.status``). Nothing here reads every database:
        a hub may hold a million."""
        from shiftpeer.api import status as progress

        store = self.store
        databases = {}
        if store is not None:
            for name, why in self.census.shown().items():
                found = counts(store, name)
                if found is not None:
                    databases[name] = {**found, "why": why}
        replications = progress.replications(self)
        lag = {f"{r['remote']} -> {r['local']}": r["lag"] for r in replications if r["direction"] == "local"}
        connections = [
            {"peer_id": getattr(c, "peer_id", None), "roles": list(getattr(c, "peer_roles", ()) or ())}
            for c in getattr(self.sync_factory, "connections", ())
        ]
        return {
            "account": self.account_id,
            "tls_peer_id": self.tls_peer_id,
            "user": self.settings.user,
            "directory": self.settings.directory,
            "roles": [getattr(r, "name", type(r).__name__) for r in self.roles],
            "api": self.api_service.url,
            "listen": list(self.settings.listen),
            "metrics": getattr(self.metrics_service, "url", None),
            "sync": self.sync_factory is not None,
            "upload": progress.upload(self),
            "quota": progress.quota(self),
            "hub": self.hub_status(),
            "peers": progress.peers(self),
            "connections": connections,
            "databases": databases,
            "database_totals": {**self.census.totals(), "shown": len(databases)},
            "gossip": progress.gossip(self),
            "replications": replications,
            "replication_lag": lag,
            "caught_up": all(r["caught_up"] for r in replications),
            "time": self.clock.seconds(),
        }

    def when_ready(self) -> Deferred:
        """Fires with the API URL once the local API is listening."""
        return self.api_service.when_listening()


#: What other modules import from here: the node, and (re-exported from their own modules since the split)
#: its settings, store service and sync wiring.
__all__ = [
    "DEFAULT_API", "HOUSEKEEPING_INTERVAL", "STOP_GRACE", "Node", "NodeSettings", "SequentialMultiService",
    "StoreService", "SyncService", "default_roles", "load_key", "settings_from_config", "RolesPolicy",
    "build_sync_factory", "make_peer_service", "tls_client_endpoint", "tls_material", "wrap_tls_server",
]
