"""The flows as Node roles: ``HubRole`` (the hub) and ``FlowsRole`` (every user node's flows).

They plug into the Node's seams (see ``shiftpeer/roles/__init__.py``): a role is a Service with a
``name``; ``may_read``/``may_write`` feed the node's Policy (a database is served when any role allows
it); ``install_sync(factory)`` registers RPC handlers and the incoming-document checks;
``peer_connected(conn, kind)`` hears of each authenticated connection; API routes are added to
``node.api`` when the role starts.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import succeed
from twisted.logger import Logger

from shiftpeer.roles.hub import Hub
from shiftpeer.roles.userflows import UserFlows
from shiftpeer.roles.validation import filtering_store_batch, refusal
from shiftpeer.selflink import hub_target

log = Logger()


HUB_CONFIG = "hub.json"
#: Seconds an API call that needs the hub waits for the connection when the node has only just started.
CONNECT_WAIT = 10.0


def load_hub_config(directory: str) -> dict:
    """The hub's flow settings from ``DIR/hub.json`` (optional): ``registration`` ("open" or "invite"),
    ``operators`` (account ids that may post notices besides the hub) and ``relays`` (peer ids that may
    hand in documents by other authors: federated hubs, trusted full peers)."""
    path = os.path.join(directory, HUB_CONFIG)
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {"registration": "open", "operators": [], "relays": []}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable or not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("registration", "open") not in ("open", "invite"):
        raise ValueError(f"{path}: registration must be \"open\" or \"invite\"")
    return {"registration": doc.get("registration", "open"), "operators": list(doc.get("operators", [])),
            "relays": list(doc.get("relays", []))}


class HubRole(Service):
    """The hub: registry, groups, routing, shared, RPC methods (``roles/hub.py``)."""

    name = "hub"

    def __init__(self, node: Any) -> None:
        self.node = node
        self.hub: Hub | None = None

    def startService(self) -> None:
        super().startService()
        node = self.node
        config = load_hub_config(node.settings.directory)
        self.hub = Hub(node.store, node.key, node.clock, open_registration=config["registration"] == "open",
                       relays=config["relays"], operators=config["operators"])
        self.hub.start()
        from shiftpeer.roles.flowroutes import install_hub_routes

        install_hub_routes(node.api, self)
        log.info("hub role started as {account}", account=node.account_id)

    def stopService(self):
        super().stopService()
        if self.hub is not None:
            self.hub.stop()
        return succeed(None)

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return self.hub is not None and self.hub.policy.may_read(peer_id, dbname, conn)

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return self.hub is not None and self.hub.policy.may_write(peer_id, dbname, conn)

    def install_sync(self, factory: Any) -> None:
        """RPC methods, live revocation, and the hub's checks on every document received."""
        hub = self.hub
        hub.factory = factory
        factory.rpc_handlers.update(hub.handlers())
        factory.store_batch = filtering_store_batch(
            lambda db, peer_id, doc: (hub.rules.check(db, db.name, peer_id, doc) if _hub_db(db.name)
                                      else refusal(db, doc)))


def _hub_db(dbname: str) -> bool:
    return dbname == "master" or dbname.startswith(("group/", "inbox/", "messages/", "system/"))


class FlowsRole(Service):
    """A user node's flows: hub link, publishing, comments, messages, groups, queries (``roles/userflows.py``)."""

    name = "flows"

    def __init__(self, node: Any) -> None:
        self.node = node
        self.flows: UserFlows | None = None

    def startService(self) -> None:
        super().startService()
        node = self.node
        self.flows = UserFlows(node.store, node.key, node.clock, user=node.settings.user,
                               full_peer=bool(node.settings.full_peer),
                               connect_wait=CONNECT_WAIT if hub_target(node.settings) else 0.0)
        self.flows.start()
        from shiftpeer.roles.flowroutes import install_user_routes

        install_user_routes(node.api, self)

    def stopService(self):
        super().stopService()
        if self.flows is not None:
            self.flows.stop()
        return succeed(None)

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return self.flows is not None and self.flows.policy.may_read(peer_id, dbname, conn)

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return False

    def install_sync(self, factory: Any) -> None:
        """Authorship checks on every document received (a hub role, added later, refines them)."""
        if factory.store_batch is None:
            factory.store_batch = self.flows.store_batch

    def peer_connected(self, conn: Any, kind: str) -> None:
        self.flows.peer_connected(conn, kind)
