"""How a node's sync protocol and TLS are wired to it: the SyncFactory whose policy asks the roles, the
reconnecting peer services, and the TLS material, server wrapper and client endpoints it presents.

``Node`` calls these from its sync seam (``make_sync_factory``, ``listener_services``, ``peer_services``);
full peers dial discovered neighbours with ``make_peer_service``. The sync and identity packages are
imported where they are used, so a node without the sync package still starts (without sync).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.application.internet import backoffPolicy
from twisted.application.service import IService

from shiftpeer.nodesettings import config_field

if TYPE_CHECKING:
    from shiftpeer.node import Node


class HookedFactory:
    """Builds the sync factory's protocols with one more connection hook (which side or peer it is)."""

    def __init__(self, factory: Any, hook: Callable[[Any], Any], built: Any = None):
        self._factory = factory
        self._hook = hook
        self._built = built

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)

    def buildProtocol(self, addr: Any) -> Any:
        proto = self._factory.buildProtocol(addr)
        if proto is not None and hasattr(proto, "extra_hooks"):
            proto.extra_hooks.append(self._hook)
        if proto is not None and self._built is not None:
            self._built.add(proto)
        return proto


def make_peer_service(node: "Node", endpoint: Any, kind: str, address: str) -> IService:
    """The sync package's reconnecting SyncPeerService; roles hear of each authenticated connection."""
    from shiftpeer.sync.client import SyncPeerService

    return SyncPeerService(
        node.clock,
        endpoint,
        node.sync_factory,
        on_connected=lambda conn: node.peer_connected(conn, kind),
        retry_policy=backoffPolicy(initialDelay=1.0, maxDelay=60.0),
        name=f"{kind} {address}",
    )


def tls_material(node: "Node") -> Any:
    """What the node presents in TLS: the hub certificate when configured, else the node key."""
    settings = node.settings
    if settings.tls_cert and settings.tls_key:
        from shiftpeer.identity.certs import CertMaterial

        return CertMaterial.from_files(settings.tls_cert, settings.tls_key)
    return node.key


class RolesPolicy:
    """The sync Policy of a node: a database may be read or written when any role allows it (default deny)."""

    def __init__(self, node: Node):
        self._node = node

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return any(_ask(r, "may_read", peer_id, dbname, conn) for r in self._node.roles)

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return any(_ask(r, "may_write", peer_id, dbname, conn) for r in self._node.roles)


def _ask(role: Any, method: str, *args: Any) -> bool:
    fn = getattr(role, method, None)
    return bool(fn(*args)) if fn is not None else False


def build_sync_factory(node: Node) -> Any:
    """The SyncFactory of this node: its policy asks the roles, and roles hear of each new connection.
    Its limits are the config's checked ``sync`` settings (config.json and twistd flags), else the defaults."""
    from shiftpeer.sync import SyncFactory

    factory = SyncFactory(
        node.store,
        node.key,
        RolesPolicy(node),
        reactor=node.reactor,
        roles=tuple(getattr(r, "name", "") for r in node.roles),
        **config_field(node.settings.config, "sync", default={}),
    )
    for role in node.roles:
        install = getattr(role, "install_sync", None)
        if install is not None:
            install(factory)  # a role registers its RPC handlers here
    from shiftpeer.api.metrics import count_rpc_refusals

    count_rpc_refusals(factory)
    return factory


def wrap_tls_server(node: Node, factory: Any) -> Any:
    """Mutual TLS around the sync factory: the hub certificate when configured, else the node key's."""
    from shiftpeer.identity.tls import TLSFactory, server_creator

    return TLSFactory(server_creator(tls_material(node)), False, factory)


def tls_client_endpoint(node: Node, host: str, port: int, kind: str) -> Any:
    """TCP wrapped in client TLS. A hub's certificate must match its host name under --ca (or the system's
    CAs), and its key the pinned --hub-id when one is given; with --hub-id and no --ca, the key alone."""
    from twisted.internet.endpoints import HostnameEndpoint

    from shiftpeer.identity.tls import client_creator
    from shiftpeer.sync.client import tls_client_endpoint as wrap_client_tls

    settings = node.settings
    if kind == "hub":
        # pinned without --ca, the key alone counts (a hub without a CA certificate presents a self-signed one)
        by_name = settings.ca or not settings.hub_id
        creator = client_creator(tls_material(node), hostname=host if by_name else None,
                                 trust_root=settings.ca, expected_peer_id=settings.hub_id)
    else:
        creator = client_creator(tls_material(node))
    return wrap_client_tls(HostnameEndpoint(node.reactor, host, port), creator)
