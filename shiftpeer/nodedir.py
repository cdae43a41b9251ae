"""The node directory: what `shiftpeer init DIR` writes and every other command reads.

Layout (see docs/identity.md)::

    DIR/                  mode 0700
      config.json         the node's config (NodeConfig below), paths relative to DIR
      node.key            Ed25519 node key, PEM PKCS#8, mode 0600: the account
      node.pem            the node key's self-signed certificate
      tls/cert.pem        hub only, with --tls-cert: the hub's certificate chain (copied)
      tls/key.pem         hub only, with --tls-key: its private key (copied, mode 0600)
      ca.pem              with --ca: the trust root for the hub's certificate (copied)
      store/              the LMDB store, created by the node when it first opens it
      node.lock           locked by the running node (shiftpeer.nodelock); api.url, api.token: the API's

The store is deliberately not created here: the node opens (and so creates) it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cryptography.hazmat.primitives.asymmetric import ed25519

from shiftpeer.endpoints import EndpointError, check_api_endpoint, check_host_port, check_server_endpoint
from shiftpeer.gossip.settings import check_gossip_config
from shiftpeer.identity import KeyFileError, NodeKey
from shiftpeer.identity.certs import (
    CertMaterial,
    CertificateError,
    cert_pem,
    key_pem,
    load_cert_chain,
)
from shiftpeer.identity.keys import _write_private, is_peer_id
from shiftpeer.nodesettings import DEFAULT_API  # loopback only, a port the OS picks (bound URL in DIR/api.url)

class _LazyLogger:
    """This module's twisted Logger, made when first used: ``shiftpeer init`` imports no other Twisted, and
    importing twisted.logger for it was a fifth of the command's time."""

    def __getattr__(self, level: str) -> Any:
        from twisted.logger import Logger

        return getattr(Logger(namespace=__name__), level)


log = _LazyLogger()

CONFIG_FILE = "config.json"
CONFIG_VERSION = 1
TLS_CERT_FILE = "tls/cert.pem"
TLS_KEY_FILE = "tls/key.pem"
CA_FILE = "ca.pem"
STORE_DIR = "store"


ROLE_USER, ROLE_HUB, ROLE_FULL_PEER = "user", "hub", "full-peer"
ROLES = (ROLE_USER, ROLE_HUB, ROLE_FULL_PEER)

_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class NodeDirError(ValueError):
    """The node directory cannot be created or read; the message says what to do."""


class NodeDirArgumentError(NodeDirError):
    """An argument to ``init_node_dir`` is malformed (a bad command line: ``shiftpeer init`` exits 2)."""


class ConfigValueError(NodeDirError):
    """config.json is readable but a setting in it is not allowed; the message names it and what is."""


@dataclass
class NodeConfig:
    """A node's configuration as loaded: all paths absolute strings."""

    path: str
    user: str
    account_id: str
    roles: list[str]
    listen: list[str] = field(default_factory=list)
    api: str = DEFAULT_API
    connect: str | None = None
    peers: list[str] = field(default_factory=list)
    ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    store_path: str = ""
    key_dir: str = ""
    tls_peer_id: str = ""
    #: the hub's TLS peer id to pin (``init --hub-id``): its certificate is then checked by key, not by a CA
    #: and host name, unless ``ca`` is given too (then by both); config.json's optional "hub_id"
    hub_id: str | None = None
    #: config.json's optional "sync" object, checked: SyncFactory arguments (shiftpeer.sync.config)
    sync: dict[str, Any] = field(default_factory=dict)
    #: config.json's optional "gossip" object, checked (shiftpeer.gossip.settings)
    gossip: dict[str, Any] = field(default_factory=dict)

    @property
    def hub(self) -> bool:
        """True when the node has the hub role."""
        return ROLE_HUB in self.roles

    @property
    def full_peer(self) -> bool:
        """True when the node has the full-peer role."""
        return ROLE_FULL_PEER in self.roles

    def load_key(self) -> NodeKey:
        """The node's signing key (its account)."""
        return NodeKey.load(self.key_dir)

    def tls_material(self, key: NodeKey | None = None) -> NodeKey | CertMaterial:
        """What this node presents in TLS, both as server and client: its hub certificate when
        it has one, else its node key's self-signed certificate."""
        if self.tls_cert and self.tls_key:
            return CertMaterial.from_files(self.tls_cert, self.tls_key)
        return key or self.load_key()


def check_hub_id(hub_id: Any, connect: Any, name: str = "--hub-id") -> None:
    """A pinned hub id must be a peer id, and pins the hub this node connects to (``--connect``)."""
    if hub_id is None:
        return
    if not is_peer_id(hub_id):
        raise NodeDirArgumentError(f"{name} {str(hub_id)[:60]!r} is not a peer id: give the hub's TLS peer id "
                                   "(tls_peer_id in its config.json; usually the account id its init printed)")
    if connect is None:
        raise NodeDirArgumentError(f"{name} pins the hub this node connects to: give --connect HOST:PORT too")


