"""What a node runs with: ``NodeSettings`` from the directory's config with command-line overrides, the
roles those settings pick, and the node key the config points at.

Kept apart from ``shiftpeer.node`` so the settings can be read (``tap``, the CLI) without building a node,
and without importing Twisted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from twisted.application.service import IService

    from shiftpeer.node import Node

#: Default local API endpoint: loopback only, on a port the OS picks; the node writes the bound URL to
#: DIR/api.url, so several nodes on one machine (a demo mesh) never collide. nodedir re-exports it.
DEFAULT_API = "tcp:0:interface=127.0.0.1"


@dataclass
class NodeSettings:
    """What a node runs with: the directory's config with command-line overrides applied."""

    directory: str
    store_path: str
    listen: list[str] = field(default_factory=list)
    api: str = DEFAULT_API
    connect: str | None = None
    peers: list[str] = field(default_factory=list)
    full_peer: bool = False
    hub: bool = False
    metrics: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    ca: str | None = None
    hub_id: str | None = None  # the hub's peer id, pinned: its certificate is checked by key, not by CA
    user: str | None = None
    #: may the node dial non-global addresses accounts announce (True: any; False: none; None: loopback
    #: ones when it listens on loopback only); config.json "gossip" (shiftpeer.gossip.settings)
    private_addresses: bool | None = None
    #: seconds between proofs of a listed announced address (None: gossip.core.REPROVE_EVERY)
    reprove_every: float | None = None
    config: Any = None  # the NodeConfig it came from, for roles that need more

    def with_overrides(self, overrides: dict) -> "NodeSettings":
        """A copy with the given non-empty overrides (command-line flags) replacing config values."""
        known = {k: v for k, v in overrides.items() if k in self.__dataclass_fields__}
        given = {k: v for k, v in known.items() if v not in (None, [], ())}
        return replace(self, **given)


def default_roles(settings: NodeSettings) -> list[Callable[["Node"], IService]]:
    """The roles a node runs from its settings: user (local databases) and flows on every node,
    hub (with federation) when configured, else full peer with --full-peer. Each entry builds a role from the node."""
    from shiftpeer.roles.user import UserRole

    factories: list[Callable[["Node"], IService]] = [UserRole]
    try:
        from shiftpeer.roles.flowroles import FlowsRole, HubRole
    except ImportError:
        return factories
    factories.append(FlowsRole)
    if settings.hub:
        factories.append(HubRole)
    from shiftpeer.roles.fullpeer import FederationRole, FullPeerRole

    if settings.hub:
        factories.append(FederationRole)   # a hub gossips master with full peers and federated hubs
    elif settings.full_peer:
        factories.append(FullPeerRole)
    return factories


def config_field(config: Any, *names: str, default: Any = None) -> Any:
    """Read the first present field of a NodeConfig (attribute or mapping) among ``names``."""
    for name in names:
        if isinstance(config, dict) and config.get(name) is not None:
            return config[name]
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def settings_from_config(directory: str, config: Any) -> NodeSettings:
    """Turn the node directory's NodeConfig into NodeSettings (tolerant of absent optional fields)."""
    directory = os.path.abspath(directory)

    def as_list(v: Any) -> list[str]:
        if v is None:
            return []
        return [v] if isinstance(v, str) else list(v)

    gossip = config_field(config, "gossip", default={})
    store_path = config_field(config, "store_path", "store_dir", "store",
                              default=os.path.join(directory, "store"))
    return NodeSettings(
        directory=directory,
        store_path=os.path.join(directory, str(store_path)),
        listen=as_list(config_field(config, "listen")),
        api=config_field(config, "api", default=DEFAULT_API),
        connect=config_field(config, "connect", "hub_address"),
        peers=as_list(config_field(config, "peers", "peer")),
        full_peer=bool(config_field(config, "full_peer", default=False)),
        hub=bool(config_field(config, "hub", default=False)),
        metrics=config_field(config, "metrics"),
        tls_cert=config_field(config, "tls_cert"),
        tls_key=config_field(config, "tls_key"),
        ca=config_field(config, "ca"),
        hub_id=config_field(config, "hub_id"),
        user=config_field(config, "user", "user_name", "name"),
        private_addresses=gossip.get("private_addresses"),
        reprove_every=gossip.get("reprove_every"),
        config=config,
    )


def load_key(directory: str, config: Any) -> Any:
    """The node key (its account): NodeConfig.load_key() when there is one, else from the directory."""
    loader = getattr(config, "load_key", None)
    if callable(loader):
        return loader()
    from shiftpeer.identity import NodeKey

    key_dir = config_field(config, "key_dir", default=directory)
    return NodeKey.load(os.path.join(os.path.abspath(directory), str(key_dir)))
