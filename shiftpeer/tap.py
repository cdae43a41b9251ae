"""twistd integration: Options and makeService for ``twistd shiftpeer``.

Every flag overrides the node directory's config for this run only; the sync limits
(``--max-connections-per-peer`` ...) override config.json's ``sync`` object. For JSON log lines run
``twistd --logger shiftpeer.logs.json_observer -n --pidfile= shiftpeer --data DIR``. twistd writes
./twistd.pid unless given ``--pidfile``: ``--pidfile=`` in the foreground (the node directory is locked
while its node runs, shiftpeer.nodelock), ``--pidfile DIR.pid`` for a daemon.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from shiftpeer import endpoints
from shiftpeer.gossip.settings import KEYS as GOSSIP_KEYS, check_gossip_setting
from shiftpeer.nodedir import (
    CONFIG_FILE,
    NodeConfig,
    NodeDirError,
    check_hub_id,
    check_peers_gossip,
    check_tls_flags,
    load_ca_file,
    load_node_dir,
    load_tls_files,
)
from shiftpeer.nodelock import NodeBusy, check_not_running
from shiftpeer.startup import show_startup_errors
from shiftpeer.sync.config import LIMITS, Limit, check_limit

log = Logger()


def _limit_option(limit: Limit) -> list:
    """The twistd option of one sync limit, its help saying the default."""
    off = "; 'off' for none" if limit.can_be_off else ""
    return [limit.flag, None, None, f"Sync limit: {limit.help} (default {limit.default_text}{off})."]


def _usage(check: Callable[..., Any], *args: Any) -> Any:
    """Run one of the shared checks (shiftpeer.endpoints, shiftpeer.nodedir), turning its ValueError into
    a UsageError."""
    try:
        return check(*args)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def check_server_endpoint(description: str, flag: str) -> str:
    """Return the endpoint string if Twisted can parse it, else raise UsageError naming the flag."""
    return _usage(endpoints.check_server_endpoint, description, flag)


def check_loopback_api(description: str) -> str:
    """The local API must not be reachable from other machines (shiftpeer.endpoints.check_api_endpoint)."""
    return _usage(endpoints.check_api_endpoint, description, "--api")


def check_host_port(text: str, flag: str) -> str:
    """Return HOST:PORT unchanged when well formed, else raise UsageError naming the flag."""
    return _usage(endpoints.check_host_port, text, flag)


def refuse(message: str) -> NoReturn:
    """Stop ``twistd`` before it starts anything, with one line on standard error and exit status 1: for a
    node directory or file that is wrong (twistd's full usage text would only bury the line)."""
    raise SystemExit(f"twistd shiftpeer: {message}")


def check_node_dir(path: str) -> NodeConfig:
    """The directory must exist and look like one made by ``shiftpeer init``; returns its checked config.
    Refuses (one line) when it is not, or when a node already runs on it (``shiftpeer.nodelock``)."""
    if os.path.exists(path) and not os.path.isdir(path):
        refuse(f"--data {path!r} is a file, not a node directory")
    if not os.path.isdir(path):
        refuse(f"--data {path!r} is not a directory; make a node with 'shiftpeer init {path} --user NAME'")
    try:
        config = load_node_dir(path)
    except NodeDirError as e:
        refuse(f"--data {path!r}: {e}")
    except Exception as e:
        refuse(f"--data {path!r} is not a usable node directory ({type(e).__name__}: {e})")
    try:
        check_not_running(path)
    except NodeBusy as e:
        refuse(str(e))
    except OSError as e:
        refuse(f"--data {path!r}: cannot lock it: {e.strerror or e}")
    return config


def check_hub_config(path: str) -> None:
    """A hub's DIR/hub.json (shiftpeer.roles.flowroles) is checked before the node starts."""
    from shiftpeer.roles.flowroles import load_hub_config

    try:
        load_hub_config(path)
    except ValueError as e:
        refuse(str(e))


class Options(usage.Options):
    """Command-line options of ``twistd shiftpeer``; they override the node directory's config."""

    longdesc = (
        "Runs a shiftpeer node from a directory made by 'shiftpeer init'. Flags override the directory's "
        "config for this run. JSON log lines for operators: "
        "'twistd --logger shiftpeer.logs.json_observer -n --pidfile= shiftpeer --data DIR' "
        "(set SHIFTPEER_LOG_FILE to write them to a file instead of standard output). twistd writes "
        "./twistd.pid unless given --pidfile: use --pidfile= in the foreground (a running node locks its "
        "directory anyway), --pidfile DIR.pid for a daemon, so several nodes can start from one directory."
    )
    synopsis = ("[--data DIR] [--listen ENDPOINT]... [--api ENDPOINT] [--connect HOST:PORT] [--peer HOST:PORT]... "
                "[--hub [--tls-cert FILE --tls-key FILE]] [--full-peer] [--ca FILE]")

    optParameters = [
        ["data", "d", None, "Node directory made by 'shiftpeer init' (required)."],
        [
            "api", None, None,
            "Local API endpoint string, loopback only (default from the directory, else "
            "'tcp:0:interface=127.0.0.1'; the bound URL is written to DIR/api.url).",
        ],
        ["connect", None, None, "HOST:PORT of the hub to connect to and replicate with."],
        ["metrics", None, None, "Endpoint string serving Prometheus metrics (e.g. 'tcp:9101:interface=127.0.0.1')."],
        ["tls-cert", None, None, "Hub only: certificate chain (PEM, leaf first) to present instead of the directory's."],
        ["tls-key", None, None, "Hub only: the private key of --tls-cert (PEM); give both."],
        ["ca", None, None, "Trust root (PEM) for the hub's certificate, instead of the directory's."],
        ["hub-id", None, None, "Pin the hub's key (its TLS peer id) instead of the directory's pin."],
        *(_limit_option(limit) for limit in LIMITS),
        ["gossip-private-addresses", None, None,
         "yes: prove (and so list) announced full-peer addresses that are not global, e.g. a LAN's; no: never "
         "(default: global ones, and loopback ones when every --listen is on loopback)."],
        ["gossip-reprove-every", None, None,
         "Seconds between proofs of a listed full peer's address while it stays connected (default 600)."],
    ]
    optFlags = [
        ["full-peer", None, "Run as a full peer: replicate the public firehose (master) and gossip it."],
        ["hub", None, "Run the hub (publishing server) role; give it a certificate with --tls-cert/--tls-key."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["peer"] = []
        self._sync: dict = {}

    def opt_listen(self, endpoint: str) -> None:
        """Sync listener endpoint string, e.g. 'tcp:7701' (repeatable; TLS is added by the node)."""
        self["listen"].append(endpoint)

    def opt_peer(self, address: str) -> None:
        """HOST:PORT of another full peer to gossip the firehose with (repeatable)."""
        self["peer"].append(address)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Under twistd, a bad command line prints this plugin's synopsis and then the error as the last
        line (exit status 1), not twistd's whole usage text; standalone it raises UsageError."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            sys.stderr.write(f"{self.getSynopsis()}\n(every option: twistd shiftpeer --help)\n")
            refuse(f"error: {e}")

    def postOptions(self) -> None:
        if not self["data"]:
            raise usage.UsageError("--data DIR is required (make one with 'shiftpeer init DIR --user NAME')")
        config = check_node_dir(self["data"])
        for endpoint in self["listen"]:
            check_server_endpoint(endpoint, "--listen")
        if self["api"]:
            check_loopback_api(self["api"])
        if self["metrics"]:
            check_server_endpoint(self["metrics"], "--metrics")
        if self["connect"]:
            check_host_port(self["connect"], "--connect")
        for peer in self["peer"]:
            check_host_port(peer, "--peer")
        hub = self["hub"] or config.hub
        if hub:
            check_hub_config(config.path)
        self._check_tls(hub)
        if self["hub-id"] is not None:
            _usage(check_hub_id, self["hub-id"], self["connect"] or config.connect)
        peers_from = "--peer" if self["peer"] else f'{os.path.join(config.path, CONFIG_FILE)}: "peers"'
        _usage(check_peers_gossip, self["peer"] or config.peers, self["full-peer"] or config.full_peer,
               hub, peers_from)
        for name in GOSSIP_KEYS:
            flag = "gossip-" + name.replace("_", "-")
            if self[flag] is not None:
                try:
                    self[flag] = check_gossip_setting(name, self[flag])
                except ValueError as e:
                    raise usage.UsageError(f"--{flag}: {e}") from None
        for limit in LIMITS:
            if self[limit.flag] is not None:
                try:
                    self._sync[limit.name] = check_limit(limit.name, self[limit.flag])
                except ValueError as e:
                    raise usage.UsageError(f"--{limit.flag}: {e}") from None

    def _check_tls(self, hub: bool) -> None:
        """--tls-cert/--tls-key/--ca get init's checks (together, hub only, a matching pair, a CA file
        holding a certificate); kept as absolute paths, as the directory's are."""
        if self["tls-cert"] is not None or self["tls-key"] is not None:
            _usage(check_tls_flags, self["tls-cert"], self["tls-key"], hub)
            self["tls-cert"], self["tls-key"] = os.path.abspath(self["tls-cert"]), os.path.abspath(self["tls-key"])
            _usage(load_tls_files, self["tls-cert"], self["tls-key"])
        if self["ca"] is not None:
            self["ca"] = os.path.abspath(self["ca"])
            _usage(load_ca_file, self["ca"])

    def overrides(self) -> dict:
        """The flags given on the command line, as NodeSettings overrides."""
        out: dict = {
            "listen": list(self["listen"]),
            "api": self["api"],
            "connect": self["connect"],
            "peers": list(self["peer"]),
            "metrics": self["metrics"],
            "tls_cert": self["tls-cert"],
            "tls_key": self["tls-key"],
            "ca": self["ca"],
            "hub_id": self["hub-id"],
            "private_addresses": self["gossip-private-addresses"],
            "reprove_every": self["gossip-reprove-every"],
        }
        if self["full-peer"]:
            out["full_peer"] = True
        if self["hub"]:
            out["hub"] = True
        return out

    def sync_overrides(self) -> dict:
        """The sync limits given on the command line (checked), as SyncFactory arguments."""
        return dict(self._sync)


def makeService(options: Options) -> IService:
    """Build the node service from the directory's config plus command-line overrides (the sync limits
    on top of config.json's ``sync`` object)."""
    from dataclasses import replace

    from shiftpeer.node import Node
    from shiftpeer.nodesettings import load_key, settings_from_config

    show_startup_errors()   # a node that cannot start says why in one line (shiftpeer.startup)
    path = options["data"]
    try:
        config = load_node_dir(path)
    except NodeDirError as e:   # changed since the options were checked
        refuse(f"--data {path!r}: {e}")
    config = replace(config, sync={**config.sync, **options.sync_overrides()})
    settings = settings_from_config(path, config).with_overrides(options.overrides())
    if settings.hub and not settings.tls_cert:
        log.warn("this hub has no certificate (--tls-cert/--tls-key): it presents its self-signed node "
                 "certificate, which user nodes refuse unless they pin its key (init --hub-id); nodes dialling "
                 "it with --peer sync with it too")
    return Node(settings, load_key(path, config))