def check_peers_gossip(peers: list[str], full_peer: bool, hub: bool, name: str = "--peer") -> None:
    """--peer dials a node to gossip ``master`` with, which only full peers and hubs (federation) do;
    on any other node nothing would use the connection, so asking for one is a mistake worth naming."""
    if peers and not (full_peer or hub):
        raise NodeDirArgumentError(
            f"{name} {peers[0]}: only full peers and hubs gossip with peers; add --full-peer to make this "
            "node a full peer, or use --connect HOST:PORT for the hub it syncs with"
        )


def check_tls_flags(tls_cert: Any, tls_key: Any, hub: bool) -> None:
    """--tls-cert and --tls-key come together, and only on a hub (what it presents to users)."""
    if (tls_cert is None) != (tls_key is None):
        raise NodeDirArgumentError("--tls-cert and --tls-key go together")
    if tls_cert is not None and not hub:
        raise NodeDirArgumentError("--tls-cert/--tls-key are for hubs: add --hub")


def load_tls_files(tls_cert: str | os.PathLike | None, tls_key: str | os.PathLike | None) -> CertMaterial | None:
    """The hub's certificate chain and key, checked to be readable and to match (None when not given)."""
    if tls_cert is None or tls_key is None:
        return None
    try:
        return CertMaterial.from_files(tls_cert, tls_key)
    except (CertificateError, KeyFileError) as e:
        raise NodeDirArgumentError(f"hub TLS certificate/key: {e}") from None


def load_ca_file(ca: str | os.PathLike | None) -> list | None:
    """The --ca trust root's certificates (None when not given); a file without one is refused."""
    if ca is None:
        return None
    try:
        return load_cert_chain(ca)
    except CertificateError as e:
        raise NodeDirArgumentError(f"--ca: {e}") from None


def _as_list(values: Iterable[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return list(values)


def _rel(base: Path, value: str | None) -> str | None:
    return None if value is None else str(base / value)


def init_node_dir(
    path: str | os.PathLike,
    *,
    user: str,
    hub: bool = False,
    tls_cert: str | os.PathLike | None = None,
    tls_key: str | os.PathLike | None = None,
    full_peer: bool = False,
    listen: Iterable[str] = (),
    api: str | None = None,
    connect: str | None = None,
    peers: Iterable[str] = (),
    ca: str | os.PathLike | None = None,
    hub_id: str | None = None,
) -> NodeConfig:
    """Create a node directory (key, certificate, config) and return its config.

    Everything is checked before anything is written; an existing non-empty directory is refused.
    With --tls-key holding an Ed25519 key, that key becomes the node key, so the hub's account id
    and its TLS peer id are the same.
    """
    base = Path(path)
    if not isinstance(user, str) or not _USER_RE.match(user):
        raise NodeDirArgumentError(
            f"user name {user!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    check_tls_flags(tls_cert, tls_key, hub)
    check_hub_id(hub_id, connect)
    listen_l = _as_list(listen)
    peers_l = _as_list(peers)
    check_peers_gossip(peers_l, full_peer, hub)
    api = api or DEFAULT_API
    try:
        _check_addresses("", listen=listen_l, api=api, connect=connect, peers=peers_l)
    except EndpointError as e:
        raise NodeDirArgumentError(str(e)) from None

    # Check the given files before touching the directory.
    material = load_tls_files(tls_cert, tls_key)
    ca_chain = load_ca_file(ca)

    if base.exists():
        if not base.is_dir():
            raise NodeDirError(f"{base} exists and is not a directory")
        if any(base.iterdir()):
            raise NodeDirError(
                f"{base} already exists and is not empty; refusing to overwrite a node "
                "(choose a new directory)"
            )
    else:
        base.mkdir(parents=True, mode=0o700)
    os.chmod(base, 0o700)

    if material is not None and isinstance(material.private_key, ed25519.Ed25519PrivateKey):
        key = NodeKey.from_private_key(material.private_key)
    else:
        key = NodeKey.generate()
    key.save(base)

    roles = [ROLE_USER]
    if hub:
        roles.append(ROLE_HUB)
    if full_peer:
        roles.append(ROLE_FULL_PEER)
    rel_cert = rel_key = rel_ca = None
    if material is not None:
        (base / "tls").mkdir(mode=0o700)
        (base / TLS_CERT_FILE).write_bytes(cert_pem(*material.chain))
        _write_private(base / TLS_KEY_FILE, key_pem(material.private_key))
        rel_cert, rel_key = TLS_CERT_FILE, TLS_KEY_FILE
    if ca_chain is not None:
        (base / CA_FILE).write_bytes(cert_pem(*ca_chain))
        rel_ca = CA_FILE
    tls_peer_id = presented_peer_id(material or key)
    doc = {
        "version": CONFIG_VERSION,
        "user": user,
        "account_id": key.account_id,
        "tls_peer_id": tls_peer_id,
        "roles": roles,
        "listen": listen_l,
        "api": api,
        "connect": connect,
        "peers": peers_l,
        "ca": rel_ca,
        "tls_cert": rel_cert,
        "tls_key": rel_key,
        "store": STORE_DIR,
    }
    if hub_id is not None:
        doc["hub_id"] = hub_id
    _write_config(base, doc)
    if "twisted.logger" in sys.modules:   # a Twisted process: someone may observe it (shiftpeer init: no one)
        log.info("node directory {path} created for {user} ({account})", path=str(base), user=user,
                 account=key.account_id)
    return load_node_dir(base)


def _write_config(base: Path, doc: dict) -> None:
    """Write config.json whole or not at all (a temporary file renamed over it, synced first), so a crash
    never leaves half a config; an existing file's mode is kept."""
    path, tmp = base / CONFIG_FILE, base / (CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
    os.replace(tmp, path)


def presented_peer_id(material: NodeKey | CertMaterial) -> str:
    """The peer id others see for what a node presents in TLS (its certificate's key, or its node key)."""
    return getattr(material, "peer_id", None) or material.account_id


def refresh_tls_peer_id(config: NodeConfig, key: NodeKey | None = None) -> str | None:
    """Keep config.json's ``tls_peer_id`` true to the certificate the directory holds now: the operator
    may have replaced DIR/tls/ with a certificate for a new key since ``init`` wrote it. When it changed,
    rewrite that one field (atomically) and return the old id, else None. ``config`` gets the new id."""
    current = presented_peer_id(config.tls_material(key))
    if current == config.tls_peer_id:
        return None
    base = Path(config.path)
    doc = json.loads((base / CONFIG_FILE).read_text())
    doc["tls_peer_id"] = current
    _write_config(base, doc)
    old, config.tls_peer_id = config.tls_peer_id, current
    return old


def note_tls_peer_id(config: NodeConfig, presented: str, key: NodeKey | None = None) -> None:
    """At a node's start: refresh config.json's tls_peer_id, and say in one line when the id peers see is
    not the one users may have pinned (``presented``: the id of what this run presents, which
    ``--tls-cert`` may have overridden). Failing to record it is a warning: the node runs either way."""
    try:
        old = refresh_tls_peer_id(config, key)   # `key`: the node key already loaded, not read again
    except (OSError, ValueError, CertificateError, KeyFileError) as e:   # e.g. DIR/tls/ removed, run with flags
        log.warn("could not check the TLS peer id in {cfg}: {why}", cfg=str(Path(config.path) / CONFIG_FILE),
                 why=str(e))
        return
    if old is not None:
        log.warn("the TLS key changed: peer id {old} -> {new}; users who pinned {old} with --hub-id must pin "
                 "{new} (config.json tls_peer_id updated)", old=old, new=config.tls_peer_id)
    if presented != config.tls_peer_id:
        log.warn("this run presents the certificate given with --tls-cert: peer id {new}, not the directory's "
                 "{old}; users who pinned {old} with --hub-id are refused while it runs", old=config.tls_peer_id,
                 new=presented)


_FIELD_TYPES = {
    "version": int,
    "user": str,
    "account_id": str,
    "tls_peer_id": str,
    "roles": list,
    "listen": list,
    "api": str,
    "connect": (str, type(None)),
    "peers": list,
    "ca": (str, type(None)),
    "tls_cert": (str, type(None)),
    "tls_key": (str, type(None)),
    "store": str,
}


def _check_addresses(prefix: str, *, listen: list, api: str, connect: str | None, peers: list) -> None:
    """The same checks for init's flags (``prefix`` ""), and for config.json's fields when a node starts
    (``prefix`` the file), so neither the API's loopback rule nor a bad endpoint gets past an edited
    file to fail later with a traceback. Raises EndpointError naming the flag or field."""
    def name(flag: str, field: str) -> str:
        return f'{prefix}: "{field}"' if prefix else flag

    for endpoint in listen:
        check_server_endpoint(endpoint, name("--listen", "listen"))
    check_api_endpoint(api, name("--api", "api"))
    if connect is not None:
        check_host_port(connect, name("--connect", "connect"))
    for peer in peers:
        check_host_port(peer, name("--peer", "peers"))


def _check_sync(value: Any) -> dict[str, Any]:
    """config.json's "sync" object, checked (shiftpeer.sync.config); none, as init writes it, is no limits
    set, without importing the sync package (it would double what ``shiftpeer init`` takes)."""
    if isinstance(value, dict) and not value:
        return {}
    from shiftpeer.sync.config import check_sync_config

    return check_sync_config(value)


def load_node_dir(path: str | os.PathLike) -> NodeConfig:
    """Read a node directory's config; NodeDirError says what is wrong and how to fix it."""
    base = Path(path).absolute()
    hint = f"make one with 'shiftpeer init {path} --user NAME'"
    if not base.is_dir():
        raise NodeDirError(f"{path} is not a node directory (no such directory); {hint}")
    cfg = base / CONFIG_FILE
    try:
        doc = json.loads(cfg.read_text())
    except FileNotFoundError:
        if any(base.iterdir()):   # init refuses a directory that holds anything
            hint = ("give the directory 'shiftpeer init' made, or make a node in a new one with "
                    "'shiftpeer init NEWDIR --user NAME'")
        raise NodeDirError(f"{path} is not a node directory (no {CONFIG_FILE}); {hint}") from None
    except (OSError, ValueError) as e:
        raise NodeDirError(f"{cfg} is unreadable or not JSON ({e}); repair it: its fields are listed "
                           "in docs/identity.md (the node key and the store are untouched)") from None
    if not isinstance(doc, dict):
        raise NodeDirError(f"{cfg} is not a JSON object")
    if doc.get("version") != CONFIG_VERSION:
        raise NodeDirError(
            f"{cfg} has config version {doc.get('version')!r}; this shiftpeer reads version "
            f"{CONFIG_VERSION}"
        )
    for name, typ in _FIELD_TYPES.items():
        if name not in doc:
            raise NodeDirError(f"{cfg} lacks the field {name!r}")
        if not isinstance(doc[name], typ):
            raise NodeDirError(f"{cfg}: field {name!r} has the wrong type")
    unknown = [r for r in doc["roles"] if r not in ROLES]
    if unknown:
        raise ConfigValueError(f'{cfg}: "roles": unknown role {json.dumps(unknown[0])[:60]}; '
                               f'the roles are {", ".join(json.dumps(r) for r in ROLES)}')
    try:
        sync = _check_sync(doc.get("sync", {}))
    except ValueError as e:
        raise ConfigValueError(f'{cfg}: "sync": {e}') from None
    try:
        gossip = check_gossip_config(doc.get("gossip", {}))
    except ValueError as e:
        raise ConfigValueError(f'{cfg}: "gossip": {e}') from None
    try:
        check_hub_id(doc.get("hub_id"), doc["connect"], f'{cfg}: "hub_id"')
    except NodeDirArgumentError as e:
        raise ConfigValueError(str(e)) from None
    try:
        _check_addresses(str(cfg), listen=doc["listen"], api=doc["api"], connect=doc["connect"],
                         peers=doc["peers"])
    except EndpointError as e:
        raise ConfigValueError(str(e)) from None
    try:
        key = NodeKey.load(base)
    except KeyFileError as e:
        raise NodeDirError(f"{path}: {e}") from None
    if key.account_id != doc["account_id"]:
        raise NodeDirError(
            f"{cfg} names account {doc['account_id']} but node.key is {key.account_id}"
        )
    mode = stat.S_IMODE(os.stat(base / "node.key").st_mode)
    if mode & 0o077:
        log.warn("{path}/node.key is readable by others (mode {mode}); chmod 600 it",
                 path=str(base), mode=oct(mode))
    return NodeConfig(
        path=str(base),
        user=doc["user"],
        account_id=doc["account_id"],
        roles=list(doc["roles"]),
        listen=list(doc["listen"]),
        api=doc["api"],
        connect=doc["connect"],
        peers=list(doc["peers"]),
        ca=_rel(base, doc["ca"]),
        tls_cert=_rel(base, doc["tls_cert"]),
        tls_key=_rel(base, doc["tls_key"]),
        store_path=str(base / doc["store"]),
        key_dir=str(base),
        tls_peer_id=doc["tls_peer_id"],
        hub_id=doc.get("hub_id"),
        sync=sync,
        gossip=gossip,
    )


__all__ = [
    "CONFIG_FILE",
    "ConfigValueError",
    "DEFAULT_API",
    "NodeConfig",
    "NodeDirArgumentError",
    "NodeDirError",
    "check_peers_gossip",
    "check_tls_flags",
    "load_ca_file",
    "load_tls_files",
    "init_node_dir",
    "note_tls_peer_id",
    "presented_peer_id",
    "refresh_tls_peer_id",
    "load_node_dir",
]
